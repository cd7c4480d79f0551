"""The task's process tree: exit status from a pidfd, and the one way to stop it.

Exit is decided from the process (``pidfd`` + ``waitpid``), never from pipe EOF. This module
has the means; the policy (SIGTERM to the process group and every descendant,
``SupervisorConfig.kill_grace`` seconds, then :meth:`TaskProcess.kill_tree_and_reap`) is
:class:`supervisor.stopping.Stopper`'s alone. The supervisor is a child subreaper, so a
descendant that escaped with ``setsid`` is re-parented to it and is still found, killed and
reaped.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from typing import TYPE_CHECKING

import msgspec

if TYPE_CHECKING:
    import psutil

__all__ = ["ExitStatus", "TaskProcess", "signal_name"]


class ExitStatus(msgspec.Struct, frozen=True):
    """How the task's main process ended. ``code`` and ``signal`` are both None if unknown."""

    code: int | None = None
    signal: int | None = None

    @property
    def clean(self) -> bool:
        """True only for a known exit code 0."""
        return self.code == 0

    def describe(self) -> str:
        """Human wording, e.g. ``exit code 3`` or ``killed by SIGKILL``."""
        if self.signal is not None:
            return f"killed by {signal_name(self.signal)}"
        if self.code is not None:
            return f"exit code {self.code}"
        return "unknown exit status (reaped by someone else)"


def signal_name(signum: int) -> str:
    """``SIGKILL`` for 9; ``signal 40`` for a number without a name (real-time signals)."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


class TaskProcess:
    """The task's main process (also its process group leader) and its descendants."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.pidfd = os.pidfd_open(pid)
        self.status: ExitStatus | None = None
        self._me: psutil.Process | None = None

    def poll(self) -> ExitStatus | None:
        """Reap the main process if it exited; return its status (None while it runs)."""
        if self.status is not None:
            return self.status
        try:
            pid, raw = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            # Someone else reaped it (an inherited SIGCHLD handler): the status is lost.
            self.status = ExitStatus()
            return self.status
        if pid == 0:
            return None
        if os.WIFSIGNALED(raw):
            self.status = ExitStatus(signal=os.WTERMSIG(raw))
        else:
            self.status = ExitStatus(code=os.waitstatus_to_exitcode(raw))
        return self.status

    def signal_group(self, sig: signal.Signals) -> None:
        """Send ``sig`` to the task's process group (the main process and what stayed in it)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)

    def reap_dead_descendants(self) -> bool:
        """Reap every process of the task's tree that died; return whether any still lives.

        Cheap, no ``/proc`` scan: the supervisor is a child subreaper, so it is an ancestor
        of every such process and has one only while ``waitpid`` still finds a child.
        """
        return self._reap_children()

    def descendants(self) -> list[psutil.Process]:
        """Every living descendant of the supervisor: the task tree, including escaped processes."""
        import psutil  # only needed when something is left to stop: keep it off start-up

        if self._me is None:
            self._me = psutil.Process()
        try:
            children = self._me.children(recursive=True)
        except psutil.Error:
            return []
        alive = []
        for proc in children:
            with contextlib.suppress(psutil.Error):  # gone between listing and looking
                if proc.status() != psutil.STATUS_ZOMBIE:
                    alive.append(proc)
        return alive

    def kill_tree_and_reap(self, deadline: float) -> list[int]:
        """SIGKILL the group and every descendant, and wait for all of them until ``deadline``.

        Returns the pids still alive at the deadline (empty when everything was reaped).
        """
        self.signal_group(signal.SIGKILL)
        while self._reap_children():
            alive = self.descendants()
            for proc in alive:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
            if time.monotonic() >= deadline:
                return [p.pid for p in alive]
            time.sleep(0.01)  # polling for kernel teardown of killed processes; bounded
        return []

    def _reap_children(self) -> bool:
        """Reap every dead child (re-parented orphans too); True while living ones remain."""
        while True:
            try:
                pid, raw = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return False
            if pid == 0:
                return True
            if pid == self.pid and self.status is None:
                if os.WIFSIGNALED(raw):
                    self.status = ExitStatus(signal=os.WTERMSIG(raw))
                else:
                    self.status = ExitStatus(code=os.waitstatus_to_exitcode(raw))

    def close(self) -> None:
        """Release the pidfd."""
        with contextlib.suppress(OSError):
            os.close(self.pidfd)
