"""supervisor.airflow_relay against Airflow 3.3.2 itself: its protocol, its supervisor, its server.

1. Coverage: every body type of Airflow's ``ToSupervisor`` union (each also in its published
   ``schema/schema.json``) is served by the relay, handled by the supervision, or refused as
   unsupported; a body type added to Airflow fails the test.
2. Parity, without a server: for a request of every served type (and the failures Airflow
   answers rather than raises), the runner frames it with Airflow's own ``_RequestFrame``; our
   ``FrameDecoder`` and relay answer it, and so does Airflow's own supervisor
   (``ActivitySubprocess.handle_requests``, driven without a child process) over Airflow's own
   client, both against the same fake server. The calls made must be equal, and what Airflow's
   runner makes of each answer (``CommsDecoder._from_frame``: the validated result, or the
   error it raises) must be equal too.
3. The real api-server (the session's ``airflow`` fixture): a queued task instance's workload
   token, ``PATCH /run`` with taskvisor's client, then real bodies through
   ``AirflowRelay.answer_remote``, checked against Airflow's answers and its database; every
   reply is then read by Airflow's runner-side decoder.

Scripts run in the Airflow venv (``.airflow-venv``), where taskvisor is installed too, so
Airflow and taskvisor meet in one interpreter there and never in the test's.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import socket
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec
import pytest

from comms.airflow_frames import encode_response
from comms.api import TIEnterRunningPayload
from supervisor.airflow_relay import (
    SERVED_BODIES,
    SUPERVISION_BODIES,
    UNSUPPORTED,
    AirflowRelay,
    Reply,
)
from supervisor.client import ExecutionApiClient
from supervisor.masking import MASK, Masker

if TYPE_CHECKING:  # test modules take the harness from the `airflow` fixture, never import it
    from conftest import Airflow

# Each script reads one JSON document on stdin and prints one as its last stdout line.
COVERAGE = """
import json, typing
from pathlib import Path
import airflow.sdk.execution_time.comms as comms

union = typing.get_args(typing.get_args(comms.ToSupervisor)[0])
schema = json.loads((Path(comms.__file__).parent / "schema" / "schema.json").read_text())
print(json.dumps({
    "to_supervisor": sorted(model.__name__ for model in union),
    "schema": sorted(schema["$defs"]),
}))
"""

# What Airflow's runner makes of a response frame: the result it validated, or the error it
# raised (its ErrorType and the status code in the detail), or None for an empty answer.
RUNNER_SEES = """
import base64, json, socket, sys
import msgspec
from airflow.sdk.exceptions import AirflowRuntimeError
from airflow.sdk.execution_time.comms import CommsDecoder, _ResponseFrame

runner = CommsDecoder(socket=socket.socketpair()[0])
response_frames = msgspec.msgpack.Decoder(_ResponseFrame)

def runner_sees(frame):
    decoded = response_frames.decode(frame[4:])
    try:
        got = runner._from_frame(decoded)
    except AirflowRuntimeError as exc:
        return ["raised", exc.error.error.value, (exc.error.detail or {}).get("status_code")]
    return None if got is None else ["result", type(got).__name__, got.model_dump(mode="json")]
"""

RUNNER = (
    RUNNER_SEES
    + """
frames = json.load(sys.stdin)
print(json.dumps([runner_sees(base64.b64decode(frame)) for frame in frames]))
"""
)

PARITY = (
    RUNNER_SEES
    + """
import uuid
from urllib.parse import parse_qsl, unquote, urlsplit
import httpx, structlog
from pydantic import TypeAdapter
from airflow.sdk.api.client import Client
from airflow.sdk.execution_time.comms import ToSupervisor, _RequestFrame
from airflow.sdk.execution_time.supervisor import ActivitySubprocess
from comms.airflow_frames import FrameDecoder, RequestFrame, encode_response
from supervisor import http
from supervisor.airflow_relay import AirflowRelay
from supervisor.client import ExecutionApiClient, RetryPolicy
from supervisor.masking import Masker

TI_ID = uuid.UUID("3fa85f64-5717-4562-b3fc-2c963f66afa6")
SERVER = "http://api.test/execution/"


def fake_server(answers, seen):
    def answer(method, url, content):
        parts = urlsplit(url)
        path = unquote(parts.path)
        query = parse_qsl(parts.query, keep_blank_values=True)
        seen.append([method, path, query, json.loads(content) if content else None])
        status, body, headers = answers.get(f"{method} {path}", [404, {"detail": "no route"}, {}])
        content = b"" if status == 204 or method == "HEAD" else json.dumps(body).encode()
        return status, content, {"content-type": "application/json", **headers}
    return answer


class Transport:  # supervisor.http.Transport over the fake server
    def __init__(self, answer):
        self.answer = answer

    def handle_request(self, request):
        status, content, headers = self.answer(request.method, request.url, request.content)
        return http.Response(status, content=content, headers=headers)

    def close(self):
        pass


