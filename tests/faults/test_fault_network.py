"""Scenarios 9, 10 and 17: a misbehaving network, a slow server, short-lived tokens."""

from __future__ import annotations

import datetime as dt
import itertools
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest
from faultkit import TryFactory, proxy_to

from apiserver.testing import ReferenceServer


def _burst_then_drop(method: str, path: str, attempt: int) -> str | int:
    """Every call: a 503, then a dropped connection, then through; a few special paths."""
    if "/variables/forbidden" in path:
        return 403
    if "/variables/always_down" in path:
        return 503
    if path.endswith("/heartbeat"):
        return 503 if attempt % 3 == 0 else "forward"  # tolerated, never retried
    return {1: 503, 2: "drop"}.get(attempt, "forward")


def test_9_5xx_bursts_and_dropped_connections_are_retried_4xx_never_attempts_bounded_and_logged(
    new_try: TryFactory, server: ReferenceServer
) -> None:
    server.admin.set_variable("fault_var", "value")
    server.admin.set_connection("fault_conn", conn_type="http", host="db.example")
    budget = 3.0
    t = new_try("uses_every_call")
    with proxy_to(server, plan=_burst_then_drop) as proxy:
        t.point_at(proxy.url)
        done = t.run(
            {
                "TASKVISOR_API_RETRY_BUDGET": str(budget),
                "TASKVISOR_STATE_RETRY_BUDGET": str(budget),
                "TASKVISOR_HEARTBEAT_INTERVAL": "0.2",
            }
        )
        seen = proxy.requests()

    assert done.returncode == 0, done.stderr
    assert t.state() == "success"
    got = server.admin.xcoms_of(t.ti_id)["return_value"]
    assert got["var"] == "value"
    assert got["conn_host"] == "db.example"
    assert got["pulled"] == [1, 2]
    assert server.admin.get_variable("fault_written") == "w"
    assert server.admin.xcoms_of(t.ti_id)["pushed"] == [1, 2]

    attempts = Counter((s.method, s.path.split("?")[0]) for s in seen)
    retried = [k for k in attempts if "heartbeat" not in k[1] and "/variables/" not in k[1]]
    retried += [k for k in attempts if k[1].endswith(("/fault_var", "/fault_written"))]
    for key in retried:
        # 503, dropped connection, then the answer: exactly three attempts each.
        assert attempts[key] == 3, (key, attempts[key])
    calls = {k[1].rsplit("/", 1)[-1] for k in retried}
    assert {"run", "state", "fault_var", "fault_written", "fault_conn", "pushed"} <= calls
    # A 4xx is never retried.
    forbidden = [k for k in attempts if k[1].endswith("/variables/forbidden")]
    assert [attempts[k] for k in forbidden] == [1]
    assert got["forbidden"].startswith("RequestFailed")
    assert "403" in got["forbidden"]
    # A call that only ever gets 5xx gives up after the budget: bounded, and the task is told.
    (down,) = [k for k in attempts if k[1].endswith("/variables/always_down")]
    assert 2 <= attempts[down] <= 30
    assert f"failed after {attempts[down]} attempt(s)" in got["always_down"]
    (gave_up,) = [r for r in t.log() if r["event"] == "Execution API call failed; giving up"]
    assert gave_up["attempts"] == attempts[down]
    assert "always_down" in gave_up["message"]

    # Every retry is in the task log, with its attempt number and wait.
    retries = [r for r in t.log() if r["event"] == "Execution API call failed; retrying"]
    by_call = Counter(r["call"].split("?")[0] for r in retries)
    for method, path in retried:
        assert by_call[f"{method} {path.removeprefix('/execution/')}"] == 2
    assert all(r["wait"] >= 0 for r in retries)
    assert by_call[f"GET {down[1].removeprefix('/execution/')}"] == attempts[down] - 1
    assert not any("forbidden" in call for call in by_call)
    # The injected heartbeat 503s were tolerated and logged, never retried.
    assert any(e.startswith("heartbeat failed") for e in t.supervisor_events())
    assert not any("heartbeat" in call for call in by_call)
    t.assert_no_task_process_left()


def _answer_lost_once(method: str, path: str, attempt: int) -> str | int:
    """Every call but heartbeats: the server acts on the first attempt, the answer is lost."""
    return "lose" if attempt == 1 and not path.endswith("/heartbeat") else "forward"


