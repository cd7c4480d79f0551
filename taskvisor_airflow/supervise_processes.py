"""The ``supervise`` processes of one executor: a fresh one per try, never a fork of ours.

:class:`SuperviseProcesses` is the bookkeeping of :class:`taskvisor_airflow.TaskvisorExecutor`,
without Airflow (so it is tested without Airflow):

- :meth:`~SuperviseProcesses.start` writes the workload into a pipe, closes the pipe's write
  end, and only then starts ``supervise -`` with that pipe as its stdin: the token never
  touches disk, and the scheduler never waits on a reader. The process is spawned
  (``subprocess``: exec at once, no Python code of ours runs in it; the executor holds every
  try's token, so it forks no task code), in a session of its own, so a Ctrl-C at the
  scheduler's terminal does not reach it: the try runs to its end, as under LocalExecutor.
- :meth:`~SuperviseProcesses.reap` collects the exits without blocking (the scheduler loop
  calls it every heartbeat); :meth:`~SuperviseProcesses.wait` blocks until one exits, on the
  processes' pidfds; :meth:`~SuperviseProcesses.signal` signals every one still running.
- An exit status another process took away is reported as lost (:attr:`Exit.returncode`
  None), never as a success.

:func:`worker_environment` is what each ``supervise`` gets: the scheduler's environment less
the control plane's secrets, and the Execution API's URL.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import signal as signals
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from comms.control_plane import CONTROL_PLANE_SECRET_WORDS, is_control_plane_secret

__all__ = [
    "CONTROL_PLANE_SECRET_WORDS",
    "Exit",
    "SuperviseProcesses",
    "WorkloadTooLarge",
    "describe_exit",
    "is_control_plane_secret",
    "worker_environment",
]

K = TypeVar("K")

#: What ``supervise``'s exit codes say (docs/design.md, "Exit codes").
_EXIT_MEANINGS = {
    0: "the try ended and its state was reported",
    1: "the try ended and was reported failed or up_for_retry",
    2: "bad usage or an invalid workload or worker configuration; nothing contacted",
    3: "the server refused to start the try; task code never ran",
    4: "the try ended but its final state could not be reported (kept in <log_path>.state.json)",
    5: "the server told the supervisor to stop the try",
}


def worker_environment(environ: Mapping[str, str], execution_api_server_url: str) -> dict[str, str]:
    """A worker's environment for ``supervise``: ``environ`` without the control plane's
    secrets (:func:`is_control_plane_secret`), with ``[core] execution_api_server_url``."""
    env = {name: value for name, value in environ.items() if not is_control_plane_secret(name)}
    env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] = execution_api_server_url
    return env


def describe_exit(returncode: int | None) -> str:
    """``supervise``'s exit status in words, for Airflow's log of the task instance."""
    if returncode is None:
        return "supervise's exit status was lost (another process waited for it)"
    if returncode < 0:
        try:
            name = signals.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"supervise was killed by {name}; the try's state may not have been reported"
    meaning = _EXIT_MEANINGS.get(returncode, "not an exit code of supervise")
    return f"supervise exited {returncode}: {meaning}"


class WorkloadTooLarge(ValueError):
    """The workload does not fit in a pipe, so it cannot be handed over without waiting."""


@dataclass(frozen=True)
class Exit(Generic[K]):
    """How one try's ``supervise`` ended."""

    key: K
    pid: int
    #: Its exit code, ``-N`` if signal ``N`` killed it, or None if the status was lost.
    returncode: int | None

    @property
    def ok(self) -> bool:
        """Whether the try ended and its state was reported as not failed (exit 0)."""
        return self.returncode == 0


@dataclass
class _Running:
    process: subprocess.Popen[bytes]
    pidfd: int


class SuperviseProcesses(Generic[K]):
    """The ``supervise`` processes running tries, by a key of the caller's (a TI key)."""

    def __init__(self, command: Sequence[str]) -> None:
        """``command`` runs ``supervise`` reading its workload from stdin (``supervise -``)."""
        self.command = list(command)
        self._running: dict[K, _Running] = {}

    def __len__(self) -> int:
        return len(self._running)

    def __contains__(self, key: object) -> bool:
        return key in self._running

    def start(self, key: K, workload: bytes, env: Mapping[str, str]) -> int:
        """Start ``supervise`` for one try with ``workload`` on its stdin; return its pid.

        Raises :class:`WorkloadTooLarge` or the :class:`OSError` of a failed spawn; then no
        process was started.
        """
        if key in self._running:
            raise ValueError(f"a supervise is already running for {key!r}")
        stdin = _pipe_holding(workload)
        try:
            process = subprocess.Popen(
                self.command,
                stdin=stdin,
                env=dict(env),
                close_fds=True,
                start_new_session=True,
            )
        finally:
            os.close(stdin)
        try:
            pidfd = os.pidfd_open(process.pid)
        except OSError:
            process.kill()
            process.wait()
            raise
        self._running[key] = _Running(process, pidfd)
        return process.pid

    def reap(self) -> list[Exit[K]]:
        """The tries whose ``supervise`` exited since the last call; never blocks."""
        exits = []
        for key, running in list(self._running.items()):
            exited, returncode = _exit_of(running.process)
            if exited:
                del self._running[key]
                os.close(running.pidfd)
                exits.append(Exit(key, running.process.pid, returncode))
        return exits

    def wait(self, timeout: float | None) -> list[Exit[K]]:
        """Block until a ``supervise`` exits (or ``timeout`` seconds pass); :meth:`reap`."""
        exits = self.reap()
        if exits or not self._running:
            return exits
        poller = select.poll()
        for running in self._running.values():
            poller.register(running.pidfd, select.POLLIN)
        poller.poll(None if timeout is None else max(0, round(timeout * 1000)))
        return self.reap()

    def signal(self, signum: int) -> None:
        """Send ``signum`` to every ``supervise`` still running (not to its task: ``supervise``
        stops its task itself and reports the try)."""
        for running in self._running.values():
            with contextlib.suppress(ProcessLookupError):
                signals.pidfd_send_signal(running.pidfd, signum)


def _exit_of(process: subprocess.Popen[bytes]) -> tuple[bool, int | None]:
    """Whether ``process`` exited (then it is reaped), and its return code (None: lost)."""
    try:
        exited = os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        # Someone else waited for it. Popen would call that exit 0: poll only so that it
        # forgets the process, and report the status as lost.
        process.poll()
        return True, None
    if exited is None:
        return False, None
    return True, process.wait()


def _pipe_holding(data: bytes) -> int:
    """The read end of a pipe that holds ``data``, then end of file (the write end closed)."""
    read_end, write_end = os.pipe()
    try:
        _fill(write_end, data)
    except BaseException:
        os.close(read_end)
        raise
    finally:
        os.close(write_end)
    return read_end


def _fill(pipe: int, data: bytes) -> None:
    """Write all of ``data`` into the empty ``pipe`` at once, growing it if need be."""
    os.set_blocking(pipe, False)
    if len(data) > fcntl.fcntl(pipe, fcntl.F_GETPIPE_SZ):
        try:
            fcntl.fcntl(pipe, fcntl.F_SETPIPE_SZ, len(data))
        except OSError as exc:
            raise WorkloadTooLarge(
                f"a workload of {len(data)} bytes does not fit in a pipe ({exc.strerror})"
            ) from exc
    if data and os.write(pipe, data) != len(data):
        raise WorkloadTooLarge(f"a workload of {len(data)} bytes does not fit in a pipe")
