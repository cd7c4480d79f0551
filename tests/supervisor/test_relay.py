"""supervisor.relay: local answers from the pushed context, API answers, errors as responses."""

from __future__ import annotations

import json
import uuid

import msgspec
import pytest
from http_doubles import MockTransport, Response

from comms.api import TaskInstance
from comms.messages import (
    ConnectionResult,
    DeleteVariable,
    DeleteXCom,
    ErrorCode,
    ErrorResponse,
    GetConnection,
    GetVariable,
    GetXCom,
    MaskSecret,
    OKResponse,
    PushedConnection,
    PushedValues,
    PutVariable,
    SetXCom,
    VariableResult,
    XComResult,
)
from supervisor.client import ExecutionApiClient, RetryPolicy
from supervisor.http import CertificateError, ConnectError, Request, TLSMismatchError
from supervisor.masking import MASK, Masker
from supervisor.relay import Relay

TI = TaskInstance(
    id=uuid.UUID("3fa85f64-5717-4562-b3fc-2c963f66afa6"),
    dag_id="dag",
    task_id="me",
    run_id="run",
    try_number=1,
    map_index=-1,
)
CONTEXT = PushedValues(
    connections=[
        PushedConnection(
            conn_id="pushed_db",
            conn_type="postgres",
            host="db.local",
            login="app",
            password="pushed-password",
            port=5432,
            extra='{"sslkey": "pushed-ssl-key"}',
        )
    ],
    variables={"plain": "plain-value", "api_token": "pushed-token-value"},
)


def raw(value: object) -> msgspec.Raw:
    return msgspec.Raw(msgspec.json.encode(value))


class Api:
    """MockTransport handler: answers from a dict of (method, path) -> response."""

    def __init__(self, routes=None, default: Response | Exception | None = None) -> None:
        self.routes = routes or {}
        self.default = (
            default if default is not None else Response.with_json(404, {"detail": "no route"})
        )
        self.requests: list[Request] = []
        self.on_request = None

    def __call__(self, request: Request) -> Response:
        self.requests.append(request)
        if self.on_request is not None:
            self.on_request(request)
        answer = self.routes.get((request.method, request.path), self.default)
        if isinstance(answer, Exception):
            raise answer
        return answer


def make_relay(api: Api, context: PushedValues | None = CONTEXT, masker: Masker | None = None):
    masker = masker or Masker()
    client = ExecutionApiClient(
        "http://api.test/execution/",
        "tok",
        retry=RetryPolicy(budget=0.0, first_wait=0.001, max_wait=0.001),
        transport=MockTransport(api),
    )
    return Relay(client, TI, context, masker), masker


def test_pushed_variable_is_answered_locally_without_any_http_call():
    api = Api()
    relay, _ = make_relay(api)
    assert relay.answer_locally(GetVariable(id=1, key="plain")) == VariableResult(
        id=1, key="plain", value="plain-value"
    )
    assert api.requests == []


def test_pushed_connection_is_answered_locally_without_any_http_call():
    api = Api()
    relay, _ = make_relay(api)
    answer = relay.answer_locally(GetConnection(id=2, conn_id="pushed_db"))
    assert answer == ConnectionResult(
        id=2,
        conn_id="pushed_db",
        conn_type="postgres",
        host="db.local",
        login="app",
        password="pushed-password",
        port=5432,
        extra='{"sslkey": "pushed-ssl-key"}',
    )
    assert api.requests == []


@pytest.mark.parametrize(
    "request_",
    [
        GetVariable(id=1, key="not-pushed"),
        GetConnection(id=1, conn_id="not-pushed"),
        GetXCom(id=1, task_id="up"),
        PutVariable(id=1, key="plain", value="x"),
        DeleteVariable(id=1, key="plain"),
        SetXCom(id=1, key="k", value=raw(1)),
        DeleteXCom(id=1, key="k"),
    ],
    ids=lambda r: type(r).__name__,
)
def test_what_the_context_does_not_hold_is_left_to_the_api(request_):
    api = Api()
    relay, _ = make_relay(api)
    assert relay.answer_locally(request_) is None
    assert api.requests == []


def test_a_pushed_variable_follows_the_writes_the_api_accepted():
    path = "/execution/variables/plain"
    api = Api({("PUT", path): Response.with_json(201, {})})
    relay, _ = make_relay(api)
    assert relay.answer_remote(PutVariable(id=1, key="plain", value="new")) == OKResponse(id=1)
    assert relay.answer_locally(GetVariable(id=2, key="plain")) == VariableResult(
        id=2, key="plain", value="new"
    )

    api.routes[("DELETE", path)] = Response(204)
    assert relay.answer_remote(DeleteVariable(id=3, key="plain")) == OKResponse(id=3)
    assert relay.answer_locally(GetVariable(id=4, key="plain")) is None


