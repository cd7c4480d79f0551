"""Start the task child early: the zygote.

``supervise`` forks the task child *first*, before it reads the activity, imports its HTTP
client or starts a thread, so the child's memory never held the token, a TLS context or a
lock owned by another thread. The child (the zygote) waits on a private control socket for a
:class:`Launch` telling it what to become; the supervisor sends it only after the server
agreed to run the task, so task code never runs for a task the server refused. When the
control socket closes without a launch, the zygote exits quietly. Before the launch, a
:class:`Prepare` may tell it which runner to load while the supervisor talks to the server
(Airflow's task runner takes ~1.5 s to import), with the task's environment, so what the
runner reads from the environment at import time is already the task's.

Inside the zygote, before any task code: its own process group, default signal dispositions
and an empty signal mask, the parent-death signal, the requested user, and exactly these fds:

======  ==================================================================
fd 0    channel, supervisor -> task (protocol lines)
fd 1    channel, task -> supervisor (protocol lines)
fd 2    the task's stderr pipe (logged as ``task.stderr``)
fd N    Python tasks only: the stdout pipe (``task.stdout``), handed to
        :func:`sdk.runner.main`, which moves the channel off fd 0/1
======  ==================================================================

Airflow's task runner (``kind="airflow"``) speaks its own protocol on other fds, which the
supervisor makes at launch and passes with it (SCM_RIGHTS on the control socket): fd 0 is a
socket carrying frames both ways, fd 1 and 2 the stdout and stderr pipes, and two more fds
the runner's JSON log lines and its notes to the supervisor; see
:mod:`taskvisor_airflow.task_child`.
"""

from __future__ import annotations

import contextlib
import gc
import logging  # noqa: F401 - loaded before the fork, see below
import os
import signal
import socket
import sys
from typing import TYPE_CHECKING, Literal, NoReturn

import msgspec

# Both processes need these and logging (the task runner, the relay and the HTTP client):
# loaded once, before the fork, they cost one import instead of two (~9 ms) and their pages
# start out shared. Like msgspec, none of them starts a thread or holds a secret.
from comms import framing, pushed  # noqa: F401
from comms.control_plane import is_control_plane_secret
from supervisor._linux import set_parent_death_signal

if TYPE_CHECKING:
    from collections.abc import Mapping

    from supervisor.activity import RunAs

__all__ = [
    "AIRFLOW_FDS",
    "Launch",
    "Prepare",
    "Zygote",
    "fork_zygote",
    "is_control_plane_secret",
    "task_environment",
]

# Signals whose disposition or mask a parent (Celery, a shell, a container init) may have
# changed; the task must start with the defaults.
_RESET_SIGNALS = (
    signal.SIGINT,
    signal.SIGTERM,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGPIPE,
    signal.SIGCHLD,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGALRM,
    signal.SIGTSTP,
    signal.SIGTTIN,
    signal.SIGTTOU,
)

#: Exit code of a zygote that could not become the task (exec failed, bad user, ...).
LAUNCH_FAILED = 127


#: The fds a ``kind="airflow"`` launch passes, in this order.
AIRFLOW_FDS = ("channel", "logs", "notes")


class Prepare(msgspec.Struct, kw_only=True, tag=True):
    """Load a runner ahead of the launch, in the task's environment. Sent at most once."""

    kind: Literal["airflow"]
    env: dict[str, str]


class Launch(msgspec.Struct, kw_only=True, tag=True):
    """What the zygote becomes. Sent once over the control socket, last."""

    kind: Literal["python", "command", "airflow"]
    argv: list[str] = msgspec.field(default_factory=list)
    env: dict[str, str] = msgspec.field(default_factory=dict)
    cwd: str | None = None
    uid: int | None = None
    gid: int | None = None
    groups: list[int] = msgspec.field(default_factory=list)
    isolate_network: bool = False


