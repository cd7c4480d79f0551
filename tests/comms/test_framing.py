"""comms.framing: the sans-IO line decoder and the encoder."""

from __future__ import annotations

import json

import msgspec
import pytest
from comms_samples import SAMPLES, SUPERVISOR_TYPES, TASK_TYPES
from hypothesis import given, settings
from hypothesis import strategies as st

from comms import messages as m
from comms.framing import (
    DEFAULT_MAX_LINE,
    MAX_SHORT_LINE,
    BadLine,
    LineDecoder,
    encode,
    from_supervisor_decoder,
    from_task_decoder,
)

TASK_SAMPLES = [msg for cls, msg in SAMPLES.items() if cls in TASK_TYPES]
SUPERVISOR_SAMPLES = [msg for cls, msg in SAMPLES.items() if cls in SUPERVISOR_TYPES]


def drain(decoder: LineDecoder) -> list:
    events = []
    while (event := decoder.next_event()) is not None:
        events.append(event)
    return events


def decode_all(data: bytes, *, max_line: int = DEFAULT_MAX_LINE, eof: bool = False) -> list:
    decoder = from_task_decoder(max_line=max_line)
    decoder.feed(data)
    if eof:
        decoder.feed(b"")
    return drain(decoder)


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, start = [], 0
    for point in [*points, len(data)]:
        pieces.append(data[start:point])
        start = point
    return [p for p in pieces if p]


# --- framing of valid streams --------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(
    picks=st.lists(st.sampled_from(range(len(TASK_SAMPLES))), min_size=1, max_size=12),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=40),
)
def test_any_chunking_yields_exactly_the_messages_of_the_unchunked_stream(picks, cuts):
    stream = b"".join(encode(TASK_SAMPLES[i]) for i in picks)
    decoder = from_task_decoder()
    events = []
    for piece in chunked(stream, cuts):
        decoder.feed(piece)
        events.extend(drain(decoder))
    decoder.feed(b"")
    events.extend(drain(decoder))
    assert events == [TASK_SAMPLES[i] for i in picks]
    assert decoder.buffered == 0


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=300), cuts=st.lists(st.integers(0, 400), max_size=30))
def test_arbitrary_bytes_decode_the_same_whatever_the_chunking(data, cuts):
    whole = decode_all(data, max_line=64, eof=True)
    decoder = from_task_decoder(max_line=64)
    events = []
    for piece in chunked(data, cuts):
        decoder.feed(piece)
        events.extend(drain(decoder))
        assert decoder.buffered <= 64
    decoder.feed(b"")
    events.extend(drain(decoder))
    assert events == whole


def test_one_byte_at_a_time_decodes_every_message():
    stream = b"".join(encode(msg) for msg in TASK_SAMPLES)
    decoder = from_task_decoder()
    events = []
    for i in range(len(stream)):
        decoder.feed(stream[i : i + 1])
        events.extend(drain(decoder))
    assert events == TASK_SAMPLES


def test_blank_and_whitespace_lines_are_ignored():
    line = encode(m.GetVariable(id=1, key="k"))
    assert decode_all(b"\n\n   \n\t\n" + line + b"\n \r\n") == [m.GetVariable(id=1, key="k")]


def test_crlf_line_endings_decode():
    line = b'{"type":"GetVariable","id":1,"key":"k"}\r\n'
    assert decode_all(line) == [m.GetVariable(id=1, key="k")]


def test_next_event_returns_none_until_the_newline_arrives():
    decoder = from_task_decoder()
    decoder.feed(b'{"type":"GetVariable","id":1,')
    assert decoder.next_event() is None
    decoder.feed(b'"key":"k"}\n')
    assert decoder.next_event() == m.GetVariable(id=1, key="k")
    assert decoder.next_event() is None


# --- over-long lines ------------------------------------------------------------------


def test_line_longer_than_limit_is_reported_once_and_decoder_resynchronises():
    too_long = b'{"type":"GetVariable","id":7,"key":"' + b"x" * 500 + b'"}\n'
    after = encode(m.GetVariable(id=8, key="ok"))
    events = decode_all(too_long + after, max_line=100)
    assert len(events) == 2
    bad, good = events
    assert isinstance(bad, BadLine)
    assert bad.id == 7
    assert "100" in bad.reason
    assert good == m.GetVariable(id=8, key="ok")


