"""The one way a task's process tree comes to an end, and the deadlines that drive it.

:class:`Stopper` owns every deadline of a supervised try and nothing else:

- the **limits** of a running task: the execution ``timeout``, and ``overtime`` after its
  terminal message; one that passes while the main process runs stops the task;
- the **kill grace**: a stop sends Cancel to the task, SIGTERM to its process group and every
  descendant, then SIGKILL to all of them when the grace runs out;
- the **sweep**: once the main process exited, whatever is left of its tree is stopped the
  same way (the supervisor is a child subreaper, so escaped processes are still found);
- the **drain**: when the whole tree is gone, the pipes are read for a bounded time more.

The relay loop calls :meth:`Stopper.tick` after every pass and sleeps at most
:meth:`Stopper.wait_time`; anything that wants the task stopped calls
:meth:`Stopper.request` with a :class:`~supervisor.outcome.StopReason`.
"""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Callable

from supervisor.config import SupervisorConfig
from supervisor.outcome import StopReason
from supervisor.process import TaskProcess
from supervisor.tasklog import TaskLog

__all__ = ["Stopper"]

#: How often to look for descendants left behind once the main process exited.
_DESCENDANT_POLL = 0.05
#: How long the final SIGKILL waits for the kernel to tear the tree down.
_KILL_WAIT = 5.0


class Stopper:
    """Stops the task's tree by one policy (Cancel, SIGTERM, grace, SIGKILL, reap), whatever
    the reason, and tells the loop when the tree is gone and drained."""

    def __init__(
        self,
        process: TaskProcess,
        config: SupervisorConfig,
        log: TaskLog,
        *,
        cancel: Callable[[StopReason], None],
    ) -> None:
        self.process = process
        self.config = config
        self.log = log
        self._cancel = cancel
        #: Why the task was stopped; None while it ends by itself.
        self.reason: StopReason | None = None
        #: Whether the main process and every descendant are gone and reaped.
        self.tree_gone = False
        self._limits: dict[StopReason, tuple[float, str, str, dict[str, float]]] = {}
        self._kill_at: float | None = None
        self._drain_until: float | None = None

    # --- asking -----------------------------------------------------------------------

    def limit(
        self, reason: StopReason, seconds: float, level: str, event: str, **fields: float
    ) -> None:
        """Stop the task with ``reason`` if its main process still runs ``seconds`` from now;
        ``event`` is logged at ``level`` when that happens."""
        self._limits[reason] = (time.monotonic() + seconds, level, event, fields)

    def lift(self, reason: StopReason) -> None:
        """Drop the limit set for ``reason``, if any."""
        self._limits.pop(reason, None)

    def request(self, reason: StopReason) -> None:
        """Stop the task: Cancel, SIGTERM to the whole tree, SIGKILL after the grace.

        The first reason is kept, except that the server's word overrides any other (it
        decides that no state is reported). A stop already under way is not restarted.
        """
        if reason is StopReason.SERVER or self.reason is None:
            self.reason = reason
        if self._kill_at is not None:
            return
        self._cancel(reason)
        self._terminate_tree()

    def kill_now(self, reason: StopReason | None = None) -> None:
        """SIGKILL the whole tree at once and wait for it (a second signal, a supervisor bug);
        ``reason``, if given, replaces the one recorded."""
        if reason is not None:
            self.reason = reason
        alive = self.process.kill_tree_and_reap(time.monotonic() + _KILL_WAIT)
        if alive:
            self.log.supervisor("error", "Processes of the task survived SIGKILL", pids=alive)
        self._kill_at = None
        if self.process.status is not None:
            self._tree_is_gone()

    # --- the loop's side ----------------------------------------------------------------

    def task_exited(self) -> None:
        """The main process ended: its limits no longer apply; sweep what it left."""
        self._limits.clear()
        self._sweep(time.monotonic())

    def tick(self, now: float) -> None:
        """Act on every deadline that has passed by ``now``."""
        for reason, (at, level, event, fields) in list(self._limits.items()):
            if now >= at and self.process.status is None:
                del self._limits[reason]
                self.log.supervisor(level, event, **fields)
                self.request(reason)
        if self.process.status is not None and not self.tree_gone:
            self._sweep(now)
        elif self._kill_at is not None and now >= self._kill_at:
            self.kill_now()

    def wait_time(self, now: float) -> float | None:
        """Seconds until the next deadline (None: none is set)."""
        deadlines = [at for at, *_ in self._limits.values()]
        deadlines += [d for d in (self._kill_at, self._drain_until) if d is not None]
        if self.process.status is not None and not self.tree_gone:
            deadlines.append(now + _DESCENDANT_POLL)
        return max(0.0, min(deadlines) - now) if deadlines else None

    def drained(self, now: float) -> bool:
        """Whether the pipes need no more reading: the tree is gone and the drain time over."""
        return self.tree_gone and self._drain_until is not None and now >= self._drain_until

    def clean_up(self) -> None:
        """Whatever happened before (even a supervisor bug), leave no process of the task."""
        self.process.kill_tree_and_reap(time.monotonic() + _KILL_WAIT)

    # --- the policy ---------------------------------------------------------------------

    def _terminate_tree(self) -> None:
        self.process.signal_group(signal.SIGTERM)
        for proc in self.process.descendants():
            with contextlib.suppress(Exception):  # gone, or not ours to signal any more
                proc.terminate()
        self._kill_at = time.monotonic() + self.config.kill_grace

    def _sweep(self, now: float) -> None:
        # The main process is gone; what is left of its tree must go too, within the grace.
        if not self.process.reap_dead_descendants():
            self._tree_is_gone()
        elif self._kill_at is None:
            self.log.supervisor("warning", "Task left processes behind; stopping them")
            self._terminate_tree()
        elif now >= self._kill_at:
            self.kill_now()

    def _tree_is_gone(self) -> None:
        if not self.tree_gone:
            self.tree_gone = True
            self._kill_at = None
            self._drain_until = time.monotonic() + self.config.drain_timeout
