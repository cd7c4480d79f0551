"""Scenarios 1-4 and 14: the task dies, lingers, hides descendants, hangs or never reports."""

from __future__ import annotations

import os
import signal

import pytest
from faultkit import TryFactory, command

from apiserver.testing import ReferenceServer


@pytest.fixture(autouse=True)
def _variable(server: ReferenceServer) -> None:
    server.admin.set_variable("fault_var", "value")


@pytest.mark.parametrize(("max_tries", "state"), [(0, "failed"), (2, "up_for_retry")])
def test_1_sigkilled_task_is_failed_or_up_for_retry_and_log_says_likely_oom(
    new_try: TryFactory, max_tries: int, state: str
) -> None:
    t = new_try("waits", max_tries=max_tries)
    t.start()
    pid = int(t.wait_for_file("ready"))
    os.kill(pid, signal.SIGKILL)  # as the OOM killer does

    done = t.wait()

    assert done.returncode == 1, done.stderr
    assert t.state() == state
    ended = [e for e in t.supervisor_events() if e.startswith("Task process ended")]
    assert ended == [
        "Task process ended: killed by SIGKILL (likely out of memory: the OOM killer sends SIGKILL)"
    ]
    finished = t.finished_record()
    assert finished["final_state"] == state
    assert "SIGKILL" in finished["reason"]
    assert "out of memory" in finished["reason"]
    t.assert_no_task_process_left()


def test_2_task_running_after_reporting_success_is_killed_after_overtime_and_stays_success(
    new_try: TryFactory,
) -> None:
    t = new_try(cmd=command("raw_task.py", "linger"))
    done = t.run(env={"TASKVISOR_OVERTIME": "1", "TASKVISOR_KILL_GRACE": "0.5"})

    assert done.returncode == 0, done.stderr
    assert t.state() == "success"
    events = t.supervisor_events()
    assert "Task still running after reporting its state; stopping it" in events
    # It ignores SIGTERM: the grace ran out and SIGKILL ended it.
    assert "Task process ended: killed by SIGKILL" in events
    assert t.finished_record()["final_state"] == "success"
    # Overtime (1 s) + grace (0.5 s) + start-up and reporting: well under 10 s.
    assert done.duration < 10
    t.assert_no_task_process_left()


@pytest.mark.parametrize("then", ["return", "wait"])
def test_3_every_descendant_is_killed_and_waited_for_and_supervise_does_not_wait_for_eof(
    new_try: TryFactory, then: str
) -> None:
    # "return": the task succeeds and leaves three SIGTERM-ignoring descendants holding its
    # stdout/stderr open (one in its group, one in a new session, one double-forked daemon).
    # "wait": the same task is killed by its execution timeout instead.
    timeout = 3.0 if then == "wait" else None
    t = new_try("spawns_grandchildren", env={"FAULT_THEN": then}, timeout=timeout)
    t.start({"TASKVISOR_KILL_GRACE": "0.5", "TASKVISOR_DRAIN_TIMEOUT": "1"})
    t.wait_for_file("ready")

    done = t.wait(timeout=30)

    assert len(t.pids()) == 4  # the task and its three descendants
    if then == "return":
        assert done.returncode == 0, done.stderr
        assert t.state() == "success"
        assert "Task left processes behind; stopping them" in t.supervisor_events()
    else:
        assert done.returncode == 1, done.stderr
        assert t.state() == "failed"
        assert "timeout" in t.finished_record()["reason"]
    # What the descendants printed before they were killed still reached the log.
    printed = [r["event"] for r in t.log() if r["logger"] == "task.stdout"]
    for how in ("group", "session", "daemon"):
        assert f"grandchild {how} holds stdout and stderr open" in printed
    # Bounded: nothing waited for EOF on pipes the killed descendants held.
    assert done.duration < (timeout or 0) + 10
    t.assert_no_task_process_left()


@pytest.mark.parametrize(
    ("entry", "max_tries", "state"),
    [("ignores_term_and_waits", 0, "failed"), ("blocks_term_in_native_code", 2, "up_for_retry")],
)
def test_4_execution_timeout_is_enforced_by_term_grace_kill_on_the_whole_group(
    new_try: TryFactory, entry: str, max_tries: int, state: str
) -> None:
    timeout, grace = 2.0, 0.5
    t = new_try(entry, timeout=timeout, max_tries=max_tries)
    done = t.run({"TASKVISOR_KILL_GRACE": str(grace)})

    assert done.returncode == 1, done.stderr
    assert t.state() == state
    events = t.supervisor_events()
    assert "Task timed out; stopping it" in events
    assert "Task process ended: killed by SIGKILL" in events  # SIGTERM did nothing
    finished = t.finished_record()
    assert finished["final_state"] == state
    assert finished["reason"].startswith("timeout")
    # The whole run, start-up and report included, within timeout + grace + 2 s.
    assert done.duration < timeout + grace + 2, done.duration
    t.assert_no_task_process_left()


@pytest.mark.parametrize(
    ("how", "wording"),
    [
        ("python_exit_0", "task exited without reporting a state"),
        ("no_terminal", "task exited without reporting a state"),
        ("cut_terminal", "task exited without reporting a state"),
    ],
)
def test_14_exit_0_without_a_whole_terminal_message_is_failed_never_success(
    new_try: TryFactory, how: str, wording: str
) -> None:
    if how == "python_exit_0":
        t = new_try("exits_without_reporting")
    else:
        t = new_try(cmd=command("raw_task.py", how))
    done = t.run()

    assert done.returncode == 1, done.stderr
    assert t.state() == "failed"
    payload = t.server.admin.get_task_instance(t.ti_id).state_payload
    assert payload is not None
    assert payload["state"] == "failed"
    finished = t.finished_record()
    assert finished["final_state"] == "failed"
    assert finished["reason"] == wording
    assert "Task process ended: exit code 0" in t.supervisor_events()
    if how == "cut_terminal":
        errors = [e for e in t.supervisor_events() if e.startswith("Protocol error")]
        assert errors == [
            "Protocol error from the task: line cut off at end of stream (no newline)"
        ]
    t.assert_no_task_process_left()
