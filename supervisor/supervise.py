"""Supervise one task try: start it, relay its messages, and report how it ended.

One thread owns every file descriptor: a selector over the task's channel, stdout, stderr,
its pidfd, a wake-up pipe for results of worker threads, and a pipe for signals. The loop
never waits on the network: API calls run on a small worker pool, heartbeats on their own
thread, and their results come back through :class:`~supervisor.wakeups.Inbox`.

Two collaborators own the rest: :class:`~supervisor.stopping.Stopper` every deadline and the
one way the task's tree is stopped, whatever the reason; and
:class:`~supervisor.reporting.StateReporter` the final state, reported or kept on disk.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import datetime as dt
import functools
import getpass
import os
import selectors
import signal
import socket
import time
from traceback import format_exc
from typing import Any

import msgspec

from comms.api import TIEnterRunningPayload, TIHeartbeatInfo, TIRunContext
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
    state_of,
)
from supervisor.activity import Activity, RunAs, describe
from supervisor.client import ExecutionApiClient, RetryPolicy
from supervisor.config import SupervisorConfig
from supervisor.errors import (
    ActivityError,
    ApiError,
    ServerResponseError,
    ServerUnreachable,
    TLSError,
)
from supervisor.heartbeat import Heartbeat
from supervisor.http import Transport
from supervisor.masking import Masker
from supervisor.outbox import Outbox
from supervisor.outcome import ExitCode, StopReason, decide, reported_at_once
from supervisor.process import ExitStatus, TaskProcess
from supervisor.relay import Relay, RequestIds
from supervisor.reporting import StateReporter
from supervisor.spawn import Launch, Zygote, task_environment
from supervisor.stopping import Stopper
from supervisor.tasklog import StreamReassembler, TaskLog
from supervisor.wakeups import Inbox, SignalPipe

__all__ = ["supervise"]

_READ_SIZE = 256 * 1024
_MAX_WAIT = 3600.0


def supervise(
    activity: Activity,
    zygote: Zygote,
    config: SupervisorConfig,
    *,
    run_as: RunAs | None = None,
    log: TaskLog | None = None,
    transport: Transport | None = None,
) -> ExitCode:
    """Run the task try the activity describes in the forked ``zygote``; return the exit code."""
    masker = Masker()
    masker.add_token(activity.token)
    if log is None:
        path = activity.log_path or activity.default_log_path()
        try:
            log = TaskLog(path, masker)
        except OSError as exc:
            zygote.abandon()
            raise ActivityError(
                "$.log_path", f"cannot open the task log {path!r}: {exc.strerror}"
            ) from None
    try:
        return Supervision(
            activity, zygote, config, log, masker, run_as=run_as, transport=transport
        ).run()
    finally:
        log.close()


class Supervision:
    """The state of one supervised task try."""

    def __init__(
        self,
        activity: Activity,
        zygote: Zygote,
        config: SupervisorConfig,
        log: TaskLog,
        masker: Masker,
        *,
        run_as: RunAs | None,
        transport: Transport | None,
    ) -> None:
        self.activity = activity
        self.ti = activity.ti
        self.zygote = zygote
        self.config = config
        self.log = log
        self.masker = masker
        self.run_as = run_as
        self.started = time.monotonic()
        self.client = ExecutionApiClient(
            activity.server,
            activity.token,
            retry=RetryPolicy(budget=config.api_retry_budget),
            timeout=config.api_timeout,
            transport=transport,
            on_retry=self._log_retry,
            on_token=masker.add_token,
        )
        self.process = TaskProcess(zygote.pid)
        self.relay = Relay(self.client, self.ti, activity.context, masker)
        self.inbox = Inbox()
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="relay")
        self.decoder: LineDecoder[TaskMessage] = from_task_decoder(max_line=config.max_line)
        self.stdout = StreamReassembler(log, "task.stdout", "info")
        self.stderr = StreamReassembler(log, "task.stderr", "error")
        self.selector = selectors.DefaultSelector()
        self.outbox = Outbox(zygote.to_task, self.selector)
        self.hello: Hello | None = None
        self.request_ids = RequestIds()
        self.context: TIRunContext | None = None
        self.terminal: TerminalRequest | None = None
        self.stopper = Stopper(
            self.process, config, log, cancel=lambda why: self._send(Cancel(reason=why.value))
        )
        self.reporter = StateReporter(
            self.client, self.ti, log, masker, budget=config.state_retry_budget, pool=self.pool
        )
        self.heartbeat: Heartbeat | None = None

    # --- the whole try ----------------------------------------------------------------

    def run(self) -> ExitCode:
        """Start the task on the server, relay until it is gone, report its outcome."""
        signals = SignalPipe()
        try:
            self.log.supervisor(
                "info", "Starting task", **describe(self.activity), pid=self.zygote.pid
            )
            refused = self._enter_running()
            if refused is not None:
                return refused
            self._launch()
            try:
                self._loop(signals.read_fd)
            except Exception as exc:  # a supervisor bug must not lose the outcome or the task
                self.log.supervisor(
                    "critical",
                    "Supervisor error; stopping the task",
                    error=repr(exc),
                    traceback=format_exc(),
                )
                self.stopper.kill_now(StopReason.SUPERVISOR_ERROR)
            return self._finish()
        finally:
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.stopper.clean_up()
            self.process.close()
            self.client.close()
            self.inbox.close()
            signals.close()

    def _enter_running(self) -> ExitCode | None:
        payload = TIEnterRunningPayload(
            hostname=_hostname(),
            unixname=self.run_as.name if self.run_as else getpass.getuser(),
            pid=self.zygote.pid,
            start_date=_now(),
        )
        try:
            self.context = self.client.run(self.ti.id, payload)
        except (ApiError, msgspec.ValidationError, msgspec.DecodeError) as exc:
            self.zygote.abandon()
            self.stopper.clean_up()
            if isinstance(exc, ServerUnreachable | TLSError):
                event = f"The Execution API server could not be reached at {self.activity.server}"
            elif isinstance(exc, ServerResponseError):
                event = "The server refused to start the task"
            else:
                event = "The server answered /run with something unreadable"
            self.log.supervisor("error", event, error=str(exc), exit_code=int(ExitCode.REFUSED))
            return ExitCode.REFUSED
        for key in self.context.xcom_keys_to_clear:
            try:
                self.client.delete_xcom(self.ti, key)
            except ApiError as exc:
                self.log.supervisor(
                    "warning", "Could not clear an XCom of a previous try", key=key, error=str(exc)
                )
        return None

    def _launch(self) -> None:
        assert self.context is not None
        activity = self.activity
        env = task_environment(activity, self.run_as)
        if activity.command is not None:
            launch = Launch(kind="command", argv=activity.command, env=env, cwd=os.getcwd())
        else:
            launch = Launch(kind="python", env=env, cwd=os.getcwd())
        if self.run_as is not None:
            launch.uid, launch.gid, launch.groups = (
                self.run_as.uid,
                self.run_as.gid,
                self.run_as.groups,
            )
        launch.isolate_network = activity.isolate_network
        self.zygote.launch(launch)
        started = _now()
        self._send(
            StartupDetails(
                protocol_version=PROTOCOL_VERSION,
                ti=self.ti,
                ti_context=self.context,
                start_date=started,
                entrypoint=activity.entrypoint,
                pushed=activity.context,
            )
        )
        if activity.timeout is not None:
            self.stopper.limit(
                StopReason.TIMEOUT,
                activity.timeout,
                "error",
                "Task timed out; stopping it",
                timeout=activity.timeout,
            )
        self.heartbeat = Heartbeat(
            self.client,
            self.ti.id,
            TIHeartbeatInfo(hostname=_hostname(), pid=self.zygote.pid),
            interval=self.config.heartbeat_interval,
            tolerance=self.config.heartbeat_tolerance,
            on_stop=lambda exc: self.inbox.post(lambda: self._server_said_stop(exc)),
            on_lost=lambda why: self.inbox.post(lambda: self._heartbeat_lost(why)),
            on_failure=lambda why: self.log.supervisor("warning", why),
        )
        self.heartbeat.start()

    # --- the loop -------------------------------------------------------------------

    def _loop(self, signal_fd: int) -> None:
        sel = self.selector
        os.set_blocking(self.zygote.to_task, False)
        sel.register(self.zygote.from_task, selectors.EVENT_READ, self._on_channel)
        sel.register(self.zygote.stdout, selectors.EVENT_READ, self._on_stdout)
        sel.register(self.zygote.stderr, selectors.EVENT_READ, self._on_stderr)
        sel.register(self.process.pidfd, selectors.EVENT_READ, self._on_exit)
        sel.register(self.inbox.read_fd, selectors.EVENT_READ, self._on_inbox)
        sel.register(signal_fd, selectors.EVENT_READ, self._on_signal)
        self.outbox.flush()
        while not self._done():
            for key, _ in sel.select(self._select_timeout()):
                key.data(key.fd)
            self.stopper.tick(time.monotonic())
            self.log.flush()  # what this pass read is on disk before the next wait
        self._close_pipes()

    def _done(self) -> bool:
        if not self.stopper.tree_gone:
            return False
        pipes = (self.zygote.from_task, self.zygote.stdout, self.zygote.stderr)
        pipes_open = any(fd in self.selector.get_map() for fd in pipes)
        return not pipes_open or self.stopper.drained(time.monotonic())

    def _select_timeout(self) -> float | None:
        wait = self.stopper.wait_time(time.monotonic())
        # epoll takes at most ~24 days; a far deadline is simply looked at again later.
        return None if wait is None else min(wait, _MAX_WAIT)

    # --- events -----------------------------------------------------------------------

    def _on_exit(self, fd: int) -> None:
        self.selector.unregister(fd)
        status = self.process.poll()
        if status is None:  # pidfd readable means exited; a racing reaper may still be pending
            status = self.process.poll() or ExitStatus()
        level = "info" if status.clean else "error"
        event = f"Task process ended: {status.describe()}"
        if status.signal == signal.SIGKILL and self.stopper.reason is None:
            event += " (likely out of memory: the OOM killer sends SIGKILL)"
        self.log.supervisor(level, event, exit_code=status.code, signal=status.signal)
        self.stopper.task_exited()

    def _on_signal(self, fd: int) -> None:
        with contextlib.suppress(BlockingIOError):
            for signum in os.read(fd, 64):
                name = signal.Signals(signum).name
                if self.stopper.reason is StopReason.TERMINATED:
                    self.log.supervisor("warning", f"Received {name} again; killing the task now")
                    self.stopper.kill_now()
                    continue
                self.log.supervisor("warning", f"Received {name}; stopping the task")
                self.stopper.request(StopReason.TERMINATED)

    def _on_inbox(self, fd: int) -> None:
        for action in self.inbox.drain():
            action()

    def _on_stdout(self, fd: int) -> None:
        self._read_stream(fd, self.stdout)

    def _on_stderr(self, fd: int) -> None:
        self._read_stream(fd, self.stderr)

    def _read_stream(self, fd: int, stream: StreamReassembler) -> None:
        data = os.read(fd, _READ_SIZE)
        if data:
            stream.feed(data)
        else:
            stream.close()
            self.selector.unregister(fd)

    def _on_channel(self, fd: int) -> None:
        data = os.read(fd, _READ_SIZE)
        self.decoder.feed(data)
        if not data:
            self.selector.unregister(fd)
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
                _task_logger(msg.logger),
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
            self._on_terminal(msg)
        else:
            local = self.relay.answer_locally(msg)
            if isinstance(local, ErrorResponse) and local.error is ErrorCode.PROTOCOL_ERROR:
                reason = local.detail["message"]
                self.log.supervisor("error", f"Protocol error from the task: {reason}")
            if local is not None:
                self._send(local)
            else:
                future = self.pool.submit(self.relay.answer_remote, msg)
                future.add_done_callback(functools.partial(self._answered, msg.id))

    def _answered(self, rid: int, future: concurrent.futures.Future[Response]) -> None:
        """Hand a worker's answer to the loop thread (runs on the worker thread)."""
        try:
            response = future.result()
        except Exception as exc:  # the relay maps API errors itself; this is a supervisor bug
            detail: dict[str, Any] = {"message": f"supervisor error: {exc!r}"}
            response = ErrorResponse(id=rid, error=ErrorCode.GENERIC_ERROR, detail=detail)
        if isinstance(response, ErrorResponse) and response.error is ErrorCode.API_UNREACHABLE:
            # Each retry is logged as it happens; the give-up (with its attempt count) too.
            self.log.supervisor("error", "Execution API call failed; giving up", **response.detail)
        self.inbox.post(lambda: self._send(response))

    def _on_hello(self, hello: Hello) -> None:
        if self.hello is not None:
            self.log.supervisor("error", "Protocol error from the task: a second Hello")
            return
        self.hello = hello
        if hello.protocol_version != PROTOCOL_VERSION:
            self.log.supervisor(
                "error",
                f"The task speaks protocol version {hello.protocol_version}; "
                f"this supervisor speaks {PROTOCOL_VERSION}",
            )
            self.stopper.request(StopReason.PROTOCOL)

    def _on_terminal(self, msg: TerminalRequest) -> None:
        if self.terminal is not None:
            self._reply_error(
                msg.id,
                ErrorCode.INVALID_STATE,
                f"the task already reported {state_of(self.terminal)}",
            )
            return
        if self.stopper.reason is not None:
            self._reply_error(
                msg.id,
                ErrorCode.INVALID_STATE,
                f"the task is being stopped ({self.stopper.reason})",
            )
            return
        self.terminal = msg
        if self.heartbeat is not None:
            self.heartbeat.stop()
        self.stopper.limit(
            StopReason.OVERTIME,
            self.config.overtime,
            "warning",
            "Task still running after reporting its state; stopping it",
            overtime=self.config.overtime,
        )
        state = state_of(msg)
        self.log.supervisor("info", f"Task reported {state}", reason=getattr(msg, "reason", None))
        if reported_at_once(msg):
            self.reporter.report_now(msg)
        self._send(OKResponse(id=msg.id))

    def _server_said_stop(self, exc: ServerResponseError) -> None:
        self.log.supervisor(
            "error",
            "The server says the task must stop; killing it",
            status=exc.status,
            detail=exc.detail,
        )
        self.stopper.request(StopReason.SERVER)

    def _heartbeat_lost(self, why: str) -> None:
        self.log.supervisor("error", f"Stopping the task: {why}")
        self.stopper.request(StopReason.HEARTBEAT_LOST)

    # --- writing to the task --------------------------------------------------------

    def _reply_error(self, rid: int, code: ErrorCode, message: str) -> None:
        self._send(ErrorResponse(id=rid, error=code, detail={"message": message}))

    def _send(self, message: msgspec.Struct) -> None:
        self.outbox.send(message)

    def _close_pipes(self) -> None:
        for fd in (
            self.zygote.from_task,
            self.zygote.stdout,
            self.zygote.stderr,
            self.zygote.to_task,
        ):
            if fd in self.selector.get_map():
                self.selector.unregister(fd)
            with contextlib.suppress(OSError):
                os.close(fd)
        self.stdout.close()
        self.stderr.close()
        self.selector.close()

    # --- reporting ----------------------------------------------------------------------

    def _finish(self) -> ExitCode:
        if self.heartbeat is not None:
            self.heartbeat.stop()
        assert self.context is not None
        outcome = decide(
            self.terminal,
            self.process.status or ExitStatus(),
            self.stopper.reason,
            should_retry=self.context.should_retry,
        )
        exit_code = self.reporter.deliver(outcome, self.terminal)
        self.log.supervisor(
            "info" if exit_code is ExitCode.OK else "error",
            "Task finished",
            ti_id=str(self.ti.id),
            final_state=outcome.state,
            reason=outcome.reason,
            exit_code=int(exit_code),
            duration=round(time.monotonic() - self.started, 3),
        )
        return exit_code

    def _log_retry(self, what: str, attempt: int, error: str, wait: float) -> None:
        self.log.supervisor(
            "warning",
            "Execution API call failed; retrying",
            call=what,
            attempt=attempt,
            error=error,
            wait=round(wait, 3),
        )


#: Loggers only the supervisor writes; a task's record naming one is filed under ``task.``.
_SUPERVISOR_LOGGERS = frozenset({"supervisor", "task.stdout", "task.stderr", "task.metrics"})


def _task_logger(name: str) -> str:
    """The logger a task's record is written under: never one that passes for ours."""
    return f"task.{name}" if name in _SUPERVISOR_LOGGERS else name


def _hostname() -> str:
    return socket.gethostname()


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    """A task's timestamp in UTC (msgspec then writes it as ISO-8601 with ``Z``, fast)."""
    if value is None or value.utcoffset() == dt.timedelta(0):
        return value
    return value.astimezone(dt.UTC)
