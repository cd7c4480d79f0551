"""supervisor.client: Airflow's Execution API, tested with http_doubles.MockTransport."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Callable

import msgspec
import pytest
from http_doubles import MockTransport, Response

from comms.api import (
    API_VERSION,
    TaskInstance,
    TIEnterRunningPayload,
    TIHeartbeatInfo,
    TISuccessStatePayload,
    TITerminalStatePayload,
)
from supervisor.client import ExecutionApiClient, RetryPolicy
from supervisor.errors import (
    Conflict,
    Gone,
    NotFound,
    ServerResponseError,
    ServerUnreachable,
    TLSError,
    Unauthorized,
)
from supervisor.http import (
    CertificateError,
    ConnectError,
    ReadTimeout,
    Request,
    TLSMismatchError,
)

SERVER = "http://api.test/execution"
TI_ID = uuid.UUID("3fa85f64-5717-4562-b3fc-2c963f66afa6")
TI = TaskInstance(
    id=TI_ID,
    dag_id="my dag",
    task_id="t/1",
    run_id="manual__2026-01-01T00:00:00+00:00",
    try_number=1,
    map_index=2,
)
WHEN = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
TINY = RetryPolicy(budget=0.2, first_wait=0.001, max_wait=0.002)
RUN_CONTEXT = {
    "dag_run": {"dag_id": "my dag", "run_id": "r"},
    "max_tries": 2,
    "should_retry": True,
    "unknown_new_field": 1,
}

Handler = Callable[[Request], Response]


class Recorder:
    """A MockTransport handler that records every request and answers from a script."""

    def __init__(self, *answers: Response | Exception | Handler) -> None:
        self.answers = list(answers)
        self.requests: list[Request] = []

    def __call__(self, request: Request) -> Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        if callable(answer):
            return answer(request)
        return answer


def client_for(recorder: Recorder, *, retry: RetryPolicy = TINY, **kwargs) -> ExecutionApiClient:
    return ExecutionApiClient(
        SERVER, "tok-0", retry=retry, transport=MockTransport(recorder), **kwargs
    )


def ok(json_body=None, **kwargs) -> Response:
    return Response.with_json(200, json_body if json_body is not None else {}, **kwargs)


def test_every_request_carries_bearer_token_api_version_and_a_fresh_correlation_id():
    rec = Recorder(ok({"key": "k", "value": "v"}))
    client = client_for(rec)
    client.get_variable("k")
    client.get_variable("k")
    first, second = rec.requests
    assert first.headers["Authorization"] == "Bearer tok-0"
    assert first.headers["Airflow-API-Version"] == API_VERSION
    assert uuid.UUID(first.headers["correlation-id"])
    assert first.headers["correlation-id"] != second.headers["correlation-id"]
    assert first.url == "http://api.test/execution/variables/k"


def test_refreshed_token_is_adopted_and_used_on_the_next_request():
    rec = Recorder(
        ok({"key": "k", "value": "v"}, headers={"Refreshed-API-Token": "tok-1"}),
        ok({"key": "k", "value": "v"}),
    )
    client = client_for(rec)
    client.get_variable("k")
    assert client.token == "tok-1"
    client.get_variable("k")
    assert rec.requests[1].headers["Authorization"] == "Bearer tok-1"


def test_workload_token_is_exchanged_on_run_and_run_context_decoded():
    rec = Recorder(ok(RUN_CONTEXT, headers={"Refreshed-API-Token": "execution-token"}))
    client = ExecutionApiClient(SERVER, "workload-token", retry=TINY, transport=MockTransport(rec))
    payload = TIEnterRunningPayload(hostname="h", unixname="u", pid=42, start_date=WHEN)
    context = client.run(TI_ID, payload)
    request = rec.requests[0]
    assert request.method == "PATCH"
    assert request.path == f"/execution/task-instances/{TI_ID}/run"
    assert request.headers["Authorization"] == "Bearer workload-token"
    assert request.headers["Content-Type"] == "application/json"
    assert json.loads(request.content) == {
        "state": "running",
        "hostname": "h",
        "unixname": "u",
        "pid": 42,
        "start_date": "2026-01-01T00:00:00Z",
    }
    assert context.should_retry is True
    assert context.max_tries == 2
    assert client.token == "execution-token"


def test_every_issued_token_is_handed_to_on_token_before_it_is_used():
    seen: list[tuple[str, str]] = []
    rec = Recorder(
        ok({"key": "k", "value": "v"}, headers={"Refreshed-API-Token": "tok-1"}),
        ok({"key": "k", "value": "v"}, headers={"Refreshed-API-Token": "tok-2"}),
    )
    client = client_for(rec, on_token=lambda token: seen.append((token, client.token)))
    client.get_variable("k")
    client.get_variable("k")
    # Called with the new token while the old one is still current: masked before use.
    assert seen == [("tok-1", "tok-0"), ("tok-2", "tok-1")]


def test_refreshed_token_is_adopted_even_from_an_error_response():
    rec = Recorder(
        Response.with_json(404, {"detail": "nope"}, headers={"Refreshed-API-Token": "tok-9"})
    )
    client = client_for(rec)
    with pytest.raises(NotFound):
        client.get_variable("k")
    assert client.token == "tok-9"


def test_5xx_is_retried_until_success():
    rec = Recorder(
        Response(503),
        Response.with_json(500, {"detail": "db"}),
        ok({"key": "k", "value": "v"}),
    )
    retries: list[tuple] = []
    client = client_for(
        rec,
        retry=RetryPolicy(budget=5.0, first_wait=0.001, max_wait=0.001),
        on_retry=lambda *a: retries.append(a),
    )
    assert client.get_variable("k").value == "v"
    assert len(rec.requests) == 3
    assert [(what, attempt) for what, attempt, _, _ in retries] == [
        ("GET variables/k", 1),
        ("GET variables/k", 2),
    ]
    assert "HTTP 503" in retries[0][2]
    assert "HTTP 500: db" in retries[1][2]
    assert all(0 <= wait <= 0.001 for *_, wait in retries)


def test_connection_errors_are_retried_until_success():
    rec = Recorder(ConnectError("refused"), ReadTimeout("slow"), ok({"key": "k", "value": "v"}))
    retries: list[tuple] = []
    client = client_for(
        rec,
        retry=RetryPolicy(budget=5.0, first_wait=0.001, max_wait=0.001),
        on_retry=lambda *a: retries.append(a),
    )
    assert client.get_variable("k").key == "k"
    assert [r[2].split(":")[0] for r in retries] == ["ConnectError", "ReadTimeout"]


def test_retries_stop_when_the_budget_ends_with_server_unreachable_and_attempt_count():
    rec = Recorder(ConnectError("refused"))
    retries: list[tuple] = []
    client = client_for(
        rec,
        retry=RetryPolicy(budget=0.05, first_wait=0.01, max_wait=0.01),
        on_retry=lambda *a: retries.append(a),
    )
    with pytest.raises(ServerUnreachable) as info:
        client.get_variable("k")
    assert info.value.attempts == len(rec.requests)
    assert info.value.attempts >= 2
    assert len(retries) == info.value.attempts - 1
    assert f"after {info.value.attempts} attempt(s)" in str(info.value)
    assert "ConnectError" in str(info.value)


def test_zero_budget_means_one_attempt():
    rec = Recorder(Response(502))
    client = client_for(rec, retry=RetryPolicy(budget=0.0, first_wait=0.001, max_wait=0.001))
    with pytest.raises(ServerUnreachable) as info:
        client.get_variable("k")
    assert info.value.attempts == 1


def test_per_call_budget_overrides_the_policy():
    rec = Recorder(Response(502))
    client = client_for(rec, retry=RetryPolicy(budget=3600, first_wait=0.001, max_wait=0.001))
    with pytest.raises(ServerUnreachable):
        client.update_state(TI_ID, TISuccessStatePayload(end_date=WHEN), budget=0.0)
    assert len(rec.requests) == 1


@pytest.mark.parametrize(
    ("status", "error_type"),
    [
        (400, ServerResponseError),
        (401, Unauthorized),
        (403, Unauthorized),
        (404, NotFound),
        (409, Conflict),
        (410, Gone),
        (422, ServerResponseError),
    ],
)
def test_4xx_is_never_retried_and_raises_the_right_error_with_the_servers_detail(
    status, error_type
):
    detail = {"reason": "invalid_state", "message": "TI was not queued"}
    rec = Recorder(Response.with_json(status, {"detail": detail}))
    retries: list[tuple] = []
    client = client_for(
        rec, retry=RetryPolicy(budget=5.0, first_wait=0.001), on_retry=lambda *a: retries.append(a)
    )
    with pytest.raises(error_type) as info:
        client.get_connection("db")
    assert type(info.value) is error_type
    assert info.value.status == status
    assert info.value.detail == detail
    assert len(rec.requests) == 1
    assert retries == []


def test_non_json_error_body_becomes_the_detail_text():
    rec = Recorder(Response(400, content=b"plain words"))
    with pytest.raises(ServerResponseError) as info:
        client_for(rec).delete_variable("k")
    assert info.value.detail == "plain words"


def test_heartbeat_is_one_attempt_never_retried():
    rec = Recorder(Response(500))
    retries: list[tuple] = []
    client = client_for(
        rec, retry=RetryPolicy(budget=5.0, first_wait=0.001), on_retry=lambda *a: retries.append(a)
    )
    with pytest.raises(ServerUnreachable) as info:
        client.heartbeat(TI_ID, TIHeartbeatInfo(hostname="h", pid=7))
    assert info.value.attempts == 1
    assert retries == []
    request = rec.requests[0]
    assert (request.method, request.path) == (
        "PUT",
        f"/execution/task-instances/{TI_ID}/heartbeat",
    )
    assert json.loads(request.content) == {"hostname": "h", "pid": 7}


def test_heartbeat_connection_error_is_not_retried_either():
    rec = Recorder(ConnectError("refused"))
    client = client_for(rec, retry=RetryPolicy(budget=5.0, first_wait=0.001))
    with pytest.raises(ServerUnreachable):
        client.heartbeat(TI_ID, TIHeartbeatInfo(hostname="h", pid=7))
    assert len(rec.requests) == 1


@pytest.mark.parametrize(
    ("payload", "body"),
    [
        (
            TISuccessStatePayload(end_date=WHEN),
            {
                "state": "success",
                "end_date": "2026-01-01T00:00:00Z",
                "task_outlets": [],
                "outlet_events": [],
            },
        ),
        (
            TITerminalStatePayload(state="failed", end_date=WHEN),
            {"state": "failed", "end_date": "2026-01-01T00:00:00Z"},
        ),
    ],
)
def test_update_state_patches_the_state_body(payload, body):
    rec = Recorder(Response(204))
    client_for(rec).update_state(TI_ID, payload)
    request = rec.requests[0]
    assert (request.method, request.path) == (
        "PATCH",
        f"/execution/task-instances/{TI_ID}/state",
    )
    assert json.loads(request.content) == body


def test_put_variable_body_names_the_value_val():
    rec = Recorder(Response.with_json(201, {"message": "ok"}))
    client_for(rec).put_variable("my/key", "the value", None)
    request = rec.requests[0]
    assert request.method == "PUT"
    assert request.target == "/execution/variables/my%2Fkey"
    assert json.loads(request.content) == {"val": "the value"}


def test_put_variable_sends_a_description_when_given():
    rec = Recorder(Response(201))
    client_for(rec).put_variable("k", "v", "what it is")
    assert json.loads(rec.requests[0].content) == {"val": "v", "description": "what it is"}


def test_delete_variable():
    rec = Recorder(Response(204))
    client_for(rec).delete_variable("k")
    assert (rec.requests[0].method, rec.requests[0].path) == (
        "DELETE",
        "/execution/variables/k",
    )


def test_get_connection_decodes_airflows_shape():
    rec = Recorder(
        ok(
            {
                "conn_id": "db",
                "conn_type": "postgres",
                "host": "h",
                "port": 5432,
                "password": "pw",
                "extra": '{"a": 1}',
                "new_field": True,
            }
        )
    )
    conn = client_for(rec).get_connection("db")
    assert (conn.conn_id, conn.port, conn.password, conn.extra) == ("db", 5432, "pw", '{"a": 1}')
    assert rec.requests[0].path == "/execution/connections/db"


def test_set_xcom_posts_the_raw_json_value_with_map_index_query():
    rec = Recorder(Response(201))
    client_for(rec).set_xcom(TI, "return_value", b'{"rows": [1, 2]}')
    request = rec.requests[0]
    assert request.method == "POST"
    assert request.target == (
        "/execution/xcoms/my%20dag/manual__2026-01-01T00%3A00%3A00%2B00%3A00/t%2F1/return_value"
        "?map_index=2"
    )
    assert request.params["map_index"] == "2"
    assert request.content == b'{"rows": [1, 2]}'
    assert request.headers["Content-Type"] == "application/json"


def test_get_xcom_reads_any_tasks_xcom_with_map_index_query():
    rec = Recorder(ok({"key": "k", "value": [1, "two"]}))
    xcom = client_for(rec).get_xcom("d", "r", "up", "k", -1)
    request = rec.requests[0]
    assert (request.method, request.path) == ("GET", "/execution/xcoms/d/r/up/k")
    assert request.params["map_index"] == "-1"
    assert msgspec.json.decode(xcom.value) == [1, "two"]


def test_delete_xcom_of_own_task_instance():
    rec = Recorder(Response(204))
    client_for(rec).delete_xcom(TI, "k")
    request = rec.requests[0]
    assert request.method == "DELETE"
    assert request.params["map_index"] == "2"


def test_retry_policy_waits_grow_exponentially_with_full_jitter_and_a_cap():
    policy = RetryPolicy(budget=60, first_wait=0.5, max_wait=2.0)
    for attempt, cap in [(1, 0.5), (2, 1.0), (3, 2.0), (10, 2.0)]:
        waits = [policy.wait(attempt) for _ in range(200)]
        assert all(0 <= w <= cap for w in waits)
        assert max(waits) > cap / 2  # jitter spreads over the whole range


@pytest.mark.parametrize(
    "error",
    [
        CertificateError("certificate verify failed: self-signed certificate"),
        TLSMismatchError("https:// URL, but h:1 does not speak TLS on that port"),
    ],
)
def test_a_tls_failure_is_not_retried_and_is_a_tls_error_not_a_transient_one(error):
    retries = []
    rec = Recorder(error)
    client = client_for(rec, retry=RetryPolicy(budget=60.0), on_retry=lambda *a: retries.append(a))
    with pytest.raises(TLSError) as info:
        client.get_variable("k")
    assert f"not retried: {type(error).__name__}: {error}" in str(info.value)
    assert not isinstance(info.value, ServerUnreachable)
    assert info.value.attempts == 1
    assert (len(rec.requests), retries) == (1, [])


def test_a_tls_failure_after_transient_errors_counts_every_attempt():
    rec = Recorder(ConnectError("refused"), CertificateError("certificate verify failed"))
    with pytest.raises(TLSError) as info:
        client_for(rec).get_variable("k")
    assert info.value.attempts == 2
