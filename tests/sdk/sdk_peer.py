"""A tiny scripted supervisor for the SDK's tests: the other end of the channel, over pipes.

It speaks the protocol with ``comms`` and nothing else: no real supervisor is involved.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from comms.api import DagRun, TaskInstance, TIRunContext
from comms.framing import BadLine, encode, from_task_decoder
from comms.messages import (
    PROTOCOL_VERSION,
    DeferTask,
    Hello,
    Log,
    Metric,
    OKResponse,
    PushedValues,
    RescheduleTask,
    RetryTask,
    StartupDetails,
    SucceedTask,
    TaskMessage,
    TaskState,
)

TERMINAL = (SucceedTask, RetryTask, TaskState, DeferTask, RescheduleTask)


def raw(value: Any) -> msgspec.Raw:
    """``value`` encoded, as XCom values travel."""
    return msgspec.Raw(msgspec.json.encode(value))


def startup_details(
    entrypoint: str | None = None,
    *,
    should_retry: bool = False,
    conf: dict[str, Any] | None = None,
    pushed: PushedValues | None = None,
    next_method: str | None = None,
    next_kwargs: dict[str, Any] | None = None,
) -> StartupDetails:
    return StartupDetails(
        protocol_version=PROTOCOL_VERSION,
        ti=TaskInstance(
            id=uuid.UUID(int=7), dag_id="dag", task_id="task", run_id="run", try_number=2
        ),
        ti_context=TIRunContext(
            dag_run=DagRun(
                dag_id="dag",
                run_id="run",
                logical_date=dt.datetime(2026, 1, 2, tzinfo=dt.UTC),
                conf=conf,
            ),
            max_tries=3,
            should_retry=should_retry,
            next_method=next_method,
            next_kwargs=next_kwargs,
        ),
        start_date=dt.datetime(2026, 1, 2, 3, 4, tzinfo=dt.UTC),
        entrypoint=entrypoint,
        pushed=pushed,
    )


class Peer:
    """The supervisor's end of a channel made of two pipes."""

    def __init__(self) -> None:
        self.task_reads, self.to_task = os.pipe()
        self.from_task, self.task_writes = os.pipe()
        self._decoder = from_task_decoder()

    def send(self, message: msgspec.Struct) -> None:
        self.send_raw(encode(message))

    def send_raw(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.to_task, view) :]

    def receive(self) -> TaskMessage | BadLine | None:
        """The next line from the task, or ``None`` at end of stream."""
        while (event := self._decoder.next_event()) is None:
            chunk = os.read(self.from_task, 65536)
            if not chunk:
                self._decoder.feed(b"")
                return self._decoder.next_event()
            self._decoder.feed(chunk)
        return event

    def close_task_ends(self) -> None:
        os.close(self.task_reads)
        os.close(self.task_writes)

    def close(self) -> None:
        for fd in (self.to_task, self.from_task):
            with contextlib.suppress(OSError):
                os.close(fd)


#: Answers a request; ``None`` closes the channel to the task instead.
Answer = Callable[[Any], msgspec.Struct | None]


@dataclass
class TaskRun:
    """What a forked task child sent and wrote, and how it exited."""

    hello: Any = None
    messages: list[Any] = field(default_factory=list)
    terminal: Any = None
    exit_status: int = -1
    stdout: bytes = b""
    stderr: bytes = b""
    eof_after_exit: bool = False

    @property
    def logs(self) -> list[Log]:
        return [m for m in self.messages if isinstance(m, Log)]

    @property
    def metrics(self) -> list[Metric]:
        return [m for m in self.messages if isinstance(m, Metric)]

    @property
    def requests(self) -> list[Any]:
        return [m for m in self.messages if hasattr(m, "id")]


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks)


def run_forked_task(
    entrypoint: str | None,
    *,
    cwd: str,
    answer: Answer | None = None,
    should_retry: bool = False,
    first_line: msgspec.Struct | None = None,
    with_stdout_pipe: bool = True,
) -> TaskRun:
    """Fork a child that runs ``sdk.runner.main`` on real pipes; act as its supervisor."""
    peer = Peer()
    stdout_r, stdout_w = os.pipe()
    stderr_r, stderr_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the task child, set up as the supervisor's zygote leaves it
        try:
            os.chdir(cwd)
            sys.path.insert(0, cwd)
            os.dup2(peer.task_reads, 0)
            os.dup2(peer.task_writes, 1)
            os.dup2(stderr_w, 2)
            for fd in (
                peer.task_reads,
                peer.task_writes,
                stderr_w,
                peer.to_task,
                peer.from_task,
                stdout_r,
                stderr_r,
            ):
                os.close(fd)
            if not with_stdout_pipe:
                os.close(stdout_w)
            from sdk.runner import main

            main(stdout_w if with_stdout_pipe else None)
        finally:
            os._exit(99)
    peer.close_task_ends()
    os.close(stdout_w)
    os.close(stderr_w)
    run = TaskRun()
    try:
        run.hello = peer.receive()
        peer.send(first_line or startup_details(entrypoint, should_retry=should_retry))
        while (message := peer.receive()) is not None:
            run.messages.append(message)
            if isinstance(message, TERMINAL):
                run.terminal = message
                peer.send(OKResponse(id=message.id))
                break
            if hasattr(message, "id"):
                response = answer(message) if answer else OKResponse(id=message.id)
                if response is None:
                    os.close(peer.to_task)
                else:
                    peer.send(response)
        _, status = os.waitpid(pid, 0)
        run.exit_status = os.waitstatus_to_exitcode(status)
        run.eof_after_exit = peer.receive() is None
        run.stdout = _read_all(stdout_r)
        run.stderr = _read_all(stderr_r)
    finally:
        peer.close()
    assert isinstance(run.hello, Hello), run.hello
    return run
