"""supervisor.outcome: the decision table of a try's outcome, failing closed."""

from __future__ import annotations

import datetime as dt
import signal

import msgspec
import pytest

from comms.messages import (
    DeferTask,
    RescheduleTask,
    RetryTask,
    SucceedTask,
    TaskState,
    state_of,
)
from supervisor.outcome import ExitCode, StopReason, Terminal, decide, state_update, terminal_of
from supervisor.process import ExitStatus

WHEN = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
CLEAN = ExitStatus(code=0)
EXIT_3 = ExitStatus(code=3)
SIGKILLED = ExitStatus(signal=signal.SIGKILL)
SIGSEGV = ExitStatus(signal=signal.SIGSEGV)
UNKNOWN = ExitStatus()

SUCCESS = terminal_of(SucceedTask(id=1), WHEN)
RETRY = terminal_of(RetryTask(id=1, reason="db flaky"), WHEN)
FAILED = terminal_of(TaskState(id=1, state="failed", reason="bad input"), WHEN)
SKIPPED = terminal_of(TaskState(id=1, state="skipped"), WHEN)
DEFER = terminal_of(DeferTask(id=1, classpath="t.Trigger"), WHEN)
RESCHEDULE = terminal_of(RescheduleTask(id=1, reschedule_date=WHEN), WHEN)


def test_exit_codes_match_the_design():
    assert [int(c) for c in ExitCode] == [0, 1, 2, 3, 4, 5]


@pytest.mark.parametrize(
    ("terminal", "status", "state", "exit_code"),
    [
        (SUCCESS, CLEAN, "success", ExitCode.OK),
        (DEFER, CLEAN, "deferred", ExitCode.OK),
        (RESCHEDULE, CLEAN, "up_for_reschedule", ExitCode.OK),
        (RETRY, CLEAN, "up_for_retry", ExitCode.FAILED),
        (FAILED, CLEAN, "failed", ExitCode.FAILED),
        (SKIPPED, CLEAN, "skipped", ExitCode.OK),
    ],
)
def test_terminal_message_and_clean_exit_give_the_reported_state(
    terminal, status, state, exit_code
):
    outcome = decide(terminal, status, None, should_retry=False)
    assert (outcome.state, outcome.exit_code) == (state, exit_code)


@pytest.mark.parametrize("should_retry", [False, True])
def test_no_terminal_message_and_exit_0_is_a_failure_never_a_success(should_retry):
    outcome = decide(None, CLEAN, None, should_retry=should_retry)
    assert outcome.state == ("up_for_retry" if should_retry else "failed")
    assert outcome.exit_code is ExitCode.FAILED
    assert "without reporting a state" in outcome.reason


@pytest.mark.parametrize("status", [EXIT_3, SIGSEGV, UNKNOWN])
def test_no_terminal_message_and_bad_exit_is_a_failure_naming_the_exit(status):
    outcome = decide(None, status, None, should_retry=False)
    assert outcome.state == "failed"
    assert outcome.exit_code is ExitCode.FAILED
    assert status.describe() in outcome.reason


def test_sigkill_without_terminal_message_is_worded_as_likely_oom():
    outcome = decide(None, SIGKILLED, None, should_retry=False)
    assert outcome.state == "failed"
    assert "SIGKILL" in outcome.reason
    assert "OOM" in outcome.reason


def test_should_retry_turns_a_crash_into_up_for_retry():
    outcome = decide(None, SIGKILLED, None, should_retry=True)
    assert outcome.state == "up_for_retry"
    assert outcome.exit_code is ExitCode.FAILED


@pytest.mark.parametrize("terminal", [None, SUCCESS, FAILED, RETRY])
@pytest.mark.parametrize("status", [CLEAN, SIGKILLED])
def test_server_stop_reports_no_state_and_exits_5(terminal, status):
    outcome = decide(terminal, status, StopReason.SERVER, should_retry=True)
    assert outcome.state is None
    assert outcome.exit_code is ExitCode.SERVER_STOPPED
    assert "server" in outcome.reason


