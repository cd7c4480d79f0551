"""Running a task's callable and turning how it ended into one terminal message.

Shared by the runner and ``sdk.testing``, so a unit test sees the very mapping a supervised
run does:

=====================================  ==========================================
the callable ...                       terminal message (state)
=====================================  ==========================================
returns (value pushed as XCom)         ``SucceedTask`` (success)
raises ``SystemExit(0)`` / ``(None)``  ``SucceedTask`` (success)
returns a value that is not JSON       ``TaskState`` (failed)
raises ``Skip``                        ``TaskState`` (skipped)
raises ``Fail``                        ``TaskState`` (failed)
raises ``Defer``                       ``DeferTask`` (deferred)
raises ``Reschedule``                  ``RescheduleTask`` (up_for_reschedule)
raises anything else, or won't import  ``RetryTask`` (up_for_retry) if the context's
                                       ``should_retry``, else ``TaskState`` (failed)
=====================================  ==========================================
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
from collections.abc import Callable
from typing import Any

import msgspec

from comms.messages import (
    DeferTask,
    RescheduleTask,
    RetryTask,
    SucceedTask,
    TaskState,
    TerminalRequest,
    state_of,
)
from sdk._entrypoint import call_entrypoint, load_entrypoint, resumption_of
from sdk._json_values import NotJsonError, ensure_json
from sdk._log import format_exception, log
from sdk._trigger_args import encode_trigger_kwargs
from sdk._xcoms import XCom
from sdk.context import Context
from sdk.errors import SdkError
from sdk.outcomes import Defer, Fail, Reschedule, Skip

__all__ = ["Outcome", "run_task", "state_of"]

_REASON_LIMIT = 500


class Outcome(msgspec.Struct, frozen=True, kw_only=True):
    """How a task try ended: its ``state``, the ``terminal`` message and the return value."""

    #: ``success``, ``skipped``, ``failed``, ``up_for_retry``, ``deferred`` or
    #: ``up_for_reschedule``.
    state: str
    terminal: TerminalRequest
    return_value: Any = None

    @property
    def reason(self) -> str | None:
        """The short reason given with a failed, retried or skipped outcome."""
        return getattr(self.terminal, "reason", None)


def run_task(target: str | Callable[..., Any], context: Context) -> Outcome:
    """Load (if named by an entrypoint string) and call ``target``; map how it ended.

    SDK calls go to the installed session; so does the return value (as XCom
    ``return_value``) and, for an error, a ``Log`` record at level error carrying the
    traceback in ``fields["exception"]``. The terminal message is returned, not sent.
    """
    return_value: Any = None
    try:
        if context.next_method is None:
            function = load_entrypoint(target) if isinstance(target, str) else target
            return_value = call_entrypoint(function, context)
        else:
            return_value = _resume(target, context.next_method, context)
        if return_value is not None:
            try:
                ensure_json(return_value, "the task's return value")
            except NotJsonError as exc:
                _report("task returned a value that cannot be stored as XCom", exc, traceback=False)
                return _ended(TaskState(id=0, state="failed", reason=str(exc)), return_value)
            XCom.push("return_value", return_value)
        return _ended(SucceedTask(id=0), return_value)
    except SystemExit as exc:
        if exc.code in (0, None):
            return _ended(SucceedTask(id=0), return_value)
        return _ended(_error(exc, context), return_value)
    except Skip as exc:
        return _ended(TaskState(id=0, state="skipped", reason=_text(exc)), return_value)
    except Fail as exc:
        _report("task failed", exc)
        reason = _text(exc) or "Fail raised"
        return _ended(TaskState(id=0, state="failed", reason=reason), return_value)
    except Defer as exc:
        return _ended(_deferral(exc), return_value)
    except Reschedule as exc:
        return _ended(RescheduleTask(id=0, reschedule_date=exc.at), return_value)
    except BaseException as exc:
        return _ended(_error(exc, context), return_value)


def _resume(target: str | Callable[..., Any], method: str, context: Context) -> Any:
    """Call the method a deferred task named, beside ``target``, with ``next_kwargs``."""
    if not isinstance(target, str):
        target = f"{target.__module__}:{target.__qualname__}"
    kwargs = context.next_kwargs or {}
    if not isinstance(kwargs, dict):
        raise TypeError(
            f"the server resumed this task with next_kwargs of type {type(kwargs).__name__}, "
            "expected an object of keyword arguments"
        )
    return call_entrypoint(load_entrypoint(resumption_of(target, method)), context, kwargs)


def _error(exc: BaseException, context: Context) -> TerminalRequest:
    _report("task failed with an exception", exc)
    reason = _summary(exc)
    if context.should_retry:
        return RetryTask(id=0, reason=reason)
    return TaskState(id=0, state="failed", reason=reason)


def _deferral(exc: Defer) -> TerminalRequest:
    try:
        trigger_kwargs = encode_trigger_kwargs(exc.trigger_kwargs)
        ensure_json(trigger_kwargs, "Defer trigger_kwargs")
        ensure_json(exc.kwargs, "Defer kwargs")
    except (NotJsonError, ValueError) as bad:
        _report("task deferred with arguments that cannot be sent", bad, traceback=False)
        return TaskState(id=0, state="failed", reason=str(bad))
    return DeferTask(
        id=0,
        classpath=exc.classpath,
        trigger_kwargs=trigger_kwargs,
        trigger_timeout=exc.timeout_seconds,
        next_method=exc.method_name,
        next_kwargs=exc.kwargs,
    )


def _ended(terminal: TerminalRequest, return_value: Any) -> Outcome:
    now = dt.datetime.now(dt.UTC)
    if not isinstance(terminal, DeferTask):
        terminal = msgspec.structs.replace(terminal, end_date=now)
    return Outcome(state=state_of(terminal), terminal=terminal, return_value=return_value)


def _report(event: str, exc: BaseException, *, traceback: bool = True) -> None:
    # Without traceback when the runner found the problem: its own frames would be noise.
    details = {"error": _summary(exc)}
    if traceback:
        details["exception"] = format_exception(exc)
    try:
        log.error(event, **details)
    except SdkError:  # the supervisor is gone: stderr is the last way out
        text = details.get("exception", details["error"])
        with contextlib.suppress(OSError):
            os.write(2, f"{event}\n{text}\n".encode(errors="replace"))


def _summary(exc: BaseException) -> str:
    text = _text(exc)
    summary = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return summary[:_REASON_LIMIT]


def _text(exc: BaseException) -> str | None:
    try:
        text = str(exc)
    except Exception:  # a task's exception class may break its own __str__
        text = f"<unprintable {type(exc).__name__}>"
    return text[:_REASON_LIMIT] if text else None
