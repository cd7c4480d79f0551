"""Task entrypoints the end-to-end supervise tests run (as real task processes)."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from sdk import Connection, Context, Defer, Reschedule, Skip, Variable, XCom, log


def round_trips(context: Context) -> dict[str, Any]:
    """Variable, connection and XCom round trips; the result becomes return_value."""
    greeting = Variable.get("greeting")
    Variable.set("written_by_task", f"{greeting} back")
    conn = Connection.get("warehouse")
    XCom.push("numbers", [1, 2, 3])
    pulled = XCom.pull(task_id=context.ti.task_id, key="numbers")
    log.info("round trips done", host=conn.host)
    return {
        "greeting": greeting,
        "login": conn.login,
        "pulled": pulled,
        "try": context.ti.try_number,
    }


def from_push_context() -> str:
    """Reads only what the activity's context pre-injected."""
    return f"{Variable.get('pushed_var')}:{Connection.get('pushed_conn').host}"


def writes_all_streams() -> None:
    """print, stderr, os.write(1) and a subprocess, interleaved per stream."""
    for i in range(3):
        print(f"print {i}", flush=True)
        sys.stderr.write(f"stderr {i}\n")
        sys.stderr.flush()
        os.write(1, f"fd1 {i}\n".encode())
    subprocess.run(["echo", "from a subprocess"], check=True)
    print("stdin says", repr(sys.stdin.read()), flush=True)


def raises() -> None:
    """Fails with a traceback."""
    raise ValueError("the warehouse is on fire")


def skips() -> None:
    """Skips itself."""
    raise Skip("nothing to do today")


def returns_unserialisable() -> object:
    """Returns something JSON cannot hold."""
    return {1, 2, 3}


def writes_marker(context: Context) -> None:
    """Leaves a file behind: proof that task code ran."""
    Path(os.environ["MARKER"]).write_text(str(context.ti.id))


def sleeps_with_child() -> None:
    """Starts a grandchild in its process group, records pids, then sleeps."""
    child = subprocess.Popen(["sleep", "300"])
    Path(os.environ["PIDS"]).write_text(f"{os.getpid()} {child.pid}\n")
    time.sleep(300)


def defers() -> None:
    """Hands itself to a trigger."""
    raise Defer(
        "triggers.TimeDeltaTrigger",
        trigger_kwargs={"seconds": 30},
        method_name="resume",
        kwargs={"cursor": 7},
        timeout=120,
    )


def reschedules() -> None:
    """Asks to run again later (a sensor in reschedule mode)."""
    raise Reschedule(dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.UTC))
