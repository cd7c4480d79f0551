"""Messages of the task channel: what the task and the supervisor say to each other.

Each message is one JSON object on one line, tagged by ``type`` (the class name).

* Requests (task -> supervisor) carry an integer ``id``; the supervisor answers each with
  exactly one response carrying the same ``id``: a result type or :class:`ErrorResponse`.
* Notifications (:class:`Hello`, :class:`Log`, :class:`Metric`, :class:`Cancel`) carry no
  ``id`` and get no answer.
* The supervisor sends nothing unprompted except :class:`StartupDetails` (its first line) and
  :class:`Cancel`. The task's first line is :class:`Hello`. Both state
  :data:`PROTOCOL_VERSION`.

``docs/protocol.md`` is the prose version of this module; ``docs/protocol.schema.json`` is
generated from it (``python -m comms.schema``).
"""

from __future__ import annotations

import datetime as dt
import enum
from typing import Annotated, Any, Literal

import msgspec

from comms.api import ConnectionResponse, TaskInstance, TIRunContext

__all__ = [
    "PROTOCOL_VERSION",
    "UNREADABLE_ID",
    "Cancel",
    "ConnectionResult",
    "DataRequest",
    "DeferTask",
    "DeleteVariable",
    "DeleteXCom",
    "ErrorCode",
    "ErrorResponse",
    "GetConnection",
    "GetVariable",
    "GetXCom",
    "Hello",
    "JsonValue",
    "Log",
    "MaskSecret",
    "Metric",
    "OKResponse",
    "PushedConnection",
    "PushedValues",
    "PutVariable",
    "Request",
    "RescheduleTask",
    "Response",
    "RetryTask",
    "SetXCom",
    "StartupDetails",
    "SucceedTask",
    "TaskMessage",
    "TaskState",
    "TerminalRequest",
    "ToTask",
    "VariableResult",
    "XComResult",
    "state_of",
]

#: Version of this protocol. Both sides state it in their first message.
PROTOCOL_VERSION = 1

#: Any JSON value.
JsonValue = Any

#: The ``id`` of an :class:`ErrorResponse` about a line whose request id could not be read.
#: Never a request's id: those are integers >= 0.
UNREADABLE_ID = -1


class _Message(
    msgspec.Struct, kw_only=True, tag_field="type", tag=True, forbid_unknown_fields=True
):
    """Base of every message: tagged by ``type`` = class name; unknown fields rejected."""


# Ids are checked as a line is decoded: a request with a negative id is refused like any
# other bad line, so -1 keeps its one meaning in responses (UNREADABLE_ID).
class _Request(_Message, kw_only=True):
    id: Annotated[
        int,
        msgspec.Meta(ge=0, description="Chosen by the task; echoed in the one response to it."),
    ]


class _Response(_Message, kw_only=True):
    id: Annotated[int, msgspec.Meta(ge=0, description="The id of the request answered.")]


# --- task -> supervisor: notifications -------------------------------------------------


class Hello(_Message, kw_only=True):
    """The task's first line: which protocol it speaks and what it is."""

    protocol_version: int
    sdk: str = "unknown"


class Log(_Message, kw_only=True):
    """A structured log record from the task (no response)."""

    event: str
    level: Literal["debug", "info", "warning", "error", "critical"] = "info"
    logger: str = "task"
    timestamp: dt.datetime | None = None
    fields: dict[str, JsonValue] = msgspec.field(default_factory=dict)


class Metric(_Message, kw_only=True):
    """A metric sample from the task (no response)."""

    kind: Literal["incr", "gauge", "timing"]
    name: str
    value: float = 1.0
    tags: dict[str, str] = msgspec.field(default_factory=dict)


# --- task -> supervisor: requests ------------------------------------------------------


class GetVariable(_Request, kw_only=True):
    """Read a variable. Answer: :class:`VariableResult` or ``VARIABLE_NOT_FOUND``."""

    key: str


