"""taskvisor's Execution API models (``comms.api``) against a real Airflow 3.3.2 api-server.

Plain httpx, no supervisor: these prove the wire shapes on their own, request by request,
with the ``Airflow-API-Version`` taskvisor pins. Each test queues its own task instances
through Airflow's own code and checks the outcome through Airflow's REST API or database.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING

import httpx
import jwt
import msgspec
import pytest

from comms.api import (
    API_VERSION,
    TOKEN_AUDIENCE,
    ConnectionResponse,
    ErrorDetail,
    TIDeferredStatePayload,
    TIEnterRunningPayload,
    TIHeartbeatInfo,
    TIRescheduleStatePayload,
    TIRetryStatePayload,
    TIRunContext,
    TIStateUpdate,
    TISuccessStatePayload,
    TITerminalStatePayload,
    VariablePostBody,
    VariableResponse,
    XComResponse,
)

if TYPE_CHECKING:  # test modules take the harness from the `airflow` fixture, never import it
    from conftest import Airflow, Workload

HOSTNAME = socket.gethostname()


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def execution_client(airflow: Airflow, token: str) -> httpx.Client:
    """A client that sends what taskvisor's supervisor sends on every request."""
    return httpx.Client(
        base_url=airflow.execution_url,
        headers={
            "Authorization": f"Bearer {token}",
            "Airflow-API-Version": API_VERSION,
            # Bodies are msgspec-encoded bytes; without this header Airflow answers 422.
            "Content-Type": "application/json",
        },
        timeout=30,
    )


def enter_running(client: httpx.Client, workload: Workload, pid: int) -> httpx.Response:
    body = TIEnterRunningPayload(hostname=HOSTNAME, unixname="taskvisor", pid=pid, start_date=now())
    return client.patch(f"task-instances/{workload.id}/run", content=msgspec.json.encode(body))


def heartbeat(client: httpx.Client, workload: Workload, pid: int) -> httpx.Response:
    body = msgspec.json.encode(TIHeartbeatInfo(hostname=HOSTNAME, pid=pid))
    return client.put(f"task-instances/{workload.id}/heartbeat", content=body)


def start(airflow: Airflow, workload: Workload, pid: int) -> tuple[TIRunContext, httpx.Client]:
    """``PATCH /run`` with the workload token; return the context and an execution client."""
    with execution_client(airflow, workload.token) as client:
        response = enter_running(client, workload, pid)
    assert response.status_code == 200, response.text
    context = msgspec.json.decode(response.content, type=TIRunContext)
    return context, execution_client(airflow, response.headers["Refreshed-API-Token"])


def claims(token: str) -> dict[str, object]:
    return jwt.decode(token, options={"verify_signature": False}, audience=TOKEN_AUDIENCE)


def test_run_exchanges_workload_token_for_execution_token(airflow: Airflow) -> None:
    workload = airflow.queue(produce=3)["produce"]
    assert claims(workload.token)["scope"] == "workload"

    context, client = start(airflow, workload, pid=os.getpid())
    client.close()

    assert context.max_tries == 3
    assert context.dag_run.dag_id == airflow.dag_id
    assert context.dag_run.run_id == workload.run_id
    assert context.should_retry is True
    execution = claims(client.headers["Authorization"].removeprefix("Bearer "))
    assert execution["scope"] == "execution"
    assert execution["sub"] == workload.id
    row = airflow.ti_row(workload)
    assert (row["state"], row["pid"], row["hostname"]) == ("running", os.getpid(), HOSTNAME)


def test_json_body_without_content_type_is_refused(airflow: Airflow) -> None:
    workload = airflow.queue(produce=0)["produce"]
    with execution_client(airflow, workload.token) as client:
        del client.headers["Content-Type"]
        response = enter_running(client, workload, pid=1234)

    assert response.status_code == 422
    assert airflow.ti_row(workload)["state"] == "queued"


def test_workload_token_is_refused_outside_run(airflow: Airflow) -> None:
    workload = airflow.queue(produce=0)["produce"]
    start(airflow, workload, pid=1234)[1].close()

    with execution_client(airflow, workload.token) as client:
        response = heartbeat(client, workload, pid=1234)

    assert response.status_code == 403
    assert "workload" in response.json()["detail"]


