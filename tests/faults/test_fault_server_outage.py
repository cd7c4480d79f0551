"""Scenarios 6-8: the API server is unreachable at start, down mid-task, or down at the end."""

from __future__ import annotations

import json
import time

from faultkit import TryFactory, wait_for

from apiserver.testing import ReferenceServer


def test_6_unreachable_server_at_start_is_retried_for_the_budget_then_exit_3_task_never_ran(
    own_try: TryFactory, own_server: ReferenceServer
) -> None:
    t = own_try("marks_ran")
    own_server.stop()  # the port now refuses connections
    budget = 2.0

    done = t.run({"TASKVISOR_API_RETRY_BUDGET": str(budget)})

    assert done.returncode == 3, done.stderr
    assert "could not be reached" in done.stderr
    # Retried with backoff for about the budget, then gave up: bounded.
    retries = [r for r in t.log() if r["event"] == "Execution API call failed; retrying"]
    assert len(retries) >= 2
    assert [r["attempt"] for r in retries] == list(range(1, len(retries) + 1))
    assert all(r["call"].startswith("PATCH task-instances/") for r in retries)
    assert done.duration < budget + 5
    (final,) = [
        r for r in t.log() if r["event"].startswith("The Execution API server could not be")
    ]
    assert final["exit_code"] == 3
    assert f"after {len(retries) + 1} attempt(s)" in final["error"]
    assert not t.scratch_file("ran").exists()  # task code never ran
    t.assert_no_task_process_left()
    own_server.start()
    assert t.state() == "queued"


def test_7_server_down_30_s_mid_task_is_tolerated_and_the_final_state_arrives(
    own_try: TryFactory, own_server: ReferenceServer
) -> None:
    own_server.admin.set_variable("outage_var", "v")
    t = own_try("calls_until_released")
    tolerance, budget = 45.0, 4.0
    t.start(
        {
            "TASKVISOR_HEARTBEAT_INTERVAL": "1",
            "TASKVISOR_HEARTBEAT_TOLERANCE": str(tolerance),
            "TASKVISOR_API_RETRY_BUDGET": str(budget),
            "TASKVISOR_STATE_RETRY_BUDGET": "30",
        }
    )
    t.wait_for_file("ready")
    calls = t.scratch_file("calls.jsonl")
    t.wait_for_file("calls.jsonl")
    own_server.kill()  # a crash: requests in flight are cut off
    down_at = time.time()
    time.sleep(30)  # the outage itself: 30 s, as the scenario says
    own_server.start()  # same port, same database
    up_at = time.time()
    count_at_restart = len(calls.read_text().splitlines())

    def a_call_succeeded_after_restart() -> bool:
        rows = [json.loads(line) for line in calls.read_text().splitlines()]
        return any(r["result"] == "ok" and r["at"] > up_at for r in rows)

    wait_for(a_call_succeeded_after_restart, 20, "an SDK call to succeed after the restart")
    t.release()
    done = t.wait(timeout=60)

    assert done.returncode == 0, done.stderr
    assert t.state() == "success"
    assert own_server.admin.xcoms_of(t.ti_id)["calls"] >= count_at_restart
    rows = [json.loads(line) for line in calls.read_text().splitlines()]
    during = [r for r in rows if down_at < r["at"] < up_at - budget - 1]
    assert during, "the task made calls while the server was down"
    for r in during:
        # Never hangs: each call gave up within its retry budget, with a clear error.
        assert r["took"] < budget + 2, r
        assert r["result"].startswith("RequestFailed: "), r
        assert "could not be reached" in r["result"] or "failed after" in r["result"], r
    assert all(r["took"] < budget + 2 for r in rows)
    events = t.supervisor_events()
    failures = [e for e in events if e.startswith("heartbeat failed")]
    assert len(failures) >= 20  # one a second for 30 s, each tolerated
    assert not any(e.startswith("Stopping the task") for e in events)
    t.assert_no_task_process_left()


def test_8_server_down_past_the_state_budget_keeps_the_state_on_disk_and_exits_4(
    own_try: TryFactory, own_server: ReferenceServer
) -> None:
    t = own_try("waits")
    t.start({"TASKVISOR_STATE_RETRY_BUDGET": "2", "TASKVISOR_HEARTBEAT_TOLERANCE": "60"})
    t.wait_for_file("ready")
    own_server.stop()
    t.release()

    done = t.wait(timeout=30)

    assert done.returncode == 4, done.stderr
    kept = json.loads(t.log_path.with_name(t.log_path.name + ".state.json").read_text())
    assert kept["ti_id"] == t.ti_id
    assert kept["state"] == "success"
    assert kept["end_date"]
    assert kept["reason"] == "task reported success"
    assert "failed after" in kept["error"]
    finished = t.finished_record()
    assert finished["exit_code"] == 4
    assert "The final state could not be reported; kept on disk" in t.supervisor_events()
    assert "could not be reported" in done.stderr
    t.assert_no_task_process_left()
    own_server.start()
    assert t.state() == "running"  # nothing claimed success on the server


def test_7_heartbeats_failing_past_the_tolerance_stop_the_task_and_keep_the_failure_on_disk(
    own_try: TryFactory, own_server: ReferenceServer
) -> None:
    # The other side of scenario 7's bound: an outage longer than the tolerance stops the
    # task (it may be running elsewhere by now), and the failure is kept for the executor.
    tolerance = 2.0
    t = own_try("waits")
    t.start(
        {
            "TASKVISOR_HEARTBEAT_INTERVAL": "0.2",
            "TASKVISOR_HEARTBEAT_TOLERANCE": str(tolerance),
            "TASKVISOR_STATE_RETRY_BUDGET": "1",
        }
    )
    t.wait_for_file("ready")
    own_server.stop()
    stopped_at = time.monotonic()

    done = t.wait(timeout=30)

    assert done.returncode == 4, done.stderr
    assert time.monotonic() - stopped_at < tolerance + 5
    events = t.supervisor_events()
    lost = [e for e in events if e.startswith("Stopping the task: no successful heartbeat")]
    assert len(lost) == 1, events
    kept = json.loads(t.log_path.with_name(t.log_path.name + ".state.json").read_text())
    assert kept["state"] == "failed"
    assert kept["reason"].startswith("heartbeat lost")
    t.assert_no_task_process_left()
    own_server.start()
    assert t.state() == "running"