class Zygote(msgspec.Struct, frozen=True):
    """The supervisor's handles on a forked zygote."""

    pid: int
    to_task: int
    from_task: int
    stdout: int
    stderr: int
    control: int

    def prepare(self, prepare: Prepare) -> None:
        """Have the zygote load a runner now; it still waits for the launch."""
        self._send(prepare, [])

    def launch(self, launch: Launch, fds: list[int] | None = None) -> None:
        """Tell the zygote what to become, handing it ``fds``; then close the control socket."""
        try:
            self._send(launch, fds or [])
        finally:
            os.close(self.control)

    def abandon(self) -> None:
        """Close the control socket without a launch: the zygote exits without running anything."""
        with contextlib.suppress(OSError):
            os.close(self.control)

    def _send(self, message: Prepare | Launch, fds: list[int]) -> None:
        data = msgspec.json.encode(message) + b"\n"
        with socket.socket(fileno=os.dup(self.control)) as sock:
            try:
                sent = socket.send_fds(sock, [data], fds) if fds else 0
                sock.sendall(data[sent:])
            except OSError:
                pass  # the zygote is gone; its exit status will say why


def task_environment(
    token: str, run_as: RunAs | None, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The supervisor's environment minus its own and the control plane's secrets, plus
    ``extra`` (an activity's ``env``)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("TASKVISOR_") and not is_control_plane_secret(k) and token not in v
    }
    if run_as is not None:
        env.update(HOME=run_as.home, USER=run_as.name, LOGNAME=run_as.name)
    env.update(extra or {})
    return env


def fork_zygote() -> Zygote:
    """Fork the task child. Call before reading secrets, importing clients or starting threads."""
    to_task_r, to_task_w = os.pipe2(os.O_CLOEXEC)
    from_task_r, from_task_w = os.pipe2(os.O_CLOEXEC)
    stdout_r, stdout_w = os.pipe2(os.O_CLOEXEC)
    stderr_r, stderr_w = os.pipe2(os.O_CLOEXEC)
    control_sockets = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    control_r, control_w = (sock.detach() for sock in control_sockets)
    supervisor_pid = os.getpid()
    # Objects that exist now are shared with the child copy-on-write; keep the cyclic GC of
    # either process from touching (and so copying) their pages.
    gc.freeze()
    pid = os.fork()
    if pid == 0:
        for fd in (to_task_w, from_task_r, stdout_r, stderr_r, control_w):
            os.close(fd)  # the supervisor's ends: holding them would hide EOF from us
        _zygote_main(
            supervisor_pid,
            channel_in=to_task_r,
            channel_out=from_task_w,
            stdout=stdout_w,
            stderr=stderr_w,
            control=control_r,
        )
    # Mirror the child's setpgid so a kill sent before the child ran still hits its group.
    with contextlib.suppress(PermissionError, ProcessLookupError):
        os.setpgid(pid, pid)  # fails if the child already exec'd or exited: fine
    for fd in (to_task_r, from_task_w, stdout_w, stderr_w, control_r):
        os.close(fd)
    return Zygote(pid, to_task_w, from_task_r, stdout_r, stderr_r, control_w)


def _zygote_main(
    supervisor_pid: int,
    *,
    channel_in: int,
    channel_out: int,
    stdout: int,
    stderr: int,
    control: int,
) -> NoReturn:
    try:
        _die_with(supervisor_pid)
        os.setpgid(0, 0)
        for sig in _RESET_SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, ())
        # Load the task runner (our code, not the task's) while the supervisor loads its
        # HTTP client on the other core; a command task's exec simply discards it.
        import sdk.runner  # noqa: F401

        launch, passed = _read_launch(control)
        if launch is None:
            os._exit(0)
        _become_task(
            supervisor_pid,
            launch,
            channel_in=channel_in,
            channel_out=channel_out,
            stdout=stdout,
            stderr=stderr,
            passed=passed,
        )
    except BaseException as exc:
        _last_words(stderr, f"taskvisor: could not start the task: {exc!r}\n")
        os._exit(LAUNCH_FAILED)


