"""Line framing of the task channel, sans-IO: bytes in, typed messages out.

:class:`LineDecoder` never touches a file descriptor. Feed it bytes in any chunking with
:meth:`LineDecoder.feed`, then pull events with :meth:`LineDecoder.next_event` until it
returns ``None``. A line that is not a valid message becomes a :class:`BadLine` event, never
an exception, so the channel always resynchronises at the next newline. A line longer than
``max_line`` is dropped as soon as it crosses the limit (its bytes are not kept) and reported
once as a :class:`BadLine`. A decoder may allow only some message types to be longer than
``max_short_line`` (the supervisor's: only ``SetXCom``, whose value stays encoded): decoded
JSON can take some twenty times its size as Python objects, so this bounds what one line
from a hostile task can cost the supervisor. A decoder may also refuse lines that nest
arrays and objects deeper than ``max_nesting`` (the supervisor's: :data:`MAX_NESTING`), so
that no consumer of a decoded message, nor the server an XCom value is forwarded to, has to
recurse deeper than that; a line too deep for msgspec itself is a :class:`BadLine` on every
decoder.

:func:`encode` turns a message into one line; JSON escapes newlines inside strings, so the
encoder never emits a raw newline within a line.
"""

from __future__ import annotations

import functools
import re
from typing import Any, Generic, TypeVar

import msgspec

from comms.messages import TaskMessage, ToTask

__all__ = [
    "DEFAULT_MAX_LINE",
    "MAX_NESTING",
    "MAX_SHORT_LINE",
    "BadLine",
    "LineDecoder",
    "encode",
    "from_supervisor_decoder",
    "from_task_decoder",
]

#: Default limit of one line, newline excluded: 64 MiB.
DEFAULT_MAX_LINE = 64 * 1024 * 1024
#: Limit of a line from the task of any type but ``SetXCom``: 1 MiB.
MAX_SHORT_LINE = 1024 * 1024
#: How deep a line from the task may nest arrays and objects, the line's own object counting
#: as 1. Real messages nest a few levels; code that walks a value recursively (masking, the
#: server's JSON parser) spends one or more Python frames a level, of a default 1,000.
MAX_NESTING = 64

# Python's re compiles a pattern of nested groups recursively: a deeper limit would need
# more stack than a caller can be sure to have.
_DEEPEST_LIMIT = 128

M = TypeVar("M")

_encoder = msgspec.json.Encoder()
# The id of a line we could not decode, so the sender still gets its one response. Searched
# only near the start of the line: encoders put it there (ours right after "type").
# A negative id is no request's (ids are >= 0): such a line counts as one without an id.
# JSON's whitespace but the newline, which ends the line.
_ID_VALUE = re.compile(rb"[ \t\r]*:[ \t\r]*(\d{1,18})(?![\d.eE])")
_ID_SEARCH_WINDOW = 4096


def encode(message: msgspec.Struct) -> bytes:
    """Return ``message`` as one protocol line, newline included."""
    line = _encoder.encode(message)
    if b"\n" in line or b"\r" in line:
        # Only a msgspec.Raw value can carry raw line breaks (JSON whitespace, e.g. a server's
        # pretty-printed XCom): re-encode the whole message compactly.
        line = _encoder.encode(msgspec.json.decode(line))
    return line + b"\n"


class BadLine(msgspec.Struct, frozen=True):
    """A line that is not a valid message.

    ``id`` is the request id found near the start of the line, if any, so the receiver can
    still answer that request with an ``ErrorResponse``. ``size`` is the line's length in
    bytes (for an over-long line: how much had arrived when it was dropped).
    """

    reason: str
    size: int
    id: int | None = None


class _Envelope(msgspec.Struct):
    # Read without building anything else of a line: msgspec skips the other fields.
    type: Any = None
    id: Any = None


