"""Airflow's child protocol: ``supervise`` hosts Airflow's own task runner.

:func:`supervise_workload` runs the ``ExecuteTask`` workload an Airflow executor hands a
worker. The task child (forked before the workload was read) becomes Airflow's task runner
through :mod:`taskvisor_airflow.task_child`; :class:`AirflowChannel` is the supervisor's side
of what the runner speaks:

- frames (:mod:`comms.airflow_frames`) on a socket, the runner's fd 0: ``StartupDetails``
  first (id 0, unprompted), then one response per request. Terminal bodies become a
  :class:`~supervisor.outcome.Terminal`; ``ResendLoggingFD`` gets a new log pipe passed as
  SCM_RIGHTS; every other body goes to :class:`~supervisor.airflow_relay.AirflowRelay`,
  locally or on the worker pool. A frame that cannot be read stops the task (it is answered
  with an error first when its id is readable): Airflow's runner never writes one, so task
  code wrote on the channel, and what follows cannot be trusted to be in step.
- JSON log lines on a pipe: each record is masked and written to the task log, Airflow's
  shape kept (``exception`` is renamed ``error_detail``, as Airflow's UI expects).
- notes on a pipe: the task's ``execution_timeout``, once the DAG is parsed. The runner
  enforces it itself (SIGALRM, then Airflow's failure handling and callbacks); the
  supervisor stops the task ``kill_grace`` seconds later if it is still running, so native
  code that never returns to Python cannot escape it.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable
from typing import Any

import msgspec

from comms.airflow_frames import BadFrame, FrameDecoder, RequestFrame, encode_response
from comms.api import TaskInstance
from comms.workload import Workload
from supervisor.airflow_config import AirflowSettings
from supervisor.airflow_relay import AirflowRelay, Reply
from supervisor.airflow_routes import error_body
from supervisor.config import SupervisorConfig
from supervisor.http import Transport
from supervisor.outbox import Outbox
from supervisor.outcome import ExitCode, StopReason, Terminal
from supervisor.spawn import Launch, Prepare, Zygote, task_environment
from supervisor.supervise import Supervision, TryIdentity, now, supervise
from supervisor.tasklog import MAX_PENDING_LINE, TaskLog, task_logger

__all__ = ["AirflowChannel", "supervise_workload"]

_READ_SIZE = 256 * 1024

#: Terminal bodies of Airflow's runner, and the states each may report.
_TERMINAL_STATES: dict[str, frozenset[str]] = {
    "SucceedTask": frozenset({"success"}),
    "RetryTask": frozenset({"up_for_retry"}),
    "TaskState": frozenset({"failed", "skipped", "removed"}),
    "DeferTask": frozenset({"deferred"}),
    "RescheduleTask": frozenset({"up_for_reschedule"}),
    "AwaitInputTask": frozenset({"awaiting_input"}),
}


def supervise_workload(
    workload: Workload,
    settings: AirflowSettings,
    zygote: Zygote,
    config: SupervisorConfig,
    *,
    server: str | None = None,
    transport: Transport | None = None,
) -> ExitCode:
    """Run the try an Airflow ``ExecuteTask`` workload describes, in the forked ``zygote``.

    ``server`` (``--server``) overrides ``[core] execution_api_server_url``.
    """
    # The runner's imports (~1.5 s) overlap with /run and the rest of the start-up.
    zygote.prepare(Prepare(kind="airflow", env=task_environment(workload.token, None)))
    ti = workload.ti
    identity = TryIdentity(
        token=workload.token,
        server=server or settings.execution_api_server_url,
        ti=TaskInstance(
            id=ti.id,
            dag_id=ti.dag_id,
            task_id=ti.task_id,
            run_id=ti.run_id,
            try_number=ti.try_number,
            map_index=ti.map_index,
        ),
        describe={
            "ti_id": str(ti.id),
            "dag_id": ti.dag_id,
            "task_id": ti.task_id,
            "run_id": ti.run_id,
            "try_number": ti.try_number,
            "map_index": ti.map_index,
            "dag_rel_path": workload.dag_rel_path,
            "bundle": workload.bundle_info.name,
        },
    )
    log_path = os.path.join(settings.base_log_folder, workload.log_path or identity.ti.log_path())
    return supervise(
        identity,
        zygote,
        config,
        log_path,
        lambda supervision: AirflowChannel(supervision, workload),
        log_field="[logging] base_log_folder",
        transport=transport,
    )


class AirflowChannel:
    """The supervisor's side of one Airflow task runner's channel, logs and notes."""

    def __init__(self, supervision: Supervision, workload: Workload) -> None:
        self.supervision = supervision
        self.workload = workload
        self.log = supervision.log
        self.relay = AirflowRelay(supervision.client, supervision.ti.id, supervision.masker)
        self.decoder = FrameDecoder(RequestFrame, max_frame=supervision.config.max_line)
        ours, self._theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.channel = ours.detach()
        # The outbox registers its fd for writing while it has a backlog: its own number.
        self._writer = os.dup(self.channel)
        self.outbox = Outbox(self._writer, supervision.selector)
        self.logs, self._logs_w = os.pipe2(os.O_CLOEXEC)
        self.notes, self._notes_w = os.pipe2(os.O_CLOEXEC)
        self._log_streams: dict[int, JsonLogStream] = {self.logs: JsonLogStream(self.log)}
        self._notes = b""

    # --- the Channel protocol ------------------------------------------------------------

    def launch(self) -> None:
        zygote = self.supervision.zygote
        env = task_environment(self.workload.token, None)
        theirs = self._theirs.detach()
        passed = [theirs, self._logs_w, self._notes_w]
        try:
            zygote.launch(Launch(kind="airflow", env=env, cwd=os.getcwd()), passed)
        finally:
            # Our protocol's pipes are not used: closing them tells the zygote nothing.
            for fd in (*passed, zygote.to_task, zygote.from_task):
                with contextlib.suppress(OSError):
                    os.close(fd)

    def start(self) -> None:
        workload, supervision = self.workload, self.supervision
        os.set_blocking(self._writer, False)
        details = {
            "type": "StartupDetails",
            "ti": workload.ti_document,
            "dag_rel_path": workload.dag_rel_path,
            "bundle_info": msgspec.to_builtins(workload.bundle_info),
            "start_date": now(),
            "ti_context": supervision.context_document,
            "sentry_integration": workload.sentry_integration,
        }
        self.outbox.send_bytes(encode_response(0, details))

    def readers(self) -> dict[int, Callable[[int], None]]:
        return {
            self.channel: self._on_channel,
            self.logs: self._on_logs,
            self.notes: self._on_notes,
        }

    def cancel(self, reason: StopReason) -> None:
        """Airflow's protocol has no cancel message: the runner learns from SIGTERM."""

    def close(self) -> None:
        for fd in (self.channel, self._writer):
            self.supervision.stop_reading(fd)
            with contextlib.suppress(OSError):
                os.close(fd)
        for stream in self._log_streams.values():
            stream.close()

    # --- frames ----------------------------------------------------------------------

    def _on_channel(self, fd: int) -> None:
        try:
            data = os.read(fd, _READ_SIZE)
        except ConnectionResetError:
            data = b""
        self.decoder.feed(data)
        if not data:
            self.supervision.stop_reading(fd)
        while (frame := self.decoder.next_frame()) is not None:
            self._on_frame(frame)

    def _on_frame(self, frame: RequestFrame | BadFrame) -> None:
        if isinstance(frame, BadFrame):
            # The runner's frames are machine-made: one that cannot be read means the task
            # wrote on the channel itself, and nothing after it can be trusted to be in step.
            if frame.id is not None:
                self._reply(frame.id, _error(f"bad frame: {frame.reason}"))
            self.supervision.protocol_broken(f"{frame.reason} ({frame.size} bytes)")
            return
        body = frame.body or {}
        kind = body.get("type")
        if kind in _TERMINAL_STATES:
            self._on_terminal(frame.id, kind, body)
        elif kind == "ResendLoggingFD":
            self._send_new_log_fd(frame.id)
        elif (local := self.relay.answer_locally(body)) is not None:
            if local.error is not None:
                self.log.supervisor(
                    "warning", "Refused a request of the task runner", type=kind, **local.error
                )
            self._reply(frame.id, local)
        else:
            rid = frame.id
            self.supervision.run_remote(
                lambda: self.relay.answer_remote(body),
                lambda result: self._answered(rid, result),
            )

    def _answered(self, rid: int, result: Reply | Exception) -> None:
        if isinstance(result, Exception):  # the relay maps API errors itself: a supervisor bug
            result = _error(f"supervisor error: {result!r}")
        self._reply(rid, result)

    def _on_terminal(self, rid: int, kind: str, body: dict[str, Any]) -> None:
        state = body.get("state")
        if state not in _TERMINAL_STATES[kind]:
            allowed = ", ".join(sorted(_TERMINAL_STATES[kind]))
            self.log.supervisor(
                "error", f"Protocol error from the task runner: {kind} with state {state!r}"
            )
            self._reply(rid, _error(f"{kind}.state must be one of: {allowed}; got {state!r}"))
            return
        update = {key: value for key, value in body.items() if key != "type"}
        reason = body.get("retry_reason") if kind == "RetryTask" else None
        assert isinstance(state, str)
        refused = self.supervision.on_terminal(
            Terminal(state=state, update=update, reason=reason if isinstance(reason, str) else None)
        )
        self._reply(rid, Reply() if refused is None else _error(refused))

    def _send_new_log_fd(self, rid: int) -> None:
        """Answer ``ResendLoggingFD`` (a re-executed runner: ``run_as_user``) with a log pipe."""
        read, write = os.pipe2(os.O_CLOEXEC)
        self._log_streams[read] = JsonLogStream(self.log)
        self.supervision.watch(read, self._on_logs)
        frame = encode_response(rid, {"type": "SentFDs", "fds": [write]})
        try:
            with socket.socket(fileno=os.dup(self.channel)) as sock:
                sock.setblocking(True)
                sent = socket.send_fds(sock, [frame], [write])
                sock.sendall(frame[sent:])
        except OSError as exc:
            self.log.supervisor(
                "error", "Could not pass a new log pipe to the runner", error=str(exc)
            )
        finally:
            os.close(write)

    def _reply(self, rid: int, reply: Reply) -> None:
        self.outbox.send_bytes(encode_response(rid, reply.body, error=reply.error))

    # --- logs and notes ----------------------------------------------------------------

    def _on_logs(self, fd: int) -> None:
        data = os.read(fd, _READ_SIZE)
        stream = self._log_streams[fd]
        if data:
            stream.feed(data)
        else:
            stream.close()
            self.supervision.stop_reading(fd)

    def _on_notes(self, fd: int) -> None:
        data = os.read(fd, 4096)
        if data and len(self._notes) < 4096:
            self._notes += data
            return
        self.supervision.stop_reading(fd)
        line = self._notes.split(b"\n", 1)[0]
        if not line:
            return
        try:
            note = msgspec.json.decode(line, type=_TimeoutNote)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            self.log.supervisor("error", "Unreadable note from the task runner", error=str(exc))
            return
        if note.execution_timeout is not None:
            grace = self.supervision.config.kill_grace
            self.log.supervisor(
                "info",
                "The task's execution_timeout is enforced by Airflow's runner, and by the "
                f"supervisor {grace:g} s later",
                execution_timeout=note.execution_timeout,
            )
            self.supervision.set_timeout(note.execution_timeout + grace)