def test_over_long_line_fed_in_small_chunks_is_reported_once_and_its_bytes_are_not_kept():
    decoder = from_task_decoder(max_line=100)
    events = []
    decoder.feed(b'{"type":"GetVariable","id":42,"key":"')
    events.extend(drain(decoder))
    for _ in range(200):
        decoder.feed(b"y" * 37)
        events.extend(drain(decoder))
        assert decoder.buffered <= 100
    decoder.feed(b'"}\n' + encode(m.DeleteVariable(id=43, key="k")))
    events.extend(drain(decoder))
    assert [type(e) for e in events] == [BadLine, m.DeleteVariable]
    assert events[0].id == 42
    assert events[1].id == 43
    assert decoder.buffered == 0


@settings(max_examples=100, deadline=None)
@given(
    rid=st.integers(min_value=0, max_value=2**53),
    size=st.integers(min_value=65, max_value=3000),
    cuts=st.lists(st.integers(0, 4000), max_size=30),
)
def test_over_long_request_is_reported_with_its_id_whatever_the_chunking(rid, size, cuts):
    long_line = encode(m.PutVariable(id=rid, key="k", value="v" * size))
    stream = long_line + encode(m.GetVariable(id=1, key="after"))
    decoder = from_task_decoder(max_line=64)
    events = []
    for piece in chunked(stream, cuts):
        decoder.feed(piece)
        events.extend(drain(decoder))
        assert decoder.buffered <= 64
    assert [type(e) for e in events] == [BadLine, m.GetVariable]
    assert events[0].id == rid
    assert events[1] == m.GetVariable(id=1, key="after")


def test_over_long_line_without_an_id_is_reported_with_no_id():
    events = decode_all(b'{"type":"Log","event":"' + b"z" * 300 + b'"}\n', max_line=50)
    assert len(events) == 1
    assert isinstance(events[0], BadLine)
    assert events[0].id is None


def test_line_of_exactly_the_limit_is_accepted():
    line = encode(m.GetVariable(id=1, key="abc"))
    limit = len(line) - 1  # newline excluded
    assert decode_all(line, max_line=limit) == [m.GetVariable(id=1, key="abc")]
    assert isinstance(decode_all(line, max_line=limit - 1)[0], BadLine)


def test_default_limit_is_64_mib():
    assert DEFAULT_MAX_LINE == 64 * 1024 * 1024
    assert from_task_decoder().max_line == DEFAULT_MAX_LINE


@pytest.mark.parametrize("limit", [0, -1])
def test_limit_below_one_byte_is_refused(limit):
    with pytest.raises(ValueError, match="max_line"):
        LineDecoder(m.TaskMessage, max_line=limit)


# --- bad lines ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected_id", "reason_part"),
    [
        (b'{"type":"GetVariable","id":3,"key":', 3, "not JSON"),
        (b"this is not json at all", None, "not JSON"),
        (b'{"type":"Nope","id":4}', 4, "invalid message"),
        (b'{"type":"GetVariable","id":5}', 5, "invalid message"),  # missing key
        (b'{"type":"GetVariable","id":6,"key":"k","extra":1}', 6, "invalid message"),
        (b'{"type":"GetVariable","key":"k"}', None, "invalid message"),  # request without id
        (b'{"type":"GetVariable","id":"7","key":"k"}', None, "invalid message"),
        (b'{"type":"GetVariable","id":true,"key":"k"}', None, "invalid message"),
        (b"[1, 2, 3]", None, "invalid message"),
        (b'{"type":"Log","event":"e","id":9}', 9, "invalid message"),  # notification with id
        # -1 answers a line whose id could not be read: it is never a request's id.
        (b'{"type":"SucceedTask","id":-1}', None, "invalid message"),
        (b'{"type":"GetVariable","id":-5,"key":"k"}', None, "invalid message"),
        (b'{"type":"SucceedTask","id":-1,', None, "invalid message"),
        (b'{"type":"SucceedTask","id":-1,"x":', None, "invalid message"),
        (b'{"type":"SucceedTask", "id" : -1 ,"end_date":', None, "invalid message"),
        # Not JSON before the id is reached: the id is read by a scan of the bytes.
        (b'{"type":"SucceedTask",,"id":-1}', None, "not JSON"),
        (b'{"type":"SucceedTask",,"id":2.5}', None, "not JSON"),
        (b'{"type":"SucceedTask",,"id":2e3}', None, "not JSON"),
        (b'{"type":"SucceedTask",,"id":1234567890123456789012}', None, "not JSON"),
        (b'{"type":"SucceedTask",,"id": 12 }', 12, "not JSON"),
    ],
    ids=[
        "cut-json",
        "not-json",
        "unknown-type",
        "missing-field",
        "unknown-field",
        "request-without-id",
        "string-id",
        "bool-id",
        "not-an-object",
        "notification-with-id",
        "id-minus-1",
        "negative-id",
        "id-minus-1-then-cut",
        "id-minus-1-then-not-json",
        "id-minus-1-spaced",
        "not-json-id-minus-1",
        "not-json-float-id",
        "not-json-exponent-id",
        "not-json-id-too-long",
        "not-json-id",
    ],
)
def test_invalid_line_becomes_bad_line_with_the_id_when_readable(line, expected_id, reason_part):
    events = decode_all(line + b"\n" + encode(m.Hello(protocol_version=1)))
    assert len(events) == 2
    bad, after = events
    assert isinstance(bad, BadLine)
    assert bad.id == expected_id
    assert reason_part in bad.reason
    assert bad.size == len(line)
    assert after == m.Hello(protocol_version=1)


