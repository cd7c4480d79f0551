"""taskvisor's own child protocol: line-JSON on the task's fd 0 and 1 (docs/protocol.md).

:class:`LineChannel` is the :class:`~supervisor.supervise.Channel` of an activity file's
task: an ``entrypoint`` run by :mod:`sdk.runner`, or any ``command`` that speaks the
protocol. It decodes the task's lines (:func:`comms.framing.from_task_decoder`), answers data
requests locally or through :class:`~supervisor.relay.Relay` on the worker pool, files
``Log`` and ``Metric`` records, and hands terminal messages to the supervision.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
from typing import TYPE_CHECKING, Any

import msgspec

from comms.framing import BadLine, LineDecoder, from_task_decoder
from comms.messages import (
    PROTOCOL_VERSION,
    Cancel,
    ErrorCode,
    ErrorResponse,
    Hello,
    Log,
    Metric,
    OKResponse,
    Response,
    StartupDetails,
    TaskMessage,
    TerminalRequest,
)
from supervisor.activity import Activity, RunAs, describe
from supervisor.config import SupervisorConfig
from supervisor.outbox import Outbox
from supervisor.outcome import ExitCode, StopReason, terminal_of
from supervisor.relay import Relay, RequestIds
from supervisor.spawn import Launch, Zygote, task_environment
from supervisor.supervise import Supervision, TryIdentity, now, supervise
from supervisor.tasklog import task_logger

if TYPE_CHECKING:
    from collections.abc import Callable

    from supervisor.http import Transport

__all__ = ["LineChannel", "supervise_activity"]

_READ_SIZE = 256 * 1024


def supervise_activity(
    activity: Activity,
    zygote: Zygote,
    config: SupervisorConfig,
    *,
    run_as: RunAs | None = None,
    transport: Transport | None = None,
) -> ExitCode:
    """Run the task try an activity file describes in the forked ``zygote``."""
    identity = TryIdentity(
        token=activity.token, server=activity.server, ti=activity.ti, describe=describe(activity)
    )
    return supervise(
        identity,
        zygote,
        config,
        activity.log_path or activity.default_log_path(),
        lambda supervision: LineChannel(supervision, activity),
        run_as=run_as,
        timeout=activity.timeout,
        transport=transport,
    )


class LineChannel:
    """The supervisor's side of one task's line-JSON channel."""

    def __init__(self, supervision: Supervision, activity: Activity) -> None:
        self.supervision = supervision
        self.activity = activity
        self.zygote = supervision.zygote
        self.log = supervision.log
        self.relay = Relay(supervision.client, activity.ti, activity.context, supervision.masker)
        self.decoder: LineDecoder[TaskMessage] = from_task_decoder(
            max_line=supervision.config.max_line
        )
        self.outbox = Outbox(self.zygote.to_task, supervision.selector)
        self.hello: Hello | None = None
        self.request_ids = RequestIds()

    # --- the Channel protocol ------------------------------------------------------------

    def launch(self) -> None:
        activity, run_as = self.activity, self.supervision.run_as
        env = task_environment(activity.token, run_as, activity.env)
        if activity.command is not None:
            launch = Launch(kind="command", argv=activity.command, env=env, cwd=os.getcwd())
        else:
            launch = Launch(kind="python", env=env, cwd=os.getcwd())
        if run_as is not None:
            launch.uid, launch.gid, launch.groups = run_as.uid, run_as.gid, run_as.groups
        launch.isolate_network = activity.isolate_network
        self.zygote.launch(launch)

    def start(self) -> None:
        assert self.supervision.context is not None
        os.set_blocking(self.zygote.to_task, False)
        self._send(
            StartupDetails(
                protocol_version=PROTOCOL_VERSION,
                ti=self.activity.ti,
                ti_context=self.supervision.context,
                start_date=now(),
                entrypoint=self.activity.entrypoint,
                pushed=self.activity.context,
            )
        )

    def readers(self) -> dict[int, Callable[[int], None]]:
        return {self.zygote.from_task: self._on_channel}

    def cancel(self, reason: StopReason) -> None:
        self._send(Cancel(reason=reason.value))

    def close(self) -> None:
        self.supervision.stop_reading(self.zygote.to_task)
        with contextlib.suppress(OSError):
            os.close(self.zygote.to_task)

    # --- from the task ---------------------------------------------------------------

    def _on_channel(self, fd: int) -> None:
        data = os.read(fd, _READ_SIZE)
        self.decoder.feed(data)
        if not data:
            self.supervision.stop_reading(fd)
        while (event := self.decoder.next_event()) is not None:
            self._on_message(event)

    def _on_message(self, msg: TaskMessage | BadLine) -> None:
        if isinstance(msg, BadLine):
            self.log.supervisor(
                "error", f"Protocol error from the task: {msg.reason}", line_bytes=msg.size
            )
            if msg.id is not None:
                self._reply_error(msg.id, ErrorCode.PROTOCOL_ERROR, msg.reason)
        elif isinstance(msg, Log):
            self.log.record(
                task_logger(msg.logger),
                msg.level,
                msg.event,
                msg.fields,
                timestamp=_utc(msg.timestamp),
            )
        elif isinstance(msg, Metric):
            self.log.record(
                "task.metrics",
                "debug",
                msg.name,
                {"metric": msg.kind, "value": msg.value, "tags": msg.tags},
            )
        elif isinstance(msg, Hello):
            self._on_hello(msg)
        elif self.hello is None:
            self._reply_error(
                msg.id, ErrorCode.PROTOCOL_ERROR, "the task's first message must be Hello"
            )
        elif not self.request_ids.first_use(msg.id):
            self._reply_error(
                msg.id,
                ErrorCode.PROTOCOL_ERROR,
                f"request id {msg.id} was already used in this try; the request was not run",
            )
        elif isinstance(msg, TerminalRequest):
            refused = self.supervision.on_terminal(terminal_of(msg, now()))
            if refused is None:
                self._send(OKResponse(id=msg.id))
            else:
                self._reply_error(msg.id, ErrorCode.INVALID_STATE, refused)
        else:
            local = self.relay.answer_locally(msg)
            if isinstance(local, ErrorResponse) and local.error is ErrorCode.PROTOCOL_ERROR:
                reason = local.detail["message"]
                self.log.supervisor("error", f"Protocol error from the task: {reason}")
            if local is not None:
                self._send(local)
            else:
                rid = msg.id
                self.supervision.run_remote(
                    lambda: self.relay.answer_remote(msg),
                    lambda result: self._answered(rid, result),
                )

    def _answered(self, rid: int, result: Response | Exception) -> None:
        if isinstance(result, Exception):  # the relay maps API errors itself: a supervisor bug
            detail: dict[str, Any] = {"message": f"supervisor error: {result!r}"}
            result = ErrorResponse(id=rid, error=ErrorCode.GENERIC_ERROR, detail=detail)
        if isinstance(result, ErrorResponse) and result.error is ErrorCode.API_UNREACHABLE:
            # Each retry is logged as it happens; the give-up (with its attempt count) too.
            self.log.supervisor("error", "Execution API call failed; giving up", **result.detail)
        self._send(result)

    def _on_hello(self, hello: Hello) -> None:
        if self.hello is not None:
            self.log.supervisor("error", "Protocol error from the task: a second Hello")
            return
        self.hello = hello
        if hello.protocol_version != PROTOCOL_VERSION:
            self.supervision.protocol_broken(
                f"the task speaks protocol version {hello.protocol_version}; "
                f"this supervisor speaks {PROTOCOL_VERSION}"
            )

    # --- to the task ----------------------------------------------------------------

    def _reply_error(self, rid: int, code: ErrorCode, message: str) -> None:
        self._send(ErrorResponse(id=rid, error=code, detail={"message": message}))

    def _send(self, message: msgspec.Struct) -> None:
        self.outbox.send(message)


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    """A task's timestamp in UTC (msgspec then writes it as ISO-8601 with ``Z``, fast)."""
    if value is None or value.utcoffset() == dt.timedelta(0):
        return value
    return value.astimezone(dt.UTC)
