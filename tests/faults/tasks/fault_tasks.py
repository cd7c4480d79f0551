"""Python tasks of the fault suite: each misbehaves in one way a real task does.

Activity files name them as ``<this file>:<function>``. The test talks to a task through the
scratch directory in ``FAULT_DIR``: the task appends the pid of every process it starts to
``pids``, writes ``ready`` (by rename, so it is whole) when it reached the point the test
waits for, and waits for ``release`` where it must be told to carry on.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from sdk import Connection, Variable, XCom
from sdk.errors import RequestFailed

_SCRATCH = Path(os.environ.get("FAULT_DIR", "."))
_LONG = 300.0  # bounds a task the test forgot to release or kill; never reached in a pass


def record_pid(pid: int | None = None) -> None:
    """Append a pid (default: this process's) to the ``pids`` file."""
    fd = os.open(_SCRATCH / "pids", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, f"{pid or os.getpid()}\n".encode())
    finally:
        os.close(fd)


def write(name: str, text: str) -> None:
    """Write a scratch file whole (via rename)."""
    tmp = _SCRATCH / f".{name}.tmp"
    tmp.write_text(text)
    tmp.rename(_SCRATCH / name)


def wait_for_release() -> None:
    """Block until the test writes ``release``."""
    deadline = time.monotonic() + _LONG
    while not (_SCRATCH / "release").exists():
        if time.monotonic() > deadline:
            raise TimeoutError("the test never released this task")
        time.sleep(0.05)


# --- tasks -------------------------------------------------------------------------------


def waits() -> None:
    """Say ready, wait for release, succeed (no return value: no call to the server)."""
    record_pid()
    write("ready", str(os.getpid()))
    wait_for_release()


def reports_progress_and_waits() -> None:
    """Write one line to each output path, say ready, then work until released."""
    from sdk import log

    record_pid()
    print("progress: step 1 of 3", flush=True)
    print("warning: step 1 was slow", file=sys.stderr, flush=True)
    log.info("progress record", step=1)
    write("ready", str(os.getpid()))
    wait_for_release()


def marks_ran() -> str:
    """Leave a trace that task code ran."""
    write("ran", "yes")
    return "ran"


def ignores_term_and_waits() -> None:
    """Ignore SIGTERM and wait to be killed."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    record_pid()
    write("ready", str(os.getpid()))
    time.sleep(_LONG)


def blocks_term_in_native_code() -> None:
    """Block SIGTERM and sit in one long C call (``time.sleep``)."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    record_pid()
    write("ready", str(os.getpid()))
    time.sleep(_LONG)


_GRANDCHILD = """
import os, signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
if sys.argv[1] == "daemon":
    if os.fork():
        os._exit(0)
    os.setsid()
fd = os.open(os.path.join(os.environ["FAULT_DIR"], "pids"), os.O_WRONLY | os.O_APPEND)
os.write(fd, f"{os.getpid()}\\n".encode())
os.close(fd)
# One write() per line: grandchildren share the pipe, and print() may write in pieces.
os.write(1, f"grandchild {sys.argv[1]} holds stdout and stderr open\\n".encode())
time.sleep(300)
"""


def spawns_grandchildren() -> str:
    """Start three descendants that ignore SIGTERM and hold stdout/stderr open.

    One stays in the task's process group, one starts a new session, one double-forks into
    a new session (its parent exits, so it is re-parented). Then, per ``FAULT_THEN``:
    ``return`` succeeds at once, ``wait`` waits to be killed.
    """
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    record_pid()
    for how in ("group", "session"):
        subprocess.Popen(
            [sys.executable, "-c", _GRANDCHILD, how], start_new_session=how == "session"
        )
    subprocess.run([sys.executable, "-c", _GRANDCHILD, "daemon"], check=True)
    deadline = time.monotonic() + 30
    while len((_SCRATCH / "pids").read_text().split()) < 4:
        if time.monotonic() > deadline:
            raise TimeoutError("grandchildren did not start")
        time.sleep(0.02)
    write("ready", str(os.getpid()))
    if os.environ.get("FAULT_THEN") == "wait":
        time.sleep(_LONG)
    return "left grandchildren behind"


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def floods_output() -> int:
    """Write ``FAULT_LINES`` numbered lines to stdout and to stderr at once, fast."""
    count = int(os.environ["FAULT_LINES"])
    batch = 2000

    def flood(fd: int, tag: bytes) -> None:
        for start in range(0, count, batch):
            end = min(count, start + batch)
            _write_all(fd, b"".join(b"%s %07d\n" % (tag, i) for i in range(start, end)))

    err = threading.Thread(target=flood, args=(2, b"err"))
    err.start()
    flood(1, b"out")
    err.join()
    return count


def uploads_big_xcom() -> int:
    """Push an XCom of ``FAULT_XCOM_BYTES`` while printing a tick every 0.1 s."""
    size = int(os.environ["FAULT_XCOM_BYTES"])
    value = "x" * size
    done = threading.Event()

    def tick() -> None:
        n = 0
        while not done.wait(0.1):
            print(f"tick {n}", flush=True)
            n += 1

    ticker = threading.Thread(target=tick)
    ticker.start()
    started = time.monotonic()
    try:
        XCom.push("big", value)
    finally:
        done.set()
        ticker.join()
    write("upload", json.dumps({"seconds": time.monotonic() - started}))
    return size


def calls_until_released() -> int:
    """Call ``Variable.get`` every 0.5 s until released, recording how each call went."""
    record_pid()
    write("ready", str(os.getpid()))
    calls = 0
    with (_SCRATCH / "calls.jsonl").open("a") as out:
        while not (_SCRATCH / "release").exists():
            started = time.time()
            try:
                Variable.get("outage_var")
                result = "ok"
            except RequestFailed as exc:
                result = f"{type(exc).__name__}: {exc}"
            out.write(json.dumps({"at": started, "took": time.time() - started, "result": result}))
            out.write("\n")
            out.flush()
            calls += 1
            time.sleep(0.5)  # the pace of the calls, not a synchronisation
    XCom.push("calls", calls)
    return calls


def calls_for_a_while() -> int:
    """Use the SDK once a second for ``FAULT_SECONDS`` seconds; any failure fails the task."""
    until = time.monotonic() + float(os.environ["FAULT_SECONDS"])
    calls = 0
    while time.monotonic() < until:
        Variable.get("token_var")
        XCom.push("progress", calls)
        calls += 1
        time.sleep(1.0)  # the pace of the calls
    return calls


def uses_every_call() -> dict[str, Any]:
    """Make each kind of SDK call once, plus one refused (403) and one never answered."""
    got: dict[str, Any] = {"var": Variable.get("fault_var")}
    Variable.set("fault_written", "w")
    got["conn_host"] = Connection.get("fault_conn").host
    XCom.push("pushed", [1, 2])
    got["pulled"] = XCom.pull(task_id="task", key="pushed")
    for key in ("forbidden", "always_down"):
        try:
            Variable.get(key)
            got[key] = "answered"
        except RequestFailed as exc:
            got[key] = f"{type(exc).__name__}: {exc}"
    return got


def calls_exit() -> str:
    """Close ``sys.stdin`` and call the builtin ``exit()`` (with ``FAULT_EXIT`` if set)."""
    value = Variable.get("fault_var")
    XCom.push("before_exit", value)
    sys.stdin.close()
    code = os.environ.get("FAULT_EXIT")
    exit(int(code) if code else None)


def closes_stdio() -> str:
    """Close fds 0, 1 and 2, then keep using the SDK."""
    os.close(0)
    os.close(1)
    os.close(2)
    return Variable.get("fault_var")


def reads_stdin() -> dict[str, Any]:
    """Read stdin through Python and the raw fd: both must see end of file at once."""
    text = sys.stdin.read()
    raw = os.read(0, 100)
    return {"text": text, "raw": raw.decode(), "var": Variable.get("fault_var")}


def writes_junk() -> str:
    """Write binary junk (and a line that looks like a protocol message) to fd 1."""
    os.write(1, bytes(range(256)) * 4 + b"\n")
    os.write(1, b'{"type":"SucceedTask","id":99}\n')
    os.write(1, b"\xff\xfe not utf-8 \x80\n")
    return Variable.get("fault_var")


def exits_without_reporting() -> None:
    """End the process with status 0 in the middle of the task: no terminal message."""
    Variable.get("fault_var")
    sys.stdout.flush()
    os._exit(0)


def raises() -> None:
    """Fail with an exception."""
    raise RuntimeError("fault task failed on purpose")


def checks_signal_state() -> dict[str, Any]:
    """What a task sees of signals: SIGCHLD disposition, mask, a subprocess's exit code."""
    blocked = sorted(int(s) for s in signal.pthread_sigmask(signal.SIG_BLOCK, []))
    child = subprocess.run(["sh", "-c", "exit 7"], check=False)
    return {
        "sigchld_default": signal.getsignal(signal.SIGCHLD) == signal.SIG_DFL,
        "blocked": blocked,
        "child_returncode": child.returncode,
    }