def ours(frame, answer):
    decoder = FrameDecoder(RequestFrame)
    decoder.feed(frame)
    body = decoder.next_frame().body
    transport = Transport(answer)
    client = ExecutionApiClient(SERVER, "tok", retry=RetryPolicy(budget=0.0), transport=transport)
    relay = AirflowRelay(client, TI_ID, Masker())
    reply = relay.answer_locally(body)
    if reply is None:
        reply = relay.answer_remote(body)
    return encode_response(7, reply.body, error=reply.error)


def airflows(frame, answer):
    def handler(request):
        status, content, headers = answer(request.method, str(request.url), request.content)
        return httpx.Response(status, content=content, headers=headers)

    client = Client(base_url=SERVER, token="tok", transport=httpx.MockTransport(handler))
    supervisor_end, runner_end = socket.socketpair()
    # Airflow's own supervisor, minus the child process: what handle_requests reads of it.
    proc = ActivitySubprocess.__new__(ActivitySubprocess)
    attributes = {"id": TI_ID, "stdin": supervisor_end, "client": client}
    for name, value in {**attributes, "_subprocess_schema_version": None}.items():
        object.__setattr__(proc, name, value)
    requests = proc.handle_requests(structlog.get_logger())
    next(requests)
    requests.send(msgspec.msgpack.Decoder(_RequestFrame).decode(frame[4:]))
    runner_end.settimeout(10)
    answer = runner_end.recv(4)
    size = int.from_bytes(answer, "big")
    while len(answer) < 4 + size:
        answer += runner_end.recv(4 + size - len(answer))
    return answer


to_supervisor = TypeAdapter(ToSupervisor)
results = {}
for name, case in json.load(sys.stdin).items():
    # The request as the runner writes it: its model dumped (datetimes stay datetimes) and framed.
    body = to_supervisor.validate_python(case["body"]).model_dump()
    frame = bytes(_RequestFrame(id=7, body=body).as_bytes())
    calls = {"ours": [], "airflow": []}
    results[name] = {
        "ours": [runner_sees(ours(frame, fake_server(case["answers"], calls["ours"])))],
        "airflow": [runner_sees(airflows(frame, fake_server(case["answers"], calls["airflow"])))],
    }
    for side in ("ours", "airflow"):
        results[name][side].insert(0, calls[side])
print(json.dumps(results))
"""
)


def runner_sees(run_in_airflow: Callable[[str, str], Any], replies: list[Reply]) -> list[Any]:
    """What Airflow's runner makes of each reply, framed by taskvisor."""
    frames = [encode_response(n, reply.body, error=reply.error) for n, reply in enumerate(replies)]
    encoded = [base64.b64encode(frame).decode() for frame in frames]
    return run_in_airflow(RUNNER, json.dumps(encoded))  # type: ignore[no-any-return]


# --- 1. coverage -----------------------------------------------------------------------------


def test_every_body_airflows_runner_can_send_is_served_supervised_or_refused_by_name(
    run_in_airflow,
):
    airflow = run_in_airflow(COVERAGE, "null")
    bodies = set(airflow["to_supervisor"])

    assert len(bodies) == 55  # Airflow 3.3.2; a new body type must be placed below
    assert bodies <= set(airflow["schema"])
    assert bodies == SERVED_BODIES | SUPERVISION_BODIES | UNSUPPORTED
    assert len(bodies) == len(SERVED_BODIES) + len(SUPERVISION_BODIES) + len(UNSUPPORTED)


def test_the_runner_raises_each_refusal_naming_what_was_refused(run_in_airflow):
    relay = AirflowRelay(ExecutionApiClient("http://127.0.0.1:9/", "tok"), uuid.uuid4(), Masker())
    refused = [
        {"type": "GetWeather"},
        {"type": "UpdateHITLDetail", "ti_id": str(uuid.uuid4()), "chosen_options": ["yes"]},
        {"type": "GetVariable"},
        {"type": "SucceedTask"},
        {"key": "no type"},
    ]
    replies = [relay.answer_locally(body) for body in refused]

    assert all(reply is not None and reply.error is not None for reply in replies)
    seen = runner_sees(run_in_airflow, [reply for reply in replies if reply is not None])
    assert seen == [["raised", "GENERIC_ERROR", None]] * len(refused)


# --- 2. parity with Airflow's own supervisor ---------------------------------------------------

