"""Scenarios 15 and 16: ``supervise`` is signalled, or inherits odd signal state."""

from __future__ import annotations

import signal
import sys

import pytest
from faultkit import TASKS_DIR, TryFactory

from apiserver.testing import ReferenceServer


@pytest.mark.parametrize(
    ("sig", "max_tries", "state"),
    [(signal.SIGTERM, 0, "failed"), (signal.SIGINT, 2, "up_for_retry")],
)
def test_15_supervise_sigterm_or_sigint_stops_the_group_and_reports_terminated_never_success(
    new_try: TryFactory, sig: signal.Signals, max_tries: int, state: str
) -> None:
    grace = 0.5
    t = new_try("spawns_grandchildren", env={"FAULT_THEN": "wait"}, max_tries=max_tries)
    proc = t.start({"TASKVISOR_KILL_GRACE": str(grace)})
    t.wait_for_file("ready")
    proc.send_signal(sig)  # node drain, executor shutdown

    done = t.wait(timeout=30)

    assert done.returncode == 1, done.stderr
    assert t.state() == state
    events = t.supervisor_events()
    assert f"Received {sig.name}; stopping the task" in events
    # The task ignores SIGTERM: the grace ran out and SIGKILL ended the whole group.
    assert "Task process ended: killed by SIGKILL" in events
    finished = t.finished_record()
    assert finished["final_state"] == state
    assert finished["reason"].startswith("terminated")
    assert len(t.pids()) == 4
    t.assert_no_task_process_left()


def _odd_parent(t_activity: str) -> list[str]:
    return [sys.executable, str(TASKS_DIR / "odd_parent.py"), t_activity]


@pytest.mark.parametrize("case", ["success", "exit_3", "raises", "sigterm"])
def test_16_sigchld_ignored_and_signals_blocked_by_the_parent_exit_codes_still_read(
    new_try: TryFactory, server: ReferenceServer, case: str
) -> None:
    if case == "success":
        t = new_try("checks_signal_state")
    elif case == "exit_3":
        t = new_try(cmd=["sh", "-c", "read startup; exit 3"])
    elif case == "raises":
        t = new_try("raises")
    else:
        t = new_try("waits")
    proc = t.start(argv=_odd_parent(str(t.activity)))
    if case == "sigterm":
        t.wait_for_file("ready")
        proc.send_signal(signal.SIGTERM)  # blocked by the parent; supervise unblocks it

    done = t.wait(timeout=30)

    events = t.supervisor_events()
    if case == "success":
        assert done.returncode == 0, done.stderr
        assert t.state() == "success"
        assert "Task process ended: exit code 0" in events
        # The task got default signal state back, so its own children's exit codes work.
        assert server.admin.xcoms_of(t.ti_id)["return_value"] == {
            "sigchld_default": True,
            "blocked": [],
            "child_returncode": 7,
        }
    elif case == "exit_3":
        assert done.returncode == 1, done.stderr
        assert t.state() == "failed"
        assert "Task process ended: exit code 3" in events
        assert t.finished_record()["reason"] == "task exit code 3 without reporting a state"
    elif case == "raises":
        assert done.returncode == 1, done.stderr
        assert t.state() == "failed"
        assert "Task process ended: exit code 0" in events
        assert t.finished_record()["final_state"] == "failed"
    else:
        assert done.returncode == 1, done.stderr
        assert t.state() == "failed"
        assert "Received SIGTERM; stopping the task" in events
        assert t.finished_record()["reason"].startswith("terminated")
    assert not any("unknown exit status" in e for e in events)
    t.assert_no_task_process_left()
