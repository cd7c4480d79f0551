"""``supervise PATH|-``: run one task try under supervision. Exit codes: docs/design.md.

The document is an activity file (``kind``: our own task, docs/design.md) or Airflow's
``ExecuteTask`` workload (``type``: Airflow's own task runner on the DAG, docs/airflow.md).

The task child is forked before anything else happens, while this process holds no token,
thread or network client; see :mod:`supervisor.spawn`.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import importlib.util
import os
import sys
from typing import TYPE_CHECKING, NoReturn

from comms.control_plane import is_control_plane_secret
from supervisor.config import Setting, parse_setting, settings
from supervisor.spawn import fork_zygote

if TYPE_CHECKING:
    from comms.activity import Activity
    from comms.workload import Workload
    from supervisor.config import SupervisorConfig
    from supervisor.spawn import Zygote

__all__ = ["main"]

_USAGE_ERROR = 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="supervise",
        description="Run one task try under supervision against an Execution API server.",
        epilog="Each setting also reads TASKVISOR_<NAME> from the environment (e.g. "
        "TASKVISOR_HEARTBEAT_INTERVAL); a flag wins over the environment.",
    )
    p.add_argument(
        "activity",
        help="activity JSON file or Airflow ExecuteTask workload JSON, or - to read it from "
        "stdin (keeps the token off disk)",
    )
    p.add_argument(
        "--server",
        metavar="URL",
        help="Execution API URL for a workload (default: Airflow's [core] "
        "execution_api_server_url); an activity names its own",
    )
    p.add_argument(
        "--delete-activity",
        action="store_true",
        help="delete the activity or workload file once read (keeps the token off disk, "
        "out of the task's reach)",
    )
    for setting in settings():
        p.add_argument(
            setting.flag,
            dest=setting.name,
            type=functools.partial(_flag_value, setting),
            metavar="BYTES" if setting.integer else "SECONDS",
            help=f"{setting.help} (default {setting.default:{'d' if setting.integer else 'g'}}"
            f"; env {setting.env})",
        )
    return p


def _flag_value(setting: Setting, text: str) -> float | int:
    try:
        return parse_setting(setting, text, source=setting.flag)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def main(argv: list[str] | None = None) -> NoReturn:
    """Entry point of the ``supervise`` console script."""
    _reopen_closed_standard_fds()
    args = _parser().parse_args(argv)
    if argv is None:
        _shed_signing_secrets()
    zygote = fork_zygote()  # first: before secrets, threads and HTTP clients exist here
    # Loading the HTTP client and the relay (below) makes ~100k long-lived objects and next
    # to no cyclic garbage, yet would run the cyclic GC ~30 times on the way to /run (5-10 ms).
    # So no collection until they are loaded; then they are frozen out of later ones.
    gc.disable()
    code = _supervise(args, zygote)
    # Everything is reported, reaped and flushed by now: skip the interpreter's teardown
    # (~30 ms) and any worker thread still finishing an answer nobody will read.
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a broken output changes no exit code
            stream.flush()
    os._exit(code)


def _reopen_closed_standard_fds() -> None:
    """Put ``/dev/null`` on any of fds 0-2 the executor left closed (``2>&-``).

    Else the first pipe or file opened here would take that number, and whatever writes to
    "stderr" (Python, a C library, the zygote) would write into the task's channel or log.
    """
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            opened = os.open(os.devnull, os.O_RDWR)  # the lowest free number: fd itself
            if opened != fd:
                os.dup2(opened, fd)
                os.close(opened)
    # Python made these None at start-up, finding the fds closed.
    if sys.stdout is None:
        sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115 - lives as long as the process
    if sys.stderr is None:
        sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115


def _say(line: str) -> None:
    """Write a line to supervise's stderr, which may be a closed pipe or a full disk."""
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.write(line + "\n")
        sys.stderr.flush()


def _shed_signing_secrets() -> None:
    """Start again without the control plane's secrets in the environment (an executor's copy
    of the server's JWT signing secret, the database URL, the fernet key:
    :func:`comms.control_plane.is_control_plane_secret`): a forked Python task inherits this
    process's memory and its kernel copy of the environment, so filtering the task's
    ``os.environ`` is not enough.
    """
    names = [name for name in os.environ if is_control_plane_secret(name)]
    if names and sys.executable:
        env = {k: v for k, v in os.environ.items() if k not in names}
        os.execve(sys.executable, sys.orig_argv, env)  # noqa: S606 - same program, same argv


