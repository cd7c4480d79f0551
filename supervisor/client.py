"""Execution API client: Airflow 3's wire protocol over :mod:`supervisor.http`.

Every request carries ``Authorization: Bearer``, the pinned ``Airflow-API-Version`` and a
``correlation-id``; a ``Refreshed-API-Token`` on any response replaces the token (this is also
how a ``workload`` token is exchanged for an ``execution`` token on ``/run``). Connection
errors, timeouts and 5xx are retried with exponential backoff and full jitter until a time
budget runs out (then :class:`ServerUnreachable`). Never retried: 4xx
(:class:`ServerResponseError`), and a TLS failure that another attempt cannot cure, a server
certificate that fails verification or a URL whose scheme does not match the port
(:class:`TLSError`). The transport is injectable, so tests hand in a test double.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlencode

import msgspec

from comms.api import (
    API_VERSION,
    ConnectionResponse,
    TIEnterRunningPayload,
    TIHeartbeatInfo,
    TIRunContext,
    TIStateUpdate,
    VariablePostBody,
    VariableResponse,
    XComResponse,
)
from comms.api import TaskInstance as TIIdentity
from supervisor.errors import ServerResponseError, ServerUnreachable, TLSError
from supervisor.http import (
    CertificateError,
    HTTPTransport,
    Request,
    Response,
    TLSMismatchError,
    Transport,
    TransportError,
)

__all__ = ["ExecutionApiClient", "RetryPolicy"]

USER_AGENT = "taskvisor/0.1"
_encoder = msgspec.json.Encoder()


class RetryPolicy(msgspec.Struct, frozen=True):
    """Retries for connection errors, timeouts and 5xx: exponential backoff, full jitter.

    A call gives up when the next wait would end past ``budget`` seconds after it started.
    """

    budget: float = 60.0
    first_wait: float = 0.2
    max_wait: float = 5.0

    def wait(self, attempt: int) -> float:
        """Seconds to wait before attempt ``attempt + 1`` (``attempt`` counts from 1)."""
        return random.uniform(0, min(self.max_wait, self.first_wait * 2 ** (attempt - 1)))


#: Called before each retry with (what, attempt, error text, wait seconds).
RetryHook = Callable[[str, int, str, float], None]


class ExecutionApiClient:
    """A thread-safe client of one task try's Execution API calls."""

    def __init__(
        self,
        server: str,
        token: str,
        *,
        retry: RetryPolicy | None = None,
        timeout: float = 30.0,
        transport: Transport | None = None,
        on_retry: RetryHook | None = None,
        on_token: Callable[[str], None] | None = None,
    ) -> None:
        self._token = token
        self._token_lock = threading.Lock()
        self.retry = retry or RetryPolicy()
        self._on_retry = on_retry
        #: Called with every token the server issues, before it is used (to mask it).
        self._on_token = on_token
        self._base = server if server.endswith("/") else server + "/"
        self._http = transport or HTTPTransport(timeout=timeout, connect_timeout=min(timeout, 10.0))

    @property
    def token(self) -> str:
        """The token currently in use (the latest the server issued)."""
        with self._token_lock:
            return self._token

    def close(self) -> None:
        """Close the kept-alive connections."""
        self._http.close()

    # --- task instance --------------------------------------------------------------

    def run(
        self, ti_id: uuid.UUID, payload: TIEnterRunningPayload, *, budget: float | None = None
    ) -> TIRunContext:
        """``PATCH /task-instances/{id}/run``: move the TI to running, get its run context."""
        return self.run_with_document(ti_id, payload, budget=budget)[0]

    def run_with_document(
        self, ti_id: uuid.UUID, payload: TIEnterRunningPayload, *, budget: float | None = None
    ) -> tuple[TIRunContext, dict[str, Any]]:
        """:meth:`run`, also returning the run context whole, as the server sent it."""
        resp = self.request("PATCH", f"task-instances/{ti_id}/run", body=payload, budget=budget)
        context = msgspec.json.decode(resp.content, type=TIRunContext)
        return context, msgspec.json.decode(resp.content, type=dict[str, Any])

    def heartbeat(self, ti_id: uuid.UUID, info: TIHeartbeatInfo) -> None:
        """``PUT .../heartbeat``, one attempt: the heartbeat loop counts failures itself."""
        self.request("PUT", f"task-instances/{ti_id}/heartbeat", body=info, retry=False)

    def update_state(
        self,
        ti_id: uuid.UUID,
        payload: TIStateUpdate | dict[str, Any],
        *,
        budget: float | None = None,
    ) -> None:
        """``PATCH .../state``: report a terminal (or deferred/rescheduled) state."""
        self.request("PATCH", f"task-instances/{ti_id}/state", body=payload, budget=budget)

    # --- variables, connections, xcoms ---------------------------------------------

    def get_variable(self, key: str) -> VariableResponse:
        """``GET /variables/{key}``."""
        resp = self.request("GET", f"variables/{path_segment(key)}")
        return msgspec.json.decode(resp.content, type=VariableResponse)

    def put_variable(self, key: str, value: str, description: str | None) -> None:
        """``PUT /variables/{key}``."""
        self.request(
            "PUT",
            f"variables/{path_segment(key)}",
            body=VariablePostBody(val=value, description=description),
        )

    def delete_variable(self, key: str) -> None:
        """``DELETE /variables/{key}``."""
        self.request("DELETE", f"variables/{path_segment(key)}")

    def get_connection(self, conn_id: str) -> ConnectionResponse:
        """``GET /connections/{conn_id}``."""
        resp = self.request("GET", f"connections/{path_segment(conn_id)}")
        return msgspec.json.decode(resp.content, type=ConnectionResponse)

    def get_xcom(
        self, dag_id: str, run_id: str, task_id: str, key: str, map_index: int
    ) -> XComResponse:
        """``GET /xcoms/{dag_id}/{run_id}/{task_id}/{key}``: any task's XCom."""
        path = xcom_path(dag_id, run_id, task_id, key)
        resp = self.request("GET", path, params={"map_index": map_index})
        return msgspec.json.decode(resp.content, type=XComResponse)

    def set_xcom(self, ti: TIIdentity, key: str, value: bytes) -> None:
        """``POST /xcoms/...`` as task instance ``ti``; ``value`` is already JSON."""
        path = xcom_path(ti.dag_id, ti.run_id, ti.task_id, key)
        self.request("POST", path, content=value, params={"map_index": ti.map_index})

    def delete_xcom(self, ti: TIIdentity, key: str) -> None:
        """``DELETE /xcoms/...`` of task instance ``ti``."""
        path = xcom_path(ti.dag_id, ti.run_id, ti.task_id, key)
        self.request("DELETE", path, params={"map_index": ti.map_index})

    # --- the one request path ------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        body: msgspec.Struct | dict[str, Any] | None = None,
        content: bytes | None = None,
        params: dict[str, Any] | None = None,
        retry: bool = True,
        budget: float | None = None,
    ) -> Response:
        """Send one call with retries; return a 2xx response or raise an :class:`ApiError`."""
        if body is not None:
            content = _encoder.encode(body)
        headers = {"Airflow-API-Version": API_VERSION, "User-Agent": USER_AGENT}
        if content is not None:
            headers["Content-Type"] = "application/json"
        url = self._base + path + (f"?{urlencode(params, doseq=True)}" if params else "")
        deadline = time.monotonic() + (self.retry.budget if budget is None else budget)
        attempt = 0
        while True:
            attempt += 1
            headers["Authorization"] = f"Bearer {self.token}"
            headers["correlation-id"] = str(uuid.uuid4())
            request = Request(method, url, dict(headers), content or b"")
            try:
                resp = self._http.handle_request(request)
            except (CertificateError, TLSMismatchError) as exc:
                # Neither trust nor what a port speaks changes between attempts.
                raise TLSError(
                    f"{method} {path} failed, not retried: {type(exc).__name__}: {exc}",
                    attempts=attempt,
                ) from None
            except TransportError as exc:
                error = f"{type(exc).__name__}: {exc}"
            else:
                self._adopt_token(resp)
                if resp.status_code < 400:
                    return resp
                if resp.status_code < 500:
                    raise ServerResponseError.for_status(
                        method, path, resp.status_code, _detail(resp)
                    )
                error = f"HTTP {resp.status_code}: {_detail(resp)}"
            wait = self.retry.wait(attempt)
            if not retry or time.monotonic() + wait > deadline:
                raise ServerUnreachable(
                    f"{method} {path} failed after {attempt} attempt(s): {error}", attempts=attempt
                )
            if self._on_retry is not None:
                self._on_retry(f"{method} {path}", attempt, error, wait)
            time.sleep(wait)

    def _adopt_token(self, resp: Response) -> None:
        fresh = resp.header("Refreshed-API-Token")
        if fresh:
            if self._on_token is not None:
                self._on_token(fresh)
            with self._token_lock:
                self._token = fresh


def _detail(resp: Response) -> Any:
    try:
        body = msgspec.json.decode(resp.content)
    except msgspec.DecodeError:
        return resp.content[:500].decode("utf-8", "replace")
    return body.get("detail", body) if isinstance(body, dict) else body


def path_segment(value: str) -> str:
    """``value`` as one path segment of a URL (``/`` and everything else escaped)."""
    return quote(value, safe="")


def xcom_path(dag_id: str, run_id: str, task_id: str, key: str) -> str:
    """The Execution API path of one XCom (its key may hold ``/``, as Airflow allows)."""
    dag, run, task = (path_segment(part) for part in (dag_id, run_id, task_id))
    return f"xcoms/{dag}/{run}/{task}/{quote(key, safe='/')}"