class PutVariable(_Request, kw_only=True):
    """Create or replace a variable. Answer: :class:`OKResponse`."""

    key: str
    value: str
    description: str | None = None


class DeleteVariable(_Request, kw_only=True):
    """Delete a variable. Answer: :class:`OKResponse`."""

    key: str


class GetConnection(_Request, kw_only=True):
    """Read a connection. Answer: :class:`ConnectionResult` or ``CONNECTION_NOT_FOUND``."""

    conn_id: str


class GetXCom(_Request, kw_only=True):
    """Read an XCom; ``dag_id`` and ``run_id`` default to the task's own.

    Answer: :class:`XComResult` or ``XCOM_NOT_FOUND``.
    """

    key: str = "return_value"
    task_id: str
    dag_id: str | None = None
    run_id: str | None = None
    map_index: int = -1


class SetXCom(_Request, kw_only=True):
    """Push an XCom as this task instance (a task can only write its own). Answer: OK.

    ``value`` is any JSON value; in Python it stays encoded (:class:`msgspec.Raw`), so the
    supervisor forwards it to the server without ever building it as objects. Build one with
    ``msgspec.Raw(msgspec.json.encode(value))``.
    """

    key: str
    value: msgspec.Raw


class DeleteXCom(_Request, kw_only=True):
    """Delete one of this task instance's XComs. Answer: :class:`OKResponse`."""

    key: str


class MaskSecret(_Request, kw_only=True):
    """Register a value to be masked in every output of this task. Answer: OK.

    A request, not a notification, so the task knows the value is masked before it prints it.
    """

    value: JsonValue
    name: str | None = None


# --- task -> supervisor: terminal requests (exactly one per try) -----------------------


class SucceedTask(_Request, kw_only=True):
    """The task succeeded. Reported to the server at once."""

    end_date: dt.datetime | None = None


class RetryTask(_Request, kw_only=True):
    """The task failed and may be retried. Reported to the server at once."""

    end_date: dt.datetime | None = None
    reason: str | None = None


class TaskState(_Request, kw_only=True):
    """The task failed without retry, or skipped. Reported after the process exits."""

    state: Literal["failed", "skipped"]
    end_date: dt.datetime | None = None
    reason: str | None = None


class DeferTask(_Request, kw_only=True):
    """Hand the task to a trigger; resume in ``next_method`` when it fires."""

    classpath: str
    trigger_kwargs: dict[str, JsonValue] = msgspec.field(default_factory=dict)
    trigger_timeout: float | None = None
    next_method: str = "execute_complete"
    next_kwargs: dict[str, JsonValue] = msgspec.field(default_factory=dict)


class RescheduleTask(_Request, kw_only=True):
    """Run this task again at ``reschedule_date`` (sensors in reschedule mode)."""

    reschedule_date: dt.datetime
    end_date: dt.datetime | None = None


# --- supervisor -> task -----------------------------------------------------------------


class PushedConnection(ConnectionResponse, kw_only=True, forbid_unknown_fields=True):
    """A connection pushed to the task: the fields of :class:`ConnectionResult`."""