def _supervise(args: argparse.Namespace, zygote: object) -> int:
    from comms.workload import is_workload, parse_workload
    from supervisor._linux import set_child_subreaper, set_dumpable
    from supervisor.activity import parse_activity
    from supervisor.errors import ActivityError
    from supervisor.spawn import Zygote

    assert isinstance(zygote, Zygote)
    # Before the token is read: no same-user process may read our memory or ptrace us, and
    # every descendant of the task that escapes its group is re-parented to us.
    set_dumpable(False)
    set_child_subreaper()
    try:
        data = _read_activity(args.activity, delete=args.delete_activity)
        if is_workload(data):
            return _supervise_workload(args, parse_workload(data), zygote)
        return _supervise_activity(args, parse_activity(data), zygote)
    except (ActivityError, ValueError) as exc:
        zygote.abandon()
        _wait_quietly(zygote.pid)
        _say(f"supervise: {exc}")
        return _USAGE_ERROR


def _config(args: argparse.Namespace) -> SupervisorConfig:
    from supervisor.config import SupervisorConfig

    for name in SupervisorConfig.unknown_env_names():
        _say(f"supervise: warning: ignored {name}: not a supervise setting (see supervise --help)")
    return SupervisorConfig.from_env().with_overrides(
        **{setting.name: getattr(args, setting.name) for setting in settings()}
    )


def _supervise_activity(args: argparse.Namespace, activity: Activity, zygote: Zygote) -> int:
    """Run an activity file's task (our own protocol)."""
    from supervisor.activity import resolve_run_as
    from supervisor.errors import ActivityError

    if args.server is not None:
        raise ActivityError(
            "--server", "only for an Airflow workload; an activity names its server"
        )
    run_as = resolve_run_as(activity.run_as, euid=os.geteuid()) if activity.run_as else None
    config = _config(args)
    from supervisor.line_channel import supervise_activity

    gc.freeze()
    gc.enable()
    return supervise_activity(activity, zygote, config, run_as=run_as)


def _supervise_workload(args: argparse.Namespace, workload: Workload, zygote: Zygote) -> int:
    """Run Airflow's ``ExecuteTask`` workload with Airflow's own task runner in the task child."""
    from comms.activity import check_server_url
    from supervisor.airflow_config import read_airflow_settings
    from supervisor.errors import ActivityError

    airflow = read_airflow_settings()
    if args.server is not None:
        check_server_url(args.server, "--server")
    config = _config(args)
    if args.activity != "-" and not args.delete_activity:
        # The task runs as this user: it could read the file its supervisor's argv names.
        _say(
            f"supervise: warning: the task can read {args.activity!r}, which holds the token; "
            "pipe the workload to 'supervise -' or pass --delete-activity"
        )
    if importlib.util.find_spec("airflow") is None:  # looks for the package, imports nothing
        raise ActivityError(
            "$.type",
            "an Airflow workload runs Airflow's own task runner, and Airflow is not installed "
            f"for {sys.executable}: install taskvisor into the Airflow worker's environment",
            document="workload",
        )
    if workload.unknown_fields:
        _say(
            "supervise: warning: workload fields this supervise does not know, ignored: "
            + ", ".join(workload.unknown_fields)
        )
    from supervisor.airflow_channel import supervise_workload

    gc.freeze()
    gc.enable()
    return supervise_workload(workload, airflow, zygote, config, server=args.server)


def _read_activity(source: str, *, delete: bool) -> bytes:
    """The activity's bytes, at most one more than ``parse_activity`` accepts: a larger file
    or stdin is refused there without ever being held in memory whole."""
    from comms.activity import MAX_ACTIVITY_BYTES
    from supervisor.errors import ActivityError

    try:
        if source == "-":
            return sys.stdin.buffer.read(MAX_ACTIVITY_BYTES + 1)
        with open(source, "rb") as f:
            data = f.read(MAX_ACTIVITY_BYTES + 1)
        if delete:
            os.unlink(source)
        return data
    except OSError as exc:
        raise ActivityError("file", f"cannot read {source!r}: {exc.strerror}") from None


def _wait_quietly(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)
