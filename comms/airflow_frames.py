"""Frames of Apache Airflow's supervisor <-> task runner channel, sans-IO: bytes in, frames out.

This is the codec for hosting Airflow's own task runner (``task_runner.main``) as the child of
``supervise`` (issue 13), the counterpart of :mod:`comms.framing` for our line-JSON channel.
It imports no Airflow: the facts below were read from Airflow 3.3.2 (apache-airflow-task-sdk
1.3.2) under ``airflow/sdk/execution_time/``, and the code is ours.

Facts relied on (file: where it is said):

* ``comms.py``, module docstring and ``_FrameMixin.as_bytes``: every message, both ways, is
  one frame: a 4-byte unsigned big-endian length, then that many bytes of MessagePack. The
  sender refuses a payload of 2**32 bytes or more; there is no other size limit on either side.
* ``comms.py``, ``_RequestFrame`` and ``_ResponseFrame`` (msgspec structs, ``array_like``):
  the payload is an array, never a map. A request (runner -> supervisor) is
  ``[id, body, context_carrier]``; a response (supervisor -> runner) is ``[id, body, error]``.
  Airflow always writes all three elements, ``nil`` for an absent one (its
  ``omit_defaults`` does not shorten array-like structs); its decoders need at least
  ``[id, body]`` / ``[id]`` and ignore extra trailing elements.
* ``id`` is an int the runner chooses (``CommsDecoder.id_counter``: 0, 1, 2, ... per
  process); a response repeats the id of its request. The runner sends one request and
  blocks on its response (a thread lock), so at most one is outstanding per runner process.
* ``body`` is a map tagged by ``"type"`` (pydantic's ``model_dump()`` of a ``ToSupervisor``
  or ``ToTask`` member), or ``nil``. ``error`` is an ``ErrorResponse`` body:
  ``{"error": <ErrorType value>, "detail": map or nil, "type": "ErrorResponse"}``; the
  supervisor's ``send_msg`` sets either body or error, never both; the runner checks error
  first. ``context_carrier`` is a W3C trace-context map (``traceparent``, ``tracestate``) or
  ``nil``.
* Values are msgspec's msgpack: aware datetimes travel as the MessagePack timestamp extension
  (type -1) and decode back to UTC datetimes; UUIDs, paths and naive datetimes as strings.
* ``supervisor.py``, ``ActivitySubprocess._on_child_started``: ``StartupDetails`` is the one
  message sent unprompted, as a response frame with id 0 before the runner sent anything;
  ``task_runner.py``, ``get_startup_details``: the runner reads one response frame first and
  requires that body. Its own first request then also has id 0.
* ``supervisor.py``, ``WatchedSubprocess.start``, ``_fork_main`` and
  ``length_prefixed_frame_reader``: frames travel on the child's fd 0, a socketpair used both
  ways; stdout and stderr are separate socketpairs; logs go on a fourth socketpair as JSON
  lines (``process_log_messages_from_subprocess``), not in frames. A runner that lost it
  asks with a ``ResendLoggingFD`` request and gets a ``SentFDs`` response carrying the fd
  as SCM_RIGHTS ancillary data.
* ``schema/schema.json`` (with ``schema/versions/``): the published, dated JSON Schema of the
  bodies (``api_version`` 2026-06-16 here); a runner may declare an older version, and
  Airflow's supervisor then migrates bodies. The frame layout is not part of it.

:class:`FrameDecoder` holds no file descriptor: feed it bytes in any chunking with
:meth:`FrameDecoder.feed` (``b""`` for end of stream) and pull frames with
:meth:`FrameDecoder.next_frame`. A frame whose length exceeds the decoder's ``max_frame``
(default :data:`DEFAULT_MAX_FRAME`) is skipped as its bytes arrive, never buffered, and a
frame that does not decode is dropped: each becomes a :class:`BadFrame` event, never an
exception, with the frame's id when its first bytes hold one, so it can still be answered.
Either way the stream stays in step only as far as the length prefix was honest. Bodies stay
decoded MessagePack maps here; typed bodies are the next layer's.
"""

