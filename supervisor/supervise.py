"""Supervise one task try: start it, relay its messages, and report how it ended.

One thread owns every file descriptor: a selector over the task's channel, stdout, stderr,
its pidfd, a wake-up pipe for results of worker threads, and a pipe for signals. The loop
never waits on the network: API calls run on a small worker pool, heartbeats on their own
thread, and their results come back through :class:`~supervisor.wakeups.Inbox`.

What the task says travels by one of two child protocols, each a :class:`Channel`: our own
line-JSON protocol (:mod:`supervisor.line_channel`, an activity file's task) or Airflow's
supervisor-to-runner frames (:mod:`supervisor.airflow_channel`, an Airflow workload's task).
Everything else is shared: :class:`~supervisor.stopping.Stopper` owns every deadline and the
one way the task's tree is stopped, whatever the reason;
:class:`~supervisor.reporting.StateReporter` the final state, reported or kept on disk.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import datetime as dt
import getpass
import os
import selectors
import signal
import socket
import time
from collections.abc import Callable
from traceback import format_exc
from typing import Any, Protocol, TypeVar

import msgspec

from comms.api import TaskInstance, TIEnterRunningPayload, TIHeartbeatInfo, TIRunContext
from supervisor.activity import RunAs
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
from supervisor.outcome import ExitCode, StopReason, Terminal, decide
from supervisor.process import ExitStatus, TaskProcess
from supervisor.reporting import StateReporter
from supervisor.spawn import Zygote
from supervisor.stopping import Stopper
from supervisor.tasklog import StreamReassembler, TaskLog
from supervisor.wakeups import Inbox, SignalPipe

__all__ = ["Channel", "Supervision", "TryIdentity", "now", "supervise"]

_READ_SIZE = 256 * 1024
_MAX_WAIT = 3600.0

R = TypeVar("R")


class TryIdentity(msgspec.Struct, frozen=True, kw_only=True):
    """Who the try is and where its server is: what every child protocol shares."""

    token: str
    server: str
    ti: TaskInstance
    #: Identity fields for the first log record (never the token).
    describe: dict[str, Any]


def supervise(
    identity: TryIdentity,
    zygote: Zygote,
    config: SupervisorConfig,
    log_path: str,
    make_channel: Callable[[Supervision], Channel],
    *,
    log_field: str = "$.log_path",
    run_as: RunAs | None = None,
    timeout: float | None = None,
    transport: Transport | None = None,
) -> ExitCode:
    """Run one try in the forked ``zygote``, speaking the protocol ``make_channel`` makes;
    return the exit code. A log file that cannot be opened is an :class:`ActivityError`
    naming ``log_field``, and nothing was contacted."""
    masker = Masker()
    masker.add_token(identity.token)
    try:
        log = TaskLog(log_path, masker)
    except OSError as exc:
        zygote.abandon()
        raise ActivityError(
            log_field, f"cannot open the task log {log_path!r}: {exc.strerror}"
        ) from None
    try:
        supervision = Supervision(
            identity,
            zygote,
            config,
            log,
            masker,
            run_as=run_as,
            transport=transport,
            timeout=timeout,
        )
        return supervision.run(make_channel(supervision))
    finally:
        log.close()


class Channel(Protocol):
    """One child protocol, as :class:`Supervision` drives it."""

    def launch(self) -> None:
        """Tell the zygote what to become (the server agreed to run the try)."""

    def start(self) -> None:
        """Send the task what it starts from (``StartupDetails``)."""

    def readers(self) -> dict[int, Callable[[int], None]]:
        """The fds the loop reads for this protocol, each with its handler."""

    def cancel(self, reason: StopReason) -> None:
        """Tell the task it is being stopped, if the protocol can say so."""

    def close(self) -> None:
        """Close the supervisor's ends of the protocol's fds."""


class Supervision:
    """The state of one supervised task try."""

    def __init__(
        self,
        identity: TryIdentity,
        zygote: Zygote,
        config: SupervisorConfig,
        log: TaskLog,
        masker: Masker,
        *,
        run_as: RunAs | None,
        transport: Transport | None,
        timeout: float | None = None,
    ) -> None:
        self.identity = identity
        self.ti = identity.ti
        self.zygote = zygote
        self.config = config
        self.log = log
        self.masker = masker
        self.run_as = run_as
        self.timeout = timeout
        self.started = time.monotonic()
        self.client = ExecutionApiClient(
            identity.server,
            identity.token,
            retry=RetryPolicy(budget=config.api_retry_budget),
            timeout=config.api_timeout,
            transport=transport,
            on_retry=self._log_retry,
            on_token=masker.add_token,
        )
        self.process = TaskProcess(zygote.pid)
        self.inbox = Inbox()
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="relay")
        self.stdout = StreamReassembler(log, "task.stdout", "info")
        self.stderr = StreamReassembler(log, "task.stderr", "error")
        self.selector = selectors.DefaultSelector()
        #: The answer of ``/run``: typed, and as the server sent it (Airflow's runner gets all).
        self.context: TIRunContext | None = None
        self.context_document: dict[str, Any] = {}
        self.terminal: Terminal | None = None
        self.channel: Channel | None = None
        self.stopper = Stopper(process=self.process, config=config, log=log, cancel=self._cancel)
        self.reporter = StateReporter(
            self.client, self.ti.id, log, masker, budget=config.state_retry_budget, pool=self.pool
        )
        self.heartbeat: Heartbeat | None = None
        self._pipes: tuple[int, ...] = ()

    # --- the whole try ----------------------------------------------------------------

    def run(self, channel: Channel) -> ExitCode:
        """Start the task on the server, relay until it is gone, report its outcome."""
        self.channel = channel
        signals = SignalPipe()
        try:
            self.log.supervisor(
                "info", "Starting task", **self.identity.describe, pid=self.zygote.pid
            )
            refused = self._enter_running()
            if refused is not None:
                return refused
            self._launch(channel)
            try:
                self._loop(channel, signals.read_fd)
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
            start_date=now(),
        )
        try:
            self.context, self.context_document = self.client.run_with_document(self.ti.id, payload)
        except (ApiError, msgspec.ValidationError, msgspec.DecodeError) as exc:
            self.zygote.abandon()
            self.stopper.clean_up()
            if isinstance(exc, ServerUnreachable | TLSError):
                event = f"The Execution API server could not be reached at {self.identity.server}"
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

    def _launch(self, channel: Channel) -> None:
        channel.launch()
        channel.start()
        if self.timeout is not None:
            self.set_timeout(self.timeout)
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

    # --- what channels ask of the supervision ---------------------------------------------

    def set_timeout(self, seconds: float) -> None:
        """Stop the task if its main process still runs ``seconds`` from now."""
        self.stopper.limit(
            StopReason.TIMEOUT,
            seconds,
            "error",
            "Task timed out; stopping it",
            timeout=seconds,
        )

    def run_remote(self, work: Callable[[], R], deliver: Callable[[R | Exception], None]) -> None:
        """Run ``work`` on the worker pool; ``deliver`` its result (or exception) on the loop."""

        def done(future: concurrent.futures.Future[R]) -> None:  # on the worker thread
            result: R | Exception
            try:
                result = future.result()
            except Exception as exc:
                result = exc
            self.inbox.post(lambda: deliver(result))

        self.pool.submit(work).add_done_callback(done)

    def on_terminal(self, terminal: Terminal) -> str | None:
        """Record the task's terminal word; return why it is refused, or None if accepted."""
        if self.terminal is not None:
            return f"the task already reported {self.terminal.state}"
        if self.stopper.reason is not None:
            return f"the task is being stopped ({self.stopper.reason})"
        self.terminal = terminal
        if self.heartbeat is not None:
            self.heartbeat.stop()
        # The task's execution is over: from now on only overtime applies.
        self.stopper.lift(StopReason.TIMEOUT)
        self.stopper.limit(
            StopReason.OVERTIME,
            self.config.overtime,
            "warning",
            "Task still running after reporting its state; stopping it",
            overtime=self.config.overtime,
        )
        self.log.supervisor("info", f"Task reported {terminal.state}", reason=terminal.reason)
        if terminal.at_once:
            self.reporter.report_now(terminal)
        return None

    def protocol_broken(self, why: str) -> None:
        """The task broke its protocol beyond repair: log it and stop the task."""
        self.log.supervisor("error", f"Protocol error from the task: {why}")
        self.stopper.request(StopReason.PROTOCOL)

    def watch(self, fd: int, handler: Callable[[int], None]) -> None:
        """Read ``fd`` in the loop from now on, as one of the task's pipes (drained, closed)."""
        self.selector.register(fd, selectors.EVENT_READ, handler)
        self._pipes += (fd,)

    def stop_reading(self, fd: int) -> None:
        """The loop no longer reads ``fd`` (end of stream)."""
        if fd in self.selector.get_map():
            self.selector.unregister(fd)

    def _cancel(self, reason: StopReason) -> None:
        if self.channel is not None:
            self.channel.cancel(reason)

    # --- the loop -------------------------------------------------------------------

    def _loop(self, channel: Channel, signal_fd: int) -> None:
        sel = self.selector
        readers = {
            **channel.readers(),
            self.zygote.stdout: self._on_stdout,
            self.zygote.stderr: self._on_stderr,
        }
        self._pipes = tuple(readers)
        for fd, handler in readers.items():
            sel.register(fd, selectors.EVENT_READ, handler)
        sel.register(self.process.pidfd, selectors.EVENT_READ, self._on_exit)
        sel.register(self.inbox.read_fd, selectors.EVENT_READ, self._on_inbox)
        sel.register(signal_fd, selectors.EVENT_READ, self._on_signal)
        while not self._done():
            for key, _ in sel.select(self._select_timeout()):
                key.data(key.fd)
            self.stopper.tick(time.monotonic())
            self.log.flush()  # what this pass read is on disk before the next wait
        self._close_pipes(channel)

    def _done(self) -> bool:
        if not self.stopper.tree_gone:
            return False
        pipes_open = any(fd in self.selector.get_map() for fd in self._pipes)
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

    def _close_pipes(self, channel: Channel) -> None:
        for fd in self._pipes:
            self.stop_reading(fd)
            with contextlib.suppress(OSError):
                os.close(fd)
        channel.close()
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


def _hostname() -> str:
    return socket.gethostname()


def now() -> dt.datetime:
    """The current time, aware, in UTC."""
    return dt.datetime.now(dt.UTC)