@pytest.mark.parametrize("status", [EXIT_3, SIGKILLED, UNKNOWN])
@pytest.mark.parametrize("terminal", [SUCCESS, RETRY, DEFER, RESCHEDULE], ids=lambda t: t.state)
def test_state_reported_at_once_stays_whatever_the_exit(terminal, status):
    clean = decide(terminal, CLEAN, None, should_retry=False)
    outcome = decide(terminal, status, None, should_retry=False)
    assert outcome == clean


def test_success_reported_then_overtime_kill_stays_success():
    outcome = decide(
        SUCCESS, ExitStatus(signal=signal.SIGTERM), StopReason.OVERTIME, should_retry=False
    )
    assert (outcome.state, outcome.exit_code) == ("success", ExitCode.OK)


def test_retry_reason_is_the_tasks_own():
    assert decide(RETRY, CLEAN, None, should_retry=False).reason == "db flaky"


@pytest.mark.parametrize("status", [EXIT_3, SIGSEGV, UNKNOWN])
def test_skipped_then_non_zero_exit_is_a_failure(status):
    outcome = decide(SKIPPED, status, None, should_retry=False)
    assert outcome.state == "failed"
    assert outcome.exit_code is ExitCode.FAILED
    assert "task reported skipped but then" in outcome.reason
    assert status.describe() in outcome.reason


@pytest.mark.parametrize(
    ("status", "stop"),
    [(SIGSEGV, None), (EXIT_3, None), (ExitStatus(signal=signal.SIGTERM), StopReason.TIMEOUT)],
    ids=["crash", "exit-3", "timeout"],
)
def test_explicit_fail_is_never_retried_even_if_the_process_then_dies_badly(status, stop):
    # sdk.Fail means "failed, no retry" (docs/design.md); a crash or kill afterwards is still a
    # failure, but must not turn the task's explicit no-retry into up_for_retry.
    outcome = decide(FAILED, status, stop, should_retry=True)
    assert outcome.state == "failed"
    assert outcome.exit_code is ExitCode.FAILED


def test_failed_reason_is_kept_on_clean_exit():
    assert decide(FAILED, CLEAN, None, should_retry=True).reason == "bad input"


@pytest.mark.parametrize(
    ("stop", "words"),
    [
        (StopReason.TIMEOUT, "timeout"),
        (StopReason.TERMINATED, "terminated"),
        (StopReason.HEARTBEAT_LOST, "heartbeat lost"),
        (StopReason.PROTOCOL, "protocol error"),
    ],
)
@pytest.mark.parametrize("should_retry", [False, True])
def test_supervisor_stop_without_reported_state_fails_with_its_reason(stop, words, should_retry):
    for terminal, status in [
        (None, ExitStatus(signal=signal.SIGTERM)),
        (SKIPPED, CLEAN),
        (None, CLEAN),
    ]:
        outcome = decide(terminal, status, stop, should_retry=should_retry)
        assert outcome.state == ("up_for_retry" if should_retry else "failed")
        assert outcome.exit_code is ExitCode.FAILED
        assert outcome.reason.startswith(words)


def test_overtime_after_skipped_and_clean_exit_stays_skipped():
    outcome = decide(SKIPPED, CLEAN, StopReason.OVERTIME, should_retry=False)
    assert (outcome.state, outcome.exit_code) == ("skipped", ExitCode.OK)


@pytest.mark.parametrize(
    ("terminal", "at_once"),
    [
        (SUCCESS, True),
        (RETRY, True),
        (DEFER, True),
        (RESCHEDULE, True),
        (FAILED, False),
        (SKIPPED, False),
    ],
    ids=lambda v: v.state if isinstance(v, Terminal) else str(v),
)
def test_only_failed_and_skipped_wait_for_the_process_exit(terminal, at_once):
    assert terminal.at_once is at_once


