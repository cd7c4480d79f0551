"""comms.airflow_frames: the sans-IO codec of Airflow's supervisor <-> runner frames.

Pure: no Airflow here (tests/interop/test_airflow_frames_interop.py checks the bytes against
Airflow's own classes).
"""

from __future__ import annotations

import datetime as dt

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from comms.airflow_frames import (
    DEFAULT_MAX_FRAME,
    MAX_ENCODABLE_FRAME,
    BadFrame,
    FrameDecoder,
    RequestFrame,
    ResponseFrame,
    encode_request,
    encode_response,
)

GET_VARIABLE = {"type": "GetVariable", "key": "greeting"}
VARIABLE_RESULT = {"type": "VariableResult", "key": "greeting", "value": "hello"}
NOT_FOUND = {"type": "ErrorResponse", "error": "VARIABLE_NOT_FOUND", "detail": {"key": "x"}}
CARRIER = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}


def drain(decoder: FrameDecoder) -> list:
    events = []
    while (event := decoder.next_frame()) is not None:
        events.append(event)
    return events


def framed(payload: bytes, size: int | None = None) -> bytes:
    """A frame with any payload, its prefix announcing ``size`` (default: the payload's)."""
    return (len(payload) if size is None else size).to_bytes(4, "big") + payload


def decode_all(frame_type, data: bytes, **kwargs) -> list:
    decoder = FrameDecoder(frame_type, **kwargs)
    decoder.feed(data)
    decoder.feed(b"")
    return drain(decoder)


# --- layout and round trips --------------------------------------------------------------


def test_a_frame_is_a_big_endian_length_then_a_three_element_msgpack_array():
    data = encode_request(5, GET_VARIABLE)
    assert int.from_bytes(data[:4], "big") == len(data) - 4
    assert msgspec.msgpack.decode(data[4:]) == [5, GET_VARIABLE, None]
    assert msgspec.msgpack.decode(encode_response(5)[4:]) == [5, None, None]
    assert msgspec.msgpack.decode(encode_response(5, error=NOT_FOUND)[4:]) == [5, None, NOT_FOUND]


def test_requests_round_trip_with_and_without_a_trace_carrier():
    data = encode_request(0, GET_VARIABLE) + encode_request(
        1, VARIABLE_RESULT, context_carrier=CARRIER
    )
    assert decode_all(RequestFrame, data) == [
        RequestFrame(0, GET_VARIABLE),
        RequestFrame(1, VARIABLE_RESULT, CARRIER),
    ]


def test_responses_round_trip_with_a_body_an_error_or_neither():
    data = encode_response(3, VARIABLE_RESULT) + encode_response(4, error=NOT_FOUND)
    data += encode_response(5)
    assert decode_all(ResponseFrame, data) == [
        ResponseFrame(3, VARIABLE_RESULT),
        ResponseFrame(4, error=NOT_FOUND),
        ResponseFrame(5),
    ]