TI = "3fa85f64-5717-4562-b3fc-2c963f66afa6"
OTHER_TI = "0190a1b2-0000-7000-8000-000000000001"
WHEN = "2025-06-01T12:00:00Z"
DAG_RUN = {
    "dag_id": "d",
    "run_id": "r",
    "logical_date": WHEN,
    "data_interval_start": WHEN,
    "data_interval_end": WHEN,
    "run_after": WHEN,
    "start_date": WHEN,
    "end_date": None,
    "clear_number": 0,
    "run_type": "manual",
    "state": "running",
    "conf": {"when": WHEN},
    "triggering_user_name": "ann",
    "consumed_asset_events": [],
    "partition_key": None,
    "partition_date": None,
    "note": None,
    "team_name": None,
}
ASSET = {"name": "n", "uri": "s3://bucket/n", "group": "asset", "extra": {"k": 1}}
EVENT = {
    "id": 1,
    "timestamp": WHEN,
    "extra": {},
    "asset": ASSET,
    "created_dagruns": [],
    "source_task_id": "t",
    "source_dag_id": "d",
    "source_run_id": "r",
    "source_map_index": -1,
    "partition_key": None,
}
XCOM = {"key": "k", "dag_id": "d", "run_id": "r", "task_id": "t"}
XCOM_PATH = "/execution/xcoms/d/r/t/k"
HITL = {"ti_id": OTHER_TI, "options": ["yes", "no"], "subject": "Deploy?"}
HITL_ANSWER = {**HITL, "body": None, "defaults": ["no"], "multiple": False, "params": {}}


def case(body: dict[str, Any], *answers: tuple[Any, ...]) -> dict[str, Any]:
    """A request and the fake server's answers: ``(method path, status, JSON[, headers])``."""
    routes = {route: [status, json_, *(more or [{}])] for route, status, json_, *more in answers}
    return {"body": body, "answers": routes}


