"""Scenario 5: the server answers a heartbeat 404, 409 or 410; heartbeats end with the state."""

from __future__ import annotations

import sqlite3

import pytest
from faultkit import TryFactory, command, proxy_to

from apiserver.testing import ReferenceServer


def _delete_task_instance(server: ReferenceServer, ti_id: str) -> None:
    with sqlite3.connect(server.db_path) as db:
        db.execute("DELETE FROM task_instances WHERE id = ?", (ti_id,))


@pytest.mark.parametrize("status", [404, 409, 410])
def test_5_heartbeat_404_409_410_kills_task_group_sends_no_state_and_exits_5(
    new_try: TryFactory, server: ReferenceServer, status: int
) -> None:
    t = new_try("spawns_grandchildren", env={"FAULT_THEN": "wait"})
    with proxy_to(server) as proxy:
        t.point_at(proxy.url)
        t.start({"TASKVISOR_HEARTBEAT_INTERVAL": "0.2"})
        t.wait_for_file("ready")
        if status == 404:
            _delete_task_instance(server, t.ti_id)  # the TI is gone
        elif status == 409:
            server.admin.set_state(t.ti_id, "failed")  # "mark failed" in the UI
        else:
            server.admin.clear(t.ti_id)  # cleared while running: this try is over

        done = t.wait(timeout=30)

        assert done.returncode == 5, done.stderr
        heartbeats = proxy.requests("PUT", "/heartbeat")
        assert heartbeats[-1].status == status
        assert [h.status for h in heartbeats[:-1]] == [204] * (len(heartbeats) - 1)
        assert proxy.requests("PATCH", "/state") == []  # no state sent afterwards
    if status == 409:
        assert t.state() == "failed"  # what the UI set, untouched
    elif status == 410:
        record = server.admin.get_task_instance(t.ti_id)
        assert record.cleared
        assert record.state == "running"
        assert record.state_payload is None
    stop = [r for r in t.log() if r["event"] == "The server says the task must stop; killing it"]
    assert [r["status"] for r in stop] == [status]
    finished = t.finished_record()
    assert finished["exit_code"] == 5
    assert finished["final_state"] is None
    assert len(t.pids()) == 4
    t.assert_no_task_process_left()


def test_5_no_heartbeat_after_the_terminal_state_so_no_spurious_409(
    new_try: TryFactory, server: ReferenceServer
) -> None:
    # The task reports success and then lingers for the whole overtime: heartbeats every
    # 0.2 s would show up there if they did not stop with the terminal state.
    t = new_try(cmd=command("raw_task.py", "linger"))
    with proxy_to(server) as proxy:
        t.point_at(proxy.url)
        done = t.run({"TASKVISOR_HEARTBEAT_INTERVAL": "0.2", "TASKVISOR_OVERTIME": "2"})

        assert done.returncode == 0, done.stderr
        (report,) = proxy.requests("PATCH", "/state")
        assert report.status == 204
        heartbeats = proxy.requests("PUT", "/heartbeat")
        assert heartbeats, "the task ran long enough to heartbeat"
        assert all(h.status == 204 for h in heartbeats)
        # A heartbeat already in flight may land just after the report; no new one starts.
        assert [h for h in heartbeats if h.at > report.at + 0.1] == []
    assert t.state() == "success"
    assert not any("heartbeat" in e.lower() for e in t.supervisor_events())
    t.assert_no_task_process_left()
