"""Heartbeats on their own thread, so nothing the task does can delay them.

The thread sends ``PUT .../heartbeat`` every ``interval`` seconds until stopped. It reports
to the supervisor loop through a callback:

* 404, 409 or 410: the server says the task must stop (``on_stop``);
* any other failure is tolerated until no heartbeat succeeded for ``tolerance`` seconds, then
  ``on_lost``. Heartbeats are sent once per interval and never retried (a retried heartbeat
  would stack on the next one).

:meth:`Heartbeat.stop` is called the moment a terminal state is recorded: no heartbeat is
sent after that, so a finished task never sees a spurious 409.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable

from comms.api import TIHeartbeatInfo
from supervisor.client import ExecutionApiClient
from supervisor.errors import ApiError, Conflict, Gone, NotFound, ServerResponseError

__all__ = ["Heartbeat"]


class Heartbeat:
    """Periodic heartbeats for one task try."""

    def __init__(
        self,
        client: ExecutionApiClient,
        ti_id: uuid.UUID,
        info: TIHeartbeatInfo,
        *,
        interval: float,
        tolerance: float,
        on_stop: Callable[[ServerResponseError], None],
        on_lost: Callable[[str], None],
        on_failure: Callable[[str], None],
    ) -> None:
        self._client = client
        self._ti_id = ti_id
        self._info = info
        self._interval = interval
        self._tolerance = tolerance
        self._on_stop = on_stop
        self._on_lost = on_lost
        self._on_failure = on_failure
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)
        self.sent = 0
        self.last_success = time.monotonic()

    def start(self) -> None:
        """Start beating; the first heartbeat goes out one interval from now."""
        self._thread.start()

    def stop(self) -> None:
        """Send no further heartbeat (one already in flight completes)."""
        self._stopped.set()

    def join(self, timeout: float) -> None:
        """Wait for the thread to end."""
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        # A fixed schedule: a slow answer delays only its own beat, not every later one by
        # a whole interval. Beats missed while one was in flight are skipped, not bunched.
        due = time.monotonic() + self._interval
        while not self._stopped.wait(max(0.0, due - time.monotonic())):
            due = max(due + self._interval, time.monotonic())
            try:
                self._client.heartbeat(self._ti_id, self._info)
            except (NotFound, Conflict, Gone) as exc:
                if not self._stopped.is_set():
                    self._on_stop(exc)
                return
            except ApiError as exc:
                self.sent += 1
                silent_for = time.monotonic() - self.last_success
                if self._stopped.is_set():
                    return
                if silent_for >= self._tolerance:
                    self._on_lost(f"no successful heartbeat for {silent_for:.0f} s: {exc}")
                    return
                self._on_failure(
                    f"heartbeat failed ({silent_for:.0f} s since the last success): {exc}"
                )
            else:
                self.sent += 1
                self.last_success = time.monotonic()
