"""``taskvisor demo``: one task, end to end, on a throwaway server.

Starts the reference server on a free loopback port with a temporary database, seeds a
variable, a connection with a password and a queued task instance, runs ``supervise`` on
``examples/demo_task.py:main``, then reads back from the server what happened and checks it:
the task succeeded, its return value arrived as an XCom, and its log file holds the password
only as ``***``. Exit code 0 only if every check passed.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from apiserver.testing import ReferenceServer

__all__ = ["DEMO_PASSWORD", "EXPECTED_RESULT", "run_demo"]

#: The connection password the task logs and prints, and the log must never contain.
DEMO_PASSWORD = "demo-Pa55word-never-in-logs"  # noqa: S105 (a demo value, checked for masking)
_GREETING = "Hello from taskvisor"
_HOST = "db.example.com"
#: What ``examples/demo_task.py:main`` returns with the seeded variable and connection.
EXPECTED_RESULT: dict[str, Any] = {"greeting": _GREETING, "total": 10, "host": _HOST}
_SUPERVISE_TIMEOUT = 120.0


def _say(line: str) -> None:
    # Flushed: supervise writes to the same terminal or pipe, and the order must hold.
    print(line, flush=True)


def _demo_task() -> Path:
    # The examples live next to the packages in a checkout (an editable install).
    return Path(__file__).resolve().parent.parent / "examples" / "demo_task.py"


def run_demo(workdir: Path | None = None, *, echo: Callable[[str], None] = _say) -> int:
    """Run the demo, reporting through ``echo``; return 0 if every check passed, else 1.

    The database, activity file and task log go to ``workdir`` (default: a new temporary
    directory), which is kept so that the printed paths can be opened afterwards.
    """
    task_file = _demo_task()
    if not task_file.is_file():
        echo(f"taskvisor demo: {task_file} not found; run the demo from a source checkout")
        return 1
    if workdir is None:
        workdir = Path(tempfile.mkdtemp(prefix="taskvisor-demo-"))
    with ReferenceServer(workdir=workdir) as server:
        echo(f"1. reference Execution API server at {server.url} (database {server.db_path})")
        server.admin.set_variable("demo_greeting", _GREETING)
        server.admin.set_connection(
            "demo_db",
            "postgres",
            host=_HOST,
            port=5432,
            login="demo",
            password=DEMO_PASSWORD,
            schema="demo",
            extra={"sslmode": "require"},
        )
        ti_id, activity = server.create_task(
            entrypoint=f"{task_file}:main",
            dag_id="taskvisor_demo",
            task_id="demo_task",
            timeout=60,
        )
        echo("2. seeded variable demo_greeting, connection demo_db (with a password)")
        echo(f"   and queued task instance {ti_id}; activity file {activity}")
        command = [sys.executable, "-m", "supervisor", str(activity)]
        echo(f"3. running: {' '.join(command)}")
        try:
            code = subprocess.run(command, timeout=_SUPERVISE_TIMEOUT, check=False).returncode
        except subprocess.TimeoutExpired:
            echo(f"   supervise did not finish within {_SUPERVISE_TIMEOUT:.0f} s")
            code = -1
        status = _report(server, ti_id, code, echo)
    echo(f"(database, activity and log kept in {workdir})")
    return status


def _report(server: ReferenceServer, ti_id: str, code: int, echo: Callable[[str], None]) -> int:
    ti = server.admin.get_task_instance(ti_id)
    xcoms = server.admin.xcoms_of(ti_id)
    result = xcoms.get("return_value")
    log_path = server.workdir / "logs" / f"{ti_id}.log"
    log_text = log_path.read_text(errors="replace") if log_path.is_file() else ""
    echo(f"4. supervise exited with {code}")
    echo(f"   final state (read back from the server): {ti.state}")
    echo(f"   returned XCom: {result!r}")
    echo(f"   task log (JSON lines): {log_path}")
    checks = {
        "supervise exited 0": code == 0,
        "the task instance is in state success": ti.state == "success",
        "the return value arrived as XCom return_value": result == EXPECTED_RESULT,
        "the pushed XCom numbers arrived": xcoms.get("numbers") == [1, 2, 3, 4],
        "the task log exists and has lines": bool(log_text.strip()),
        "the password is not in the log": DEMO_PASSWORD not in log_text,
        "the password appears masked as ***": "***" in log_text,
    }
    for name, passed in checks.items():
        echo(f"   [{'ok' if passed else 'FAILED'}] {name}")
    if all(checks.values()):
        echo("demo passed")
        return 0
    echo("demo FAILED")
    return 1