@pytest.mark.parametrize(
    ("state", "at_once"),
    [("success", True), ("awaiting_input", True), ("removed", False), ("failed", False)],
)
def test_a_terminal_of_airflows_runner_waits_for_exit_only_for_failed_skipped_removed(
    state, at_once
):
    terminal = Terminal(state=state, update={"state": state})
    assert terminal.at_once is at_once


@pytest.mark.parametrize(
    ("status", "words"),
    [
        (ExitStatus(code=0), "exit code 0"),
        (ExitStatus(code=2), "exit code 2"),
        (ExitStatus(signal=signal.SIGKILL), "killed by SIGKILL"),
        (ExitStatus(), "unknown exit status"),
    ],
)
def test_exit_status_wording(status, words):
    assert status.describe().startswith(words)


@pytest.mark.parametrize("terminal", [None, SKIPPED], ids=["no-terminal", "skipped"])
def test_a_signal_without_a_name_still_gives_an_outcome(terminal):
    status = ExitStatus(signal=signal.SIGRTMIN + 6)
    outcome = decide(terminal, status, None, should_retry=False)
    assert (outcome.state, outcome.exit_code) == ("failed", ExitCode.FAILED)


def test_only_a_known_exit_0_is_clean():
    assert ExitStatus(code=0).clean
    assert not ExitStatus(code=1).clean
    assert not ExitStatus(signal=signal.SIGTERM).clean
    assert not ExitStatus().clean


# --- the PATCH .../state body -------------------------------------------------------------

NOW = dt.datetime(2026, 1, 2, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    "terminal",
    [
        SucceedTask(id=1, end_date=WHEN),
        RetryTask(id=1, end_date=WHEN),
        TaskState(id=1, state="failed", end_date=WHEN),
        TaskState(id=1, state="skipped", end_date=WHEN),
        RescheduleTask(id=1, reschedule_date=NOW, end_date=WHEN),
    ],
)
def test_a_state_the_task_reported_is_sent_with_the_tasks_own_end_date(terminal):
    body = _wire(state_update(state_of(terminal), terminal_of(terminal, NOW), NOW))

    assert body["state"] == state_of(terminal)
    assert body["end_date"] == "2026-01-01T00:00:00Z"


def test_a_state_the_supervisor_decided_ends_now_whatever_the_task_said():
    # The task said "skipped", then crashed: the supervisor reports a failure of its own.
    skipped = terminal_of(TaskState(id=1, state="skipped", end_date=WHEN), WHEN)
    body = _wire(state_update("failed", skipped, NOW))

    assert body == {"state": "failed", "end_date": "2026-01-02T00:00:00Z"}
    assert _wire(state_update("up_for_retry", None, NOW))["end_date"] == "2026-01-02T00:00:00Z"


def test_a_deferral_is_sent_with_the_tasks_trigger():
    defer = DeferTask(id=1, classpath="t.T", trigger_timeout=30)

    body = _wire(state_update("deferred", terminal_of(defer, NOW), NOW))

    assert body["state"] == "deferred"
    assert body["classpath"] == "t.T"
    assert body["trigger_timeout"] == "PT30S"


def test_a_state_reported_without_an_end_date_ends_when_the_message_arrived():
    body = _wire(state_update("success", terminal_of(SucceedTask(id=1), WHEN), NOW))

    assert body["end_date"] == "2026-01-01T00:00:00Z"


def test_airflows_runner_body_is_sent_as_the_runner_sent_it():
    update = {"state": "success", "end_date": WHEN, "task_outlets": [], "rendered_map_index": "a"}

    assert state_update("success", Terminal(state="success", update=update), NOW) is update


def _wire(update: msgspec.Struct | dict[str, object]) -> dict[str, object]:
    """The JSON body as the server receives it."""
    return msgspec.json.decode(msgspec.json.encode(update))
