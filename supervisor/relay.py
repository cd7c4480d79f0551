"""Answer the task's SDK requests: from the pushed values, else from the Execution API.

:meth:`Relay.answer_locally` runs on the supervisor's loop thread and must never touch the
network: it answers what the activity's ``context`` pushed (:mod:`comms.pushed`, the rules the
Python SDK applies in the task too), and ``MaskSecret``.
:meth:`Relay.answer_remote` runs on a worker thread and turns every API failure into an
``ErrorResponse``, so a request always gets exactly one answer and never hangs the task.
Every secret that passes through is registered with the masker before the task sees it.
"""

from __future__ import annotations

import msgspec

from comms.api import ConnectionResponse, TaskInstance
from comms.messages import (
    ConnectionResult,
    DataRequest,
    DeleteVariable,
    DeleteXCom,
    ErrorCode,
    ErrorResponse,
    GetConnection,
    GetVariable,
    GetXCom,
    MaskSecret,
    OKResponse,
    PushedValues,
    PutVariable,
    Response,
    SetXCom,
    VariableResult,
    XComResult,
)
from comms.pushed import PushedAnswers
from supervisor.client import ExecutionApiClient
from supervisor.errors import (
    ApiError,
    NotFound,
    ServerResponseError,
    ServerUnreachable,
    TLSError,
    Unauthorized,
)
from supervisor.masking import Masker, is_sensitive_key

__all__ = ["Relay", "RequestIds"]


class Relay:
    """Serves one task try's data requests."""

    def __init__(
        self,
        client: ExecutionApiClient,
        ti: TaskInstance,
        pushed: PushedValues | None,
        masker: Masker,
    ) -> None:
        self._client = client
        self._ti = ti
        self._masker = masker
        self._pushed = PushedAnswers(pushed)
        if pushed is not None:
            for key, value in pushed.variables.items():
                self._register_variable(key, value)
            for conn in pushed.connections:
                self._register_connection(conn)

    def answer_locally(self, request: DataRequest) -> Response | None:
        """Answer without the network, or return None when the API must be asked.

        Secret text the task supplies (``MaskSecret``, a ``PutVariable`` with a sensitive
        name) is registered within the try's limits (:mod:`supervisor.masking`); past them
        the request is refused with ``PROTOCOL_ERROR``, which the caller logs.
        """
        if isinstance(request, MaskSecret):
            refused = self._masker.add_task_secret(request.value)
            if refused is not None:
                return _refusal(request, f"{refused}; nothing was registered")
            return OKResponse(id=request.id)
        if isinstance(request, PutVariable) and is_sensitive_key(request.key):
            # Else setting variables would be a way around the limits on MaskSecret.
            refused = self._masker.add_task_secret(request.value)
            if refused is not None:
                return _refusal(request, f"{refused}; the variable was not set")
        return self._pushed.answer(request)

    def answer_remote(self, request: DataRequest) -> Response:
        """Answer through the Execution API (blocking; call on a worker thread)."""
        try:
            response = self._call(self._client, request)
        except ServerResponseError as exc:
            return _error_for(request, exc)
        except (ServerUnreachable, TLSError) as exc:
            return ErrorResponse(
                id=request.id,
                error=ErrorCode.API_UNREACHABLE,
                detail={"message": str(exc), "attempts": exc.attempts},
            )
        except ApiError as exc:
            return ErrorResponse(
                id=request.id, error=ErrorCode.API_SERVER_ERROR, detail={"message": str(exc)}
            )
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            # A newer server's shape we cannot read: the server side of the contract broke.
            return ErrorResponse(
                id=request.id,
                error=ErrorCode.API_SERVER_ERROR,
                detail={"message": f"unreadable answer: {exc}"},
            )
        self._pushed.learn(request, response)
        return response

    def _call(self, client: ExecutionApiClient, request: DataRequest) -> Response:
        rid = request.id
        if isinstance(request, GetVariable):
            var = client.get_variable(request.key)
            if var.value is not None:
                self._register_variable(var.key, var.value)
            return VariableResult(id=rid, key=var.key, value=var.value)
        if isinstance(request, PutVariable):
            # answer_locally registered it already; this keeps answer_remote safe on its own.
            self._register_variable(request.key, request.value)
            client.put_variable(request.key, request.value, request.description)
            return OKResponse(id=rid)
        if isinstance(request, DeleteVariable):
            client.delete_variable(request.key)
            return OKResponse(id=rid)
        if isinstance(request, GetConnection):
            conn = client.get_connection(request.conn_id)
            self._register_connection(conn)
            return ConnectionResult.of(rid, conn)
        if isinstance(request, GetXCom):
            ti = self._ti
            xcom = client.get_xcom(
                request.dag_id or ti.dag_id,
                request.run_id or ti.run_id,
                request.task_id,
                request.key,
                request.map_index,
            )
            return XComResult(id=rid, key=xcom.key, value=xcom.value)
        if isinstance(request, SetXCom):
            client.set_xcom(self._ti, request.key, bytes(request.value))
            return OKResponse(id=rid)
        if isinstance(request, DeleteXCom):
            client.delete_xcom(self._ti, request.key)
            return OKResponse(id=rid)
        raise AssertionError(
            f"not a relayed request: {type(request).__name__}"
        )  # MaskSecret is local

    def _register_variable(self, key: str, value: str) -> None:
        if is_sensitive_key(key):
            self._masker.add(value)

    def _register_connection(self, conn: ConnectionResponse) -> None:
        self._masker.add_connection(conn.password, conn.extra)


def _refusal(request: DataRequest, message: str) -> ErrorResponse:
    return ErrorResponse(
        id=request.id,
        error=ErrorCode.PROTOCOL_ERROR,
        detail={"message": f"{type(request).__name__} refused: {message}"},
    )


_NOT_FOUND = {
    GetVariable: ErrorCode.VARIABLE_NOT_FOUND,
    GetConnection: ErrorCode.CONNECTION_NOT_FOUND,
    GetXCom: ErrorCode.XCOM_NOT_FOUND,
}


def _error_for(request: DataRequest, exc: ServerResponseError) -> ErrorResponse:
    detail = {"status_code": exc.status, "detail": exc.detail}
    if isinstance(exc, NotFound) and type(request) in _NOT_FOUND:
        return ErrorResponse(id=request.id, error=_NOT_FOUND[type(request)], detail=detail)
    if isinstance(exc, Unauthorized):
        return ErrorResponse(id=request.id, error=ErrorCode.PERMISSION_DENIED, detail=detail)
    return ErrorResponse(id=request.id, error=ErrorCode.API_SERVER_ERROR, detail=detail)


class RequestIds:
    """The request ids a task used: a replayed request is refused, never run twice.

    Compact for well-behaved tasks: ids ``1..floor`` are all used, the set holds the rest.
    """

    def __init__(self) -> None:
        self._floor = 0
        self._above: set[int] = set()

    def first_use(self, rid: int) -> bool:
        """Record ``rid``; False if it was used before."""
        if 0 < rid <= self._floor or rid in self._above:
            return False
        self._above.add(rid)
        while self._floor + 1 in self._above:
            self._floor += 1
            self._above.remove(self._floor)
        return True