PARITY_CASES = {
    "GetConnection": case(
        {"type": "GetConnection", "conn_id": "db"},
        ("GET /execution/connections/db", 200, {
            "conn_id": "db", "conn_type": "postgres", "host": "h", "schema": "s", "login": "u",
            "password": "pw-secret", "port": 5432, "extra": '{"k": "extra-secret"}',
        }),
    ),
    "GetConnection 404": case({"type": "GetConnection", "conn_id": "db"}),
    "GetConnection 403": case(
        {"type": "GetConnection", "conn_id": "db"},
        ("GET /execution/connections/db", 403, {"detail": "no"}),
    ),
    "GetVariable": case(
        {"type": "GetVariable", "key": "k"},
        ("GET /execution/variables/k", 200, {"key": "k", "value": "v"}),
    ),
    "GetVariable 404": case({"type": "GetVariable", "key": "k"}),
    "GetVariable 401": case(
        {"type": "GetVariable", "key": "k"}, ("GET /execution/variables/k", 401, {"detail": "no"})
    ),
    "GetVariableKeys": case(
        {"type": "GetVariableKeys", "prefix": "app_", "limit": 5},
        ("GET /execution/variables/keys", 200, {"keys": ["app_a"], "total_entries": 1}),
    ),
    "PutVariable": case(
        {"type": "PutVariable", "key": "k", "value": "v", "description": "d"},
        ("PUT /execution/variables/k", 201, None),
    ),
    "DeleteVariable": case(
        {"type": "DeleteVariable", "key": "k"}, ("DELETE /execution/variables/k", 204, None)
    ),
    "GetXCom": case(
        {"type": "GetXCom", **XCOM, "map_index": 1, "include_prior_dates": True},
        ("GET " + XCOM_PATH, 200, {"key": "k", "value": {"a": [1, None]}}),
    ),
    "GetXCom 404": case({"type": "GetXCom", **XCOM}),
    "GetXComCount": case(
        {"type": "GetXComCount", **XCOM},
        (f"HEAD {XCOM_PATH}", 200, None, {"Content-Range": "map_indexes 4"}),
    ),
    "GetXComSequenceItem": case(
        {"type": "GetXComSequenceItem", **XCOM, "offset": -1},
        (f"GET {XCOM_PATH}/item/-1", 200, "last"),
    ),
    "GetXComSequenceItem 404": case({"type": "GetXComSequenceItem", **XCOM, "offset": 3}),
    "GetXComSequenceSlice": case(
        {"type": "GetXComSequenceSlice", **XCOM, "start": 1, "stop": None, "step": -1,
         "include_prior_dates": True},
        (f"GET {XCOM_PATH}/slice", 200, [3, 2]),
    ),
    "SetXCom": case(
        {"type": "SetXCom", **XCOM, "value": {"x": [1]}, "map_index": 2, "mapped_length": 4,
         "dag_result": True},
        (f"POST {XCOM_PATH}", 201, None),
    ),
    "SetXCom 404": case({"type": "SetXCom", **XCOM, "value": None}),
    "DeleteXCom": case(
        {"type": "DeleteXCom", **XCOM, "map_index": 0}, (f"DELETE {XCOM_PATH}", 204, None)
    ),
    "SetRenderedFields": case(
        {"type": "SetRenderedFields", "rendered_fields": {"cmd": "echo", "n": [1]}},
        (f"PUT /execution/task-instances/{TI}/rtif", 201, {"message": "ok"}),
    ),
    "SetRenderedFields 410": case(
        {"type": "SetRenderedFields", "rendered_fields": {}},
        (f"PUT /execution/task-instances/{TI}/rtif", 410, {"detail": "gone"}),
    ),
    "SetRenderedMapIndex": case(
        {"type": "SetRenderedMapIndex", "rendered_map_index": "eu"},
        (f"PATCH /execution/task-instances/{TI}/rendered-map-index", 204, None),
    ),
    "SkipDownstreamTasks": case(
        {"type": "SkipDownstreamTasks", "tasks": ["a", ["b", 1]]},
        (f"PATCH /execution/task-instances/{TI}/skip-downstream", 204, None),
    ),
    "GetPrevSuccessfulDagRun": case(
        {"type": "GetPrevSuccessfulDagRun", "ti_id": OTHER_TI},
        (f"GET /execution/task-instances/{TI}/previous-successful-dagrun", 200,
         {"data_interval_start": None, "data_interval_end": None, "start_date": WHEN,
          "end_date": WHEN}),
    ),
    "GetTaskRescheduleStartDate": case(
        {"type": "GetTaskRescheduleStartDate", "ti_id": OTHER_TI, "try_number": 3},
        (f"GET /execution/task-reschedules/{OTHER_TI}/start_date", 200, WHEN),
    ),
    "ValidateInletsAndOutlets": case(
        {"type": "ValidateInletsAndOutlets", "ti_id": OTHER_TI},
        (f"GET /execution/task-instances/{OTHER_TI}/validate-inlets-and-outlets", 200,
         {"inactive_assets": [{"name": "n", "uri": "u", "type": "Asset"}]}),
    ),
    "GetTICount": case(
        {"type": "GetTICount", "dag_id": "d", "map_index": 0, "task_ids": ["a", "b"],
         "task_group_id": "g", "logical_dates": [WHEN], "run_ids": ["r"], "states": ["success"]},
        ("GET /execution/task-instances/count", 200, 2),
    ),
    "GetTaskStates": case(
        {"type": "GetTaskStates", "dag_id": "d", "task_ids": ["a"], "logical_dates": [WHEN]},
        ("GET /execution/task-instances/states", 200, {"task_states": {"r": {"a": "success"}}}),
    ),
    "GetTaskBreadcrumbs": case(
        {"type": "GetTaskBreadcrumbs", "dag_id": "d", "run_id": "r"},
        ("GET /execution/task-instances/breadcrumbs", 200,
         {"breadcrumbs": [{"task_id": "a", "map_index": -1, "state": "success"}]}),
    ),
    "GetPreviousTI": case(
        {"type": "GetPreviousTI", "dag_id": "d", "task_id": "t", "logical_date": WHEN,
         "map_index": 2, "state": "success"},
        ("GET /execution/task-instances/previous/d/t", 200,
         {"task_id": "t", "dag_id": "d", "run_id": "r0", "logical_date": WHEN, "start_date": WHEN,
          "end_date": WHEN, "state": "success", "try_number": 1, "map_index": 2, "duration": 1.5}),
    ),
    "GetPreviousTI none": case(
        {"type": "GetPreviousTI", "dag_id": "d", "task_id": "t"},
        ("GET /execution/task-instances/previous/d/t", 200, None),
    ),
    "GetDRCount": case(
        {"type": "GetDRCount", "dag_id": "d", "logical_dates": [WHEN], "run_ids": ["r", "s"],
         "states": ["running"]},
        ("GET /execution/dag-runs/count", 200, 1),
    ),
    "GetDagRun": case(
        {"type": "GetDagRun", "dag_id": "d", "run_id": "r"},
        ("GET /execution/dag-runs/d/r", 200, DAG_RUN),
    ),
    "GetDagRun 404": case({"type": "GetDagRun", "dag_id": "d", "run_id": "r"}),
    "GetDagRunState": case(
        {"type": "GetDagRunState", "dag_id": "d", "run_id": "r"},
        ("GET /execution/dag-runs/d/r/state", 200, {"state": "success"}),
    ),
    "GetPreviousDagRun": case(
        {"type": "GetPreviousDagRun", "dag_id": "d", "logical_date": WHEN, "state": "success"},
        ("GET /execution/dag-runs/previous", 200, DAG_RUN),
    ),
    "TriggerDagRun": case(
        {"type": "TriggerDagRun", "dag_id": "d", "run_id": "r2", "conf": {"a": 1},
         "logical_date": WHEN, "run_after": WHEN, "note": "n", "partition_key": "p"},
        ("POST /execution/dag-runs/d/r2", 204, None),
    ),
    "TriggerDagRun 409": case(
        {"type": "TriggerDagRun", "dag_id": "d", "run_id": "r2"},
        ("POST /execution/dag-runs/d/r2", 409, {"detail": "exists"}),
    ),
    "TriggerDagRun 409 reset": case(
        {"type": "TriggerDagRun", "dag_id": "d", "run_id": "r2", "reset_dag_run": True},
        ("POST /execution/dag-runs/d/r2", 409, {"detail": "exists"}),
        ("POST /execution/dag-runs/d/r2/clear", 204, None),
    ),
    "GetDag": case(
        {"type": "GetDag", "dag_id": "d"},
        ("GET /execution/dags/d", 200,
         {"dag_id": "d", "is_paused": False, "bundle_name": "dags-folder", "bundle_version": None,
          "relative_fileloc": "d.py", "owners": "airflow", "tags": ["x"], "next_dagrun": WHEN}),
    ),
    "GetAssetByName": case(
        {"type": "GetAssetByName", "name": "n"}, ("GET /execution/assets/by-name", 200, ASSET)
    ),
    "GetAssetByName 404": case({"type": "GetAssetByName", "name": "n"}),
    "GetAssetByUri": case(
        {"type": "GetAssetByUri", "uri": "s3://bucket/n"},
        ("GET /execution/assets/by-uri", 200, {**ASSET, "extra": None}),
    ),
    "GetAssetByUri 404": case({"type": "GetAssetByUri", "uri": "s3://bucket/n"}),
    "GetAssetsByAlias": case(
        {"type": "GetAssetsByAlias", "alias_name": "al"},
        ("GET /execution/assets/by-alias", 200, [ASSET, ASSET]),
    ),
    "GetAssetEventByAsset": case(
        {"type": "GetAssetEventByAsset", "name": "n", "uri": None, "after": WHEN,
         "before": WHEN, "limit": 3, "ascending": False},
        ("GET /execution/asset-events/by-asset", 200, {"asset_events": [EVENT]}),
    ),
    "GetAssetEventByAssetAlias": case(
        {"type": "GetAssetEventByAssetAlias", "alias_name": "al", "limit": 0},
        ("GET /execution/asset-events/by-asset-alias", 200, {"asset_events": []}),
    ),
    "GetTaskStateStore": case(
        {"type": "GetTaskStateStore", "ti_id": OTHER_TI, "key": "k"},
        (f"GET /execution/store/ti/{OTHER_TI}/k", 200, {"value": {"n": [1]}}),
    ),
    "GetTaskStateStore 404": case({"type": "GetTaskStateStore", "ti_id": OTHER_TI, "key": "k"}),
    "SetTaskStateStore": case(
        {"type": "SetTaskStateStore", "ti_id": OTHER_TI, "key": "k", "value": [1],
         "expires_at": WHEN},
        (f"PUT /execution/store/ti/{OTHER_TI}/k", 204, None),
    ),
    "DeleteTaskStateStore": case(
        {"type": "DeleteTaskStateStore", "ti_id": OTHER_TI, "key": "k"},
        (f"DELETE /execution/store/ti/{OTHER_TI}/k", 204, None),
    ),
    "ClearTaskStateStore": case(
        {"type": "ClearTaskStateStore", "ti_id": OTHER_TI},
        (f"DELETE /execution/store/ti/{OTHER_TI}", 204, None),
    ),
    "GetAssetStateStoreByName": case(
        {"type": "GetAssetStateStoreByName", "name": "n", "key": "k"},
        ("GET /execution/store/asset/by-name/value", 200, {"value": 1}),
    ),
    "GetAssetStateStoreByUri 404": case(
        {"type": "GetAssetStateStoreByUri", "uri": "s3://x", "key": "k"}
    ),
    "SetAssetStateStoreByName": case(
        {"type": "SetAssetStateStoreByName", "name": "n", "key": "k", "value": {"a": 1}},
        ("PUT /execution/store/asset/by-name/value", 204, None),
    ),
    "SetAssetStateStoreByUri": case(
        {"type": "SetAssetStateStoreByUri", "uri": "s3://x", "key": "k", "value": None},
        ("PUT /execution/store/asset/by-uri/value", 204, None),
    ),
    "DeleteAssetStateStoreByName": case(
        {"type": "DeleteAssetStateStoreByName", "name": "n", "key": "k"},
        ("DELETE /execution/store/asset/by-name/value", 204, None),
    ),
    "DeleteAssetStateStoreByUri": case(
        {"type": "DeleteAssetStateStoreByUri", "uri": "s3://x", "key": "k"},
        ("DELETE /execution/store/asset/by-uri/value", 204, None),
    ),
    "ClearAssetStateStoreByName": case(
        {"type": "ClearAssetStateStoreByName", "name": "n"},
        ("DELETE /execution/store/asset/by-name/clear", 204, None),
    ),
    "ClearAssetStateStoreByUri": case(
        {"type": "ClearAssetStateStoreByUri", "uri": "s3://x"},
        ("DELETE /execution/store/asset/by-uri/clear", 204, None),
    ),
    "CreateHITLDetailPayload": case(
        {"type": "CreateHITLDetailPayload", **HITL, "defaults": ["no"],
         "assigned_users": [{"id": "u1", "name": "Ann"}]},
        (f"POST /execution/hitlDetails/{OTHER_TI}", 201, HITL_ANSWER),
    ),
    "MaskSecret": case({"type": "MaskSecret", "value": {"password": "hunter2-pw"}}),
}  # fmt: skip