from __future__ import annotations

from typing import Annotated, Any, Generic, TypeVar

import msgspec

__all__ = [
    "DEFAULT_MAX_FRAME",
    "MAX_ENCODABLE_FRAME",
    "BadFrame",
    "FrameDecoder",
    "RequestFrame",
    "ResponseFrame",
    "encode_request",
    "encode_response",
]

#: Default limit of one frame's payload (the length prefix excluded): 64 MiB, as our lines.
DEFAULT_MAX_FRAME = 64 * 1024 * 1024
#: The largest payload a 4-byte length prefix can announce.
MAX_ENCODABLE_FRAME = 2**32 - 1

_PREFIX = 4
# An id is readable from a payload's first bytes: an array32 header (5) and a uint64 (9).
_ID_WINDOW = 14

_RequestId = Annotated[int, msgspec.Meta(ge=0)]


class RequestFrame(msgspec.Struct, array_like=True, frozen=True):
    """A request from the task runner: ``[id, body, context_carrier]`` on the wire."""

    id: _RequestId
    body: dict[str, Any] | None
    context_carrier: dict[str, str] | None = None


class ResponseFrame(msgspec.Struct, array_like=True, frozen=True):
    """A response to request ``id`` (or ``StartupDetails``, id 0): ``[id, body, error]``."""

    id: _RequestId
    body: dict[str, Any] | None = None
    error: dict[str, Any] | None = None


class BadFrame(msgspec.Struct, frozen=True):
    """A frame that was too long, did not decode, or was cut off at end of stream.

    ``size`` is the payload length the prefix announced (for a cut-off prefix: the bytes of
    it that arrived); ``id`` the request id its first bytes hold, if readable.
    """

    reason: str
    size: int
    id: int | None = None


F = TypeVar("F", RequestFrame, ResponseFrame)

_encoder = msgspec.msgpack.Encoder()


def encode_request(
    request_id: int,
    body: dict[str, Any] | None,
    *,
    context_carrier: dict[str, str] | None = None,
) -> bytes:
    """Return a request frame, length prefix included (what a task runner sends)."""
    return _frame((_checked_id(request_id), body, context_carrier))


def encode_response(
    request_id: int,
    body: dict[str, Any] | None = None,
    *,
    error: dict[str, Any] | None = None,
) -> bytes:
    """Return a response frame to ``request_id``, length prefix included.

    Give ``body`` for a result, ``error`` (an ``ErrorResponse`` body) for a failure, or
    neither for an empty response; never both (Airflow's runner would ignore the body).
    """
    if body is not None and error is not None:
        raise ValueError("a response carries a body or an error, not both")
    return _frame((_checked_id(request_id), body, error))


def _checked_id(request_id: int) -> int:
    if isinstance(request_id, bool) or not 0 <= request_id < 2**64:
        raise ValueError(f"a request id is an int from 0 to 2**64 - 1, got {request_id!r}")
    return request_id


def _frame(fields: tuple[Any, ...]) -> bytes:
    buffer = bytearray(_PREFIX)
    _encoder.encode_into(fields, buffer, _PREFIX)  # payload after the room for the prefix
    size = len(buffer) - _PREFIX
    if size > MAX_ENCODABLE_FRAME:
        raise ValueError(f"a frame payload is at most {MAX_ENCODABLE_FRAME} bytes, got {size}")
    buffer[:_PREFIX] = size.to_bytes(_PREFIX, "big")
    return bytes(buffer)


