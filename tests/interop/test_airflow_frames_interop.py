"""comms.airflow_frames speaks Airflow's own supervisor <-> runner frames, both ways.

Each test runs one script in the Airflow venv (no api-server needed, ~2 s):

* Airflow to us: the script makes frames with Airflow's classes: response frames as its
  supervisor builds them, and request frames written by its runner's ``CommsDecoder.send`` on
  a socketpair. Our decoder must read the ids and bodies Airflow's own decoder reads, and our
  encoder must give back the very same bytes.
* Us to Airflow: frames our encoder made are read by Airflow's supervisor-side reader
  (``length_prefixed_frame_reader``) and validated as ``ToSupervisor`` bodies, and answered
  into its runner's ``CommsDecoder.send``, which must return the typed results or raise.
"""

from __future__ import annotations

import base64
import datetime as dt
import json

import msgspec

from comms.airflow_frames import (
    FrameDecoder,
    RequestFrame,
    ResponseFrame,
    encode_request,
    encode_response,
)

WHEN = dt.datetime(2025, 6, 1, 12, 30, 15, 123456, tzinfo=dt.UTC)
CARRIER = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}

# Both scripts print one JSON document as their last stdout line.
AIRFLOW_ENCODES = """
import base64, datetime, json, socket
import msgspec
from airflow.sdk.exceptions import AirflowRuntimeError, ErrorType
from airflow.sdk.execution_time.comms import (
    CommsDecoder, ErrorResponse, GetVariable, SucceedTask, VariableResult,
    _RequestFrame, _ResponseFrame,
)

when = datetime.datetime(2025, 6, 1, 12, 30, 15, 123456, tzinfo=datetime.timezone.utc)
not_found = ErrorResponse(error=ErrorType.VARIABLE_NOT_FOUND, detail={"key": "missing"})
responses = [
    _ResponseFrame(id=0, body=VariableResult(key="greeting", value="hello").model_dump()),
    _ResponseFrame(id=1, error=not_found.model_dump()),
    _ResponseFrame(id=2),
]
response_stream = b"".join(bytes(frame.as_bytes()) for frame in responses)

# The runner's side: its requests, as CommsDecoder.send writes them, each answered above.
runner_end, supervisor_end = socket.socketpair()
supervisor_end.sendall(response_stream)
comms = CommsDecoder(socket=runner_end)
comms.send(GetVariable(key="greeting"))
try:
    comms.send(GetVariable(key="missing"))
except AirflowRuntimeError:
    pass
comms.send(SucceedTask(end_date=when, task_outlets=[], outlet_events=[]))
runner_end.close()
request_stream = b""
while chunk := supervisor_end.recv(65536):
    request_stream += chunk

def read_with_airflow(stream, frame_type):
    decoder = msgspec.msgpack.Decoder(frame_type)
    frames = []
    while stream:
        size = int.from_bytes(stream[:4], "big")
        frames.append(decoder.decode(stream[4 : 4 + size]))
        stream = stream[4 + size :]
    return msgspec.to_builtins(frames)

print(json.dumps({
    "requests": base64.b64encode(request_stream).decode(),
    "requests_read": read_with_airflow(request_stream, _RequestFrame),
    "responses": base64.b64encode(response_stream).decode(),
    "responses_read": read_with_airflow(response_stream, _ResponseFrame),
}))
"""