@pytest.fixture(scope="module")
def parity(run_in_airflow) -> dict[str, Any]:
    return run_in_airflow(PARITY, json.dumps(PARITY_CASES))  # type: ignore[no-any-return]


def test_the_parity_cases_cover_every_body_the_relay_serves():
    served = {case["body"]["type"] for case in PARITY_CASES.values()}
    assert served == SERVED_BODIES


@pytest.mark.parametrize("name", sorted(PARITY_CASES))
def test_the_relay_makes_airflows_calls_and_airflows_runner_gets_the_same_answer(parity, name):
    ours, airflows = parity[name]["ours"], parity[name]["airflow"]
    calls, seen = ours
    assert bool(calls) == (name != "MaskSecret")  # MaskSecret is answered without the server
    assert calls == airflows[0]  # method, path, query pairs in order, JSON body
    assert seen == airflows[1]  # the validated result, or the error raised, or None


def test_answers_the_runner_raises_carry_the_status_airflow_reports(parity):
    seen = {name: p["ours"][1] for name, p in parity.items()}
    raised = {name: runner for name, runner in seen.items() if runner and runner[0] == "raised"}
    assert raised == {
        "GetDagRun 404": ["raised", "API_SERVER_ERROR", 404],
        "SetXCom 404": ["raised", "API_SERVER_ERROR", 404],
    }


