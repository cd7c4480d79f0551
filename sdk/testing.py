"""An in-process fake supervisor, for unit tests of task code.

::

    from sdk.testing import fake_supervisor, make_context

    def test_load_reads_rows_and_returns_count():
        with fake_supervisor(
            variables={"target_table": "sales"},
            connections={"warehouse": {"conn_type": "postgres", "host": "db"}},
            xcoms={("extract", "return_value"): [1, 2, 3]},
            context=make_context(task_id="load"),
        ) as fake:
            outcome = fake.run("my_dags.load:main")
        assert outcome.state == "success"
        assert outcome.return_value == 3
        assert fake.xcoms[("load", "return_value")] == 3

Inside the ``with`` block every SDK call is answered in-process; each message still goes
through the wire encoding, so values come back as a real supervisor would return them.
:meth:`FakeSupervisor.run` runs a callable or entrypoint and maps how it ended exactly as the
task runner does. Stdlib ``logging`` records reach :attr:`FakeSupervisor.logs` as well.

XComs are keyed ``(task_id, key)``; a mapped task instance's ``(task_id, key, map_index)``;
one of another dag run ``(dag_id, run_id, task_id, key, map_index)``.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import msgspec

from comms.api import DagRun, TaskInstance
from comms.framing import encode
from comms.messages import (
    ConnectionResult,
    DeleteVariable,
    DeleteXCom,
    ErrorCode,
    ErrorResponse,
    GetConnection,
    GetVariable,
    GetXCom,
    Log,
    MaskSecret,
    Metric,
    OKResponse,
    PutVariable,
    Request,
    Response,
    SetXCom,
    TaskMessage,
    VariableResult,
    XComResult,
)
from sdk import _session
from sdk._connections import Connection
from sdk._log import LogHandler
from sdk._outcome import Outcome, run_task
from sdk.context import Context

__all__ = ["FakeSupervisor", "Outcome", "fake_supervisor", "make_context"]

XComKey = tuple[str, str] | tuple[str, str, int] | tuple[str, str, str, str, int]

_from_task: msgspec.json.Decoder[TaskMessage] = msgspec.json.Decoder(TaskMessage)
_requests: msgspec.json.Decoder[Request] = msgspec.json.Decoder(Request)
_to_task: msgspec.json.Decoder[Response] = msgspec.json.Decoder(Response)


def make_context(
    *,
    dag_id: str = "test_dag",
    task_id: str = "test_task",
    run_id: str = "manual__test",
    try_number: int = 1,
    map_index: int = -1,
    max_tries: int = 0,
    should_retry: bool = False,
    params: Mapping[str, Any] | None = None,
    logical_date: dt.datetime | None = None,
    start_date: dt.datetime | None = None,
    ti_id: uuid.UUID | None = None,
    next_method: str | None = None,
    next_kwargs: Mapping[str, Any] | None = None,
) -> Context:
    """A :class:`~sdk.context.Context` for tests; every field has a plain default.

    ``params`` becomes the dag run's ``conf``. ``next_method`` (with ``next_kwargs``) makes
    it the context of a task resumed after a deferral.
    """
    now = dt.datetime.now(dt.UTC)
    return Context(
        ti=TaskInstance(
            id=ti_id or uuid.uuid4(),
            dag_id=dag_id,
            task_id=task_id,
            run_id=run_id,
            try_number=try_number,
            map_index=map_index,
        ),
        dag_run=DagRun(
            dag_id=dag_id,
            run_id=run_id,
            logical_date=logical_date,
            start_date=start_date or now,
            conf=dict(params) if params is not None else None,
        ),
        start_date=start_date or now,
        max_tries=max_tries,
        should_retry=should_retry,
        params=dict(params or {}),
        next_method=next_method,
        next_kwargs=None if next_kwargs is None else dict(next_kwargs),
    )


class FakeSupervisor:
    """Answers SDK calls in-process and records what the task sent.

    The public dicts and lists may be read and changed between calls.
    """

    def __init__(
        self,
        *,
        variables: Mapping[str, str] | None = None,
        connections: Mapping[str, Connection | Mapping[str, Any]] | None = None,
        xcoms: Mapping[XComKey, Any] | None = None,
        context: Context | None = None,
    ) -> None:
        self._context = context or make_context()
        self._lock = threading.Lock()
        #: Variables by key.
        self.variables: dict[str, str] = dict(variables or {})
        #: Connections by id.
        self.connections: dict[str, Connection] = {
            conn_id: _connection(conn_id, value) for conn_id, value in (connections or {}).items()
        }
        #: XCom values by key (see the module docstring); the task's pushes land here too.
        self.xcoms: dict[XComKey, Any] = dict(xcoms or {})
        #: ``Log`` records sent by ``sdk.log``, stdlib ``logging`` and failed runs.
        self.logs: list[Log] = []
        #: ``Metric`` samples sent by ``sdk.metrics``.
        self.metrics: list[Metric] = []
        #: Values passed to ``mask_secret``.
        self.masked: list[Any] = []
        #: Every request received, in order.
        self.requests: list[Request] = []
        self._ids = 0

    @property
    def context(self) -> Context:
        """The context task code sees (``get_context()``)."""
        return self._context

    def run(self, target: str | Callable[..., Any]) -> Outcome:
        """Run ``target`` (a callable or an entrypoint string) as the runner would.

        Returns its :class:`Outcome`; a returned value is pushed as XCom ``return_value``.
        """
        with _session.installed(self):
            return run_task(target, self._context)

    def request(self, message: Request) -> Response:
        """Answer ``message`` as a supervisor would (part of the ``Session`` interface)."""
        with self._lock:
            self._ids += 1
            received = _requests.decode(encode(msgspec.structs.replace(message, id=self._ids)))
            self.requests.append(received)
            response = self._answer(received)
        return _to_task.decode(encode(response))

    def notify(self, message: Log | Metric) -> None:
        """Record a notification (part of the ``Session`` interface)."""
        received = _from_task.decode(encode(message))
        with self._lock:
            if isinstance(received, Log):
                self.logs.append(received)
            elif isinstance(received, Metric):
                self.metrics.append(received)

    def _answer(self, message: Request) -> Response:
        request_id = message.id
        if isinstance(message, GetVariable):
            if message.key not in self.variables:
                return _not_found(request_id, ErrorCode.VARIABLE_NOT_FOUND, key=message.key)
            return VariableResult(id=request_id, key=message.key, value=self.variables[message.key])
        if isinstance(message, PutVariable):
            self.variables[message.key] = message.value
        elif isinstance(message, DeleteVariable):
            self.variables.pop(message.key, None)
        elif isinstance(message, GetConnection):
            conn = self.connections.get(message.conn_id)
            if conn is None:
                return _not_found(
                    request_id, ErrorCode.CONNECTION_NOT_FOUND, conn_id=message.conn_id
                )
            return ConnectionResult.of(request_id, conn)
        elif isinstance(message, GetXCom):
            key = self._pull_key(message)
            if key not in self.xcoms:
                return _not_found(
                    request_id, ErrorCode.XCOM_NOT_FOUND, task_id=message.task_id, key=message.key
                )
            value = msgspec.Raw(msgspec.json.encode(self.xcoms[key]))
            return XComResult(id=request_id, key=message.key, value=value)
        elif isinstance(message, SetXCom):
            self.xcoms[self._own_key(message.key)] = msgspec.json.decode(message.value)
        elif isinstance(message, DeleteXCom):
            self.xcoms.pop(self._own_key(message.key), None)
        elif isinstance(message, MaskSecret):
            self.masked.append(message.value)
        return OKResponse(id=request_id)

    def _own_key(self, key: str) -> XComKey:
        ti = self._context.ti
        return (ti.task_id, key) if ti.map_index == -1 else (ti.task_id, key, ti.map_index)

    def _pull_key(self, message: GetXCom) -> XComKey:
        ti = self._context.ti
        dag_id = message.dag_id or ti.dag_id
        run_id = message.run_id or ti.run_id
        if (dag_id, run_id) != (ti.dag_id, ti.run_id):
            return (dag_id, run_id, message.task_id, message.key, message.map_index)
        if message.map_index == -1:
            return (message.task_id, message.key)
        return (message.task_id, message.key, message.map_index)


@contextmanager
def fake_supervisor(
    *,
    variables: Mapping[str, str] | None = None,
    connections: Mapping[str, Connection | Mapping[str, Any]] | None = None,
    xcoms: Mapping[XComKey, Any] | None = None,
    context: Context | None = None,
) -> Iterator[FakeSupervisor]:
    """Answer SDK calls with a :class:`FakeSupervisor` inside the ``with`` block.

    ``connections`` values are :class:`~sdk.Connection` objects or mappings of its fields
    (``conn_type`` defaults to ``"generic"``; a dict ``extra`` is encoded to JSON).
    ``context`` defaults to :func:`make_context`\\ ().
    """
    fake = FakeSupervisor(
        variables=variables, connections=connections, xcoms=xcoms, context=context
    )
    handler = LogHandler()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        with _session.installed(fake):
            yield fake
    finally:
        root.removeHandler(handler)


def _connection(conn_id: str, value: Connection | Mapping[str, Any]) -> Connection:
    if isinstance(value, Connection):
        return value
    fields = {"conn_type": "generic", **value, "conn_id": conn_id}
    if isinstance(fields.get("extra"), Mapping):
        fields["extra"] = msgspec.json.encode(fields["extra"]).decode()
    return Connection(**fields)


def _not_found(request_id: int, code: ErrorCode, **detail: Any) -> ErrorResponse:
    return ErrorResponse(id=request_id, error=code, detail=detail)