def test_9_answers_lost_after_the_server_acted_are_retried_safely(
    new_try: TryFactory, server: ReferenceServer
) -> None:
    # /run, /state, variable and XCom writes are retried after the server already applied
    # them: the retries must be accepted (same client, same state, same value) and the
    # task must end as if nothing happened.
    server.admin.set_variable("fault_var", "value")
    server.admin.set_connection("fault_conn", conn_type="http", host="db.example")
    t = new_try("uses_every_call")
    with proxy_to(server, plan=_answer_lost_once) as proxy:
        t.point_at(proxy.url)
        done = t.run()
        seen = proxy.requests()

    assert done.returncode == 0, done.stderr
    assert t.state() == "success"
    got = server.admin.xcoms_of(t.ti_id)["return_value"]
    assert got["var"] == "value"
    assert got["pulled"] == [1, 2]
    assert got["forbidden"].startswith("VariableNotFound")  # a real 404: not retried again
    attempts = Counter((s.method, s.path.split("?")[0]) for s in seen if s.action == "lose")
    forwarded = Counter((s.method, s.path.split("?")[0]) for s in seen if s.action == "forward")
    calls = {k[1].rsplit("/", 1)[-1] for k in attempts}
    assert {"run", "state", "fault_written", "pushed", "return_value"} <= calls
    for key in attempts:
        assert forwarded[key] == 1, key  # one retry each, which the server accepted
    t.assert_no_task_process_left()


def test_10_100_mb_xcom_to_a_slow_server_keeps_heartbeats_and_logs_flowing(
    new_try: TryFactory, server: ReferenceServer
) -> None:
    size = 100 * 1024 * 1024
    rate = 8 * 1024 * 1024  # the server takes the upload at 8 MB/s: about 13 s
    interval = 0.5
    t = new_try("uploads_big_xcom", env={"FAULT_XCOM_BYTES": str(size)})
    with proxy_to(server, upload_rate=rate) as proxy:
        t.point_at(proxy.url)
        done = t.run(
            {
                "TASKVISOR_HEARTBEAT_INTERVAL": str(interval),
                "TASKVISOR_API_TIMEOUT": "60",
                "TASKVISOR_MAX_LINE": str(size + 1024 * 1024),
            },
            timeout=120,
        )
        (upload,) = [s for s in proxy.requests("POST", "/xcoms/") if s.body_size > size]
        heartbeats = proxy.requests("PUT", "/heartbeat")

    assert done.returncode == 0, done.stderr
    assert t.state() == "success"
    stored = server.admin.xcoms_of(t.ti_id)["big"]
    assert len(stored) == size
    upload_seconds = json.loads(t.scratch_file("upload").read_text())["seconds"]
    assert upload_seconds > size / rate * 0.9  # the slow server really was slow
    # Heartbeats kept their interval (within 1 s) for the whole upload.
    upload_end = upload.at
    upload_start = upload_end - size / rate
    during = [h.at for h in heartbeats if upload_start - interval <= h.at <= upload_end + interval]
    assert len(during) >= (upload_end - upload_start) / interval * 0.8
    gaps = [b - a for a, b in itertools.pairwise(during)]
    assert max(gaps) < interval + 1.0, max(gaps)
    assert all(h.status == 204 for h in heartbeats)
    # Logs kept flowing: the task's ticks (every 0.1 s) reached the log while it uploaded.
    ticks = [
        dt.datetime.fromisoformat(r["timestamp"])
        for r in t.log()
        if r["logger"] == "task.stdout" and r["event"].startswith("tick ")
    ]
    assert len(ticks) >= upload_seconds / 0.1 * 0.8
    tick_gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(ticks)]
    assert max(tick_gaps) < 1.0, max(tick_gaps)
    t.assert_no_task_process_left()


@pytest.fixture
def short_token_try(tmp_path: Path) -> Iterator[TryFactory]:
    """Tries on a server whose tokens live 10 s, reissued in their last 20 %, no leeway."""
    with ReferenceServer(
        workdir=tmp_path / "server", token_lifetime=10, refresh_floor=0, leeway=0
    ) as srv:
        factory = TryFactory(srv, tmp_path)
        yield factory
        factory.cleanup()


def test_17_ten_second_tokens_over_a_40_s_task_are_refreshed_and_workload_token_exchanged(
    short_token_try: TryFactory,
) -> None:
    srv = short_token_try.server
    srv.admin.set_variable("token_var", "v")
    t = short_token_try("calls_for_a_while", env={"FAULT_SECONDS": "40"}, token_lifetime=10)
    with proxy_to(srv) as proxy:
        t.point_at(proxy.url)
        done = t.run({"TASKVISOR_HEARTBEAT_INTERVAL": "1"}, timeout=90)
        seen = proxy.requests()

    assert done.returncode == 0, done.stderr
    assert t.state() == "success"
    assert srv.admin.xcoms_of(t.ti_id)["return_value"] >= 30
    assert [s for s in seen if s.status in (401, 403)] == []
    assert all(s.status is not None and s.status < 300 for s in seen)
    claims = [
        jwt.decode(
            s.headers["authorization"].removeprefix("Bearer "),
            options={"verify_signature": False},
        )
        for s in seen
    ]
    # /run went out with the workload token; everything after it with execution tokens.
    assert seen[0].path.endswith("/run")
    assert claims[0]["scope"] == "workload"
    assert {c["scope"] for c in claims[1:]} == {"execution"}
    # Tokens live 10 s and the task ran 40 s: fresh ones were adopted along the way, and
    # none was used past its expiry.
    assert len({c["iat"] for c in claims[1:]}) >= 4
    assert all(c["exp"] - c["iat"] <= 10 for c in claims)
    t.assert_no_task_process_left()
