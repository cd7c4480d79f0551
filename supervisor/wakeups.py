"""How the supervisor's loop is woken: by worker threads, and by signals.

The loop thread owns every file descriptor and blocks in one ``select``; other threads
never touch the task's pipes. They post actions to an :class:`Inbox`, whose pipe wakes the
loop. SIGTERM and SIGINT arrive through :class:`SignalPipe` as bytes on another pipe, so a
signal is handled by the loop like any other event instead of interrupting it.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
from collections.abc import Callable

__all__ = ["Inbox", "SignalPipe"]


class Inbox:
    """Actions posted by worker threads for the loop thread to run, with a wake-up pipe."""

    def __init__(self) -> None:
        self.read_fd, self._write_fd = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._items: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self.closed = False

    def post(self, action: Callable[[], None]) -> None:
        """Queue ``action`` for the loop thread and wake it (callable from any thread)."""
        if self.closed:
            return  # a worker finished after the try ended: nobody is listening
        self._items.put(action)
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._write_fd, b"\0")

    def drain(self) -> list[Callable[[], None]]:
        """Everything posted so far (loop thread only)."""
        with contextlib.suppress(BlockingIOError):
            while os.read(self.read_fd, 4096):
                pass
        actions = []
        with contextlib.suppress(queue.Empty):
            while True:
                actions.append(self._items.get_nowait())
        return actions

    def close(self) -> None:
        """Stop accepting posts and close the pipe."""
        self.closed = True
        os.close(self.read_fd)
        os.close(self._write_fd)


class SignalPipe:
    """SIGTERM and SIGINT delivered to a pipe the loop watches, instead of killing us."""

    def __init__(self) -> None:
        self.read_fd, self._write_fd = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        # A parent (Celery, a shell) may have left SIGCHLD ignored: children would then be
        # reaped by the kernel and their exit status lost.
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
        signal.set_wakeup_fd(self._write_fd, warn_on_full_buffer=False)
        for sig in _STOP_SIGNALS:
            signal.signal(sig, _ignore)

    def close(self) -> None:
        """Restore the default dispositions and close the pipe."""
        signal.set_wakeup_fd(-1)
        for sig in _STOP_SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        os.close(self._write_fd)
        os.close(self.read_fd)


_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _ignore(signum: int, frame: object) -> None:
    """Python-level handler; the wake-up fd carries the signal to the loop."""
