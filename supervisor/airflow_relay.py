"""Answer the requests of Apache Airflow's own task runner (3.3.2) through the Execution API.

The counterpart of :mod:`supervisor.relay` for the second child protocol: the runner speaks
Airflow's frames (:mod:`comms.airflow_frames`), and each request body is a map tagged by
``"type"``. :meth:`AirflowRelay.answer_locally` runs on the loop thread and never touches the
network: it registers ``MaskSecret`` values, checks the caps on secret text the task supplies,
and answers every body it cannot serve (no or unknown ``"type"``, a type taskvisor does not
serve, a body that does not validate) with an error the runner raises, so no request goes
unanswered. :meth:`AirflowRelay.answer_remote` runs on a worker thread and calls the Execution
API as :data:`supervisor.airflow_routes.ROUTES` says.

Where an answer goes, as Airflow's supervisor sends it (``ActivitySubprocess._handle_request``
and ``handle_requests`` in ``execution_time/supervisor.py``):

* a result, and the failures Airflow's client turns into a result (a missing variable is an
  ``ErrorResponse`` *body*, which the runner checks for): :attr:`Reply.body`;
* every other failure: :attr:`Reply.error`, an ``ErrorResponse`` body with ``ErrorType``
  ``API_SERVER_ERROR`` (details: ``status_code``, ``message``, the server's ``detail``), which
  the runner raises as ``AirflowRuntimeError``. Requests taskvisor answers without the server
  (refused, unknown, invalid) get ``GENERIC_ERROR`` and a message naming the body's type.
"""

from __future__ import annotations

import uuid
from typing import Any

import msgspec

from supervisor.airflow_routes import (
    ROUTES,
    Api,
    Body,
    PutVariable,
    Reply,
    error_body,
    secrets_to_mask,
)
from supervisor.client import ExecutionApiClient
from supervisor.errors import ApiError, ServerResponseError, ServerUnreachable, TLSError
from supervisor.masking import Masker

__all__ = ["SERVED_BODIES", "SUPERVISION_BODIES", "UNSUPPORTED", "AirflowRelay", "Reply"]

#: Body types the supervision itself handles (terminal states, fd passing); never given to
#: the relay (which refuses them if they are).
SUPERVISION_BODIES: frozenset[str] = frozenset(
    {
        "SucceedTask",
        "TaskState",
        "RetryTask",
        "DeferTask",
        "RescheduleTask",
        "AwaitInputTask",
        "ResendLoggingFD",
    }
)

#: Body types the relay answers (locally or through the Execution API).
SERVED_BODIES: frozenset[str] = frozenset(ROUTES)

#: Body types of Airflow's runner protocol that taskvisor refuses with an error naming them.
#: Airflow 3.3.2's own task supervisor does not serve these either (they belong to other
#: processes, e.g. the triggerer's human-in-the-loop polling): it answers "Unhandled request".
UNSUPPORTED: frozenset[str] = frozenset({"GetHITLDetailResponse", "UpdateHITLDetail"})


class AirflowRelay:
    """Serves the requests of one try run by Airflow's task runner."""

    def __init__(self, client: ExecutionApiClient, ti_id: uuid.UUID, masker: Masker) -> None:
        self._api = Api(client, ti_id, masker)
        self._masker = masker

    def answer_locally(self, body: dict[str, Any]) -> Reply | None:
        """Answer on the loop thread, never the network, or return None: then call
        :meth:`answer_remote` on a worker thread.

        Answered here: ``MaskSecret`` (registered with ``Masker.add_task_secret``, refused past
        the try's caps as :mod:`supervisor.relay` refuses it); a ``PutVariable`` with a
        sensitive name whose value would pass those caps (refused, not set); a body with no or
        an unknown ``"type"``, one taskvisor does not serve, or one that does not validate (an
        error naming the type and what is wrong: never silence, never a hang).
        """
        parsed = _parse(body)
        if isinstance(parsed, Reply):
            return parsed
        route = ROUTES[type(parsed).__name__]
        if route.local:
            return route.answer(self._api, parsed)
        if isinstance(parsed, PutVariable) and parsed.value is not None:
            # Else setting variables would be a way around the caps on MaskSecret.
            refused = self._masker.add_task_secret(secrets_to_mask(parsed.value, parsed.key))
            if refused is not None:
                return _refusal(body, f"{refused}; the variable was not set")
        return None

    def answer_remote(self, body: dict[str, Any]) -> Reply:
        """Answer through the Execution API (blocking; call on a worker thread).

        Every API failure and every answer that cannot be read becomes an error Reply.
        """
        parsed = _parse(body)
        if isinstance(parsed, Reply):
            return parsed
        try:
            return ROUTES[type(parsed).__name__].answer(self._api, parsed)
        except ServerResponseError as exc:
            return _server_error(str(exc), status_code=exc.status, detail=exc.detail)
        except (ServerUnreachable, TLSError) as exc:
            return _server_error(str(exc), type(exc), attempts=exc.attempts)
        except ApiError as exc:
            return _server_error(str(exc), type(exc))
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            # A newer server's shape we cannot read: the server side of the contract broke.
            return _server_error(f"unreadable answer: {exc}", type(exc))


def _parse(body: Any) -> Body | Reply:
    """The typed body, or the error Reply that refuses it."""
    kind = body.get("type") if isinstance(body, dict) else None
    if not isinstance(kind, str):
        return _refusal(body, 'a request body must be a map with a "type"')
    route = ROUTES.get(kind)
    if route is None:
        return _refusal(body, _NOT_SERVED.get(kind, "unknown request type"))
    try:
        return msgspec.convert(body, route.body, strict=False)
    except msgspec.ValidationError as exc:
        return _refusal(body, f"invalid body: {exc}")


_NOT_SERVED = dict.fromkeys(SUPERVISION_BODIES, "the supervision handles it, not the relay")
_NOT_SERVED |= dict.fromkeys(
    UNSUPPORTED, "not served by taskvisor (nor by Airflow's task supervisor)"
)


def _refusal(body: Any, message: str) -> Reply:
    kind = body.get("type") if isinstance(body, dict) else None
    detail = {"message": f"{kind or 'request'} refused: {message}", "request_type": kind}
    return Reply(error=error_body("GENERIC_ERROR", detail))


def _server_error(
    message: str, exception_type: type[Exception] | None = None, **detail: Any
) -> Reply:
    """``API_SERVER_ERROR``, with the details Airflow's supervisor gives: the HTTP status (None
    when there was no answer), the message, and either the server's detail or the error type."""
    detail = {"status_code": None, "message": message, **detail}
    if exception_type is not None:
        detail["exception_type"] = exception_type.__name__
    return Reply(error=error_body("API_SERVER_ERROR", detail))
