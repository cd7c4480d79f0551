"""A hostile non-Python-SDK task: writes raw protocol lines, records every answer.

Run as a ``command`` task (the channel is its stdin/stdout). ``$RAW_SCRIPT`` is a JSON list
of steps ``{"line": <text sent as is>, "await": <id or null>, "count": <n, default 1>}``:
after sending a line with an ``await`` id, it reads until ``count`` messages with that id
arrived. A step with ``"grow": <bytes>`` has the JSON string ``"@GROW@"`` in its line replaced
by ``[[],[],...]`` of that many bytes (cheap to send, tens of times larger as objects).
Everything the supervisor sent is written to ``$RAW_OUT`` as JSON lines, then the task exits 0.
"""

from __future__ import annotations

import json
import os
import sys


def main() -> None:
    script = json.loads(os.environ["RAW_SCRIPT"])
    received: list[dict[str, object]] = []
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    received.append(json.loads(stdin.readline()))  # StartupDetails
    stdout.write(b'{"type":"Hello","protocol_version":1,"sdk":"raw-probe"}\n')
    stdout.flush()
    for step in script:
        data = step["line"].encode()
        if step.get("grow"):
            data = data.replace(b'"@GROW@"', b"[" + b"[]," * (step["grow"] // 3) + b"[]]")
        stdout.write(data + b"\n")
        stdout.flush()
        wanted, count = step.get("await"), step.get("count", 1)
        while wanted is not None and count > 0:
            line = stdin.readline()
            if not line:
                break
            message = json.loads(line)
            received.append(message)
            if message.get("id") == wanted:
                count -= 1
    with open(os.environ["RAW_OUT"], "w") as out:
        out.writelines(json.dumps(message) + "\n" for message in received)


if __name__ == "__main__":
    main()
