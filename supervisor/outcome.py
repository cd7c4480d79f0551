"""How a task try ended, decided once, from facts, failing closed.

Pure functions of what the supervisor saw: the task's own word on how it ended (a
:class:`Terminal`, whichever child protocol carried it), the process's exit status, why the
supervisor stopped the task (if it did) and the run context's ``should_retry``; and the
``PATCH .../state`` bodies that report the result. No I/O here.
"""

from __future__ import annotations

import datetime as dt
import enum
import signal
from typing import Any

import msgspec

from comms.api import (
    TIDeferredStatePayload,
    TIRescheduleStatePayload,
    TIRetryStatePayload,
    TIStateUpdate,
    TISuccessStatePayload,
    TITerminalStatePayload,
)
from comms.messages import (
    DeferTask,
    RescheduleTask,
    RetryTask,
    TaskState,
    TerminalRequest,
    state_of,
)
from supervisor.process import ExitStatus

__all__ = [
    "ExitCode",
    "Outcome",
    "StopReason",
    "Terminal",
    "decide",
    "state_update",
    "terminal_of",
]


class ExitCode(enum.IntEnum):
    """Exit codes of ``supervise`` (docs/design.md, "Exit codes")."""

    OK = 0  # success, skipped, deferred, up_for_reschedule: reported
    FAILED = 1  # failed or up_for_retry: reported
    USAGE = 2  # bad usage or invalid activity; nothing contacted
    REFUSED = 3  # the server refused to start the task; task code never ran
    NOT_REPORTED = 4  # the final state could not be reported; kept in <log_path>.state.json
    SERVER_STOPPED = 5  # the server told us to stop the task (heartbeat 404/409/410)


class StopReason(enum.StrEnum):
    """Why the supervisor stopped the task before it ended by itself."""

    TIMEOUT = "timeout"
    TERMINATED = "terminated"  # supervise itself got SIGTERM/SIGINT
    SERVER = "server"  # heartbeat 404/409/410
    HEARTBEAT_LOST = "heartbeat_lost"  # no successful heartbeat within the tolerance
    PROTOCOL = "protocol"  # the task broke the protocol beyond repair
    OVERTIME = "overtime"  # still running after its terminal message
    SUPERVISOR_ERROR = "supervisor_error"  # a bug in the supervisor; the task was stopped


class Outcome(msgspec.Struct, frozen=True):
    """The state to report (None: report nothing), why, and the exit code of ``supervise``."""

    state: str | None
    reason: str
    exit_code: ExitCode


_OK_STATES = {"success", "skipped", "deferred", "up_for_reschedule", "awaiting_input"}
#: States the task reports that wait for its exit: a crash while exiting turns them into a failure.
_AFTER_EXIT_STATES = {"failed", "skipped", "removed"}


class Terminal(msgspec.Struct, frozen=True, kw_only=True):
    """The task's own word on how its try ended, whichever protocol carried it.

    ``update`` is the ``PATCH .../state`` body that reports ``state`` as the task asked (its
    end date, trigger, reschedule date, outlets...): a typed payload for our protocol, the
    runner's own body for Airflow's.
    """

    state: str
    update: TIStateUpdate | dict[str, Any]
    reason: str | None = None

    @property
    def at_once(self) -> bool:
        """Whether the state is reported as soon as the task sends it (not after exit).

        Success, retry, deferral and rescheduling are final the moment the task says so (work
        done after that is not the task's result); failed and skipped wait for the process
        exit, because a crash while exiting must turn them into a failure.
        """
        return self.state not in _AFTER_EXIT_STATES


