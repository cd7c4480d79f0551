"""The task runner: what a forked task child runs to become the task.

The supervisor calls :func:`main` in the child, after it has reset signals, closed other
fds, given the child its own process group and switched user if asked. On entry:

======  =========================================================================
fd 0    channel, supervisor -> task
fd 1    channel, task -> supervisor
fd 2    a pipe the supervisor logs as ``task.stderr``
``stdout_fd``  a pipe the supervisor logs as ``task.stdout`` (or ``None``: stdout goes
        to fd 2)
======  =========================================================================

Before any task code runs, the channel moves to high close-on-exec fds, fd 0 becomes
``/dev/null`` and fd 1 the stdout pipe; so ``print``, ``os.write(1, ...)``, C extensions and
subprocesses all land in the task log, reading stdin gives EOF, and neither ``exit()`` nor
``os.close(0)``/``os.close(1)`` can touch the channel. Then: ``Hello``, ``StartupDetails``,
the entrypoint, exactly one terminal message, and ``os._exit``.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import logging
import os
import signal
import sys
from typing import NoReturn

from comms.messages import ErrorResponse
from sdk import _session
from sdk._channel import Channel
from sdk._log import LogHandler
from sdk._outcome import run_task

__all__ = ["CHANNEL_FD_MIN", "RUNNER_BROKE", "main"]

#: The channel's fds are moved to the lowest free fds at or above this.
CHANNEL_FD_MIN = 100

#: Exit status when the runner itself broke (e.g. no terminal message could be sent).
RUNNER_BROKE = 1

_inherited_stdio: list[object] = []


def main(stdout_fd: int | None) -> NoReturn:
    """Run the task this child was started for; never returns.

    Exits 0 once the terminal message was answered, whatever the task's outcome;
    :data:`RUNNER_BROKE` if the runner could not do its job (the supervisor then fails the
    try, since it got no terminal message). Never runs inherited ``atexit`` handlers.
    """
    status = RUNNER_BROKE
    try:
        status = _run(stdout_fd)
    except BaseException as exc:
        _last_words(f"taskvisor runner failed: {type(exc).__name__}: {exc}\n")
    _flush_stdio()
    os._exit(status)


def _run(stdout_fd: int | None) -> int:
    channel = Channel(*_move_channel_off_stdio(stdout_fd))
    _rebuild_stdio()
    # Python's own default, which a zygote's signal reset undid: a write to a closed pipe
    # raises BrokenPipeError instead of killing the task. Subprocesses get SIG_DFL back.
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    startup = channel.start()
    if startup.entrypoint is None:
        _last_words("taskvisor runner: StartupDetails has no entrypoint for a Python task\n")
        return RUNNER_BROKE
    sys.argv = [startup.entrypoint]  # not the supervisor's command line
    task_pid = os.getpid()
    with _session.installed(channel):
        _install_logging_bridge()
        outcome = run_task(startup.entrypoint, channel.context)
        _flush_stdio()
        if os.getpid() != task_pid:  # a copy forked by task code got here: the task reports
            return 0
        response = channel.request(outcome.terminal)
    if isinstance(response, ErrorResponse):
        _last_words(f"taskvisor runner: the supervisor refused the terminal message: {response}\n")
    return 0


def _move_channel_off_stdio(stdout_fd: int | None) -> tuple[int, int]:
    channel_in = fcntl.fcntl(0, fcntl.F_DUPFD_CLOEXEC, CHANNEL_FD_MIN)
    channel_out = fcntl.fcntl(1, fcntl.F_DUPFD_CLOEXEC, CHANNEL_FD_MIN)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2 if stdout_fd is None else stdout_fd, 1)
    if stdout_fd is not None and stdout_fd > 2:
        os.close(stdout_fd)
    return channel_in, channel_out


def _rebuild_stdio() -> None:
    # The new objects never close their fd, so closing sys.stdin (as exit() does) or
    # sys.stdout leaves fds 0 and 1 in place for C code and subprocesses. The old ones are
    # the supervisor's, copied by fork: never flushed here (their buffers are the parent's
    # output), and kept alive so that collecting them cannot close fds 0-2.
    _inherited_stdio.extend((sys.__stdin__, sys.__stdout__, sys.__stderr__))
    sys.stdin = open(0, encoding="utf-8", errors="replace", closefd=False)  # noqa: SIM115
    sys.stdout = _line_buffered_writer(1)
    sys.stderr = _line_buffered_writer(2)
    # Final in typeshed, but the task's own streams are what "original stdio" means here.
    sys.__stdin__, sys.__stdout__, sys.__stderr__ = sys.stdin, sys.stdout, sys.stderr  # type: ignore[misc]


def _line_buffered_writer(fd: int) -> io.TextIOWrapper:
    return open(fd, "w", buffering=1, encoding="utf-8", errors="backslashreplace", closefd=False)


def _install_logging_bridge() -> None:
    root = logging.getLogger()
    # Handlers copied from the supervisor by fork would write to its closed files.
    for handler in root.handlers[:]:
        root.removeHandler(handler)
    root.addHandler(LogHandler())
    if root.level == logging.WARNING:  # stdlib default: tasks expect their info lines logged
        root.setLevel(logging.INFO)
    logging.captureWarnings(True)  # warnings.warn() lands in the task log as py.warnings


def _flush_stdio() -> None:
    for stream in {sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__}:
        # Task code may have closed, broken or replaced these with anything at all.
        with contextlib.suppress(Exception):
            stream.flush()  # type: ignore[union-attr]


def _last_words(text: str) -> None:
    with contextlib.suppress(OSError):
        os.write(2, text.encode(errors="replace"))