# --- 3. the real api-server --------------------------------------------------------------------


class Live(msgspec.Struct):
    """One try entered with ``PATCH /run`` and the runner requests the relay answered for it."""

    workload: Any
    masker: Masker
    replies: dict[str, Reply]
    #: What Airflow's runner made of each reply (see ``RUNNER_SEES``).
    runner: dict[str, Any]
    #: The task instance as Airflow's REST API reports it after the requests.
    rest_ti: dict[str, Any]

    def result(self, name: str, kind: str) -> dict[str, Any]:
        """The result body of request ``name``, of type ``kind``."""
        reply = self.replies[name]
        assert reply.error is None, reply.error
        assert reply.body is not None
        assert reply.body["type"] == kind, reply.body
        return reply.body

    def not_found(self, name: str, error: str) -> Any:
        """The detail of the ErrorResponse body that answered request ``name``."""
        body = self.result(name, "ErrorResponse")
        assert body["error"] == error
        return body["detail"]


@pytest.fixture(scope="module")
def live(airflow: Airflow, run_in_airflow) -> Live:
    """A queued try of ``produce`` entered with taskvisor's client, then real runner bodies
    through the relay in order (each test reads its answers here)."""
    workload = airflow.queue(produce=0)["produce"]
    ti_id = uuid.UUID(workload.id)
    client = ExecutionApiClient(airflow.execution_url, workload.token)
    running = TIEnterRunningPayload(
        hostname=socket.gethostname(),
        unixname="taskvisor",
        pid=os.getpid(),
        start_date=dt.datetime.now(dt.UTC),
    )
    client.run(ti_id, running)  # the workload token becomes an execution token
    masker = Masker()
    relay = AirflowRelay(client, ti_id, masker)

    dag_id, run_id, task_id = workload.dag_id, workload.run_id, workload.task_id
    xcom = {"key": "relay_key", "dag_id": dag_id, "run_id": run_id, "task_id": task_id}
    variable = f"relay_{uuid.uuid4().hex[:8]}"
    new_run = f"relay_{uuid.uuid4().hex[:8]}"
    ti_count = {"type": "GetTICount", "dag_id": dag_id, "run_ids": [run_id]}
    steps = {
        "variable": {"type": "GetVariable", "key": airflow.variable[0]},
        "variable missing": {"type": "GetVariable", "key": "no_such_variable"},
        "variable keys": {"type": "GetVariableKeys", "prefix": "interop_"},
        "connection": {"type": "GetConnection", "conn_id": airflow.connection_id},
        "connection missing": {"type": "GetConnection", "conn_id": "no_such_conn"},
        "put variable": {"type": "PutVariable", "key": variable, "value": "from the relay",
                         "description": None},
        "variable put": {"type": "GetVariable", "key": variable},
        "delete variable": {"type": "DeleteVariable", "key": variable},
        "variable deleted": {"type": "GetVariable", "key": variable},
        "set xcom": {"type": "SetXCom", **xcom, "value": [1, {"b": 2}]},
        "xcom": {"type": "GetXCom", **xcom},
        "xcom count": {"type": "GetXComCount", **xcom},
        "xcom item": {"type": "GetXComSequenceItem", **xcom, "offset": 0},
        "xcom item beyond": {"type": "GetXComSequenceItem", **xcom, "offset": 5},
        "xcom slice": {"type": "GetXComSequenceSlice", **xcom, "start": None, "stop": None,
                       "step": None},
        "delete xcom": {"type": "DeleteXCom", **xcom},
        "xcom deleted": {"type": "GetXCom", **xcom},
        "rendered fields": {"type": "SetRenderedFields",
                            "rendered_fields": {"bash_command": "echo relay"}},
        "rendered map index": {"type": "SetRenderedMapIndex", "rendered_map_index": "relay-label"},
        "prev successful": {"type": "GetPrevSuccessfulDagRun", "ti_id": str(ti_id)},
        "reschedule start": {"type": "GetTaskRescheduleStartDate", "ti_id": str(ti_id)},
        "inlets and outlets": {"type": "ValidateInletsAndOutlets", "ti_id": str(ti_id)},
        "run state": {"type": "GetDagRunState", "dag_id": dag_id, "run_id": run_id},
        "run": {"type": "GetDagRun", "dag_id": dag_id, "run_id": run_id},
        "task states": {"type": "GetTaskStates", "dag_id": dag_id, "run_ids": [run_id]},
        "count two tasks": {**ti_count, "task_ids": [task_id, "consume"]},
        "count running": {**ti_count, "states": ["running"]},
        "run count": {"type": "GetDRCount", "dag_id": dag_id, "run_ids": [run_id, "nope"]},
        "previous run": {"type": "GetPreviousDagRun", "dag_id": dag_id,
                         "logical_date": dt.datetime.now(dt.UTC)},
        "previous ti": {"type": "GetPreviousTI", "dag_id": dag_id, "task_id": "report"},
        "breadcrumbs": {"type": "GetTaskBreadcrumbs", "dag_id": dag_id, "run_id": run_id},
        "dag": {"type": "GetDag", "dag_id": dag_id},
        "skip downstream": {"type": "SkipDownstreamTasks", "tasks": ["consume"]},
        "count skipped": {**ti_count, "states": ["skipped"]},
        "trigger": {"type": "TriggerDagRun", "dag_id": dag_id, "run_id": new_run,
                    "conf": {"from": "relay"}},
        "trigger again": {"type": "TriggerDagRun", "dag_id": dag_id, "run_id": new_run},
        "triggered run": {"type": "GetDagRun", "dag_id": dag_id, "run_id": new_run},
        "asset by name": {"type": "GetAssetByName", "name": "no-such-asset"},
        "asset by uri": {"type": "GetAssetByUri", "uri": "s3://no/such"},
        "set store": {"type": "SetTaskStateStore", "ti_id": str(ti_id), "key": "a/b",
                      "value": {"n": [1]}, "expires_at": None},
        "store": {"type": "GetTaskStateStore", "ti_id": str(ti_id), "key": "a/b"},
        "delete store": {"type": "DeleteTaskStateStore", "ti_id": str(ti_id), "key": "a/b"},
        "store deleted": {"type": "GetTaskStateStore", "ti_id": str(ti_id), "key": "a/b"},
        "clear store": {"type": "ClearTaskStateStore", "ti_id": str(ti_id)},
    }  # fmt: skip
    replies = {}
    try:
        for name, body in steps.items():  # in order: later steps read what earlier ones wrote
            local = relay.answer_locally(body)
            replies[name] = local if local is not None else relay.answer_remote(body)
    finally:
        client.close()
    seen = runner_sees(run_in_airflow, list(replies.values()))
    runner = dict(zip(replies, seen, strict=True))
    return Live(workload, masker, replies, runner, airflow.rest_ti(workload))