def terminal_of(msg: TerminalRequest, received: dt.datetime) -> Terminal:
    """The :class:`Terminal` a message of our protocol reports, received at ``received``."""
    state = state_of(msg)
    end = getattr(msg, "end_date", None) or received
    update: TIStateUpdate
    if isinstance(msg, DeferTask):
        timeout = (
            dt.timedelta(seconds=msg.trigger_timeout) if msg.trigger_timeout is not None else None
        )
        update = TIDeferredStatePayload(
            classpath=msg.classpath,
            trigger_kwargs=msg.trigger_kwargs,
            trigger_timeout=timeout,
            next_method=msg.next_method,
            next_kwargs=msg.next_kwargs,
        )
    elif isinstance(msg, RescheduleTask):
        update = TIRescheduleStatePayload(reschedule_date=msg.reschedule_date, end_date=end)
    elif isinstance(msg, TaskState):
        update = TITerminalStatePayload(state=msg.state, end_date=end)
    elif isinstance(msg, RetryTask):
        update = TIRetryStatePayload(end_date=end)
    else:
        update = TISuccessStatePayload(end_date=end)
    reason = msg.reason if isinstance(msg, RetryTask | TaskState) else None
    return Terminal(state=state, update=update, reason=reason)


def decide(
    terminal: Terminal | None,
    status: ExitStatus,
    stop: StopReason | None,
    *,
    should_retry: bool,
) -> Outcome:
    """Decide the try's outcome. Fail closed: no terminal message is never a success."""
    if stop is StopReason.SERVER:
        return Outcome(None, "the server said the task must stop", ExitCode.SERVER_STOPPED)
    if terminal is not None and terminal.at_once:
        state = terminal.state  # already reported: final whatever happened next
        return Outcome(state, terminal.reason or f"task reported {state}", _exit_code(state))
    # An explicit Fail is never retried, whatever happens after it.
    explicit_fail = terminal is not None and terminal.state == "failed"
    failed = "up_for_retry" if should_retry and not explicit_fail else "failed"
    if stop is not None and stop is not StopReason.OVERTIME:
        return Outcome(failed, _STOP_WORDING[stop], ExitCode.FAILED)
    if terminal is not None:
        if status.clean:
            return Outcome(
                terminal.state,
                terminal.reason or f"task reported {terminal.state}",
                _exit_code(terminal.state),
            )
        return Outcome(
            failed, f"task reported {terminal.state} but then {status.describe()}", ExitCode.FAILED
        )
    if status.signal == signal.SIGKILL:
        return Outcome(
            failed, "task process killed by SIGKILL, likely out of memory (OOM)", ExitCode.FAILED
        )
    if status.clean:
        return Outcome(failed, "task exited without reporting a state", ExitCode.FAILED)
    return Outcome(failed, f"task {status.describe()} without reporting a state", ExitCode.FAILED)


_STOP_WORDING = {
    StopReason.TIMEOUT: "timeout: the task ran past its execution timeout",
    StopReason.TERMINATED: "terminated: supervise received a termination signal",
    StopReason.HEARTBEAT_LOST: "heartbeat lost: the server could not be reached for too long",
    StopReason.PROTOCOL: "protocol error: the task broke the channel protocol",
    StopReason.SUPERVISOR_ERROR: "supervisor error: the supervisor failed and stopped the task",
}


def _exit_code(state: str) -> ExitCode:
    return ExitCode.OK if state in _OK_STATES else ExitCode.FAILED


def state_update(
    state: str, terminal: Terminal | None, now: dt.datetime
) -> TIStateUpdate | dict[str, Any]:
    """The ``PATCH .../state`` body that reports ``state``.

    Where the task's terminal message reported that very state, its own body. Where the
    supervisor decided the state (a crash, a timeout, a failure after the task said
    "skipped"), from the state alone, ending ``now``.
    """
    if terminal is not None and terminal.state == state:
        return terminal.update
    if state == "up_for_retry":
        return TIRetryStatePayload(end_date=now)
    if state in ("failed", "skipped"):
        return TITerminalStatePayload(state=state, end_date=now)  # type: ignore[arg-type]
    raise AssertionError(f"{state} is only reported from the task's own message")