class _TimeoutNote(msgspec.Struct):
    execution_timeout: float | None = None


class JsonLogStream:
    """Turns the runner's JSON log lines into masked records of the task log."""

    def __init__(self, log: TaskLog) -> None:
        self._log = log
        self._pending = b""

    def feed(self, chunk: bytes) -> None:
        """Add bytes read from the log pipe."""
        data = self._pending + chunk if self._pending else chunk
        *lines, self._pending = data.split(b"\n")
        for line in lines:
            self._emit(line)
        if len(self._pending) > MAX_PENDING_LINE:  # no record is that long: keep it as text
            self._emit(self._pending)
            self._pending = b""

    def close(self) -> None:
        """Write a last line that had no newline."""
        if self._pending:
            self._emit(self._pending)
            self._pending = b""

    def _emit(self, line: bytes) -> None:
        if not line.strip():
            return
        try:
            record = msgspec.json.decode(line)
        except msgspec.DecodeError:
            record = None
        if not isinstance(record, dict):
            self._log.record("task", "info", line.decode("utf-8", errors="replace"))
            return
        logger = record.pop("logger", None) or "task"
        level = record.pop("level", None) or "info"
        event = record.pop("event", None)
        timestamp = record.pop("timestamp", None)
        if "exception" in record:
            record["error_detail"] = record.pop("exception")
        name = str(logger)
        self._log.record(
            task_logger(name),
            str(level),
            "" if event is None else str(event),
            record,
            timestamp=timestamp if isinstance(timestamp, str) else None,
        )


def _error(message: str) -> Reply:
    return Reply(error=error_body("GENERIC_ERROR", {"message": message}))
