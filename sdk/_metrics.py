"""``metrics``: counters, gauges and timings, sent to the supervisor as ``Metric``."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Literal

from comms.messages import Metric
from sdk import _session

__all__ = ["TaskMetrics", "metrics"]


class TaskMetrics:
    """Emit metric samples: ``metrics.incr("rows", 10, tags={"table": "t"})``."""

    def incr(self, name: str, count: float = 1, tags: Mapping[str, str] | None = None) -> None:
        """Add ``count`` to counter ``name``."""
        self._send("incr", name, count, tags)

    def gauge(self, name: str, value: float, tags: Mapping[str, str] | None = None) -> None:
        """Set gauge ``name`` to ``value``."""
        self._send("gauge", name, value, tags)

    def timing(
        self,
        name: str,
        ms_or_timedelta: float | dt.timedelta,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        """Record a duration for ``name``: milliseconds, or a :class:`~datetime.timedelta`."""
        if isinstance(ms_or_timedelta, dt.timedelta):
            ms = ms_or_timedelta.total_seconds() * 1000.0
        else:
            ms = float(ms_or_timedelta)
        self._send("timing", name, ms, tags)

    def _send(
        self,
        kind: Literal["incr", "gauge", "timing"],
        name: str,
        value: float,
        tags: Mapping[str, str] | None,
    ) -> None:
        sample = Metric(
            kind=kind,
            name=name,
            value=float(value),
            tags={str(k): str(v) for k, v in (tags or {}).items()},
        )
        _session.notify(f"metrics.{kind}()", sample)


#: The task's metrics emitter.
metrics = TaskMetrics()
