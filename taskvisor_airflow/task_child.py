"""The task child's side of hosting Airflow's own task runner under ``supervise``.

``supervise`` forks its task child before it reads the workload (:mod:`supervisor.spawn`).
For an Airflow workload that child, the zygote, calls :func:`prepare` while the supervisor
talks to the server, then :func:`main` once the server agreed to run the try, with:

======  ==============================================================================
fd 0    a socket carrying Airflow's length-prefixed msgpack frames both ways (the
        runner's ``CommsDecoder`` reads fd 0); close-on-exec here, so a subprocess of the
        task (a BashOperator's ``bash``) never inherits the channel as its stdin
fd 1    the stdout pipe (``task.stdout`` in the task log), inherited by subprocesses
fd 2    the stderr pipe (``task.stderr``)
logs    the runner's structured log records, one JSON object per line
notes   what the supervisor needs to know from the runner: the task's
        ``execution_timeout``, one JSON line once the DAG is parsed, then closed
======  ==============================================================================

Only Airflow's task SDK is imported, never its scheduler side; nothing of Airflow is copied:
its runner is called as Airflow's own supervisor calls it, and the ``execution_timeout``
comes from the documented listener hook ``on_task_instance_running``, which the runner
calls just before ``execute``.
"""

from __future__ import annotations

import contextlib
import gc
import io
import os
import sys
import traceback
from typing import Any, NoReturn

__all__ = ["RUNNER_CRASHED", "main", "prepare"]

#: Exit status when the runner raised past its own handlers (the supervisor fails the try).
RUNNER_CRASHED = 1


def prepare() -> None:
    """Import Airflow's task runner ahead of the launch (in the zygote, as root, no token).

    The imports make ~1M long-lived objects and next to no cyclic garbage, yet would run the
    cyclic GC dozens of times (~250 ms of ~1.1 s): so none runs until they are loaded, and
    then they are frozen out of the runner's own collections.
    """
    gc.disable()
    try:
        import airflow.sdk.execution_time.task_runner
        import airflow.sdk.log  # noqa: F401
    finally:
        gc.freeze()
        gc.enable()


def main(*, logs: int, notes: int) -> NoReturn:
    """Become Airflow's task runner for the try ``supervise`` sends on fd 0; never returns."""
    status = RUNNER_CRASHED
    try:
        os.set_inheritable(0, False)
        _reopen_standard_streams()
        _send_logs_to(logs)
        _report_timeout_to(notes)
        from airflow.sdk.execution_time import task_runner

        task_runner.main()
        status = 0
    except SystemExit as exc:
        status = _exit_status(exc.code)
    except BaseException:
        with contextlib.suppress(Exception):
            sys.stderr.write("taskvisor: Airflow's task runner crashed:\n")
            traceback.print_exc(file=sys.stderr)
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
    # No inherited atexit handler or interpreter teardown: the supervisor's, not ours.
    os._exit(status)


def _exit_status(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    with contextlib.suppress(Exception):
        sys.stderr.write(f"{code}\n")
    return 1


def _reopen_standard_streams() -> None:
    """``print`` and the logging module write to the pipes, line by line; stdin is empty."""
    sys.stdout = io.TextIOWrapper(os.fdopen(1, "wb", closefd=False), line_buffering=True)
    sys.stderr = io.TextIOWrapper(os.fdopen(2, "wb", closefd=False), line_buffering=True)
    sys.stdin = open(os.devnull)  # noqa: SIM115 - lives as long as the process


def _send_logs_to(fd: int) -> None:
    from airflow.sdk.log import configure_logging, reset_logging

    reset_logging()
    configure_logging(
        json_output=True, output=os.fdopen(fd, "wb", buffering=0), sending_to_supervisor=True
    )


def _report_timeout_to(fd: int) -> None:
    """Write ``{"execution_timeout": seconds or null}`` to ``fd`` when the task starts running
    (the runner calls the listener hook just before ``execute``), then close it."""
    import msgspec
    import pluggy
    from airflow.sdk.listener import get_listener_manager

    hookimpl = pluggy.HookimplMarker("airflow")

    class TimeoutReporter:
        @hookimpl
        def on_task_instance_running(self, previous_state: Any, task_instance: Any) -> None:
            nonlocal fd
            if fd < 0:
                return
            timeout = getattr(task_instance.task, "execution_timeout", None)
            seconds = None if timeout is None else timeout.total_seconds()
            try:
                os.write(fd, msgspec.json.encode({"execution_timeout": seconds}) + b"\n")
            finally:
                os.close(fd)
                fd = -1

    get_listener_manager().add_listener(TimeoutReporter())