def test_execution_token_near_expiry_is_refreshed_on_any_response(airflow: Airflow) -> None:
    workload = airflow.queue(produce=0)["produce"]
    start(airflow, workload, pid=1234)[1].close()
    # Airflow reissues when at most max(20% of the lifetime, 30 s) is left: here, at once.
    short_lived = airflow.mint(workload, scope="execution", valid_for=25)

    with execution_client(airflow, short_lived) as client:
        response = client.get(f"variables/{airflow.variable[0]}")

    assert response.status_code == 200
    fresh = claims(response.headers["Refreshed-API-Token"])
    assert (fresh["sub"], fresh["scope"]) == (workload.id, "execution")
    assert fresh["jti"] != claims(short_lived)["jti"]
    # A new token of the configured execution-token life, not an extension of the old one.
    assert int(fresh["exp"]) - int(fresh["iat"]) == airflow.execution_token_lifetime


def test_run_from_another_process_conflicts(airflow: Airflow) -> None:
    workload = airflow.queue(produce=0)["produce"]
    start(airflow, workload, pid=1234)[1].close()

    with execution_client(airflow, workload.token) as client:
        again = enter_running(client, workload, pid=1234)
        elsewhere = enter_running(client, workload, pid=4321)

    assert again.status_code == 200
    assert elsewhere.status_code == 409


def test_heartbeat_advances_last_heartbeat_at_and_conflicts_from_another_pid(
    airflow: Airflow,
) -> None:
    workload = airflow.queue(produce=0)["produce"]
    _, client = start(airflow, workload, pid=1234)
    with client:
        before = airflow.ti_row(workload)["last_heartbeat_at"]
        ours = heartbeat(client, workload, pid=1234)
        after = airflow.ti_row(workload)["last_heartbeat_at"]
        theirs = heartbeat(client, workload, pid=99)

    assert ours.status_code == 204
    assert after is not None
    assert before is None or after > before
    assert theirs.status_code == 409
    detail = msgspec.json.decode(theirs.content, type=ErrorDetail).detail
    assert detail["reason"] == "running_elsewhere"
    assert detail["current_pid"] == 1234


def test_heartbeat_and_state_after_airflow_changes_state_conflict(airflow: Airflow) -> None:
    workload = airflow.queue(produce=0)["produce"]
    _, client = start(airflow, workload, pid=1234)
    airflow.rest_set_state(workload, "failed")

    with client:
        beat = heartbeat(client, workload, pid=1234)
        report = client.patch(
            f"task-instances/{workload.id}/state",
            content=msgspec.json.encode(TISuccessStatePayload(end_date=now())),
        )

    assert beat.status_code == 409
    detail = msgspec.json.decode(beat.content, type=ErrorDetail).detail
    assert (detail["reason"], detail["current_state"]) == ("not_running", "failed")
    assert report.status_code == 409
    detail = msgspec.json.decode(report.content, type=ErrorDetail).detail
    assert (detail["reason"], detail["previous_state"]) == ("invalid_state", "failed")
    assert airflow.rest_ti(workload)["state"] == "failed"


def test_variables_and_connections_decode(airflow: Airflow) -> None:
    workload = airflow.queue(produce=0)["produce"]
    _, client = start(airflow, workload, pid=1234)
    key, value = airflow.variable
    with client:
        variable = client.get(f"variables/{key}")
        missing = client.get("variables/no_such_variable")
        connection = client.get(f"connections/{airflow.connection_id}")
        body = msgspec.json.encode(VariablePostBody(val="written by taskvisor", description="x"))
        put = client.put("variables/interop_written", content=body)
        written = client.get("variables/interop_written")
        deleted = client.delete("variables/interop_written")
        gone = client.get("variables/interop_written")

    assert msgspec.json.decode(variable.content, type=VariableResponse).value == value
    assert missing.status_code == 404
    assert msgspec.json.decode(missing.content, type=ErrorDetail).detail["reason"] == "not_found"
    conn = msgspec.json.decode(connection.content, type=ConnectionResponse)
    assert (conn.conn_type, conn.host, conn.port) == ("postgres", "db.example", 5432)
    assert (conn.login, conn.schema) == ("interop_user", "interop")
    assert conn.password == airflow.connection_password
    assert msgspec.json.decode(conn.extra or "{}") == {"sslmode": "disable"}
    assert put.status_code == 201, put.text
    assert msgspec.json.decode(written.content, type=VariableResponse).value == (
        "written by taskvisor"
    )
    assert deleted.status_code == 204
    assert gone.status_code == 404


