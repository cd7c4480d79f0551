"""A ``command`` task speaking the line protocol by hand, misbehaving as ``argv[1]`` says.

Modes:

``linger``         work 1 s, report success, then keep running (ignoring SIGTERM)
``garbage``        garbage, invalid JSON, unknown types, a request without an id and a
                   100 MB line without a newline, each followed by a valid request
``no_terminal``    exit 0 without a terminal message
``cut_terminal``   exit 0 with the terminal message cut off (no newline)
``exit3``          exit 3 without a terminal message

Every line the supervisor sends back is appended to ``FAULT_DIR/answers.jsonl``.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

SCRATCH = Path(os.environ["FAULT_DIR"])
stdin = sys.stdin.buffer


def send(data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(1, view) :]


def receive() -> dict[str, object]:
    line = stdin.readline()
    if not line:
        raise SystemExit("the supervisor closed the channel")
    with (SCRATCH / "answers.jsonl").open("a") as f:
        f.write(line.decode())
    return dict(json.loads(line))


def request(line: bytes) -> dict[str, object]:
    send(line + b"\n")
    return receive()


def main() -> None:
    mode = sys.argv[1]
    with (SCRATCH / "pids").open("a") as f:
        f.write(f"{os.getpid()}\n")
    stdin.readline()  # StartupDetails
    send(b'{"type":"Hello","protocol_version":1,"sdk":"raw-fault-task"}\n')
    if mode == "linger":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        time.sleep(1.0)  # some work before the report, long enough for heartbeats
        request(b'{"type":"SucceedTask","id":1}')
        (SCRATCH / "ready").write_text("answered")
        time.sleep(300)
    elif mode == "garbage":
        garbage()
    elif mode == "cut_terminal":
        send(b'{"type":"SucceedTask","id":7')
    elif mode == "exit3":
        sys.exit(3)
    # no_terminal: just end


def garbage() -> None:
    request(b'{"type":"GetVariable","id":1,"key":"fault_var"}')
    send(b"this is not json at all\n")
    send(b"\x00\xff\xfe binary \x80 junk\n")
    request(b'{"type":"GetVariable","id":2,"key":')  # cut-off JSON with an id
    request(b'{"type":"LaunchMissiles","id":3}')  # unknown type
    request(b'{"type":"GetVariable","id":4,"key":"fault_var","bogus":1}')  # unknown field
    send(b'{"type":"GetVariable","key":"fault_var"}\n')  # a request without an id
    request(b'{"type":"GetVariable","id":5,"key":"fault_var"}')
    # 100 MB without a newline, then the newline that ends it.
    send(b'{"type":"GetVariable","id":6,"key":"')
    chunk = b"y" * (1 << 20)
    for _ in range(100):
        send(chunk)
    request(b'"}')
    request(b'{"type":"GetVariable","id":7,"key":"fault_var"}')
    request(b'{"type":"SucceedTask","id":8}')


if __name__ == "__main__":
    main()