@pytest.mark.parametrize(
    "line",
    [
        # Not JSON (cut off), from an encoder that writes the id last.
        b'{"type":"SetXCom","key":"k","value":{"id":5},"id":9,',
        # Over-long, the request's own id beyond what was kept.
        b'{"type":"SetXCom","key":"k","value":{"id":5,"pad":"' + b"p" * 200 + b'"},"id":9}',
    ],
    ids=["not-json", "over-long"],
)
def test_an_id_nested_inside_a_value_is_never_taken_for_the_request_id(line):
    # Answering id 5 would hand an error to another request of the task.
    (bad,) = decode_all(line + b"\n", max_line=100)
    assert isinstance(bad, BadLine)
    assert bad.id in (9, None)


def test_the_id_of_an_over_long_line_is_never_read_from_the_next_line():
    bad, after = decode_all(b'{"type":"SucceedTask","id":\n5\n', max_line=10)
    assert isinstance(bad, BadLine)
    assert bad.id is None
    assert isinstance(after, BadLine)


def test_request_id_zero_is_a_request_id():
    assert decode_all(b'{"type":"SucceedTask","id":0}\n') == [m.SucceedTask(id=0)]


def test_the_task_side_takes_id_minus_1_only_in_an_error_response():
    decoder = from_supervisor_decoder()
    error = m.ErrorResponse(id=m.UNREADABLE_ID, error=m.ErrorCode.PROTOCOL_ERROR)
    decoder.feed(encode(error))
    decoder.feed(b'{"type":"ErrorResponse","id":-2,"error":"PROTOCOL_ERROR"}\n')
    decoder.feed(b'{"type":"OKResponse","id":-1}\n')
    first, *refused = drain(decoder)
    assert first == error
    assert [type(event) for event in refused] == [BadLine, BadLine]
    assert all(event.id is None for event in refused)


def test_missing_field_reason_names_the_field():
    (bad,) = decode_all(b'{"type":"GetConnection","id":1}\n')
    assert isinstance(bad, BadLine)
    assert "conn_id" in bad.reason


def test_cut_off_final_line_at_end_of_stream_is_a_bad_line_not_a_message():
    whole = encode(m.SucceedTask(id=11))
    events = decode_all(encode(m.Hello(protocol_version=1)) + whole[:-1], eof=True)
    assert events[0] == m.Hello(protocol_version=1)
    assert len(events) == 2
    assert isinstance(events[1], BadLine)
    assert events[1].id == 11  # even a complete-looking JSON object is not acted upon
    assert "end of stream" in events[1].reason


def test_end_of_stream_with_nothing_pending_yields_nothing():
    assert decode_all(encode(m.Hello(protocol_version=1)), eof=True) == [
        m.Hello(protocol_version=1)
    ]


# --- encoder ---------------------------------------------------------------------------

