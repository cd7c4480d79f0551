"""The context of a running task: who it is, its dag run and its run settings."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import msgspec

from comms.api import DagRun, TaskInstance
from comms.messages import StartupDetails
from sdk import _session

__all__ = ["Context", "get_context"]


class Context(msgspec.Struct, frozen=True, kw_only=True):
    """What a task knows about its try. Passed to an entrypoint that takes one argument.

    ``params`` is the dag run's ``conf`` (``{}`` when it has none).
    """

    ti: TaskInstance
    dag_run: DagRun
    start_date: dt.datetime
    max_tries: int
    should_retry: bool = False
    params: dict[str, Any] = msgspec.field(default_factory=dict)
    task_reschedule_count: int = 0
    #: Set when resuming after a deferral: the method to resume in and its arguments.
    next_method: str | None = None
    next_kwargs: dict[str, Any] | str | None = None

    @classmethod
    def from_startup(cls, startup: StartupDetails) -> Context:
        """The context described by the supervisor's :class:`StartupDetails`."""
        run = startup.ti_context
        return cls(
            ti=startup.ti,
            dag_run=run.dag_run,
            start_date=startup.start_date,
            max_tries=run.max_tries,
            should_retry=run.should_retry,
            params=dict(run.dag_run.conf or {}),
            task_reschedule_count=run.task_reschedule_count,
            next_method=run.next_method,
            next_kwargs=run.next_kwargs,
        )

    @property
    def id(self) -> uuid.UUID:
        """The task instance id."""
        return self.ti.id

    @property
    def dag_id(self) -> str:
        """The dag id."""
        return self.ti.dag_id

    @property
    def task_id(self) -> str:
        """The task id."""
        return self.ti.task_id

    @property
    def run_id(self) -> str:
        """The dag run id."""
        return self.ti.run_id

    @property
    def try_number(self) -> int:
        """Which try this is, from 1."""
        return self.ti.try_number

    @property
    def map_index(self) -> int:
        """The map index; -1 for an unmapped task."""
        return self.ti.map_index

    @property
    def logical_date(self) -> dt.datetime | None:
        """The dag run's logical date (``None`` for runs without one)."""
        return self.dag_run.logical_date


def get_context() -> Context:
    """The context of the running task.

    Raises :class:`~sdk.errors.NotInSupervisorError` outside a supervised task.
    """
    return _session.current("get_context()").context
