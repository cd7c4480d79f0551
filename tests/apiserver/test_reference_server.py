"""``apiserver.testing.ReferenceServer``: the real server in a subprocess, as suites use it."""

from __future__ import annotations

import concurrent.futures
import json
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest

from apiserver.testing import ReferenceServer, ServerStartError
from comms.api import TOKEN_AUDIENCE

RUN_BODY = {
    "state": "running",
    "hostname": "worker-1",
    "unixname": "airflow",
    "pid": 4242,
    "start_date": "2026-11-22T03:19:20+00:00",
}
ACTIVITY_FIELDS = {
    "kind",
    "token",
    "server",
    "ti",
    "entrypoint",
    "command",
    "context",
    "log_path",
    "timeout",
    "env",
    "run_as",
}


@pytest.fixture(scope="module")
def server() -> Iterator[ReferenceServer]:
    with ReferenceServer() as running:
        yield running


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}


def test_serves_health_on_a_loopback_port(server: ReferenceServer) -> None:
    assert server.url == f"http://127.0.0.1:{server.port}/execution/"
    assert server.running
    assert httpx.get(f"{server.url}health").json() == {"status": "healthy"}


def test_secret_is_random_and_long_enough_for_hs512(server: ReferenceServer) -> None:
    assert len(server.secret.encode()) >= 64
    with ReferenceServer() as other:
        assert other.secret != server.secret
        assert other.port != server.port


def test_create_task_writes_an_activity_with_only_documented_fields(
    server: ReferenceServer,
) -> None:
    ti_id, path = server.create_task(
        entrypoint="examples/demo_task.py:main", timeout=30, env={"A": "1"}, max_tries=2
    )
    doc = json.loads(path.read_text())
    assert set(doc) <= ACTIVITY_FIELDS
    assert doc["kind"] == "ExecuteTask"
    assert doc["server"] == server.url
    assert doc["entrypoint"] == "examples/demo_task.py:main"
    assert "command" not in doc
    assert doc["timeout"] == 30
    assert doc["env"] == {"A": "1"}
    assert doc["log_path"] == str(server.workdir / "logs" / f"{ti_id}.log")
    ti = server.admin.get_task_instance(ti_id)
    assert doc["ti"] == {
        "id": ti_id,
        "dag_id": ti.dag_id,
        "task_id": ti.task_id,
        "run_id": ti.run_id,
        "try_number": 1,
        "map_index": -1,
    }
    assert (ti.state, ti.max_tries) == ("queued", 2)
    claims = jwt.decode(doc["token"], server.secret, algorithms=["HS512"], audience=TOKEN_AUDIENCE)
    assert (claims["sub"], claims["scope"]) == (ti_id, "workload")
    # The file carries a credential: owner-only.
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_create_task_with_a_command_and_extra_fields(
    server: ReferenceServer, tmp_path: Path
) -> None:
    _, path = server.create_task(
        command=["./task.sh", "--flag"],
        extra_activity={"bogus": 1},
        context={"variables": {"a": "b"}},
        activity_path=tmp_path / "a.json",
        log_path=tmp_path / "task.log",
    )
    doc = json.loads(path.read_text())
    assert path == tmp_path / "a.json"
    assert doc["command"] == ["./task.sh", "--flag"]
    assert doc["bogus"] == 1
    assert doc["context"] == {"variables": {"a": "b"}}
    assert doc["log_path"] == str(tmp_path / "task.log")
    assert "entrypoint" not in doc


def test_create_task_needs_exactly_one_of_entrypoint_and_command(
    server: ReferenceServer,
) -> None:
    with pytest.raises(ValueError, match="exactly one"):
        server.create_task()
    with pytest.raises(ValueError, match="exactly one"):
        server.create_task(entrypoint="a:b", command=["x"])


def test_activity_token_runs_the_task_and_is_exchanged(server: ReferenceServer) -> None:
    ti_id, path = server.create_task(entrypoint="m:f")
    token = json.loads(path.read_text())["token"]
    response = httpx.patch(
        f"{server.url}task-instances/{ti_id}/run", json=RUN_BODY, headers=_bearer(token)
    )
    assert response.status_code == 200
    execution = response.headers["Refreshed-API-Token"]
    beat = httpx.put(
        f"{server.url}task-instances/{ti_id}/heartbeat",
        json={"hostname": "worker-1", "pid": 4242},
        headers=_bearer(execution),
    )
    assert beat.status_code == 204
    assert server.admin.get_task_instance(ti_id).heartbeat_count == 1


def test_token_lifetime_option_reaches_the_server() -> None:
    with ReferenceServer(token_lifetime=10, refresh_floor=0) as short:
        ti_id, path = short.create_task(entrypoint="m:f")
        token = json.loads(path.read_text())["token"]
        response = httpx.patch(
            f"{short.url}task-instances/{ti_id}/run", json=RUN_BODY, headers=_bearer(token)
        )
        claims = jwt.decode(
            response.headers["Refreshed-API-Token"],
            short.secret,
            algorithms=["HS512"],
            audience=TOKEN_AUDIENCE,
        )
        assert claims["exp"] - claims["iat"] == 10
        # 10 s tokens, 20% window: a token with 1 s left is replaced.
        near = short.mint_token(ti_id, lifetime=1)
        answer = httpx.get(f"{short.url}variables/none", headers=_bearer(near))
        assert "Refreshed-API-Token" in answer.headers


