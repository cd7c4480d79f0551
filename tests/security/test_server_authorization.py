"""Property 5: the reference server refuses what a task's token does not entitle it to.

Everything goes over HTTP to the real server on loopback. Every refusal is followed by a
look at the database (through the scheduler-side Admin) to show nothing changed.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import msgspec
import pytest
from security_harness import reference_server  # noqa: F401 (the server fixture)

from apiserver.app import create_app
from apiserver.testing import ReferenceServer
from comms.api import API_VERSION, TOKEN_AUDIENCE, TIEnterRunningPayload, TIHeartbeatInfo

HOST, PID = "worker-a", 4242


@pytest.fixture
def http(server: ReferenceServer) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=server.url,
        trust_env=False,
        headers={"Airflow-API-Version": API_VERSION, "Content-Type": "application/json"},
    ) as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def run_body() -> bytes:
    return msgspec.json.encode(
        TIEnterRunningPayload(
            hostname=HOST, unixname="task", pid=PID, start_date=dt.datetime.now(dt.UTC)
        )
    )


HEARTBEAT = msgspec.json.encode(TIHeartbeatInfo(hostname=HOST, pid=PID))
FAILED = json.dumps({"state": "failed", "end_date": "2026-01-01T00:00:00Z"}).encode()


def running_task(server: ReferenceServer, http: httpx.Client, **options: Any) -> tuple[str, str]:
    """A task instance moved to running with its own workload token; (ti_id, execution token)."""
    ti_id = server.admin.create_task_instance(**options)
    workload = server.mint_token(ti_id, scope="workload")
    resp = http.patch(f"task-instances/{ti_id}/run", content=run_body(), headers=bearer(workload))
    assert resp.status_code == 200, resp.text
    return ti_id, resp.headers["Refreshed-API-Token"]


def snapshot(server: ReferenceServer, ti_id: str) -> tuple[Any, ...]:
    ti = server.admin.get_task_instance(ti_id)
    return (ti.state, ti.hostname, ti.pid, ti.heartbeat_count, ti.state_payload)


def test_token_of_task_a_cannot_act_as_task_b(server: ReferenceServer, http: httpx.Client) -> None:
    a_id, a_token = running_task(server, http)
    b_id, _ = running_task(server, http, task_id="other")
    queued_b = server.admin.create_task_instance(task_id="queued")
    before = snapshot(server, b_id), snapshot(server, queued_b)
    a_workload = server.mint_token(a_id, scope="workload")
    calls = [
        ("PATCH", f"task-instances/{queued_b}/run", run_body(), a_workload),
        ("PATCH", f"task-instances/{queued_b}/run", run_body(), a_token),
        ("PUT", f"task-instances/{b_id}/heartbeat", HEARTBEAT, a_token),
        ("PATCH", f"task-instances/{b_id}/state", FAILED, a_token),
    ]
    for method, path, body, token in calls:
        resp = http.request(method, path, content=body, headers=bearer(token))
        assert resp.status_code == 403, (method, path, resp.text)
        assert resp.json()["detail"] == "Token subject does not match task instance ID"
    b = server.admin.get_task_instance(b_id)
    xcom_path = f"xcoms/{b.dag_id}/{b.run_id}/{b.task_id}/stolen"
    resp = http.post(xcom_path, content=b'"from a"', headers=bearer(a_token))
    assert resp.status_code == 403
    resp = http.delete(xcom_path, headers=bearer(a_token))
    assert resp.status_code == 403
    assert (snapshot(server, b_id), snapshot(server, queued_b)) == before
    assert server.admin.xcoms_of(b_id) == {}
    # Control: the same calls work for A itself.
    assert http.put(
        f"task-instances/{a_id}/heartbeat", content=HEARTBEAT, headers=bearer(a_token)
    ).is_success


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _hand_signed(alg: str, claims: dict[str, Any], key: bytes | None) -> str:
    head = _b64(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    body = _b64(json.dumps(claims).encode())
    signing_input = f"{head}.{body}".encode()
    digest = {"HS256": hashlib.sha256, "HS512": hashlib.sha512, "RS512": hashlib.sha512}
    signature = b"" if key is None else hmac.new(key, signing_input, digest[alg]).digest()
    return f"{head}.{body}.{_b64(signature)}"


def bad_tokens(server: ReferenceServer, ti_id: str) -> dict[str, str]:
    now = int(time.time())
    claims = {
        "jti": uuid.uuid4().hex,
        "aud": TOKEN_AUDIENCE,
        "sub": ti_id,
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "scope": "execution",
    }
    secret = server.secret.encode()
    good = jwt.encode(claims, server.secret, algorithm="HS512")
    head, body, signature = good.split(".")
    tampered_claims = {**claims, "exp": now + 86400}
    beyond = server.leeway + 60
    return {
        "expired": jwt.encode({**claims, "exp": now - beyond}, server.secret, algorithm="HS512"),
        "not yet valid (nbf)": jwt.encode(
            {**claims, "nbf": now + beyond, "exp": now + 3600}, server.secret, algorithm="HS512"
        ),
        "issued in the future (iat)": jwt.encode(
            {**claims, "iat": now + beyond, "exp": now + 3600}, server.secret, algorithm="HS512"
        ),
        "wrong audience": jwt.encode(
            {**claims, "aud": "urn:someone-else"}, server.secret, algorithm="HS512"
        ),
        "no audience": jwt.encode(
            {k: v for k, v in claims.items() if k != "aud"}, server.secret, algorithm="HS512"
        ),
        "alg none": _hand_signed("none", claims, None),
        "HS256 with the server's secret": _hand_signed("HS256", claims, secret),
        "RS512 header, HMAC with the secret (RS/HS confusion)": _hand_signed(
            "RS512", claims, secret
        ),
        "HS512 with another secret": jwt.encode(claims, os.urandom(64), algorithm="HS512"),
        "tampered claims, original signature": (
            f"{head}.{_b64(json.dumps(tampered_claims).encode())}.{signature}"
        ),
        "tampered signature": f"{head}.{body}.{signature[:-4]}AAAA",
        "unknown scope": jwt.encode({**claims, "scope": "admin"}, server.secret, algorithm="HS512"),
        "not a JWT": "not-a-token",
    }


def test_forged_expired_and_wrong_algorithm_tokens_are_refused_everywhere(
    server: ReferenceServer, http: httpx.Client
) -> None:
    ti_id, _ = running_task(server, http)
    ti = server.admin.get_task_instance(ti_id)
    server.admin.set_variable("open_variable", "readable")
    before = snapshot(server, ti_id)
    calls = [
        ("PUT", f"task-instances/{ti_id}/heartbeat", HEARTBEAT),
        ("PATCH", f"task-instances/{ti_id}/state", FAILED),
        ("GET", "variables/open_variable", None),
        ("PUT", "variables/open_variable", b'{"val": "overwritten"}'),
        ("POST", f"xcoms/{ti.dag_id}/{ti.run_id}/{ti.task_id}/forged", b'"forged"'),
    ]
    for case, token in bad_tokens(server, ti_id).items():
        for method, path, body in calls:
            resp = http.request(method, path, content=body, headers=bearer(token))
            assert resp.status_code == 403, (case, method, path, resp.text)
            assert resp.json()["detail"].startswith("Invalid auth token"), case
            assert "Refreshed-API-Token" not in resp.headers
    assert snapshot(server, ti_id) == before
    assert server.admin.get_variable("open_variable") == "readable"
    assert server.admin.xcoms_of(ti_id) == {}


def test_a_workload_token_is_good_for_run_only(server: ReferenceServer, http: httpx.Client) -> None:
    ti_id, _ = running_task(server, http)
    workload = server.mint_token(ti_id, scope="workload")
    resp = http.put(
        f"task-instances/{ti_id}/heartbeat", content=HEARTBEAT, headers=bearer(workload)
    )
    assert resp.status_code == 403
    assert http.get("variables/anything", headers=bearer(workload)).status_code == 403


def test_a_team_cannot_read_or_change_another_teams_connections_and_variables(
    server: ReferenceServer, http: httpx.Client
) -> None:
    admin = server.admin
    admin.set_connection("blue_db", "postgres", password="blue-password", team="blue")
    admin.set_variable("blue_var", "blue-value", team="blue")
    admin.set_variable("shared_var", "everyone")
    _, red = running_task(server, http, team="red")
    _, blue = running_task(server, http, team="blue")
    for path in ("connections/blue_db", "variables/blue_var"):
        resp = http.get(path, headers=bearer(red))
        assert resp.status_code == 403, path
        assert "blue" not in json.dumps(resp.json()).replace("blue_db", "").replace("blue_var", "")
    resp = http.put("variables/blue_var", content=b'{"val": "red was here"}', headers=bearer(red))
    assert resp.status_code == 403
    assert http.delete("variables/blue_var", headers=bearer(red)).status_code == 403
    assert admin.get_variable("blue_var") == "blue-value"
    # Controls: the owning team reads both; a variable without a team is for everyone.
    assert http.get("connections/blue_db", headers=bearer(blue)).json()["password"] == (
        "blue-password"
    )
    assert http.get("variables/blue_var", headers=bearer(blue)).json()["value"] == "blue-value"
    assert http.get("variables/shared_var", headers=bearer(red)).json()["value"] == "everyone"


#: Every route the server has. A new route must be added here on purpose, with a decision
#: about who may call it.
EXECUTION_ROUTES = {
    "/execution/health",
    "/execution/task-instances/{task_instance_id}/run",
    "/execution/task-instances/{task_instance_id}/state",
    "/execution/task-instances/{task_instance_id}/heartbeat",
    "/execution/variables/{key:path}",
    "/execution/connections/{conn_id}",
    "/execution/xcoms/{dag_id}/{run_id}/{task_id}/{key:path}",
}


def test_no_admin_operation_is_reachable_with_a_task_token(
    server: ReferenceServer, http: httpx.Client, tmp_path: Any
) -> None:
    app = create_app(tmp_path / "routes.sqlite", server.secret)
    paths = {
        f"{mount.path}{route.path}"
        for mount in app.routes
        for route in getattr(mount, "routes", [mount])
    }
    assert paths == EXECUTION_ROUTES
    ti_id, token = running_task(server, http)
    root = server.url.removesuffix("execution/")
    # What Admin does (create runs and task instances, set state, clear, seed variables and
    # connections, mint tokens, write activities), as an attacker would guess its URL.
    for method, url in [
        ("POST", f"{root}execution/task-instances"),
        ("POST", f"{root}execution/dag-runs"),
        ("POST", f"{root}execution/dag-runs/taskvisor/run/clear"),
        ("PATCH", f"{root}execution/task-instances/{ti_id}"),
        ("POST", f"{root}execution/task-instances/{ti_id}/clear"),
        ("POST", f"{root}execution/tokens"),
        ("POST", f"{root}execution/connections/new_conn"),
        ("PUT", f"{root}execution/connections/new_conn"),
        ("GET", f"{root}execution/connections"),
        ("GET", f"{root}execution/variables"),
        ("GET", f"{root}api/v2/dags"),
        ("POST", f"{root}api/v2/variables"),
        ("GET", f"{root}admin"),
        ("GET", f"{root}docs"),
    ]:
        resp = http.request(
            method, url, content=b"{}", headers=bearer(token), follow_redirects=True
        )
        assert resp.status_code in (404, 405), (method, url, resp.status_code)
    assert server.admin.get_task_instance(ti_id).state == "running"