class FrameDecoder(Generic[F]):
    """Splits a byte stream into frames and decodes each into ``frame_type``.

    ``FrameDecoder(RequestFrame)`` reads what a runner sends (the supervisor's side);
    ``FrameDecoder(ResponseFrame)`` what a supervisor sends. Payloads longer than
    ``max_frame`` bytes are reported and skipped.
    """

    def __init__(self, frame_type: type[F], *, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        if not 1 <= max_frame <= MAX_ENCODABLE_FRAME:
            raise ValueError(f"max_frame must be from 1 to {MAX_ENCODABLE_FRAME}, got {max_frame}")
        self._decoder: msgspec.msgpack.Decoder[F] = msgspec.msgpack.Decoder(frame_type)
        self.max_frame = max_frame
        self._buf = bytearray()
        self._skip = 0  # bytes of an over-size frame, already reported, still to drop
        self._eof = False

    @property
    def buffered(self) -> int:
        """Bytes held for a frame not yet complete (or complete frames not yet pulled)."""
        return len(self._buf)

    def feed(self, data: bytes) -> None:
        """Add bytes received from the peer. ``b""`` means end of stream."""
        if not data:
            self._eof = True
            return
        if self._skip:  # inside an over-size frame: its bytes are never kept
            dropped = min(self._skip, len(data))
            self._skip -= dropped
            data = data[dropped:]
        self._buf += data

    def next_frame(self) -> F | BadFrame | None:
        """Return the next frame or bad frame, or ``None`` until more bytes are fed.

        At end of stream, bytes of an incomplete frame are reported once as a
        :class:`BadFrame` (a cut-off frame is never acted upon).
        """
        buffered = len(self._buf)
        if buffered < _PREFIX:
            return self._cut_off(buffered, None) if self._eof and buffered else None
        size = int.from_bytes(self._buf[:_PREFIX], "big")
        available = buffered - _PREFIX
        if size > self.max_frame:
            # Wait for the bytes that may hold the id (a few), then drop the frame.
            if available < min(size, _ID_WINDOW) and not self._eof:
                return None
            frame_id = _peek_id(self._buf[_PREFIX : _PREFIX + _ID_WINDOW])
            taken = min(size, available)
            del self._buf[: _PREFIX + taken]
            self._skip = size - taken
            return BadFrame(
                f"frame longer than the limit of {self.max_frame} bytes", size, frame_id
            )
        if available < size:
            return self._cut_off(size, _peek_id(self._buf[_PREFIX:])) if self._eof else None
        end = _PREFIX + size
        # Decoded in place; the view is released before the buffer may shrink.
        with memoryview(self._buf)[_PREFIX:end] as payload:
            event = self._decode(payload)
        del self._buf[:end]
        return event

    def _decode(self, payload: memoryview) -> F | BadFrame:
        try:
            return self._decoder.decode(payload)
        except msgspec.ValidationError as exc:
            return BadFrame(f"invalid frame: {exc}", len(payload), _peek_id(payload))
        except msgspec.DecodeError as exc:
            return BadFrame(f"not MessagePack: {exc}", len(payload), _peek_id(payload))
        except RecursionError:  # nested deeper than the interpreter lets msgspec go
            return BadFrame("nested too deep to decode", len(payload), _peek_id(payload))

    def _cut_off(self, size: int, frame_id: int | None) -> BadFrame:
        self._buf.clear()
        return BadFrame("frame cut off at end of stream", size, frame_id)


# MessagePack type bytes of an array header, and of an integer with its width in bytes.
_ARRAY16, _ARRAY32 = 0xDC, 0xDD
_UNSIGNED = {0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8}
_SIGNED = {0xD0: 1, 0xD1: 2, 0xD2: 4, 0xD3: 8}


def _peek_id(data: bytes | bytearray | memoryview) -> int | None:
    """The id a payload starts with (a non-empty array whose first element is an int >= 0),
    read from its first bytes only, or ``None``."""
    if not data:
        return None
    head = data[0]
    if 0x91 <= head <= 0x9F:  # fixarray of 1 to 15 elements
        at = 1
    elif head in (_ARRAY16, _ARRAY32):
        at = 3 if head == _ARRAY16 else 5
        if len(data) < at or not int.from_bytes(data[1:at], "big"):
            return None
    else:
        return None
    if len(data) <= at:
        return None
    kind = data[at]
    if kind <= 0x7F:  # positive fixint
        return kind
    width = _UNSIGNED.get(kind) or _SIGNED.get(kind)
    if width is None or len(data) < at + 1 + width:
        return None
    value = int.from_bytes(data[at + 1 : at + 1 + width], "big", signed=kind in _SIGNED)
    return value if value >= 0 else None
