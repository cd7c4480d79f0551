"""supervisor.airflow_relay: Airflow's runner requests to Execution API calls, without a server.

The table below is the contract, one row per body type the relay serves: the body the runner
sends, the exact call taskvisor makes (method, encoded path, query pairs in order, JSON body),
the server's answer, and the reply the runner gets. Then what Airflow turns into an answer
rather than an error (404, 401/403, 409, 410), the errors, masking, and refusals.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, urlsplit

import pytest
from http_doubles import MockTransport, Response

from supervisor.airflow_relay import (
    SERVED_BODIES,
    SUPERVISION_BODIES,
    UNSUPPORTED,
    AirflowRelay,
    Reply,
)
from supervisor.client import ExecutionApiClient, RetryPolicy
from supervisor.http import ConnectError, Request
from supervisor.masking import MASK, MAX_TASK_SECRETS_BYTES, Masker

TI_ID = uuid.UUID("3fa85f64-5717-4562-b3fc-2c963f66afa6")
OTHER_TI = "0190a1b2-0000-7000-8000-000000000001"
WHEN = dt.datetime(2025, 6, 1, 12, 0, tzinfo=dt.UTC)  # as a msgpack timestamp decodes
ISO = "2025-06-01T12:00:00+00:00"  # a datetime in a query, as Airflow's client writes it
OK = Reply({"ok": True, "type": "OKResponse"})
EMPTY = Reply()

DAG_RUN = {
    "dag_id": "d",
    "run_id": "r",
    "logical_date": None,
    "data_interval_start": None,
    "data_interval_end": None,
    "run_after": "2025-06-01T12:00:00Z",
    "start_date": "2025-06-01T12:00:01Z",
    "end_date": None,
    "clear_number": 0,
    "run_type": "manual",
    "state": "running",
    "conf": {"a": 1},
    "triggering_user_name": None,
    "consumed_asset_events": [],
    "partition_key": None,
    "partition_date": None,
    "note": None,
    "team_name": None,
}
ASSET = {"name": "n", "uri": "s3://bucket/n", "group": "asset", "extra": {}}
CONNECTION = {
    "conn_id": "db",
    "conn_type": "postgres",
    "host": "db.local",
    "schema": "app",
    "login": "user",
    "password": "conn-password",
    "port": 5432,
    "extra": json.dumps({"sslkey": "extra-secret-key", "n": 1}),
}


def ok(body: Any, status: int = 200) -> Response:
    return Response.with_json(status, body)


class Case(NamedTuple):
    body: dict[str, Any]
    method: str
    path: str  # encoded, after the base URL's /execution/
    query: list[tuple[str, str]]
    sent: Any  # the JSON body sent, or None for no body
    answer: Response
    reply: Reply


def tagged(kind: str, fields: dict[str, Any]) -> Reply:
    return Reply({**fields, "type": kind})


XCOM = {"key": "k", "dag_id": "d", "run_id": "r", "task_id": "t"}
HITL = {"ti_id": OTHER_TI, "options": ["yes", "no"], "subject": "Deploy?"}
HITL_SENT = {
    **HITL,
    "body": None,
    "defaults": None,
    "multiple": False,
    "params": None,
    "assigned_users": [{"id": "u1", "name": "Ann"}],
    "type": "CreateHITLDetailPayload",
}
HITL_ANSWER = {**HITL, "body": None, "defaults": None, "multiple": False, "params": {}}
TI_PATH = f"task-instances/{TI_ID}"

CASES = [
    Case({"type": "GetConnection", "conn_id": "db"}, "GET", "connections/db", [], None,
         ok(CONNECTION), tagged("ConnectionResult", CONNECTION)),
    Case({"type": "GetVariable", "key": "greeting"}, "GET", "variables/greeting", [], None,
         ok({"key": "greeting", "value": "hi"}),
         tagged("VariableResult", {"key": "greeting", "value": "hi"})),
    Case({"type": "GetVariableKeys", "prefix": "app_"}, "GET", "variables/keys",
         [("limit", "1000"), ("offset", "0"), ("prefix", "app_")], None,
         ok({"keys": ["app_a"], "total_entries": 1}),
         tagged("VariableKeysResult", {"keys": ["app_a"], "total_entries": 1})),
    Case({"type": "PutVariable", "key": "k", "value": "v", "description": None}, "PUT",
         "variables/k", [], {"val": "v", "description": None}, Response(201), EMPTY),
    Case({"type": "DeleteVariable", "key": "k"}, "DELETE", "variables/k", [], None,
         Response(204), OK),
    Case({"type": "GetXCom", **XCOM, "map_index": 2, "include_prior_dates": True}, "GET",
         "xcoms/d/r/t/k", [("map_index", "2"), ("include_prior_dates", "true")], None,
         ok({"key": "k", "value": {"a": [1]}}),
         tagged("XComResult", {"key": "k", "value": {"a": [1]}})),
    Case({"type": "GetXComCount", **XCOM}, "HEAD", "xcoms/d/r/t/k", [], None,
         Response(200, headers={"Content-Range": "map_indexes 3"}),
         tagged("XComCountResponse", {"len": 3})),
    Case({"type": "GetXComSequenceItem", **XCOM, "offset": -1}, "GET", "xcoms/d/r/t/k/item/-1",
         [], None, ok("last"), tagged("XComSequenceIndexResult", {"root": "last"})),
    Case({"type": "GetXComSequenceSlice", **XCOM, "start": 0, "stop": None, "step": 2}, "GET",
         "xcoms/d/r/t/k/slice", [("start", "0"), ("step", "2")], None, ok([1, 3]),
         tagged("XComSequenceSliceResult", {"root": [1, 3]})),
    Case({"type": "SetXCom", **XCOM, "value": {"x": [1]}, "map_index": 0, "dag_result": True,
          "mapped_length": 3}, "POST", "xcoms/d/r/t/k",
         [("dag_result", "true"), ("map_index", "0"), ("mapped_length", "3")], {"x": [1]},
         Response(201), EMPTY),
    Case({"type": "DeleteXCom", **XCOM, "map_index": -1}, "DELETE", "xcoms/d/r/t/k", [], None,
         Response(204), EMPTY),
    Case({"type": "SetRenderedFields", "rendered_fields": {"cmd": "echo hi"}}, "PUT",
         f"{TI_PATH}/rtif", [], {"cmd": "echo hi"}, Response(201), EMPTY),
    Case({"type": "SetRenderedMapIndex", "rendered_map_index": "eu-west"}, "PATCH",
         f"{TI_PATH}/rendered-map-index", [], "eu-west", Response(204), EMPTY),
    Case({"type": "SkipDownstreamTasks", "tasks": ["a", ["b", 1]]}, "PATCH",
         f"{TI_PATH}/skip-downstream", [], {"tasks": ["a", ["b", 1]]}, Response(204), EMPTY),
    # Airflow asks about the try it supervises, whatever ti_id the body names.
    Case({"type": "GetPrevSuccessfulDagRun", "ti_id": OTHER_TI}, "GET",
         f"{TI_PATH}/previous-successful-dagrun", [], None,
         ok({"start_date": "2025-05-01T00:00:00Z", "end_date": None}),
         tagged("PrevSuccessfulDagRunResult",
                {"start_date": "2025-05-01T00:00:00Z", "end_date": None})),
    Case({"type": "GetTaskRescheduleStartDate", "ti_id": OTHER_TI, "try_number": 2}, "GET",
         f"task-reschedules/{OTHER_TI}/start_date", [("try_number", "2")], None,
         ok("2025-06-01T12:00:00Z"), tagged("TaskRescheduleStartDate", {"start_date": WHEN})),
    Case({"type": "ValidateInletsAndOutlets", "ti_id": OTHER_TI}, "GET",
         f"task-instances/{OTHER_TI}/validate-inlets-and-outlets", [], None,
         ok({"inactive_assets": []}), tagged("InactiveAssetsResult", {"inactive_assets": []})),
    Case({"type": "GetTICount", "dag_id": "d", "task_ids": ["a", "b"], "logical_dates": [WHEN],
          "run_ids": ["r"], "states": ["success", "failed"], "map_index": 0}, "GET",
         "task-instances/count",
         [("dag_id", "d"), ("task_ids", "a"), ("task_ids", "b"), ("logical_dates", ISO),
          ("run_ids", "r"), ("states", "success"), ("states", "failed"), ("map_index", "0")],
         None, ok(4), tagged("TICount", {"count": 4})),
    Case({"type": "GetTaskStates", "dag_id": "d", "task_group_id": "g", "map_index": -1}, "GET",
         "task-instances/states", [("dag_id", "d"), ("task_group_id", "g")], None,
         ok({"task_states": {"r": {"g.t": "success"}}}),
         tagged("TaskStatesResult", {"task_states": {"r": {"g.t": "success"}}})),
    Case({"type": "GetTaskBreadcrumbs", "dag_id": "d", "run_id": "r"}, "GET",
         "task-instances/breadcrumbs", [("dag_id", "d"), ("run_id", "r")], None,
         ok({"breadcrumbs": [{"task_id": "t"}]}),
         tagged("TaskBreadcrumbsResult", {"breadcrumbs": [{"task_id": "t"}]})),
    Case({"type": "GetPreviousTI", "dag_id": "d", "task_id": "t", "logical_date": WHEN,
          "state": "success"}, "GET", "task-instances/previous/d/t",
         [("map_index", "-1"), ("logical_date", ISO), ("state", "success")], None,
         ok({"task_id": "t", "dag_id": "d", "run_id": "r0", "try_number": 1}),
         tagged("PreviousTIResult", {"task_instance": {"task_id": "t", "dag_id": "d",
                                                       "run_id": "r0", "try_number": 1}})),
    Case({"type": "GetDRCount", "dag_id": "d", "states": ["running"]}, "GET", "dag-runs/count",
         [("dag_id", "d"), ("states", "running")], None, ok(2), tagged("DRCount", {"count": 2})),
    Case({"type": "GetDagRun", "dag_id": "d", "run_id": "r"}, "GET", "dag-runs/d/r", [], None,
         ok(DAG_RUN), tagged("DagRunResult", DAG_RUN)),
    Case({"type": "GetDagRunState", "dag_id": "d", "run_id": "r"}, "GET", "dag-runs/d/r/state",
         [], None, ok({"state": "running"}), tagged("DagRunStateResult", {"state": "running"})),
    Case({"type": "GetPreviousDagRun", "dag_id": "d", "logical_date": WHEN}, "GET",
         "dag-runs/previous", [("dag_id", "d"), ("logical_date", ISO)], None, ok(None),
         tagged("PreviousDagRunResult", {"dag_run": None})),
    Case({"type": "TriggerDagRun", "dag_id": "other", "run_id": "r2", "conf": {"a": 1},
          "logical_date": WHEN, "note": "from t"}, "POST", "dag-runs/other/r2", [],
         {"conf": {"a": 1}, "logical_date": "2025-06-01T12:00:00Z", "note": "from t"},
         Response(204), OK),
    Case({"type": "GetDag", "dag_id": "d"}, "GET", "dags/d", [], None,
         ok({"dag_id": "d", "is_paused": False, "tags": []}),
         tagged("DagResult", {"dag_id": "d", "is_paused": False, "tags": []})),
    Case({"type": "GetAssetByName", "name": "n"}, "GET", "assets/by-name", [("name", "n")],
         None, ok(ASSET), tagged("AssetResult", ASSET)),
    Case({"type": "GetAssetByUri", "uri": "s3://bucket/n"}, "GET", "assets/by-uri",
         [("uri", "s3://bucket/n")], None, ok(ASSET), tagged("AssetResult", ASSET)),
    Case({"type": "GetAssetsByAlias", "alias_name": "al"}, "GET", "assets/by-alias",
         [("alias_name", "al")], None, ok([ASSET]),
         tagged("AssetsByAliasResult", {"assets": [ASSET]})),
    # A None query value is sent as "name=", a bool as "false": as Airflow's client (httpx).
    Case({"type": "GetAssetEventByAsset", "name": None, "uri": "s3://x", "after": WHEN,
          "limit": 5, "ascending": False}, "GET", "asset-events/by-asset",
         [("name", ""), ("uri", "s3://x"), ("after", ISO), ("ascending", "false"), ("limit", "5")],
         None, ok({"asset_events": []}), tagged("AssetEventsResult", {"asset_events": []})),
    Case({"type": "GetAssetEventByAssetAlias", "alias_name": "al"}, "GET",
         "asset-events/by-asset-alias", [("name", "al"), ("ascending", "true")], None,
         ok({"asset_events": []}), tagged("AssetEventsResult", {"asset_events": []})),
    Case({"type": "GetTaskStateStore", "ti_id": OTHER_TI, "key": "a/b"}, "GET",
         f"store/ti/{OTHER_TI}/a%2Fb", [], None, ok({"value": [1]}),
         tagged("TaskStateStoreResult", {"value": [1]})),
    Case({"type": "SetTaskStateStore", "ti_id": OTHER_TI, "key": "k", "value": {"n": 1},
          "expires_at": None}, "PUT", f"store/ti/{OTHER_TI}/k", [],
         {"value": {"n": 1}, "expires_at": None}, Response(204), OK),
    Case({"type": "DeleteTaskStateStore", "ti_id": OTHER_TI, "key": "k"}, "DELETE",
         f"store/ti/{OTHER_TI}/k", [], None, Response(204), OK),
    Case({"type": "ClearTaskStateStore", "ti_id": OTHER_TI}, "DELETE", f"store/ti/{OTHER_TI}",
         [], None, Response(204), OK),
    Case({"type": "GetAssetStateStoreByName", "name": "n", "key": "k"}, "GET",
         "store/asset/by-name/value", [("name", "n"), ("key", "k")], None, ok({"value": 1}),
         tagged("AssetStateStoreResult", {"value": 1})),
    Case({"type": "GetAssetStateStoreByUri", "uri": "s3://x", "key": "k"}, "GET",
         "store/asset/by-uri/value", [("uri", "s3://x"), ("key", "k")], None, ok({"value": 1}),
         tagged("AssetStateStoreResult", {"value": 1})),
    Case({"type": "SetAssetStateStoreByName", "name": "n", "key": "k", "value": [1]}, "PUT",
         "store/asset/by-name/value", [("name", "n"), ("key", "k")], {"value": [1]},
         Response(204), OK),
    Case({"type": "SetAssetStateStoreByUri", "uri": "s3://x", "key": "k", "value": None}, "PUT",
         "store/asset/by-uri/value", [("uri", "s3://x"), ("key", "k")], {"value": None},
         Response(204), OK),
    Case({"type": "DeleteAssetStateStoreByName", "name": "n", "key": "k"}, "DELETE",
         "store/asset/by-name/value", [("name", "n"), ("key", "k")], None, Response(204), OK),
    Case({"type": "DeleteAssetStateStoreByUri", "uri": "s3://x", "key": "k"}, "DELETE",
         "store/asset/by-uri/value", [("uri", "s3://x"), ("key", "k")], None, Response(204), OK),
    Case({"type": "ClearAssetStateStoreByName", "name": "n"}, "DELETE",
         "store/asset/by-name/clear", [("name", "n")], None, Response(204), OK),
    Case({"type": "ClearAssetStateStoreByUri", "uri": "s3://x"}, "DELETE",
         "store/asset/by-uri/clear", [("uri", "s3://x")], None, Response(204), OK),
    # Airflow posts the request model whole, its "type" tag included.
    Case({"type": "CreateHITLDetailPayload", **HITL,
          "assigned_users": [{"id": "u1", "name": "Ann"}]}, "POST",
         f"hitlDetails/{OTHER_TI}", [], HITL_SENT, ok(HITL_ANSWER, 201),
         tagged("HITLDetailRequestResult", HITL_ANSWER)),
]  # fmt: skip


class Api:
    """MockTransport handler: one canned answer per (method, encoded path), requests kept."""

    def __init__(
        self,
        routes: dict[tuple[str, str], Response | Exception] | None = None,
        default: Response | Exception | None = None,
    ) -> None:
        self.routes = routes or {}
        self.default = default or Response.with_json(500, {"detail": "no such route"})
        self.requests: list[Request] = []
        self.on_request = lambda request: None

    def __call__(self, request: Request) -> Response:
        self.requests.append(request)
        self.on_request(request)
        answer = self.routes.get((request.method, urlsplit(request.url).path), self.default)
        if isinstance(answer, Exception):
            raise answer
        return answer


def make_relay(api: Api, masker: Masker | None = None) -> tuple[AirflowRelay, Masker]:
    masker = masker or Masker()
    client = ExecutionApiClient(
        "http://api.test/execution/",
        "tok",
        retry=RetryPolicy(budget=0.0, first_wait=0.001, max_wait=0.001),
        transport=MockTransport(api),
    )
    return AirflowRelay(client, TI_ID, masker), masker


def sent(request: Request) -> tuple[str, str, list[tuple[str, str]], Any]:
    url = urlsplit(request.url)
    body = json.loads(request.content) if request.content else None
    return (request.method, url.path, parse_qsl(url.query, keep_blank_values=True), body)


def error(kind: str, detail: dict[str, Any] | None) -> Reply:
    """An ErrorResponse *body*: an answer the runner checks for, not an error it raises."""
    return Reply({"error": kind, "detail": detail, "type": "ErrorResponse"})


def test_the_table_covers_every_body_the_relay_serves():
    assert sorted(case.body["type"] for case in CASES) == sorted(SERVED_BODIES - {"MaskSecret"})


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.body["type"])
def test_each_body_makes_airflows_call_and_answers_airflows_result(case: Case):
    path = "/execution/" + case.path
    api = Api({(case.method, path): case.answer})
    relay, _ = make_relay(api)

    assert relay.answer_locally(case.body) is None
    assert api.requests == []  # the loop thread never touched the network
    assert relay.answer_remote(case.body) == case.reply
    assert [sent(r) for r in api.requests] == [(case.method, path, case.query, case.sent)]


def test_json_bodies_are_sent_as_json_and_the_airflow_api_version_goes_with_every_call():
    api = Api({("PUT", "/execution/variables/k"): Response(201)})
    relay, _ = make_relay(api)
    relay.answer_remote({"type": "PutVariable", "key": "k", "value": "v", "description": "d"})
    (request,) = api.requests
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Airflow-API-Version"]


def test_xcom_without_map_index_or_prior_dates_sends_no_query():
    api = Api({("GET", "/execution/xcoms/d/r/t/k"): ok({"key": "k", "value": 1})})
    relay, _ = make_relay(api)
    relay.answer_remote({"type": "GetXCom", **XCOM, "map_index": None})
    relay.answer_remote({"type": "GetXCom", **XCOM, "map_index": -1})
    assert [sent(r)[2] for r in api.requests] == [[], []]


def test_ids_and_keys_are_percent_encoded_in_paths():
    body = {"type": "GetXCom", "key": "a b/c", "dag_id": "my dag", "run_id": "x+y", "task_id": "t"}
    path = "/execution/xcoms/my%20dag/x%2By/t/a%20b/c"  # a key may hold "/"
    api = Api({("GET", path): ok({"key": "k", "value": 1})})
    relay, _ = make_relay(api)
    assert relay.answer_remote(body) == tagged("XComResult", {"key": "k", "value": 1})


# --- what Airflow answers rather than raises -------------------------------------------------

NOT_FOUND = [
    ({"type": "GetConnection", "conn_id": "db"},
     error("CONNECTION_NOT_FOUND", {"conn_id": "db"})),
    ({"type": "GetVariable", "key": "k"}, error("VARIABLE_NOT_FOUND", {"key": "k"})),
    # As in Airflow 2: a missing XCom pulls as None.
    ({"type": "GetXCom", **XCOM}, tagged("XComResult", {"key": "k", "value": None})),
    ({"type": "GetXComSequenceItem", **XCOM, "offset": 4},
     error("XCOM_NOT_FOUND", {**XCOM, "offset": 4})),
    ({"type": "GetAssetByName", "name": "n"}, error("ASSET_NOT_FOUND", {"name": "n"})),
    ({"type": "GetAssetByUri", "uri": "s3://x"}, error("ASSET_NOT_FOUND", {"uri": "s3://x"})),
    ({"type": "GetTaskStateStore", "ti_id": OTHER_TI, "key": "k"},
     error("TASK_STORE_NOT_FOUND", {"key": "k"})),
    ({"type": "GetAssetStateStoreByName", "name": "n", "key": "k"},
     error("ASSET_STORE_NOT_FOUND", {"key": "k"})),
    ({"type": "GetAssetStateStoreByUri", "uri": "s3://x", "key": "k"},
     error("ASSET_STORE_NOT_FOUND", {"key": "k"})),
]  # fmt: skip


@pytest.mark.parametrize(("body", "reply"), NOT_FOUND, ids=lambda v: getattr(v, "get", id)("type"))
def test_404_answers_what_airflow_answers_for_a_missing_thing(body, reply):
    api = Api(default=Response.with_json(404, {"detail": {"reason": "not_found"}}))
    relay, _ = make_relay(api)
    assert relay.answer_remote(body) == reply


def test_get_variable_404_answers_variable_not_found_in_the_body_not_as_an_error():
    api = Api(default=Response.with_json(404, {"detail": "nope"}))
    relay, _ = make_relay(api)
    answer = relay.answer_remote({"type": "GetVariable", "key": "missing"})
    assert answer.error is None
    assert answer.body == {
        "error": "VARIABLE_NOT_FOUND",
        "detail": {"key": "missing"},
        "type": "ErrorResponse",
    }


@pytest.mark.parametrize("status", [401, 403])
def test_401_and_403_on_variables_and_connections_answer_permission_denied(status):
    api = Api(default=Response.with_json(status, {"detail": "team mismatch"}))
    relay, _ = make_relay(api)
    assert relay.answer_remote({"type": "GetVariable", "key": "k"}) == error(
        "PERMISSION_DENIED", {"key": "k", "status_code": status}
    )
    assert relay.answer_remote({"type": "GetConnection", "conn_id": "c"}) == error(
        "PERMISSION_DENIED", {"conn_id": "c", "status_code": status}
    )


@pytest.mark.parametrize(
    "body",
    [
        {"type": "GetDagRun", "dag_id": "d", "run_id": "r"},
        {"type": "SetXCom", **XCOM, "value": 1},
        {"type": "GetXComCount", **XCOM},
        {"type": "GetTICount", "dag_id": "d"},
    ],
    ids=lambda body: body["type"],
)
def test_404_elsewhere_is_an_api_server_error_with_the_status_and_the_servers_detail(body):
    api = Api(default=Response.with_json(404, {"detail": {"reason": "not_found"}}))
    relay, _ = make_relay(api)
    answer = relay.answer_remote(body)
    assert answer.body is None
    assert answer.error is not None
    assert answer.error["type"] == "ErrorResponse"
    assert answer.error["error"] == "API_SERVER_ERROR"
    detail = answer.error["detail"]
    assert (detail["status_code"], detail["detail"]) == (404, {"reason": "not_found"})
    assert "404" in detail["message"]


def test_403_elsewhere_is_an_api_server_error_not_permission_denied():
    api = Api(default=Response.with_json(403, {"detail": "no"}))
    relay, _ = make_relay(api)
    answer = relay.answer_remote({"type": "GetDag", "dag_id": "d"})
    assert answer.error is not None
    assert (answer.error["error"], answer.error["detail"]["status_code"]) == (
        "API_SERVER_ERROR",
        403,
    )


TRIGGER = {"type": "TriggerDagRun", "dag_id": "other", "run_id": "r2"}


def test_trigger_dag_run_409_answers_dagrun_already_exists():
    api = Api({("POST", "/execution/dag-runs/other/r2"): Response.with_json(409, {"detail": "x"})})
    relay, _ = make_relay(api)
    assert relay.answer_remote(TRIGGER) == error("DAGRUN_ALREADY_EXISTS", None)
    assert json.loads(api.requests[0].content) == {"conf": {}}


def test_trigger_dag_run_409_with_reset_clears_the_run_and_answers_ok():
    api = Api(
        {
            ("POST", "/execution/dag-runs/other/r2"): Response.with_json(409, {"detail": "x"}),
            ("POST", "/execution/dag-runs/other/r2/clear"): Response(204),
        }
    )
    relay, _ = make_relay(api)
    assert relay.answer_remote({**TRIGGER, "reset_dag_run": True}) == OK
    assert [sent(r) for r in api.requests] == [
        ("POST", "/execution/dag-runs/other/r2", [], {"conf": {}, "reset_dag_run": True}),
        ("POST", "/execution/dag-runs/other/r2/clear", [], None),
    ]


def test_trigger_dag_run_does_not_send_partition_key_as_airflows_supervisor_does_not():
    api = Api({("POST", "/execution/dag-runs/other/r2"): Response(204)})
    relay, _ = make_relay(api)
    relay.answer_remote({**TRIGGER, "partition_key": "p1", "run_after": WHEN})
    assert json.loads(api.requests[0].content) == {"conf": {}, "run_after": "2025-06-01T12:00:00Z"}


def test_rendered_fields_410_is_answered_empty_and_other_errors_are_not():
    path = f"/execution/{TI_PATH}/rtif"
    body = {"type": "SetRenderedFields", "rendered_fields": {"a": 1}}
    api = Api({("PUT", path): Response.with_json(410, {"detail": "gone"})})
    relay, _ = make_relay(api)
    assert relay.answer_remote(body) == EMPTY

    api.routes[("PUT", path)] = Response.with_json(409, {"detail": "not running"})
    answer = relay.answer_remote(body)
    assert answer.error is not None
    assert answer.error["detail"]["status_code"] == 409


# --- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "failure", [ConnectError("refused"), Response(503)], ids=["connect", "503"]
)
def test_unreachable_server_is_an_api_server_error_without_status_with_attempts(failure):
    api = Api(default=failure)
    relay, _ = make_relay(api)
    answer = relay.answer_remote({"type": "GetVariable", "key": "k"})
    assert answer.error is not None
    assert answer.error["error"] == "API_SERVER_ERROR"
    detail = answer.error["detail"]
    assert detail["status_code"] is None
    assert (detail["exception_type"], detail["attempts"]) == ("ServerUnreachable", 1)
    assert "failed after 1 attempt" in detail["message"]


@pytest.mark.parametrize(
    ("body", "answer"),
    [
        ({"type": "GetConnection", "conn_id": "db"}, ok({"unexpected": "shape"})),
        ({"type": "GetDagRun", "dag_id": "d", "run_id": "r"}, ok(["not", "an", "object"])),
        ({"type": "GetTICount", "dag_id": "d"}, ok("four")),
        ({"type": "GetTaskRescheduleStartDate", "ti_id": OTHER_TI}, ok("yesterday")),
        ({"type": "GetVariable", "key": "k"}, Response(200, content=b"<html>")),
    ],
    ids=lambda v: v["type"] if isinstance(v, dict) else None,
)
def test_an_answer_that_cannot_be_read_is_an_api_server_error_not_an_exception(body, answer):
    api = Api(default=answer)
    relay, _ = make_relay(api)
    reply = relay.answer_remote(body)
    assert reply.error is not None
    assert reply.error["error"] == "API_SERVER_ERROR"
    assert reply.error["detail"]["message"].startswith("unreadable answer: ")


def test_xcom_count_without_its_content_range_is_an_api_server_error():
    api = Api(default=Response(200))
    relay, _ = make_relay(api)
    reply = relay.answer_remote({"type": "GetXComCount", **XCOM})
    assert reply.error is not None
    assert "Content-Range" in reply.error["detail"]["message"]
    assert reply.error["detail"]["exception_type"] == "ApiError"


# --- masking ---------------------------------------------------------------------------------


def test_connection_password_and_extra_are_masked_before_the_answer_is_returned():
    api = Api({("GET", "/execution/connections/db"): ok(CONNECTION)})
    relay, masker = make_relay(api)
    answer = relay.answer_remote({"type": "GetConnection", "conn_id": "db"})
    assert answer.body is not None
    assert answer.body["password"] == "conn-password"  # the task gets it in clear
    assert masker.mask("conn-password extra-secret-key user") == f"{MASK} {MASK} user"
    assert masker.mask(answer.body["extra"]) == MASK


def test_sensitive_variable_is_masked_and_a_plain_one_is_not():
    api = Api(
        {
            ("GET", "/execution/variables/db_password"): ok(
                {"key": "db_password", "value": "remote-secret"}
            ),
            ("GET", "/execution/variables/region"): ok({"key": "region", "value": "eu-west-1"}),
        }
    )
    relay, masker = make_relay(api)
    relay.answer_remote({"type": "GetVariable", "key": "db_password"})
    relay.answer_remote({"type": "GetVariable", "key": "region"})
    assert masker.mask("remote-secret eu-west-1") == f"{MASK} eu-west-1"


def test_put_variable_with_a_sensitive_name_is_masked_before_it_is_sent():
    api = Api({("PUT", "/execution/variables/api_token"): Response(201)})
    relay, masker = make_relay(api)
    masked_when_sent: list[bool] = []
    api.on_request = lambda _request: masked_when_sent.append(masker.mask("new-token") == MASK)
    body = {"type": "PutVariable", "key": "api_token", "value": "new-token", "description": None}
    assert relay.answer_locally(body) is None
    assert relay.answer_remote(body) == EMPTY
    assert masked_when_sent == [True]


def test_mask_secret_is_registered_on_the_loop_thread_and_answered_empty():
    api = Api()
    relay, masker = make_relay(api)
    assert relay.answer_locally({"type": "MaskSecret", "value": "my-own-secret"}) == EMPTY
    assert masker.mask("my-own-secret") == MASK
    assert api.requests == []


def test_mask_secret_follows_airflows_names_a_plain_named_value_stays_readable():
    # The runner sends MaskSecret(value, name=key) for every variable it reads.
    relay, masker = make_relay(Api())
    relay.answer_locally({"type": "MaskSecret", "value": "eu-west-1", "name": "region"})
    relay.answer_locally({"type": "MaskSecret", "value": "hunter2-pass", "name": "db_password"})
    relay.answer_locally(
        {"type": "MaskSecret", "value": {"user": "admin-user", "api_key": "key-12345"}}
    )
    relay.answer_locally({"type": "MaskSecret", "value": ["list-secret"], "name": "token_list"})
    text = "eu-west-1 hunter2-pass admin-user key-12345 list-secret"
    assert masker.mask(text) == f"eu-west-1 {MASK} admin-user {MASK} {MASK}"


def test_mask_secret_past_the_tries_caps_is_refused_naming_the_cap_and_registers_nothing():
    relay, masker = make_relay(Api())
    too_much = "x" * (MAX_TASK_SECRETS_BYTES // 4)
    for n in range(4):
        assert relay.answer_locally({"type": "MaskSecret", "value": f"{n}{too_much}"[:-1]}) == EMPTY
    refused = relay.answer_locally({"type": "MaskSecret", "value": "one-more-secret"})
    assert refused is not None
    assert refused.body is None
    assert refused.error is not None
    assert refused.error["error"] == "GENERIC_ERROR"
    assert "MaskSecret refused" in refused.error["detail"]["message"]
    assert "MAX_TASK_SECRETS_BYTES" in refused.error["detail"]["message"]
    assert masker.mask("one-more-secret") == "one-more-secret"


def test_put_variable_with_a_sensitive_name_past_the_caps_is_refused_and_not_sent():
    api = Api()
    relay, _ = make_relay(api)
    huge = "s" * (MAX_TASK_SECRETS_BYTES + 1)
    body = {"type": "PutVariable", "key": "my_secret", "value": huge, "description": None}
    refused = relay.answer_locally(body)
    assert refused is not None
    assert refused.error is not None
    assert "the variable was not set" in refused.error["detail"]["message"]
    assert api.requests == []


# --- refusals --------------------------------------------------------------------------------


def refusal(reply: Reply | None) -> str:
    assert reply is not None
    assert reply.body is None
    assert reply.error is not None
    assert (reply.error["type"], reply.error["error"]) == ("ErrorResponse", "GENERIC_ERROR")
    return str(reply.error["detail"]["message"])


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"key": "k"}, 'a request body must be a map with a "type"'),
        ({"type": 7}, 'a request body must be a map with a "type"'),
        ({"type": "GetWeather"}, "GetWeather refused: unknown request type"),
        ({"type": "UpdateHITLDetail", "ti_id": OTHER_TI}, "UpdateHITLDetail refused: not served"),
        ({"type": "GetHITLDetailResponse"}, "GetHITLDetailResponse refused: not served"),
        ({"type": "SucceedTask"}, "SucceedTask refused: the supervision handles it"),
        (
            {"type": "GetVariable"},
            "GetVariable refused: invalid body: Object missing required field `key`",
        ),
        (
            {"type": "GetXComSequenceSlice", **XCOM, "start": 0, "stop": 1},
            "missing required field `step`",
        ),
        ({"type": "GetTICount", "dag_id": 5}, "Expected `str`, got `int` - at `$.dag_id`"),
        (
            {"type": "GetPreviousDagRun", "dag_id": "d", "logical_date": "2025-01-01T00:00:00"},
            "at `$.logical_date`",
        ),
        (
            {"type": "TriggerDagRun", "dag_id": "d", "run_id": "r", "confs": {}},
            "unknown field `confs`",
        ),
        ({"type": "CreateHITLDetailPayload", **HITL, "options": []}, "at `$.options`"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_a_body_the_relay_cannot_serve_is_refused_naming_it_on_both_paths(body, words):
    api = Api()
    relay, _ = make_relay(api)
    assert words in refusal(relay.answer_locally(body))
    assert words in refusal(relay.answer_remote(body))
    assert api.requests == []


def test_unknown_keys_are_ignored_where_airflows_model_ignores_them():
    api = Api({("GET", "/execution/variables/k"): ok({"key": "k", "value": "v"})})
    relay, _ = make_relay(api)
    body = {"type": "GetVariable", "key": "k", "from_the_future": 1}
    assert relay.answer_locally(body) is None
    assert relay.answer_remote(body) == tagged("VariableResult", {"key": "k", "value": "v"})


def test_body_types_are_served_handled_by_the_supervision_or_unsupported_never_two():
    assert not SERVED_BODIES & SUPERVISION_BODIES
    assert not SERVED_BODIES & UNSUPPORTED
    assert not SUPERVISION_BODIES & UNSUPPORTED


# --- supervisor.client: list query values -----------------------------------------------------


def test_client_sends_a_list_query_value_as_one_pair_per_item():
    api = Api(default=Response(200))
    client = ExecutionApiClient("http://api.test/execution/", "tok", transport=MockTransport(api))
    client.request("GET", "task-instances/count", params={"task_ids": ["a", "b c"], "n": 1})
    assert urlsplit(api.requests[0].url).query == "task_ids=a&task_ids=b+c&n=1"
