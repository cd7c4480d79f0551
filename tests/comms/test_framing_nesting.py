"""comms.framing under hostile input: deep nesting, huge lines, arbitrary bytes and chunking.

A line nested deeper than msgspec can recurse used to escape the decoder as RecursionError
(and the supervisor's loop with it). Every line, whatever it holds, must come out as exactly
one event, and the lines after it must decode as if it had not been sent.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from comms_samples import SAMPLES, SUPERVISOR_TYPES, TASK_TYPES
from hypothesis import given, settings
from hypothesis import strategies as st

from comms import messages as m
from comms.framing import (
    MAX_NESTING,
    BadLine,
    LineDecoder,
    encode,
    from_supervisor_decoder,
    from_task_decoder,
)

TASK_SAMPLES = [msg for cls, msg in SAMPLES.items() if cls in TASK_TYPES]
SUPERVISOR_SAMPLES = [msg for cls, msg in SAMPLES.items() if cls in SUPERVISOR_TYPES]
AFTER = m.GetVariable(id=99, key="after")


def drain(decoder: LineDecoder[Any]) -> list[Any]:
    events = []
    while (event := decoder.next_event()) is not None:
        events.append(event)
    return events


def decode_lines(decoder: LineDecoder[Any], *lines: bytes) -> list[Any]:
    decoder.feed(b"".join(line + b"\n" for line in lines))
    return drain(decoder)


def lists(depth: int, inner: bytes = b"") -> bytes:
    """``depth`` nested arrays: ``[[...inner...]]``."""
    return b"[" * depth + inner + b"]" * depth


def objects(depth: int) -> bytes:
    """``depth`` nested objects: ``{"k":{"k":...{}}}``."""
    return b'{"k":' * (depth - 1) + b"{}" + b"}" * (depth - 1)


def depth_of(value: Any) -> int:
    """How deep ``value`` nests arrays and objects (a scalar: 0)."""
    if isinstance(value, dict):
        return 1 + max(map(depth_of, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(depth_of, value), default=0)
    return 0


# --- 1,000 deep: one bad line, the channel goes on ------------------------------------

DEEP = lists(1000)  # a 2 KB value
# Deeper than any interpreter lets msgspec recurse (by count, or by the C stack it would use).
TOO_DEEP_FOR_MSGSPEC = lists(1_000_000)

TASK_DEEP_LINES = {
    "Log.fields": (b'{"type":"Log","event":"e","fields":{"x":' + DEEP + b"}}", None),
    "Log.fields objects": (b'{"type":"Log","event":"e","fields":' + objects(1000) + b"}", None),
    "SetXCom.value": (b'{"type":"SetXCom","id":7,"key":"k","value":' + DEEP + b"}", 7),
    "SetXCom.value, id last": (b'{"type":"SetXCom","key":"k","value":' + DEEP + b',"id":8}', 8),
    "MaskSecret.value": (b'{"type":"MaskSecret","id":9,"value":' + DEEP + b"}", 9),
    "DeferTask.next_kwargs": (
        b'{"type":"DeferTask","id":10,"classpath":"a.B","next_kwargs":{"x":' + DEEP + b"}}",
        10,
    ),
    "id": (b'{"type":"SucceedTask","id":' + DEEP + b"}", None),
    "unknown field": (b'{"type":"GetVariable","id":11,"key":"k","junk":' + DEEP + b"}", 11),
    "unknown type": (b'{"type":"Nope","id":12,"x":' + DEEP + b"}", 12),
    "top-level array": (DEEP, None),
    "never closed": (b'{"type":"Log","event":"e","fields":{"x":' + b"[" * 1000, None),
    "cut off JSON": (b'{"type":"GetVariable","id":13,"x":' + b"[" * 1000 + b"]" * 999, 13),
    "far too deep": (b'{"type":"SetXCom","id":14,"key":"k","value":' + TOO_DEEP_FOR_MSGSPEC, 14),
}


@pytest.mark.parametrize(
    ("line", "expected_id"), TASK_DEEP_LINES.values(), ids=list(TASK_DEEP_LINES)
)
def test_a_line_nested_1000_deep_is_one_bad_line_with_its_id_and_the_next_line_decodes(
    line, expected_id
):
    bad, after = decode_lines(from_task_decoder(), line, encode(AFTER).rstrip(b"\n"))
    assert isinstance(bad, BadLine)
    assert bad.id == expected_id
    assert bad.size == len(line)
    assert after == AFTER


def test_a_deep_line_is_refused_for_its_nesting_before_anything_else():
    (bad,) = decode_lines(from_task_decoder(), TASK_DEEP_LINES["SetXCom.value"][0])
    assert bad.reason == f"nested deeper than {MAX_NESTING} arrays and objects"


SUPERVISOR_DEEP_LINES = {
    "XComResult.value": (b'{"type":"XComResult","id":3,"key":"k","value":' + DEEP + b"}", 3),
    "ErrorResponse.detail": (
        b'{"type":"ErrorResponse","id":4,"error":"GENERIC_ERROR","detail":{"x":'
        + TOO_DEEP_FOR_MSGSPEC
        + b"}}",
        4,
    ),
    "id": (b'{"type":"OKResponse","id":' + TOO_DEEP_FOR_MSGSPEC + b"}", None),
    "unknown type": (b'{"type":"Nope","id":5,"x":' + TOO_DEEP_FOR_MSGSPEC + b"}", 5),
}


@pytest.mark.parametrize(
    ("line", "expected_id"), SUPERVISOR_DEEP_LINES.values(), ids=list(SUPERVISOR_DEEP_LINES)
)
def test_the_task_side_turns_a_line_too_deep_for_msgspec_into_a_bad_line(line, expected_id):
    # The supervisor is trusted, so no MAX_NESTING on this side, but a line msgspec cannot
    # decode must still be a bad line (answering its request), never an exception.
    ok = m.OKResponse(id=6)
    events = decode_lines(from_supervisor_decoder(), line, encode(ok).rstrip(b"\n"))
    assert [type(e) for e in events] in ([BadLine, m.OKResponse], [m.XComResult, m.OKResponse])
    if isinstance(events[0], BadLine):
        assert events[0].id == expected_id
    assert events[1] == ok


def test_the_task_side_takes_an_xcom_value_as_deep_as_the_server_stored_it():
    value = lists(MAX_NESTING * 2, b"1")
    line = b'{"type":"XComResult","id":3,"key":"k","value":' + value + b"}"
    (result,) = decode_lines(from_supervisor_decoder(), line)
    assert result == m.XComResult(id=3, key="k", value=msgspec.Raw(value))


# --- where MAX_NESTING draws the line ---------------------------------------------------


def log_line(value: bytes) -> bytes:
    """A Log line with ``value`` in its fields: nested 2 deeper than ``value``."""
    return b'{"type":"Log","event":"e","fields":{"v":' + value + b"}}"


def set_xcom_line(value: bytes) -> bytes:
    """A SetXCom line with ``value``: nested 1 deeper than ``value``."""
    return b'{"type":"SetXCom","id":1,"key":"k","value":' + value + b"}"


@pytest.mark.parametrize(
    ("make", "own_levels"), [(log_line, 2), (set_xcom_line, 1)], ids=["Log", "SetXCom"]
)
@pytest.mark.parametrize("nest", [lists, objects], ids=["arrays", "objects"])
def test_a_line_nested_max_nesting_deep_decodes_and_one_level_more_is_refused(
    make, own_levels, nest
):
    deepest = make(nest(MAX_NESTING - own_levels))
    too_deep = make(nest(MAX_NESTING - own_levels + 1))
    ok, bad = decode_lines(from_task_decoder(), deepest, too_deep)
    assert not isinstance(ok, BadLine), ok
    assert isinstance(bad, BadLine)
    assert "nested deeper than" in bad.reason


def test_max_nesting_is_64():
    assert MAX_NESTING == 64


@pytest.mark.parametrize(
    "event",
    [
        "[" * 10_000,
        "]" * 10_000 + "{" * 10_000,
        '\\"[[[[' * 5_000,  # escaped quotes do not end the string
        "\\" * 9 + "[" * 10_000,  # nor do escaped backslashes start one
    ],
    ids=["opening", "unbalanced", "escaped-quotes", "escaped-backslashes"],
)
def test_brackets_within_strings_do_not_count_as_nesting(event):
    msg = m.Log(event=event, fields={event: [event, {event: event}]})
    assert decode_lines(from_task_decoder(), encode(msg).rstrip(b"\n")) == [msg]


def test_brackets_within_strings_cannot_hide_nesting():
    # Each string's "]]]..." would close the levels before it if strings were not skipped.
    hidden = b'"' + b"]" * 60 + b'",'
    value = (b"[" * 60 + hidden) * 3 + b"0" + b"]" * 180
    (bad,) = decode_lines(from_task_decoder(), set_xcom_line(value))
    assert isinstance(bad, BadLine)
    assert "nested deeper than" in bad.reason


@pytest.mark.parametrize("limit", [0, -1, 129])
def test_max_nesting_beyond_1_to_128_is_refused(limit):
    with pytest.raises(ValueError, match="max_nesting"):
        LineDecoder(m.TaskMessage, max_nesting=limit)


# Strings that would confuse a scanner that does not follow JSON's quoting.
awkward = st.text(alphabet=st.sampled_from(list('[]{}"\\,: a\n')), max_size=8)
json_values = st.recursive(
    st.none() | st.integers() | awkward,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(awkward, inner, max_size=3),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(
    value=json_values,
    limit=st.integers(min_value=2, max_value=6),
    separators=st.sampled_from([(",", ":"), (", ", ": "), (" ,\t", " :  ")]),
    ensure_ascii=st.booleans(),
)
def test_a_line_decodes_exactly_when_it_nests_at_most_max_nesting_deep(
    value, limit, separators, ensure_ascii
):
    text = json.dumps(value, separators=separators, ensure_ascii=ensure_ascii)
    line = log_line(text.encode())
    decoder = LineDecoder(m.TaskMessage, max_nesting=limit)
    (event,) = decode_lines(decoder, line)
    if 2 + depth_of(value) <= limit:
        assert event == m.Log(event="e", fields={"v": value})
    else:
        assert isinstance(event, BadLine)
        assert event.reason == f"nested deeper than {limit} arrays and objects"


# --- fuzz: any line, any chunking -------------------------------------------------------

MAX_LINE = 8192


ANY_EVENT = object()  # random bytes may happen to be a message: any event, no exception


@st.composite
def hostile_lines(draw: st.DrawFn) -> tuple[bytes, object]:
    """A line (no newline) and what must come of it: the message, a BadLine, or ANY_EVENT."""
    kind = draw(st.sampled_from(["valid", "bytes", "deep", "huge"]))
    if kind == "valid":
        msg = draw(st.sampled_from(TASK_SAMPLES))
        return encode(msg).rstrip(b"\n"), msg
    if kind == "bytes":
        data = draw(st.binary(max_size=200).map(lambda b: b.replace(b"\n", b"")))
        return data, ANY_EVENT
    if kind == "deep":
        depth = draw(st.integers(min_value=MAX_NESTING + 1, max_value=3000))
        where = draw(st.sampled_from([log_line, set_xcom_line, lambda v: v]))
        nest = draw(st.sampled_from([lists, objects]))
        return where(nest(depth)), BadLine
    size = draw(st.integers(min_value=MAX_LINE + 1, max_value=4 * MAX_LINE))
    filler = draw(st.sampled_from([b"[", b"x", b"[]", b'"]"']))
    return set_xcom_line(b"[" + filler * (size // len(filler)) + b"]"), BadLine


@settings(max_examples=150, deadline=None)
@given(
    lines=st.lists(hostile_lines(), min_size=1, max_size=8),
    cuts=st.lists(st.integers(min_value=0, max_value=40_000), max_size=30),
)
def test_any_stream_of_hostile_lines_yields_one_event_per_line_whatever_the_chunking(lines, cuts):
    stream = b"".join(line + b"\n" for line, _ in lines)
    points = sorted({c % (len(stream) + 1) for c in cuts})
    decoder = from_task_decoder(max_line=MAX_LINE)
    events: list[Any] = []
    start = 0
    for point in [*points, len(stream)]:
        if point > start:  # b"" would mean end of stream
            decoder.feed(stream[start:point])  # never raises
        events.extend(drain(decoder))
        assert decoder.buffered <= MAX_LINE
        start = point
    decoder.feed(b"")
    events.extend(drain(decoder))

    expected = [want for line, want in lines if line.strip()]  # blank lines yield nothing
    assert len(events) == len(expected)
    for event, want in zip(events, expected, strict=True):
        if want is ANY_EVENT:
            assert isinstance(event, (BadLine, *TASK_TYPES))
        elif want is BadLine:
            assert isinstance(event, BadLine)
        else:
            assert event == want


def test_the_deepest_limit_a_decoder_takes_is_enforced_exactly():
    decoder = LineDecoder(m.TaskMessage, max_nesting=128)
    ok, bad = decode_lines(decoder, set_xcom_line(lists(127)), set_xcom_line(lists(128)))
    assert isinstance(ok, m.SetXCom)
    assert isinstance(bad, BadLine)