OK_REPLY = Reply({"ok": True, "type": "OKResponse"})


def test_every_answer_of_the_real_server_is_accepted_by_airflows_runner(live):
    for name, reply in live.replies.items():
        runner = live.runner[name]
        if reply.body is None and reply.error is None:
            assert runner is None, name
        else:
            assert reply.body is not None, (name, reply.error)
            assert runner[:2] == ["result", reply.body["type"]], (name, runner)


def test_variables_and_connections_from_airflow_with_their_secrets_masked(airflow: Airflow, live):
    key, value = airflow.variable
    variable = {"key": key, "value": value, "type": "VariableResult"}
    assert live.result("variable", "VariableResult") == variable
    assert live.not_found("variable missing", "VARIABLE_NOT_FOUND") == {"key": "no_such_variable"}
    assert key in live.result("variable keys", "VariableKeysResult")["keys"]

    conn = live.result("connection", "ConnectionResult")
    assert (conn["conn_id"], conn["conn_type"]) == (airflow.connection_id, "postgres")
    assert (conn["host"], conn["schema"], conn["port"]) == ("db.example", "interop", 5432)
    assert conn["password"] == airflow.connection_password
    assert live.masker.mask(f"pw={airflow.connection_password}") == f"pw={MASK}"
    missing = live.not_found("connection missing", "CONNECTION_NOT_FOUND")
    assert missing == {"conn_id": "no_such_conn"}