class LineDecoder(Generic[M]):
    """Splits a byte stream into lines and decodes each into a message of type ``M``.

    Lines of the message types named in ``long_types`` may be up to ``max_line`` bytes long;
    lines of other types at most ``max_short_line`` (default: ``max_line`` for every type).
    Lines that nest arrays and objects deeper than ``max_nesting`` (at most 128) are refused
    (default: no limit but msgspec's own, which the interpreter's recursion limit sets).
    """

    def __init__(
        self,
        message_type: Any,
        *,
        max_line: int = DEFAULT_MAX_LINE,
        max_short_line: int | None = None,
        long_types: frozenset[str] = frozenset(),
        max_nesting: int | None = None,
    ) -> None:
        if max_line < 1:
            raise ValueError(f"max_line must be at least 1 byte, got {max_line}")
        if max_nesting is not None and not 1 <= max_nesting <= _DEEPEST_LIMIT:
            raise ValueError(
                f"max_nesting must be from 1 (the line's object) to {_DEEPEST_LIMIT}, "
                f"got {max_nesting}"
            )
        self._decoder: msgspec.json.Decoder[M] = msgspec.json.Decoder(message_type)
        self._envelope = msgspec.json.Decoder(_Envelope)
        self.max_line = max_line
        self.max_short_line = max_line if max_short_line is None else min(max_line, max_short_line)
        self.long_types = long_types
        self.max_nesting = max_nesting
        self._buf = bytearray()
        self._scanned = 0  # bytes of _buf known to hold no newline
        self._skipping = False  # inside an over-long line: drop bytes up to the next newline
        self._eof = False

    @property
    def buffered(self) -> int:
        """Bytes held waiting for a newline (never more than ``max_line``)."""
        return len(self._buf)

    def feed(self, data: bytes) -> None:
        """Add bytes received from the peer. ``b""`` means end of stream."""
        if not data:
            self._eof = True
            return
        self._buf += data

    def next_event(self) -> M | BadLine | None:
        """Return the next message or bad line, or ``None`` until more bytes are fed.

        At end of stream a trailing unterminated line is reported as a :class:`BadLine`
        (a cut-off message is never acted upon).
        """
        while True:
            nl = self._buf.find(b"\n", self._scanned)
            if nl < 0:
                if self._skipping:
                    self._buf.clear()
                    self._scanned = 0
                elif len(self._buf) > self.max_line:
                    return self._start_skipping()
                else:
                    self._scanned = len(self._buf)
                if self._eof and self._buf:
                    size = len(self._buf)
                    line_id = _find_id(self._buf)
                    self._buf.clear()
                    self._scanned = 0
                    return BadLine("line cut off at end of stream (no newline)", size, line_id)
                return None
            if self._skipping:  # end of an over-long line, already reported
                del self._buf[: nl + 1]
                self._scanned = 0
                self._skipping = False
                continue
            if nl > self.max_line:
                return self._start_skipping()
            line = bytes(self._buf[:nl])
            del self._buf[: nl + 1]
            self._scanned = 0
            if not line or line.isspace():  # blank (isspace: no copy, unlike strip)
                continue
            return self._decode(line)

    def _start_skipping(self) -> BadLine:
        size = len(self._buf)
        line_id = _find_id(self._buf)
        nl = self._buf.find(b"\n", self.max_line)
        if nl >= 0:  # the over-long line ended within this buffer: drop just it
            size = nl
            del self._buf[: nl + 1]
        else:
            self._skipping = True
            self._buf.clear()
        self._scanned = 0
        return BadLine(f"line longer than the limit of {self.max_line} bytes", size, line_id)

    def _decode(self, line: bytes) -> M | BadLine:
        limit = self.max_nesting
        # Checked before anything decodes the line: even skipping a value, msgspec recurses.
        # Nesting deeper takes more than `limit` opening brackets and, to decode, as many
        # closing ones: length and a count rule out nearly every line at once.
        if (
            limit is not None
            and len(line) > 2 * limit
            and line.count(b"[") + line.count(b"{") > limit
            and _nested_deeper_than(line, limit)
        ):
            return BadLine(
                f"nested deeper than {limit} arrays and objects",
                len(line),
                _find_id(line),
            )
        if len(line) > self.max_short_line:
            envelope = self._peek(line)
            if envelope is not None and envelope.type not in self.long_types:
                return BadLine(
                    f"a {envelope.type} line may be at most {self.max_short_line} bytes "
                    f"(only {', '.join(sorted(self.long_types)) or 'no type'} may be longer)",
                    len(line),
                    _int_or_none(envelope.id),
                )
        try:
            return self._decoder.decode(line)
        except msgspec.ValidationError as exc:
            envelope = self._peek(line)
            # No envelope: not an object, or too deep to skip through; the scan still may
            # find the id.
            line_id = _find_id(line) if envelope is None else _int_or_none(envelope.id)
            return BadLine(f"invalid message: {exc}", len(line), line_id)
        except msgspec.DecodeError as exc:
            return BadLine(f"not JSON: {exc}", len(line), _find_id(line))
        except RecursionError:
            # Nested deeper than the interpreter lets msgspec go (without max_nesting).
            return BadLine("nested too deep to decode", len(line), _find_id(line))

    def _peek(self, line: bytes) -> _Envelope | None:
        try:
            return self._envelope.decode(line)
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
            return None  # not JSON, not an object, or too deep to skip through