AIRFLOW_DECODES = """
import base64, json, socket, sys
from pydantic import TypeAdapter
from airflow.sdk.exceptions import AirflowRuntimeError
from airflow.sdk.execution_time.comms import CommsDecoder, GetVariable, ToSupervisor
from airflow.sdk.execution_time.supervisor import length_prefixed_frame_reader

streams = json.load(sys.stdin)

# The supervisor's side: Airflow's own frame reader on a socket holding our request frames.
frames = []
def collect():
    while True:
        frames.append((yield))
collector = collect()
reader_end, writer_end = socket.socketpair()
writer_end.sendall(base64.b64decode(streams["requests"]))
writer_end.close()
read, _ = length_prefixed_frame_reader(collector, on_close=lambda sock: None)
while read(reader_end):
    pass
to_supervisor = TypeAdapter(ToSupervisor)
requests = []
for frame in frames:
    body = to_supervisor.validate_python(frame.body)
    requests.append(
        [frame.id, type(body).__name__, body.model_dump(mode="json"), frame.context_carrier]
    )

# The runner's side: CommsDecoder.send reads our response frames as the answers.
runner_end, supervisor_end = socket.socketpair()
supervisor_end.sendall(base64.b64decode(streams["responses"]))
comms = CommsDecoder(socket=runner_end)
responses = []
for key in ("greeting", "missing", "empty"):
    try:
        answer = comms.send(GetVariable(key=key))
    except AirflowRuntimeError as exc:
        responses.append(["AirflowRuntimeError", exc.error.model_dump(mode="json")])
    else:
        responses.append(answer and [type(answer).__name__, answer.model_dump(mode="json")])

print(json.dumps({"requests": requests, "responses": responses}))
"""


def read_all(frame_type, stream: bytes) -> list:
    decoder = FrameDecoder(frame_type)
    decoder.feed(stream)
    decoder.feed(b"")
    frames = []
    while (frame := decoder.next_frame()) is not None:
        frames.append(frame)
    return frames


def test_frames_airflow_makes_are_read_into_the_same_ids_and_bodies(run_in_airflow):
    made = run_in_airflow(AIRFLOW_ENCODES)

    request_stream = base64.b64decode(made["requests"])
    requests = read_all(RequestFrame, request_stream)
    assert all(isinstance(frame, RequestFrame) for frame in requests)
    assert msgspec.to_builtins(requests) == made["requests_read"]
    assert [(f.id, f.body["type"]) for f in requests] == [
        (0, "GetVariable"),
        (1, "GetVariable"),
        (2, "SucceedTask"),
    ]
    assert requests[2].body["end_date"] == WHEN  # a msgpack timestamp, read as aware UTC
    again = b"".join(
        encode_request(f.id, f.body, context_carrier=f.context_carrier) for f in requests
    )
    assert again == request_stream

    response_stream = base64.b64decode(made["responses"])
    responses = read_all(ResponseFrame, response_stream)
    assert all(isinstance(frame, ResponseFrame) for frame in responses)
    assert msgspec.to_builtins(responses) == made["responses_read"]
    assert responses[0].body == {"key": "greeting", "value": "hello", "type": "VariableResult"}
    assert responses[1].error == {
        "error": "VARIABLE_NOT_FOUND",
        "detail": {"key": "missing"},
        "type": "ErrorResponse",
    }
    assert responses[2] == ResponseFrame(2)
    again = b"".join(encode_response(f.id, f.body, error=f.error) for f in responses)
    assert again == response_stream


def test_frames_we_make_are_read_by_airflows_supervisor_and_runner(run_in_airflow):
    requests = encode_request(0, {"type": "GetVariable", "key": "greeting"})
    requests += encode_request(
        1,
        {"type": "SucceedTask", "end_date": WHEN, "task_outlets": [], "outlet_events": []},
        context_carrier=CARRIER,
    )
    responses = encode_response(0, {"type": "VariableResult", "key": "greeting", "value": "hi"})
    responses += encode_response(
        1, error={"type": "ErrorResponse", "error": "VARIABLE_NOT_FOUND", "detail": {"key": "x"}}
    )
    responses += encode_response(2)
    streams = {
        "requests": base64.b64encode(requests).decode(),
        "responses": base64.b64encode(responses).decode(),
    }

    read = run_in_airflow(AIRFLOW_DECODES, json.dumps(streams))

    (get, succeed) = read["requests"]
    assert get == [0, "GetVariable", {"key": "greeting", "type": "GetVariable"}, None]
    assert succeed[:2] == [1, "SucceedTask"]
    assert dt.datetime.fromisoformat(succeed[2]["end_date"]) == WHEN
    assert succeed[3] == CARRIER
    assert read["responses"] == [
        ["VariableResult", {"key": "greeting", "value": "hi", "type": "VariableResult"}],
        [
            "AirflowRuntimeError",
            {"error": "VARIABLE_NOT_FOUND", "detail": {"key": "x"}, "type": "ErrorResponse"},
        ],
        None,
    ]
