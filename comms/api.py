"""Execution API data models: Apache Airflow 3's wire shapes, as msgspec structs.

The supervisor encodes requests and decodes responses with these; the reference server does
the reverse. Field names and optionality follow the Execution API version pinned in
:data:`API_VERSION` (see ``docs/airflow.md``). Responses are decoded leniently: unknown fields
from a newer server are ignored, so only the fields taskvisor reads are declared.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any, Literal, cast

import msgspec

__all__ = [
    "API_VERSION",
    "TOKEN_AUDIENCE",
    "ConnectionResponse",
    "DagRun",
    "ErrorDetail",
    "TIDeferredStatePayload",
    "TIEnterRunningPayload",
    "TIHeartbeatInfo",
    "TIRescheduleStatePayload",
    "TIRetryStatePayload",
    "TIRunContext",
    "TIStateUpdate",
    "TISuccessStatePayload",
    "TITerminalStatePayload",
    "TaskInstance",
    "VariablePostBody",
    "VariableResponse",
    "XComResponse",
    "state_update_decoder",
]

#: The ``Airflow-API-Version`` taskvisor sends on every request: the version Airflow 3.3's own
#: task SDK sends, so an Airflow api-server treats us exactly like its own supervisor.
API_VERSION = "2026-06-30"

#: The JWT audience of task tokens (``[execution_api] jwt_audience`` default).
TOKEN_AUDIENCE = "urn:airflow.apache.org:task"  # noqa: S105 (an audience, not a secret)


class TaskInstance(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Identity of one task try."""

    id: uuid.UUID
    dag_id: str
    task_id: str
    run_id: str
    try_number: int
    map_index: int = -1

    def log_path(self) -> str:
        """Airflow's relative log path of this try (what ``[logging] base_log_folder`` holds):
        ``dag_id=D/run_id=R/task_id=T/[map_index=I/]attempt=N.log``."""
        mapped = f"map_index={self.map_index}/" if self.map_index >= 0 else ""
        return (
            f"dag_id={self.dag_id}/run_id={self.run_id}/task_id={self.task_id}/"
            f"{mapped}attempt={self.try_number}.log"
        )


class DagRun(msgspec.Struct, kw_only=True):
    """The dag run a task instance belongs to (``TIRunContext.dag_run``)."""

    dag_id: str
    run_id: str
    logical_date: dt.datetime | None = None
    data_interval_start: dt.datetime | None = None
    data_interval_end: dt.datetime | None = None
    run_after: dt.datetime | None = None
    start_date: dt.datetime | None = None
    end_date: dt.datetime | None = None
    clear_number: int = 0
    run_type: str = "manual"
    state: str | None = None
    conf: dict[str, Any] | None = None
    team_name: str | None = None


class TIEnterRunningPayload(msgspec.Struct, kw_only=True):
    """Body of ``PATCH /task-instances/{id}/run``."""

    state: Literal["running"] = "running"
    hostname: str
    unixname: str
    pid: int
    start_date: dt.datetime


class TIRunContext(msgspec.Struct, kw_only=True):
    """Answer of ``PATCH /task-instances/{id}/run``: what the task needs to run."""

    dag_run: DagRun
    max_tries: int
    should_retry: bool = False
    task_reschedule_count: int = 0
    variables: list[dict[str, Any]] = msgspec.field(default_factory=list)
    connections: list[dict[str, Any]] = msgspec.field(default_factory=list)
    xcom_keys_to_clear: list[str] = msgspec.field(default_factory=list)
    next_method: str | None = None
    next_kwargs: dict[str, Any] | str | None = None


class TIHeartbeatInfo(msgspec.Struct, kw_only=True):
    """Body of ``PUT /task-instances/{id}/heartbeat``."""

    hostname: str
    pid: int


class TISuccessStatePayload(msgspec.Struct, kw_only=True, tag="success", tag_field="state"):
    """``PATCH .../state`` body for success."""

    end_date: dt.datetime
    task_outlets: list[dict[str, Any]] = msgspec.field(default_factory=list)
    outlet_events: list[dict[str, Any]] = msgspec.field(default_factory=list)


class TITerminalStatePayload(msgspec.Struct, kw_only=True):
    """``PATCH .../state`` body for failed, skipped and removed."""

    state: Literal["failed", "skipped", "removed"]
    end_date: dt.datetime


class TIRetryStatePayload(msgspec.Struct, kw_only=True, tag="up_for_retry", tag_field="state"):
    """``PATCH .../state`` body for up_for_retry."""

    end_date: dt.datetime


class TIDeferredStatePayload(msgspec.Struct, kw_only=True, tag="deferred", tag_field="state"):
    """``PATCH .../state`` body for deferred: what the triggerer must run, and how to resume."""

    classpath: str
    trigger_kwargs: dict[str, Any] = msgspec.field(default_factory=dict)
    trigger_timeout: dt.timedelta | None = None
    next_method: str = "execute_complete"
    next_kwargs: dict[str, Any] = msgspec.field(default_factory=dict)


class TIRescheduleStatePayload(
    msgspec.Struct, kw_only=True, tag="up_for_reschedule", tag_field="state"
):
    """``PATCH .../state`` body for up_for_reschedule."""

    reschedule_date: dt.datetime
    end_date: dt.datetime


#: Any body of ``PATCH /task-instances/{id}/state``. ``TITerminalStatePayload`` carries its
#: state as a plain field, so the server decodes it by peeking at ``state`` first.
TIStateUpdate = (
    TISuccessStatePayload
    | TITerminalStatePayload
    | TIRetryStatePayload
    | TIDeferredStatePayload
    | TIRescheduleStatePayload
)

_TAGGED_STATES = msgspec.json.Decoder(
    TISuccessStatePayload | TIRetryStatePayload | TIDeferredStatePayload | TIRescheduleStatePayload
)
_TERMINAL = msgspec.json.Decoder(TITerminalStatePayload)


class _StateOnly(msgspec.Struct):
    state: str


_STATE_ONLY = msgspec.json.Decoder(_StateOnly)


def state_update_decoder(body: bytes) -> TIStateUpdate:
    """Decode a ``PATCH .../state`` body into its payload type.

    Raises ``msgspec.ValidationError`` (or ``DecodeError``) naming what is wrong.
    """
    state = _STATE_ONLY.decode(body).state
    if state in ("failed", "skipped", "removed"):
        return _TERMINAL.decode(body)
    return cast("TIStateUpdate", _TAGGED_STATES.decode(body))


class VariableResponse(msgspec.Struct, kw_only=True):
    """Answer of ``GET /variables/{key}``."""

    key: str
    value: str | None = None


class VariablePostBody(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Body of ``PUT /variables/{key}`` (Airflow names the value ``val`` on the wire)."""

    val: str | None
    description: str | None = None


class ConnectionResponse(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Answer of ``GET /connections/{conn_id}``; ``extra`` is a JSON string."""

    conn_id: str
    conn_type: str
    host: str | None = None
    schema: str | None = None
    login: str | None = None
    password: str | None = None
    port: int | None = None
    extra: str | None = None


class XComResponse(msgspec.Struct, kw_only=True):
    """Answer of ``GET /xcoms/{dag_id}/{run_id}/{task_id}/{key}``. ``value`` (any JSON) stays
    encoded: the supervisor passes it to the task as it came."""

    key: str
    value: msgspec.Raw


class ErrorDetail(msgspec.Struct, kw_only=True):
    """Airflow's error body: ``{"detail": ...}``, a string or ``{reason, message, ...}``."""

    detail: Any = None