def test_put_variable_then_delete_variable_on_airflow(live):
    assert live.replies["put variable"] == Reply()
    assert live.result("variable put", "VariableResult")["value"] == "from the relay"
    assert live.replies["delete variable"] == OK_REPLY
    assert live.not_found("variable deleted", "VARIABLE_NOT_FOUND")


def test_xcom_set_get_count_sequence_and_delete_on_airflow(live):
    w = live.workload
    xcom = {"key": "relay_key", "dag_id": w.dag_id, "run_id": w.run_id, "task_id": w.task_id}
    assert live.replies["set xcom"] == Reply()
    assert live.result("xcom", "XComResult")["value"] == [1, {"b": 2}]
    assert live.result("xcom count", "XComCountResponse")["len"] == 1
    assert live.result("xcom item", "XComSequenceIndexResult")["root"] == [1, {"b": 2}]
    assert live.not_found("xcom item beyond", "XCOM_NOT_FOUND") == {**xcom, "offset": 5}
    assert live.result("xcom slice", "XComSequenceSliceResult")["root"] == [[1, {"b": 2}]]
    assert live.replies["delete xcom"] == Reply()
    # A missing XCom pulls as None, as in Airflow's own supervisor.
    gone = {"key": "relay_key", "value": None, "type": "XComResult"}
    assert live.result("xcom deleted", "XComResult") == gone


def test_rendered_fields_and_map_index_reach_airflow(live):
    assert live.replies["rendered fields"] == Reply()
    assert live.replies["rendered map index"] == Reply()
    assert live.rest_ti["rendered_fields"] == {"bash_command": "echo relay"}
    assert live.rest_ti["rendered_map_index"] == "relay-label"


def test_this_task_instances_history_on_airflow(live):
    prev = live.result("prev successful", "PrevSuccessfulDagRunResult")
    assert all(prev.get(k) is None for k in ("start_date", "end_date"))
    assert live.result("reschedule start", "TaskRescheduleStartDate")["start_date"] is None
    assert live.result("inlets and outlets", "InactiveAssetsResult").get("inactive_assets") in (
        None,
        [],
    )


def test_dag_runs_and_task_instances_on_airflow(live):
    w = live.workload
    assert live.result("run state", "DagRunStateResult")["state"] == "running"
    run = live.result("run", "DagRunResult")
    assert (run["dag_id"], run["run_id"], run["run_type"]) == (w.dag_id, w.run_id, "manual")
    states = live.result("task states", "TaskStatesResult")["task_states"]
    assert states[w.run_id][w.task_id] == "running"
    # A list in a query goes as one pair per item: two task ids count two task instances.
    assert live.result("count two tasks", "TICount")["count"] == 2
    assert live.result("count running", "TICount")["count"] == 1
    assert live.result("run count", "DRCount")["count"] == 1
    assert live.result("previous run", "PreviousDagRunResult")["dag_run"] is None
    # Without a logical date: the latest task instance of that task in any run.
    previous = live.result("previous ti", "PreviousTIResult")["task_instance"]
    assert (previous["dag_id"], previous["task_id"]) == (w.dag_id, "report")
    assert isinstance(live.result("breadcrumbs", "TaskBreadcrumbsResult")["breadcrumbs"], list)
    assert live.result("dag", "DagResult")["dag_id"] == w.dag_id


def test_skip_downstream_tasks_skips_them_on_airflow(live):
    assert live.replies["skip downstream"] == Reply()
    assert live.result("count skipped", "TICount")["count"] == 1


def test_trigger_dag_run_then_the_same_run_again_answers_already_exists(live):
    assert live.replies["trigger"] == OK_REPLY
    assert live.not_found("trigger again", "DAGRUN_ALREADY_EXISTS") is None
    triggered = live.result("triggered run", "DagRunResult")
    assert (triggered["conf"], triggered["run_type"]) == ({"from": "relay"}, "operator_triggered")


def test_assets_that_do_not_exist_answer_asset_not_found(live):
    assert live.not_found("asset by name", "ASSET_NOT_FOUND") == {"name": "no-such-asset"}
    assert live.not_found("asset by uri", "ASSET_NOT_FOUND") == {"uri": "s3://no/such"}


def test_task_state_store_of_this_task_instance_on_airflow(live):
    assert live.replies["set store"] == OK_REPLY
    assert live.result("store", "TaskStateStoreResult")["value"] == {"n": [1]}
    assert live.replies["delete store"] == OK_REPLY
    assert live.not_found("store deleted", "TASK_STORE_NOT_FOUND") == {"key": "a/b"}
    assert live.replies["clear store"] == OK_REPLY
