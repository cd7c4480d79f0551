"""The ``TaskOutcome`` branch of taskvisor's error tree: how task code ends a try early.

::

    TaskOutcome (BaseException)
    ├── Skip          -> skipped
    ├── Fail          -> failed, no retry
    ├── Defer         -> deferred: a trigger runs, then the task resumes in ``method_name``
    └── Reschedule    -> up_for_reschedule: run again at ``at``

They derive from ``BaseException`` so that a task's broad ``except Exception`` cannot swallow
a deliberate outcome. The runner turns each into the matching terminal message.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

__all__ = ["Defer", "Fail", "Reschedule", "Skip", "TaskOutcome"]


class TaskOutcome(BaseException):
    """Base of the outcomes task code raises to end its try early."""


class Skip(TaskOutcome):
    """End the try as *skipped*. The argument, if any, is the reason."""


class Fail(TaskOutcome):
    """End the try as *failed*, without retry. The argument, if any, is the reason."""


class Defer(TaskOutcome):
    """Hand the task to a trigger; it resumes in ``method_name(**kwargs)`` when the trigger fires.

    ``classpath`` names the trigger class, ``trigger_kwargs`` its arguments; ``timeout`` (a
    :class:`~datetime.timedelta` or seconds) bounds the wait. Arguments must be JSON values;
    in ``trigger_kwargs`` also ``timedelta``, ``date`` and timezone-aware ``datetime``, sent
    in the tagged form Airflow's triggerer decodes.
    """

    def __init__(
        self,
        classpath: str,
        trigger_kwargs: dict[str, Any] | None = None,
        method_name: str = "execute_complete",
        kwargs: dict[str, Any] | None = None,
        timeout: dt.timedelta | float | None = None,
    ) -> None:
        self.classpath = classpath
        self.trigger_kwargs: dict[str, Any] = dict(trigger_kwargs or {})
        self.method_name = method_name
        self.kwargs: dict[str, Any] = dict(kwargs or {})
        self.timeout = timeout
        super().__init__(f"deferred to {classpath}")

    @property
    def timeout_seconds(self) -> float | None:
        """``timeout`` in seconds, or ``None`` for no timeout."""
        if isinstance(self.timeout, dt.timedelta):
            return self.timeout.total_seconds()
        return None if self.timeout is None else float(self.timeout)


class Reschedule(TaskOutcome):
    """Run this task again at ``at`` (a timezone-aware datetime), e.g. a sensor not yet met."""

    def __init__(self, at: dt.datetime) -> None:
        if at.tzinfo is None or at.utcoffset() is None:
            raise ValueError(f"Reschedule needs a timezone-aware datetime, got naive {at!r}")
        self.at = at
        super().__init__(f"rescheduled at {at.isoformat()}")