def test_state_survives_a_restart_on_the_same_port(tmp_path: Path) -> None:
    with ReferenceServer(workdir=tmp_path) as server:
        port = server.port
        ti_id = server.admin.create_task_instance(dag_id="etl", task_id="t", run_id="r")
        token = server.mint_token(ti_id)
        with httpx.Client(base_url=server.url, headers=_bearer(token)) as client:
            assert client.patch(f"task-instances/{ti_id}/run", json=RUN_BODY).status_code == 200
            assert client.put("variables/kept", json={"val": "yes"}).status_code == 201
            assert client.post("xcoms/etl/r/t/k", content=b"[1,2]").status_code == 201

        server.stop()
        assert not server.running
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{port}/execution/health")

        server.start()
        assert server.port == port
        # The same token still verifies (same secret) and every row is still there.
        with httpx.Client(base_url=server.url, headers=_bearer(token)) as client:
            assert client.get("variables/kept").json() == {"key": "kept", "value": "yes"}
            assert client.get("xcoms/etl/r/t/k").json() == {"key": "k", "value": [1, 2]}
            beat = client.put(
                f"task-instances/{ti_id}/heartbeat", json={"hostname": "worker-1", "pid": 4242}
            )
            assert beat.status_code == 204
        assert server.admin.get_task_instance(ti_id).state == "running"
    assert (tmp_path / "server.sqlite").exists()


def test_killed_server_keeps_committed_state_and_restarts(tmp_path: Path) -> None:
    with ReferenceServer(workdir=tmp_path) as server:
        ti_id = server.admin.create_task_instance()
        token = server.mint_token(ti_id)
        run = httpx.patch(
            f"{server.url}task-instances/{ti_id}/run", json=RUN_BODY, headers=_bearer(token)
        )
        assert run.status_code == 200
        server.kill()
        assert not server.running
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{server.url}health")
        server.start()
        beat = httpx.put(
            f"{server.url}task-instances/{ti_id}/heartbeat",
            json={"hostname": "worker-1", "pid": 4242},
            headers=_bearer(token),
        )
        assert beat.status_code == 204


def test_stop_is_idempotent_and_start_twice_is_refused(tmp_path: Path) -> None:
    server = ReferenceServer(workdir=tmp_path)
    try:
        server.start()
        with pytest.raises(RuntimeError, match="already running"):
            server.start()
        server.stop()
        server.stop()
        assert not server.running
    finally:
        server.close()


def test_temporary_workdir_is_removed_on_exit() -> None:
    with ReferenceServer() as server:
        workdir = server.workdir
        assert server.db_path.exists()
    assert not workdir.exists()
    assert not server.running


def test_start_failure_raises_with_the_server_output(tmp_path: Path) -> None:
    server = ReferenceServer(workdir=tmp_path)
    try:
        # A database file that is not one: the server process exits at start-up.
        (tmp_path / "server.sqlite").write_bytes(b"this is not a database" * 100)
        for suffix in ("-wal", "-shm"):
            (tmp_path / f"server.sqlite{suffix}").unlink(missing_ok=True)
        with pytest.raises(ServerStartError, match="exited with code") as excinfo:
            server.start()
        assert "not a database" in str(excinfo.value)
        assert not server.running
    finally:
        server.close()


def test_100_mb_xcom_round_trip(server: ReferenceServer) -> None:
    ti_id = server.admin.create_task_instance(dag_id="big", task_id="t", run_id="r")
    token = server.mint_token(ti_id)
    body = b'"' + b"x" * (100 * 1024 * 1024) + b'"'
    started = time.monotonic()
    with httpx.Client(base_url=server.url, headers=_bearer(token), timeout=120) as client:
        assert client.patch(f"task-instances/{ti_id}/run", json=RUN_BODY).status_code == 200
        assert client.post("xcoms/big/r/t/blob", content=body).status_code == 201
        response = client.get("xcoms/big/r/t/blob")
    elapsed = time.monotonic() - started
    assert response.status_code == 200
    assert len(response.content) == len(body) + len(b'{"key":"blob","value":}')
    assert response.content.endswith(b'x"}')
    # Linear work only: a quadratic path would take minutes at this size.
    assert elapsed < 60


def test_concurrent_clients_and_admin_writes_do_not_lock_each_other_out(
    server: ReferenceServer,
) -> None:
    ti_ids = [server.admin.create_task_instance() for _ in range(4)]

    def supervise_like(ti_id: str) -> list[int]:
        headers = _bearer(server.mint_token(ti_id))
        with httpx.Client(base_url=server.url, headers=headers) as client:
            codes = [client.patch(f"task-instances/{ti_id}/run", json=RUN_BODY).status_code]
            for _ in range(50):
                codes.append(
                    client.put(
                        f"task-instances/{ti_id}/heartbeat",
                        json={"hostname": "worker-1", "pid": 4242},
                    ).status_code
                )
            return codes

    with concurrent.futures.ThreadPoolExecutor(len(ti_ids)) as pool:
        futures = [pool.submit(supervise_like, ti_id) for ti_id in ti_ids]
        # Meanwhile the "scheduler" writes and reads the same database.
        for index in range(50):
            server.admin.set_variable(f"busy{index}", "x")
            server.admin.get_task_instance(ti_ids[index % len(ti_ids)])
        results = [future.result() for future in futures]

    assert all(codes == [200] + [204] * 50 for codes in results)
    assert [server.admin.get_task_instance(t).heartbeat_count for t in ti_ids] == [50] * 4