def test_pushed_secrets_are_registered_with_the_masker_up_front():
    _, masker = make_relay(Api())
    text = masker.mask("pushed-password pushed-ssl-key pushed-token-value plain-value")
    assert text == f"{MASK} {MASK} {MASK} plain-value"


def test_mask_secret_is_registered_locally_and_answered_ok():
    api = Api()
    relay, masker = make_relay(api)
    answer = relay.answer_locally(MaskSecret(id=5, value={"nested": ["my-own-secret"]}))
    assert answer == OKResponse(id=5)
    assert masker.mask("my-own-secret") == MASK
    assert api.requests == []


def test_variable_from_the_api_is_relayed():
    api = Api(
        {
            ("GET", "/execution/variables/remote"): Response.with_json(
                200, {"key": "remote", "value": "v1"}
            )
        }
    )
    relay, masker = make_relay(api, context=None)
    assert relay.answer_remote(GetVariable(id=3, key="remote")) == VariableResult(
        id=3, key="remote", value="v1"
    )
    assert masker.mask("v1 value") == "v1 value"  # not a sensitive name


def test_sensitive_variable_from_the_api_is_masked_before_the_answer_is_returned():
    api = Api(
        {
            ("GET", "/execution/variables/db_password"): Response.with_json(
                200, {"key": "db_password", "value": "remote-secret"}
            )
        }
    )
    relay, masker = make_relay(api, context=None)
    answer = relay.answer_remote(GetVariable(id=3, key="db_password"))
    assert isinstance(answer, VariableResult)
    assert masker.mask(answer.value) == MASK


def test_connection_from_the_api_has_password_and_extra_masked_before_the_answer():
    body = {
        "conn_id": "db",
        "conn_type": "mysql",
        "password": "remote-password",
        "extra": json.dumps({"key_file": "remote-key-data", "n": 1}),
    }
    api = Api({("GET", "/execution/connections/db"): Response.with_json(200, body)})
    relay, masker = make_relay(api, context=None)
    answer = relay.answer_remote(GetConnection(id=4, conn_id="db"))
    assert isinstance(answer, ConnectionResult)
    assert answer.password == "remote-password"
    assert masker.mask("remote-password remote-key-data") == f"{MASK} {MASK}"
    assert masker.mask(answer.extra) == MASK


def test_connection_extra_that_is_not_json_is_masked_as_one_string():
    body = {"conn_id": "db", "conn_type": "x", "extra": "not json at all"}
    api = Api({("GET", "/execution/connections/db"): Response.with_json(200, body)})
    relay, masker = make_relay(api, context=None)
    relay.answer_remote(GetConnection(id=4, conn_id="db"))
    assert masker.mask("not json at all") == MASK


def test_put_variable_with_a_sensitive_name_is_masked_before_it_is_sent():
    api = Api({("PUT", "/execution/variables/my_secret"): Response(201)})
    relay, masker = make_relay(api, context=None)
    seen_masked: list[bool] = []
    api.on_request = lambda _request: seen_masked.append(masker.mask("new-secret") == MASK)
    assert relay.answer_remote(
        PutVariable(id=6, key="my_secret", value="new-secret")
    ) == OKResponse(id=6)
    assert seen_masked == [True]
    assert json.loads(api.requests[0].content) == {"val": "new-secret"}


def test_xcom_pull_defaults_to_the_tasks_own_dag_and_run():
    api = Api(
        {
            ("GET", "/execution/xcoms/dag/run/up/return_value"): Response.with_json(
                200, {"key": "return_value", "value": {"a": 1}}
            )
        }
    )
    relay, _ = make_relay(api)
    answer = relay.answer_remote(GetXCom(id=7, task_id="up"))
    assert answer == XComResult(id=7, key="return_value", value=raw({"a": 1}))


def test_xcom_push_is_written_as_this_task_instance():
    api = Api({("POST", "/execution/xcoms/dag/run/me/k"): Response(201)})
    relay, _ = make_relay(api)
    assert relay.answer_remote(SetXCom(id=8, key="k", value=raw([1, "x"]))) == OKResponse(id=8)
    assert json.loads(api.requests[0].content) == [1, "x"]
    assert api.requests[0].params["map_index"] == "-1"