awkward_text = st.text(
    alphabet=st.sampled_from(["\n", "\r", "\u2028", "\u2029", "\x00", '"', "\\", "a", "é", "😀"]),
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(event=awkward_text, key=awkward_text, value=awkward_text)
def test_encode_never_emits_a_raw_newline_inside_a_line(event, key, value):
    for msg in (
        m.Log(event=event, fields={key: value}),
        m.PutVariable(id=1, key=key, value=value),
        m.SetXCom(id=2, key=key, value=msgspec.Raw(msgspec.json.encode([value, {key: value}]))),
    ):
        line = encode(msg)
        assert line.endswith(b"\n")
        assert b"\n" not in line[:-1]
        assert b"\r" not in line
        assert decode_all(line) == [msg]


def test_an_encoded_value_with_line_breaks_still_makes_one_line():
    pretty = b'{\r\n  "rows": [\n    1,\n    2\n  ]\n}'
    line = encode(m.SetXCom(id=1, key="k", value=msgspec.Raw(pretty)))
    assert line.count(b"\n") == 1
    assert b"\r" not in line
    (result,) = decode_all(line)
    assert msgspec.json.decode(result.value) == {"rows": [1, 2]}


def test_encoded_line_is_utf8_json_object_with_type_first_field():
    line = encode(m.GetVariable(id=3, key="k"))
    obj = json.loads(line.decode("utf-8"))
    assert obj == {"type": "GetVariable", "id": 3, "key": "k"}
    assert line.startswith(b'{"type":"GetVariable"')


@pytest.mark.parametrize("msg", TASK_SAMPLES, ids=lambda msg: type(msg).__name__)
def test_every_task_message_round_trips(msg):
    assert decode_all(encode(msg)) == [msg]


@pytest.mark.parametrize("msg", SUPERVISOR_SAMPLES, ids=lambda msg: type(msg).__name__)
def test_every_supervisor_message_round_trips(msg):
    decoder = from_supervisor_decoder()
    decoder.feed(encode(msg))
    assert drain(decoder) == [msg]


def test_a_task_message_is_not_accepted_by_the_task_side_decoder():
    decoder = from_supervisor_decoder()
    decoder.feed(encode(m.GetVariable(id=1, key="k")))
    (event,) = drain(decoder)
    assert isinstance(event, BadLine)
    assert event.id == 1


def test_bad_line_is_a_value_not_an_exception():
    decoder = from_task_decoder()
    decoder.feed(b"\xff\xfe garbage\n")
    event = decoder.next_event()
    assert isinstance(event, BadLine)
    assert isinstance(event, msgspec.Struct)


# --- only SetXCom may be longer than MAX_SHORT_LINE (decoded JSON grows ~20x) ------------


def test_a_log_line_longer_than_the_short_limit_is_refused_before_it_is_decoded():
    nested = [[]] * (MAX_SHORT_LINE // 3 + 1)  # as objects: tens of times the line's size
    line = encode(m.Log(event="e", fields={"blob": nested}))
    (event,) = decode_all(line)
    assert isinstance(event, BadLine)
    assert event.reason.startswith(f"a Log line may be at most {MAX_SHORT_LINE} bytes")
    assert "only SetXCom may be longer" in event.reason
    assert event.size == len(line) - 1


def test_a_request_longer_than_the_short_limit_still_gets_its_error_response_id():
    line = encode(m.MaskSecret(id=42, value=["x" * MAX_SHORT_LINE]))
    (event,) = decode_all(line)
    assert isinstance(event, BadLine)
    assert event.id == 42


def test_a_set_xcom_up_to_the_line_limit_is_decoded_with_its_value_still_encoded():
    value = msgspec.json.encode([[]] * (MAX_SHORT_LINE // 3 + 1))
    (event,) = decode_all(encode(m.SetXCom(id=1, key="big", value=msgspec.Raw(value))))
    assert isinstance(event, m.SetXCom)
    assert bytes(event.value) == value


def test_the_task_side_decoder_takes_long_lines_of_any_type():
    result = m.XComResult(id=1, key="k", value=msgspec.Raw(b'"' + b"x" * MAX_SHORT_LINE + b'"'))
    decoder = from_supervisor_decoder()
    decoder.feed(encode(result))
    assert decoder.next_event() == result