class PushedValues(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Variables and connections the executor pushed with the activity (push mode).

    The task may answer :class:`GetVariable` and :class:`GetConnection` for these itself; a
    task that asks anyway gets the same answer from the supervisor.
    """

    variables: dict[str, str] = {}
    connections: list[PushedConnection] = []


class StartupDetails(_Message, kw_only=True, omit_defaults=True):
    """The supervisor's first line: protocol version, what to run and the run context.

    ``pushed`` is present only when the activity pushed values.
    """

    protocol_version: int
    ti: TaskInstance
    ti_context: TIRunContext
    start_date: dt.datetime
    entrypoint: str | None = None
    pushed: PushedValues | None = None


class Cancel(_Message, kw_only=True):
    """The supervisor is about to stop the task (timeout, server said stop, shutdown)."""

    reason: str


class OKResponse(_Response, kw_only=True):
    """A request succeeded and has nothing to return."""


class VariableResult(_Response, kw_only=True):
    """Answer to :class:`GetVariable`."""

    key: str
    value: str | None


class ConnectionResult(
    ConnectionResponse,
    kw_only=True,
    tag_field="type",
    tag=True,
    forbid_unknown_fields=True,
    omit_defaults=False,
):
    """Answer to :class:`GetConnection`: the Execution API's connection (its fields are
    declared once, by :class:`~comms.api.ConnectionResponse`) with the request's ``id``.
    ``extra`` is a JSON string, as in Airflow."""

    id: Annotated[int, msgspec.Meta(ge=0, description="The id of the request answered.")]

    @classmethod
    def of(cls, rid: int, connection: msgspec.Struct) -> ConnectionResult:
        """The answer to request ``rid`` carrying ``connection``'s fields (any struct with
        exactly a connection's fields: the Execution API's, a pushed one, the SDK's)."""
        return cls(id=rid, **msgspec.structs.asdict(connection))


class XComResult(_Response, kw_only=True):
    """Answer to :class:`GetXCom`. ``value`` is any JSON value, kept encoded as in
    :class:`SetXCom` (decode it with ``msgspec.json.decode(result.value)``)."""

    key: str
    value: msgspec.Raw


class ErrorCode(enum.StrEnum):
    """Why a request failed (``ErrorResponse.error``)."""

    VARIABLE_NOT_FOUND = "VARIABLE_NOT_FOUND"
    CONNECTION_NOT_FOUND = "CONNECTION_NOT_FOUND"
    XCOM_NOT_FOUND = "XCOM_NOT_FOUND"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    #: The server answered an error status; ``detail`` has ``status_code`` and its ``detail``.
    API_SERVER_ERROR = "API_SERVER_ERROR"
    #: The server could not be reached within the retry budget.
    API_UNREACHABLE = "API_UNREACHABLE"
    #: The request broke the protocol (bad JSON, unknown type, bad fields, too long, nested
    #: too deep, ...).
    PROTOCOL_ERROR = "PROTOCOL_ERROR"
    #: A second terminal message, or a request after the terminal one.
    INVALID_STATE = "INVALID_STATE"
    GENERIC_ERROR = "GENERIC_ERROR"


class ErrorResponse(_Response, kw_only=True):
    """A request failed. ``id`` is the failed request's; :data:`UNREADABLE_ID` (-1) is
    reserved for a failed line whose id could not be read."""

    id: Annotated[
        int,
        msgspec.Meta(
            ge=UNREADABLE_ID,
            description="The id of the failed request; -1: that of a line that was unreadable.",
        ),
    ]
    error: ErrorCode
    detail: dict[str, JsonValue] = msgspec.field(default_factory=dict)


#: Requests for data, answered by the supervisor's relay.
DataRequest = (
    GetVariable
    | PutVariable
    | DeleteVariable
    | GetConnection
    | GetXCom
    | SetXCom
    | DeleteXCom
    | MaskSecret
)
#: The requests that end a try; exactly one per try.
TerminalRequest = SucceedTask | RetryTask | TaskState | DeferTask | RescheduleTask
Request = DataRequest | TerminalRequest

#: Everything a task may send.
TaskMessage = Hello | Log | Metric | Request

Response = OKResponse | VariableResult | ConnectionResult | XComResult | ErrorResponse

#: Everything a supervisor may send.
ToTask = StartupDetails | Cancel | Response


def state_of(terminal: TerminalRequest) -> str:
    """The Airflow task instance state a terminal message reports."""
    if isinstance(terminal, SucceedTask):
        return "success"
    if isinstance(terminal, RetryTask):
        return "up_for_retry"
    if isinstance(terminal, DeferTask):
        return "deferred"
    if isinstance(terminal, RescheduleTask):
        return "up_for_reschedule"
    return terminal.state