def test_xcom_post_is_read_back_by_execution_api_and_rest_api(airflow: Airflow) -> None:
    workload = airflow.queue(produce=0)["produce"]
    _, client = start(airflow, workload, pid=1234)
    path = f"xcoms/{airflow.dag_id}/{workload.run_id}/{workload.task_id}/return_value"
    value = {"rows": 42, "names": ["a", "b"], "ok": True}
    with client:
        posted = client.post(path, content=msgspec.json.encode(value), params={"map_index": -1})
        got = client.get(path, params={"map_index": -1})
        entry = airflow.rest_xcom(workload)
        deleted = client.delete(path, params={"map_index": -1})
        gone = client.get(path, params={"map_index": -1})

    assert posted.status_code == 201, posted.text
    assert msgspec.json.decode(msgspec.json.decode(got.content, type=XComResponse).value) == value
    assert entry.status_code == 200, entry.text
    assert entry.json()["value"] == value
    assert deleted.status_code == 200
    assert gone.status_code == 404


#: Every ``PATCH /state`` body taskvisor sends, by the state Airflow must then report.
STATE_PAYLOADS: dict[str, Callable[[], TIStateUpdate]] = {
    "success": lambda: TISuccessStatePayload(end_date=now()),
    "failed": lambda: TITerminalStatePayload(state="failed", end_date=now()),
    "skipped": lambda: TITerminalStatePayload(state="skipped", end_date=now()),
    "up_for_retry": lambda: TIRetryStatePayload(end_date=now()),
    "up_for_reschedule": lambda: TIRescheduleStatePayload(
        reschedule_date=now() + dt.timedelta(minutes=5), end_date=now()
    ),
    "deferred": lambda: TIDeferredStatePayload(
        classpath="airflow.providers.standard.triggers.temporal.TimeDeltaTrigger",
        # serde's shape of timedelta(minutes=1): what Airflow's triggerer decodes
        trigger_kwargs={
            "delta": {"__classname__": "datetime.timedelta", "__version__": 2, "__data__": 60.0}
        },
        trigger_timeout=dt.timedelta(minutes=10),
        next_method="execute_complete",
    ),
}


@pytest.mark.parametrize("state", list(STATE_PAYLOADS))
def test_state_payload_is_accepted_and_recorded(airflow: Airflow, state: str) -> None:
    workload = airflow.queue(produce=1)["produce"]
    _, client = start(airflow, workload, pid=1234)
    with client:
        response = client.patch(
            f"task-instances/{workload.id}/state",
            content=msgspec.json.encode(STATE_PAYLOADS[state]()),
        )

    assert response.status_code == 204, response.text
    assert airflow.rest_ti(workload)["state"] == state


@pytest.mark.parametrize(
    ("sent", "status"),
    [
        (API_VERSION, 200),
        ("2025-04-11", 200),  # the oldest version Airflow 3.3 serves
        ("2027-01-01", 200),  # newer than any it knows: served as its newest, silently
        ("2024-01-01", 404),  # older than its first version
    ],
)
def test_api_version_header_is_echoed_and_resolved_to_a_known_version(
    airflow: Airflow, sent: str, status: int
) -> None:
    workload = airflow.queue(produce=0)["produce"]
    token = airflow.mint(workload, scope="execution", valid_for=600)
    with execution_client(airflow, token) as client:
        response = client.get(
            f"variables/{airflow.variable[0]}", headers={"Airflow-API-Version": sent}
        )

    assert response.status_code == status, response.text
    assert response.headers["Airflow-API-Version"] == sent
