"""Task entrypoints the interop tests run with ``supervise`` against a real Airflow.

Activity files name them as ``tests/interop/tasks.py:<function>``. What a task needs from the
test (names of Airflow objects, where to leave a pid, when to stop waiting) comes in through
the activity's ``env``, so nothing here duplicates the test harness.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from sdk import Connection, Context, Defer, Fail, Reschedule, Skip, Variable, XCom, log


def returns_value() -> Any:
    """Succeed, returning the JSON value in ``INTEROP_RETURN``."""
    return json.loads(os.environ["INTEROP_RETURN"])


def reports_map_index(context: Context) -> dict[str, Any]:
    """Return this mapped task instance's index, and the XCom of the sibling it names."""
    sibling = os.environ.get("INTEROP_SIBLING")
    pulled = None if sibling is None else XCom.pull(task_id=context.task_id, map_index=int(sibling))
    return {"map_index": context.map_index, "sibling": pulled}


def uses_airflow_state() -> dict[str, Any]:
    """Read an Airflow Variable and Connection, push an XCom, pull another task's."""
    greeting = Variable.get(os.environ["INTEROP_VARIABLE"])
    conn = Connection.get(os.environ["INTEROP_CONNECTION"])
    # The supervisor must mask this in the task log: it handed the password over.
    print(f"connecting to {conn.host} with password {conn.password}")
    pulled = XCom.pull(task_id=os.environ["INTEROP_PULL_FROM"])
    XCom.push("summary", {"greeting": greeting, "host": conn.host, "port": conn.port})
    return {"greeting": greeting, "login": conn.login, "pulled": pulled}


def raises() -> None:
    """Fail with an ordinary exception: up_for_retry if tries are left, else failed."""
    raise RuntimeError("interop task failed on purpose")


def fails_on_first_try(context: Context) -> dict[str, Any]:
    """Push an XCom and fail on try 1; on a later try, report what try 1 left behind."""
    left_behind = XCom.pull(task_id=context.task_id, key="partial", default=None)
    XCom.push("partial", {"try": context.try_number})
    if context.try_number == 1:
        raise RuntimeError("first try fails on purpose")
    return {"try": context.try_number, "left_behind": left_behind}


def fails_for_good() -> None:
    """Fail without retry, whatever tries are left."""
    raise Fail("input is invalid; retrying cannot help")


def reschedules() -> None:
    """Ask to run again later, as a sensor in reschedule mode does."""
    raise Reschedule(at=dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5))


def defers_then_resumes(context: Context) -> Any:
    """Defer to Airflow's ``TimeDeltaTrigger``; the runner resumes the try at ``after_wait``."""
    raise Defer(
        "airflow.providers.standard.triggers.temporal.TimeDeltaTrigger",
        # Sent in the tagged form Airflow's triggerer decodes (a bare 0.0 would fail there).
        trigger_kwargs={"delta": dt.timedelta(0)},
        method_name="after_wait",
        kwargs={"started": context.start_date.isoformat()},
    )


def defers_until_a_moment(context: Context) -> Any:
    """Defer to Airflow's ``DateTimeTrigger`` with a ``datetime``; resumes at ``after_wait``."""
    raise Defer(
        "airflow.providers.standard.triggers.temporal.DateTimeTrigger",
        trigger_kwargs={"moment": dt.datetime.now(dt.UTC)},
        method_name="after_wait",
        kwargs={"started": context.start_date.isoformat()},
    )


def after_wait(context: Context, started: str, event: Any = None) -> Any:
    """Where ``defers_then_resumes`` resumes: return what the resumption got."""
    return {"next_method": context.next_method, "started": started, "event": event}


def skips() -> None:
    """End the try as skipped."""
    raise Skip("nothing to do today")


def writes_logs() -> str:
    """Write to every output a task has: the structured log, stdout and stderr."""
    log.info("structured event", rows=3, table="interop")
    log.warning("structured warning")
    print("plain line on stdout", flush=True)
    print("plain line on stderr", file=sys.stderr, flush=True)
    return "logged"


def waits_for_release() -> str:
    """Leave this process's pid in ``INTEROP_PID_FILE``, then wait for ``INTEROP_RELEASE``.

    The test decides how long the task runs (heartbeats, mid-run state changes) by creating
    the release file; the deadline only bounds a test that never does.
    """
    pid_file = Path(os.environ["INTEROP_PID_FILE"])
    staged = pid_file.with_suffix(".partial")
    staged.write_text(str(os.getpid()))
    staged.replace(pid_file)  # atomically: the test never reads a half-written pid
    release = Path(os.environ["INTEROP_RELEASE"])
    deadline = time.monotonic() + 120
    while not release.exists():
        if time.monotonic() > deadline:
            raise TimeoutError("never released")
        time.sleep(0.05)
    return "released"