def _int_or_none(value: Any) -> int | None:
    """``value`` if it can be a request's id (an int >= 0, not a bool), else ``None``."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


# Bytes that open or close an array or object, mapped to "[" and "]", and string quotes;
# everything else is deleted before nesting is measured.
_BRACKETS = bytes.maketrans(b"{}", b"[]")
_NOT_BRACKET_OR_QUOTE = bytes(b for b in range(256) if b not in b'[]{}"')


def _nested_deeper_than(line: bytes, limit: int) -> bool:
    """Whether ``line`` nests arrays and objects more than ``limit`` deep; brackets within
    strings do not count. Exact for valid JSON; for other bytes either answer may come (they
    will not decode anyway), never an exception.

    Byte operations and one regular expression, all in C and linear in the line's length:
    some 2 ns a byte for ordinary data, about 10 at worst (a hostile 64 MiB line).
    """
    if b"\\" in line:
        # Escaped backslashes first (so a string's closing quote is not taken for an escaped
        # one), then escaped quotes: every quote left opens or closes a string.
        line = line.replace(b"\\\\", b"").replace(b'\\"', b"")
    marks = line.translate(_BRACKETS, _NOT_BRACKET_OR_QUOTE)
    # Drop strings without brackets (most), keeping the parity of the quotes left; then keep
    # what lies outside the remaining strings.
    marks = marks.replace(b'""', b"")
    brackets = b"".join(marks.split(b'"')[::2]) if b'"' in marks else marks
    if brackets.count(b"[") * 2 != len(brackets):
        return False  # unbalanced: not JSON, and msgspec will say so
    return _nesting_at_most(limit).fullmatch(brackets) is None


@functools.cache
def _nesting_at_most(limit: int) -> re.Pattern[bytes]:
    """Matches whole strings of balanced ``[`` and ``]`` that nest at most ``limit`` deep.

    Compiled when first needed (not at start-up). Possessive repeats never backtrack, so
    matching takes linear time whatever the input.
    """
    pattern = b""
    for _ in range(limit):
        pattern = rb"(?:\[" + pattern + rb"\])*+"
    return re.compile(pattern)


def _find_id(data: bytes | bytearray) -> int | None:
    """The top-level ``"id"`` of a JSON object within the first bytes, ignoring nested ones."""
    depth = 0
    string_start = -1  # index after the opening quote while inside a string
    escaped = False
    end = min(len(data), _ID_SEARCH_WINDOW)
    for i in range(end):
        byte = data[i]
        if string_start >= 0:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # closing quote: a top-level key "id" followed by a number?
                if depth == 1 and data[string_start:i] == b"id":
                    match = _ID_VALUE.match(data, i + 1)
                    if match:
                        return int(match.group(1))
                string_start = -1
        elif byte == 0x22:
            string_start = i + 1
        elif byte in b"{[":
            depth += 1
        elif byte in b"}]":
            depth -= 1
    return None


def from_task_decoder(*, max_line: int = DEFAULT_MAX_LINE) -> LineDecoder[TaskMessage]:
    """A decoder for what a task sends (the supervisor's side of the channel): only
    ``SetXCom`` lines may be longer than :data:`MAX_SHORT_LINE`, and no line may nest
    deeper than :data:`MAX_NESTING`."""
    return LineDecoder(
        TaskMessage,
        max_line=max_line,
        max_short_line=MAX_SHORT_LINE,
        long_types=frozenset({"SetXCom"}),
        max_nesting=MAX_NESTING,
    )


def from_supervisor_decoder(*, max_line: int = DEFAULT_MAX_LINE) -> LineDecoder[ToTask]:
    """A decoder for what a supervisor sends (the task's side of the channel).

    No :data:`MAX_NESTING` here: the supervisor is trusted, and an XCom value it relays may
    be as deep as the server stored it; a line too deep for msgspec is still a bad line.
    """
    return LineDecoder(ToTask, max_line=max_line)
