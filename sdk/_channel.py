"""The task's side of the channel to its supervisor, over two file descriptors.

Thread-safe without a thread of its own. A request is written whole under a write lock;
then its caller waits for the response with the same ``id``. One waiting caller at a time is
the *reader*: it reads lines and files every response under its ``id`` for whoever asked,
until its own arrives; then another waiter takes over. So requests from many threads can be
in flight together, answered in any order.

Requests for values the activity pushed (:mod:`comms.pushed`) are answered here, without a
round trip. A :class:`~comms.messages.Cancel` from the supervisor is recorded in
:attr:`Channel.cancel`.
End of stream fails every waiting and later request with
:class:`~sdk.errors.ChannelClosedError`.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import threading

import msgspec

from comms.errors import SupervisorProtocolError
from comms.framing import DEFAULT_MAX_LINE, BadLine, encode, from_supervisor_decoder
from comms.messages import (
    PROTOCOL_VERSION,
    Cancel,
    Hello,
    Log,
    Metric,
    Request,
    Response,
    StartupDetails,
    ToTask,
)
from comms.pushed import PushedAnswers
from sdk._version import SDK_NAME
from sdk.context import Context
from sdk.errors import ChannelClosedError

__all__ = ["Channel"]

_READ_SIZE = 256 * 1024


class Channel:
    """Requests and notifications to the supervisor; implements the SDK's ``Session``.

    ``read_fd`` carries lines from the supervisor, ``write_fd`` lines to it. Call
    :meth:`start` once before anything else.
    """

    def __init__(self, read_fd: int, write_fd: int, *, max_line: int = DEFAULT_MAX_LINE) -> None:
        self._read_fd = read_fd
        self._write_fd = write_fd
        self._decoder = from_supervisor_decoder(max_line=max_line)
        self._write_lock = threading.Lock()
        self._state = threading.Condition(threading.Lock())
        self._ids = itertools.count(1)
        self._pending: set[int] = set()
        self._answers: dict[int, Response | SupervisorProtocolError] = {}
        self._reading = False  # a caller is reading on everyone's behalf
        self._closed: str | None = None
        self._context: Context | None = None
        self._pushed = PushedAnswers(None)
        #: The supervisor's cancellation notice, once one arrived.
        self.cancel: Cancel | None = None
        # A process forked from the task shares these fds; if it used them it would take
        # answers meant for the task. Only the process that opened the channel may.
        self._owner_pid = os.getpid()

    @property
    def context(self) -> Context:
        """The task's context, from :class:`StartupDetails`."""
        if self._context is None:
            raise RuntimeError("Channel.start() has not received StartupDetails yet")
        return self._context

    def start(self) -> StartupDetails:
        """Send ``Hello`` and return the supervisor's first line, :class:`StartupDetails`.

        Raises :class:`SupervisorProtocolError` if the first line is anything else or states
        another protocol version, :class:`ChannelClosedError` at end of stream.
        """
        self._write(encode(Hello(protocol_version=PROTOCOL_VERSION, sdk=SDK_NAME)))
        first = self._first_event()
        if isinstance(first, BadLine):
            raise SupervisorProtocolError(f"first line from the supervisor: {first.reason}")
        if not isinstance(first, StartupDetails):
            raise SupervisorProtocolError(
                f"first line from the supervisor must be StartupDetails, got {type(first).__name__}"
            )
        if first.protocol_version != PROTOCOL_VERSION:
            raise SupervisorProtocolError(
                f"the supervisor speaks protocol version {first.protocol_version}, "
                f"this SDK speaks {PROTOCOL_VERSION}"
            )
        self._context = Context.from_startup(first)
        self._pushed = PushedAnswers(first.pushed)
        return first

    def notify(self, message: Log | Metric) -> None:
        """Send a notification (no response)."""
        self._write(encode(message))

    def request(self, message: Request) -> Response:
        """Send ``message`` with a fresh ``id`` and wait for the response with that ``id``.

        Returns the response as received, ``ErrorResponse`` included, or the answer from
        pushed values. Raises :class:`ChannelClosedError` if the channel closes first, and
        :class:`SupervisorProtocolError` if the supervisor's answer was not a valid message.
        """
        local = self._pushed.answer(message)
        if local is not None:
            return local
        response = self._round_trip(message)
        self._pushed.learn(message, response)
        return response

    def _round_trip(self, message: Request) -> Response:
        request_id = next(self._ids)
        data = encode(msgspec.structs.replace(message, id=request_id))
        with self._state:
            self._raise_if_closed()
            self._pending.add(request_id)
        try:
            self._write(data)
            return self._wait_for(request_id)
        finally:
            with self._state:
                self._pending.discard(request_id)
                self._answers.pop(request_id, None)

    def _wait_for(self, request_id: int) -> Response:
        while True:
            with self._state:
                while True:
                    answer = self._answers.pop(request_id, None)
                    if isinstance(answer, SupervisorProtocolError):
                        raise answer
                    if answer is not None:
                        return answer
                    self._raise_if_closed()
                    if not self._reading:
                        self._reading = True
                        break
                    self._state.wait()
            try:
                self._read_until_answered(request_id)
            finally:
                with self._state:
                    self._reading = False
                    self._state.notify_all()

    def _read_until_answered(self, request_id: int) -> None:
        while True:
            chunk = self._read_chunk()
            self._decoder.feed(chunk)
            with self._state:
                if not chunk:
                    self._closed = "the supervisor closed the channel"
                while (event := self._decoder.next_event()) is not None:
                    self._dispatch(event)
                self._state.notify_all()
                if request_id in self._answers or self._closed is not None:
                    return

    def _dispatch(self, event: ToTask | BadLine) -> None:
        # Called with self._state held.
        if isinstance(event, Cancel):
            self.cancel = event
        elif isinstance(event, BadLine):
            if event.id is not None and event.id in self._pending:
                self._answers[event.id] = SupervisorProtocolError(
                    f"the supervisor's answer to request {event.id} is invalid: {event.reason}"
                )
            else:
                _warn(f"ignored an invalid line from the supervisor: {event.reason}")
        elif isinstance(event, StartupDetails):
            _warn("ignored a second StartupDetails from the supervisor")
        elif event.id in self._pending and event.id not in self._answers:
            self._answers[event.id] = event
        else:
            _warn(f"ignored a {type(event).__name__} for unknown request id {event.id}")

    def _first_event(self) -> ToTask | BadLine:
        while (event := self._decoder.next_event()) is None:
            chunk = self._read_chunk()
            if not chunk and self._decoder.buffered == 0:
                self._closed = "the supervisor closed the channel before StartupDetails"
                self._raise_if_closed()
            self._decoder.feed(chunk)
        return event

    def _read_chunk(self) -> bytes:
        try:
            return os.read(self._read_fd, _READ_SIZE)
        except OSError as exc:
            _warn(f"reading from the supervisor failed: {exc}")
            return b""

    def _write(self, data: bytes) -> None:
        with self._write_lock:
            self._raise_if_closed()
            view = memoryview(data)
            try:
                while view:
                    view = view[os.write(self._write_fd, view) :]
            except OSError as exc:
                self._closed = f"writing to the supervisor failed: {exc}"
                raise ChannelClosedError(self._closed) from exc

    def _raise_if_closed(self) -> None:
        if self._closed is not None:
            raise ChannelClosedError(self._closed)
        if os.getpid() != self._owner_pid:
            raise ChannelClosedError(
                "the SDK cannot be used from a process forked by the task: only the task's "
                "own process talks to the supervisor"
            )


def _warn(text: str) -> None:
    # The task's stderr is the supervisor's log of this task: the one place left to say it.
    with contextlib.suppress(OSError):
        os.write(2, f"taskvisor sdk: {text}\n".encode(errors="replace"))