def _read_launch(control: int) -> tuple[Launch | None, list[int]]:
    """Follow the control socket to its end: prepare when told, return the launch (None if
    the supervisor closed it without one) and the fds passed with it."""
    decoder = msgspec.json.Decoder(Prepare | Launch)
    launch: Launch | None = None
    fds: list[int] = []
    pending = b""
    with socket.socket(fileno=control) as sock:
        while True:
            data, received, _, _ = socket.recv_fds(sock, 65536, len(AIRFLOW_FDS))
            fds += received
            if not data:
                break
            *lines, pending = (pending + data).split(b"\n")
            for line in lines:
                message = decoder.decode(line)
                if isinstance(message, Prepare):
                    _prepare(message)
                else:
                    launch = message
    return launch, fds


def _prepare(prepare: Prepare) -> None:
    os.environ.clear()
    os.environ.update(prepare.env)
    from taskvisor_airflow import task_child

    task_child.prepare()


def _die_with(supervisor_pid: int) -> None:
    """SIGKILL this process when the supervisor dies; exit now if it already has."""
    set_parent_death_signal(signal.SIGKILL)
    if os.getppid() != supervisor_pid:  # it died before the signal was armed
        os._exit(LAUNCH_FAILED)


def _become_task(
    supervisor_pid: int,
    launch: Launch,
    *,
    channel_in: int,
    channel_out: int,
    stdout: int,
    stderr: int,
    passed: list[int],
) -> NoReturn:
    if launch.isolate_network:
        from supervisor import netns

        netns.enter_loopback_only_namespace()
    if launch.uid is not None and launch.gid is not None:
        os.setgroups(launch.groups)
        os.setgid(launch.gid)
        os.setuid(launch.uid)
        _die_with(supervisor_pid)  # the kernel clears the parent-death signal on setuid
    if launch.kind == "airflow":
        if len(passed) != len(AIRFLOW_FDS):
            raise RuntimeError(f"the launch passed {len(passed)} fds, expected {AIRFLOW_FDS}")
        channel, logs, notes = passed
        os.dup2(channel, 0)
        os.dup2(stdout, 1)
        os.dup2(stderr, 2)
        logs, notes = os.dup(logs), os.dup(notes)  # fresh, known fds above 2
        keep = {0, 1, 2, logs, notes}
    else:
        os.dup2(channel_in, 0)
        os.dup2(channel_out, 1)
        os.dup2(stderr, 2)
        keep = {0, 1, 2}
        if launch.kind == "python":
            stdout = os.dup(stdout)  # a fresh, known fd above 2
            keep.add(stdout)
    _close_fds_except(keep)
    if launch.cwd is not None:
        os.chdir(launch.cwd)
    if launch.kind == "command":
        try:
            os.execvpe(launch.argv[0], launch.argv, launch.env)  # noqa: S606 - no shell, on purpose
        except OSError as exc:
            _last_words(2, f"taskvisor: cannot execute {launch.argv[0]!r}: {exc.strerror}\n")
            os._exit(LAUNCH_FAILED)
    os.environ.clear()
    os.environ.update(launch.env)
    if launch.kind == "airflow":
        from taskvisor_airflow import task_child

        task_child.main(logs=logs, notes=notes)
    if launch.cwd is not None and launch.cwd not in sys.path:
        sys.path.insert(0, launch.cwd)
    from sdk.runner import main

    main(stdout)


def _close_fds_except(keep: set[int]) -> None:
    try:
        open_fds = sorted(int(name) for name in os.listdir("/proc/self/fd"))
    except OSError:
        open_fds = list(range(3, 1024))
    for fd in open_fds:
        if fd not in keep:
            with contextlib.suppress(OSError):
                os.close(fd)


def _last_words(fd: int, message: str) -> None:
    with contextlib.suppress(OSError):
        os.write(fd, message.encode(errors="replace"))