def test_aware_datetimes_travel_as_msgpack_timestamps_and_come_back_in_utc():
    start = dt.datetime(2025, 6, 1, 12, 30, 15, 123456, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    data = encode_response(0, {"type": "StartupDetails", "start_date": start})
    assert b"\xc7\x0c\xff" in data or b"\xd7\xff" in data  # ext type -1 (timestamp)
    (frame,) = decode_all(ResponseFrame, data)
    assert frame.body["start_date"] == start
    assert frame.body["start_date"].tzinfo == dt.UTC


def test_short_frames_and_extra_trailing_elements_decode_as_airflow_reads_them():
    data = framed(msgspec.msgpack.encode([2, GET_VARIABLE]))
    data += framed(msgspec.msgpack.encode([3, GET_VARIABLE, None, "a later field"]))
    assert decode_all(RequestFrame, data) == [
        RequestFrame(2, GET_VARIABLE),
        RequestFrame(3, GET_VARIABLE),
    ]
    assert decode_all(ResponseFrame, framed(msgspec.msgpack.encode([4]))) == [ResponseFrame(4)]


def test_the_encoder_refuses_a_body_with_an_error_and_ids_that_are_not_ids():
    with pytest.raises(ValueError, match="not both"):
        encode_response(1, VARIABLE_RESULT, error=NOT_FOUND)
    for bad in (-1, 2**64, True):
        with pytest.raises(ValueError, match="request id"):
            encode_request(bad, GET_VARIABLE)
    assert decode_all(RequestFrame, encode_request(2**64 - 1, GET_VARIABLE))[0].id == 2**64 - 1


# --- chunking --------------------------------------------------------------------------------

bodies = st.dictionaries(
    st.text(max_size=8),
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.text(max_size=20)
    | st.binary(max_size=20),
    max_size=4,
).map(lambda extra: {**extra, "type": "Anything"})
requests = st.builds(
    RequestFrame,
    st.integers(0, 2**64 - 1),
    bodies | st.none(),
    st.none() | st.just(CARRIER),
)


@settings(max_examples=200)
@given(frames=st.lists(requests, max_size=6), cuts=st.lists(st.integers(0, 4000), max_size=12))
def test_any_chunking_yields_the_same_frames(frames, cuts):
    data = b"".join(encode_request(f.id, f.body, context_carrier=f.context_carrier) for f in frames)
    decoder = FrameDecoder(RequestFrame)
    got = []
    start = 0
    for cut in sorted({min(c, len(data)) for c in cuts} | {len(data)}):
        if cut > start:  # an empty chunk would mean end of stream
            decoder.feed(data[start:cut])
            start = cut
        got += drain(decoder)
    decoder.feed(b"")
    got += drain(decoder)
    assert got == frames
    assert decoder.buffered == 0


@settings(max_examples=300)
@given(data=st.binary(max_size=300), chunk=st.integers(1, 50))
def test_any_bytes_become_frames_or_bad_frames_never_an_exception(data, chunk):
    decoder = FrameDecoder(RequestFrame, max_frame=64)
    events = []
    for i in range(0, len(data), chunk):
        decoder.feed(data[i : i + chunk])
        events += drain(decoder)
    decoder.feed(b"")
    events += drain(decoder)
    assert all(isinstance(e, RequestFrame | BadFrame) for e in events)
    assert decoder.buffered == 0
    assert decoder.next_frame() is None


# --- bad frames ----------------------------------------------------------------------------


def test_an_over_size_frame_is_reported_once_with_its_id_and_never_buffered():
    decoder = FrameDecoder(RequestFrame, max_frame=1000)
    big = encode_request(42, {"type": "SetXCom", "value": "x" * 5000})
    decoder.feed(big[:20])
    assert decoder.next_frame() == BadFrame(
        "frame longer than the limit of 1000 bytes", len(big) - 4, 42
    )
    for i in range(20, len(big), 512):
        decoder.feed(big[i : i + 512])
        assert decoder.next_frame() is None
        assert decoder.buffered == 0
    decoder.feed(encode_request(43, GET_VARIABLE))
    assert drain(decoder) == [RequestFrame(43, GET_VARIABLE)]


def test_an_over_size_frame_waits_for_the_bytes_holding_its_id():
    decoder = FrameDecoder(RequestFrame, max_frame=10)
    decoder.feed(framed(b"\xdc\x00\x03\xcf", size=13))  # array16, then a uint64 id: cut
    assert decoder.next_frame() is None
    decoder.feed((2**40).to_bytes(8, "big") + b"\xc0")
    assert decoder.next_frame() == BadFrame("frame longer than the limit of 10 bytes", 13, 2**40)
    assert decoder.next_frame() is None
    assert decoder.buffered == 0


def test_the_default_limit_is_64_mib_and_a_limit_must_fit_the_prefix():
    assert DEFAULT_MAX_FRAME == 64 * 1024 * 1024
    assert FrameDecoder(RequestFrame).max_frame == DEFAULT_MAX_FRAME
    for bad in (0, MAX_ENCODABLE_FRAME + 1):
        with pytest.raises(ValueError, match="max_frame"):
            FrameDecoder(RequestFrame, max_frame=bad)
    (event,) = decode_all(RequestFrame, framed(b"\x93\x07", size=DEFAULT_MAX_FRAME + 1))
    assert event == BadFrame(
        f"frame longer than the limit of {DEFAULT_MAX_FRAME} bytes", DEFAULT_MAX_FRAME + 1, 7
    )


@pytest.mark.parametrize(
    ("payload", "reason", "frame_id"),
    [
        (b"\xc1", "not MessagePack", None),  # 0xc1 is never used
        (b"", "not MessagePack", None),
        (b"\x93\x05\x81\xa4type", "not MessagePack", 5),  # truncated inside its body
        (msgspec.msgpack.encode([6, GET_VARIABLE]) + b"\x00", "not MessagePack", 6),  # trailing
        (msgspec.msgpack.encode({"id": 1, "body": None}), "invalid frame", None),  # a map
        (msgspec.msgpack.encode([7, "not a map"]), "invalid frame", 7),
        (msgspec.msgpack.encode([8, {1: "key not a string"}]), "invalid frame", 8),
        (msgspec.msgpack.encode([-1, GET_VARIABLE]), "invalid frame", None),
        (msgspec.msgpack.encode(["9", GET_VARIABLE]), "invalid frame", None),
        (msgspec.msgpack.encode([]), "invalid frame", None),
        (b"\xd1\x00\x0a", "invalid frame", None),  # an int, not an array
        (b"\x92\xd0\x0b\xc0", "", 11),  # positive id as a signed int: a valid frame
    ],
)
def test_undecodable_frames_become_bad_frames_with_the_id_when_readable(payload, reason, frame_id):
    events = decode_all(RequestFrame, framed(payload) + encode_request(99, GET_VARIABLE))
    assert events[-1] == RequestFrame(99, GET_VARIABLE)  # the next frame is read as usual
    (event,) = events[:-1]
    if not reason:
        assert event == RequestFrame(frame_id, None)
        return
    assert isinstance(event, BadFrame)
    assert event.reason.startswith(reason)
    assert (event.size, event.id) == (len(payload), frame_id)


def test_a_frame_nested_too_deep_for_the_interpreter_is_a_bad_frame():
    payload = b"\x92\x0c\x81\xa1a" + b"\x91" * 200_000 + b"\xc0"
    (event,) = decode_all(RequestFrame, framed(payload))
    assert isinstance(event, BadFrame)
    assert event.id == 12


def test_a_frame_cut_off_at_end_of_stream_is_reported_with_its_id():
    data = encode_request(17, GET_VARIABLE)
    assert decode_all(RequestFrame, data[:-3]) == [
        BadFrame("frame cut off at end of stream", len(data) - 4, 17)
    ]
    assert decode_all(RequestFrame, data[:2]) == [BadFrame("frame cut off at end of stream", 2)]
    assert decode_all(RequestFrame, b"") == []


def test_a_cut_off_frame_is_reported_only_at_end_of_stream():
    decoder = FrameDecoder(ResponseFrame)
    data = encode_response(1, VARIABLE_RESULT)
    decoder.feed(data[:-1])
    assert decoder.next_frame() is None
    assert decoder.buffered == len(data) - 1
    decoder.feed(data[-1:])
    assert decoder.next_frame() == ResponseFrame(1, VARIABLE_RESULT)