def test_delete_requests_answer_ok():
    api = Api(
        {
            ("DELETE", "/execution/variables/k"): Response(204),
            ("DELETE", "/execution/xcoms/dag/run/me/k"): Response(204),
        }
    )
    relay, _ = make_relay(api)
    assert relay.answer_remote(DeleteVariable(id=1, key="k")) == OKResponse(id=1)
    assert relay.answer_remote(DeleteXCom(id=2, key="k")) == OKResponse(id=2)


@pytest.mark.parametrize(
    ("request_", "code"),
    [
        (GetVariable(id=9, key="missing"), ErrorCode.VARIABLE_NOT_FOUND),
        (GetConnection(id=9, conn_id="missing"), ErrorCode.CONNECTION_NOT_FOUND),
        (GetXCom(id=9, task_id="missing"), ErrorCode.XCOM_NOT_FOUND),
    ],
    ids=lambda v: getattr(v, "name", type(v).__name__),
)
def test_404_becomes_the_matching_not_found_code(request_, code):
    api = Api(default=Response.with_json(404, {"detail": {"reason": "not_found"}}))
    relay, _ = make_relay(api, context=None)
    answer = relay.answer_remote(request_)
    assert answer == ErrorResponse(
        id=9, error=code, detail={"status_code": 404, "detail": {"reason": "not_found"}}
    )


@pytest.mark.parametrize("status", [401, 403])
def test_401_and_403_become_permission_denied(status):
    api = Api(default=Response.with_json(status, {"detail": "team mismatch"}))
    relay, _ = make_relay(api, context=None)
    answer = relay.answer_remote(GetVariable(id=10, key="other_team"))
    assert isinstance(answer, ErrorResponse)
    assert answer.error is ErrorCode.PERMISSION_DENIED
    assert answer.detail == {"status_code": status, "detail": "team mismatch"}


def test_other_4xx_becomes_api_server_error_with_status():
    api = Api(default=Response.with_json(422, {"detail": "bad"}))
    relay, _ = make_relay(api, context=None)
    answer = relay.answer_remote(PutVariable(id=11, key="k", value="v"))
    assert isinstance(answer, ErrorResponse)
    assert answer.error is ErrorCode.API_SERVER_ERROR
    assert answer.detail["status_code"] == 422


def test_404_on_a_write_is_not_reported_as_not_found():
    api = Api(default=Response.with_json(404, {"detail": "no TI"}))
    relay, _ = make_relay(api, context=None)
    answer = relay.answer_remote(SetXCom(id=12, key="k", value=raw(1)))
    assert isinstance(answer, ErrorResponse)
    assert answer.error is ErrorCode.API_SERVER_ERROR


@pytest.mark.parametrize(
    "failure", [ConnectError("refused"), Response(503)], ids=["connect", "503"]
)
def test_unreachable_server_becomes_api_unreachable_with_attempts(failure):
    api = Api(default=failure)
    relay, _ = make_relay(api, context=None)
    answer = relay.answer_remote(GetVariable(id=13, key="k"))
    assert isinstance(answer, ErrorResponse)
    assert answer.id == 13
    assert answer.error is ErrorCode.API_UNREACHABLE
    assert answer.detail["attempts"] == 1


def test_unreadable_server_answer_becomes_api_server_error_not_an_exception():
    api = Api(default=Response.with_json(200, {"unexpected": "shape"}))
    relay, _ = make_relay(api, context=None)
    answer = relay.answer_remote(GetConnection(id=14, conn_id="db"))
    assert isinstance(answer, ErrorResponse)
    assert answer.error is ErrorCode.API_SERVER_ERROR
    assert "unreadable" in answer.detail["message"]


@pytest.mark.parametrize(
    "failure",
    [CertificateError("certificate verify failed"), TLSMismatchError("only one side speaks TLS")],
    ids=["certificate", "mismatch"],
)
def test_tls_failure_becomes_api_unreachable_with_its_reason_and_attempts(failure):
    # As before TLSError had its own class: supervise logs API_UNREACHABLE answers (giving up).
    def handler(request: Request) -> Response:
        raise failure

    client = ExecutionApiClient(
        "https://api.test/execution/",
        "tok",
        retry=RetryPolicy(budget=60.0),
        transport=MockTransport(handler),
    )
    answer = Relay(client, TI, None, Masker()).answer_remote(GetVariable(id=7, key="k"))
    assert isinstance(answer, ErrorResponse)
    assert (answer.id, answer.error) == (7, ErrorCode.API_UNREACHABLE)
    assert f"not retried: {type(failure).__name__}: {failure}" in answer.detail["message"]
    assert answer.detail["attempts"] == 1
