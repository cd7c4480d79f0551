"""The SDK over a real channel: os.pipe pairs with a scripted supervisor peer on the other end.

The answer a call will need is written into the pipe before the call (request ids are
predictable: 1, 2, ...), so single-threaded tests need no second thread and no sleeps. Only
one answer at a time: an answer to a request not yet sent is ignored, as it must be.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import threading
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sdk_peer import Peer, raw, startup_details

import sdk
from comms.errors import SupervisorProtocolError
from comms.framing import encode
from comms.messages import (
    PROTOCOL_VERSION,
    Cancel,
    ConnectionResult,
    DeleteVariable,
    ErrorCode,
    ErrorResponse,
    GetConnection,
    GetVariable,
    GetXCom,
    Hello,
    Log,
    MaskSecret,
    Metric,
    OKResponse,
    PushedConnection,
    PushedValues,
    PutVariable,
    SetXCom,
    VariableResult,
    XComResult,
)
from sdk import _session
from sdk._channel import Channel
from sdk._log import LogHandler


@pytest.fixture
def peer() -> Iterator[Peer]:
    peer = Peer()
    yield peer
    peer.close()
    for fd in (peer.task_reads, peer.task_writes):
        with contextlib.suppress(OSError):
            os.close(fd)


@pytest.fixture
def channel(peer: Peer) -> Iterator[Channel]:
    """A started channel installed as the SDK's session."""
    channel = Channel(peer.task_reads, peer.task_writes)
    peer.send(startup_details(conf={"n": 1}))
    channel.start()
    assert isinstance(peer.receive(), Hello)
    with _session.installed(channel):
        yield channel


def test_hello_is_the_first_line_and_startup_details_become_the_context(peer: Peer) -> None:
    channel = Channel(peer.task_reads, peer.task_writes)
    peer.send(startup_details("pkg.mod:main", conf={"limit": 5}))

    startup = channel.start()

    hello = peer.receive()
    assert isinstance(hello, Hello)
    assert hello.protocol_version == PROTOCOL_VERSION
    assert hello.sdk == f"taskvisor-python/{sdk._version.__version__}"
    assert startup.entrypoint == "pkg.mod:main"
    ctx = channel.context
    assert (ctx.dag_id, ctx.task_id, ctx.run_id, ctx.try_number, ctx.map_index) == (
        "dag",
        "task",
        "run",
        2,
        -1,
    )
    assert ctx.params == {"limit": 5}
    assert ctx.max_tries == 3
    assert ctx.logical_date == dt.datetime(2026, 1, 2, tzinfo=dt.UTC)
    assert ctx.start_date == dt.datetime(2026, 1, 2, 3, 4, tzinfo=dt.UTC)


def test_get_context_returns_the_startup_context(channel: Channel) -> None:
    assert sdk.get_context() is channel.context
    assert sdk.get_context().params == {"n": 1}


def test_params_are_empty_when_the_dag_run_has_no_conf(peer: Peer) -> None:
    channel = Channel(peer.task_reads, peer.task_writes)
    peer.send(startup_details())
    channel.start()
    assert channel.context.params == {}


@pytest.mark.parametrize(
    "first_line",
    [
        OKResponse(id=1),
        Cancel(reason="shutdown"),
    ],
)
def test_a_first_line_other_than_startup_details_is_a_supervisor_protocol_error(
    peer: Peer, first_line: msgspec.Struct
) -> None:
    peer.send(first_line)
    with pytest.raises(SupervisorProtocolError, match="must be StartupDetails"):
        Channel(peer.task_reads, peer.task_writes).start()


def test_an_invalid_first_line_is_a_supervisor_protocol_error(peer: Peer) -> None:
    peer.send_raw(b'{"type": "Nope"}\n')
    with pytest.raises(SupervisorProtocolError, match="first line"):
        Channel(peer.task_reads, peer.task_writes).start()


def test_another_protocol_version_is_refused(peer: Peer) -> None:
    startup = msgspec.structs.replace(startup_details(), protocol_version=PROTOCOL_VERSION + 1)
    peer.send(startup)
    with pytest.raises(SupervisorProtocolError, match="protocol version"):
        Channel(peer.task_reads, peer.task_writes).start()


def test_end_of_stream_before_startup_details_raises_channel_closed(peer: Peer) -> None:
    os.close(peer.to_task)
    with pytest.raises(sdk.ChannelClosedError, match="before StartupDetails"):
        Channel(peer.task_reads, peer.task_writes).start()


# --- each API maps to its request and its result ----------------------------------------


def test_variable_get_sends_get_variable_and_returns_the_value(
    peer: Peer, channel: Channel
) -> None:
    peer.send(VariableResult(id=1, key="k", value="v"))
    assert sdk.Variable.get("k") == "v"
    assert peer.receive() == GetVariable(id=1, key="k")


def test_variable_get_returns_default_when_not_found(peer: Peer, channel: Channel) -> None:
    peer.send(ErrorResponse(id=1, error=ErrorCode.VARIABLE_NOT_FOUND, detail={"key": "k"}))
    assert sdk.Variable.get("k", default=None) is None


def test_variable_get_without_default_raises_variable_not_found(
    peer: Peer, channel: Channel
) -> None:
    peer.send(ErrorResponse(id=1, error=ErrorCode.VARIABLE_NOT_FOUND, detail={"key": "k"}))
    with pytest.raises(sdk.VariableNotFound) as caught:
        sdk.Variable.get("k")
    assert caught.value.code is ErrorCode.VARIABLE_NOT_FOUND
    assert caught.value.detail == {"key": "k"}


def test_variable_with_a_null_value_counts_as_missing(peer: Peer, channel: Channel) -> None:
    peer.send(VariableResult(id=1, key="k", value=None))
    assert sdk.Variable.get("k", "fallback") == "fallback"
    peer.send(VariableResult(id=2, key="k", value=None))
    with pytest.raises(sdk.VariableNotFound):
        sdk.Variable.get("k")


def test_variable_set_and_delete_send_their_requests(peer: Peer, channel: Channel) -> None:
    peer.send(OKResponse(id=1))
    sdk.Variable.set("k", "v", description="d")
    peer.send(OKResponse(id=2))
    sdk.Variable.delete("k")
    assert peer.receive() == PutVariable(id=1, key="k", value="v", description="d")
    assert peer.receive() == DeleteVariable(id=2, key="k")


def test_variable_set_refuses_a_non_string_value_before_sending(channel: Channel) -> None:
    with pytest.raises(TypeError, match="needs a str value, got int"):
        sdk.Variable.set("k", 5)  # type: ignore[arg-type]


def test_connection_get_returns_every_field_and_decodes_extra(peer: Peer, channel: Channel) -> None:
    peer.send(
        ConnectionResult(
            id=1,
            conn_id="db",
            conn_type="postgres",
            host="h",
            port=5432,
            login="u",
            password="secret",
            schema="s",
            extra='{"sslmode": "require"}',
        )
    )
    conn = sdk.Connection.get("db")
    assert peer.receive() == GetConnection(id=1, conn_id="db")
    assert (conn.conn_id, conn.conn_type, conn.host, conn.port) == ("db", "postgres", "h", 5432)
    assert (conn.login, conn.password, conn.schema) == ("u", "secret", "s")
    assert conn.extra == '{"sslmode": "require"}'
    assert conn.extra_dejson == {"sslmode": "require"}
    assert "secret" not in repr(conn)


# --- values pushed with the activity are answered in the task -----------------------------

PUSHED = PushedValues(
    variables={"region": "eu-west-1"},
    connections=[PushedConnection(conn_id="db", conn_type="postgres", password="pw-1234")],
)


@pytest.fixture
def pushed_channel(peer: Peer) -> Iterator[Channel]:
    channel = Channel(peer.task_reads, peer.task_writes)
    peer.send(startup_details(pushed=PUSHED))
    channel.start()
    assert isinstance(peer.receive(), Hello)
    with _session.installed(channel):
        yield channel


def test_pushed_values_are_answered_without_asking_the_supervisor(
    peer: Peer, pushed_channel: Channel
) -> None:
    assert sdk.Variable.get("region") == "eu-west-1"
    conn = sdk.Connection.get("db")
    assert (conn.conn_type, conn.password) == ("postgres", "pw-1234")

    peer.send(VariableResult(id=1, key="other", value="v"))
    assert sdk.Variable.get("other") == "v"
    # The first request the supervisor sees is the one for a value that was not pushed.
    assert peer.receive() == GetVariable(id=1, key="other")


def test_a_pushed_variable_follows_the_writes_the_server_accepted(
    peer: Peer, pushed_channel: Channel
) -> None:
    peer.send(OKResponse(id=1))
    sdk.Variable.set("region", "us-east-1")
    assert sdk.Variable.get("region") == "us-east-1"

    peer.send(ErrorResponse(id=2, error=ErrorCode.PERMISSION_DENIED, detail={}))
    with pytest.raises(sdk.RequestFailed):
        sdk.Variable.set("region", "refused")
    assert sdk.Variable.get("region") == "us-east-1"

    peer.send(OKResponse(id=3))
    sdk.Variable.delete("region")
    peer.send(ErrorResponse(id=4, error=ErrorCode.VARIABLE_NOT_FOUND, detail={}))
    assert sdk.Variable.get("region", None) is None
    assert [peer.receive() for _ in range(4)] == [
        PutVariable(id=1, key="region", value="us-east-1"),
        PutVariable(id=2, key="region", value="refused"),
        DeleteVariable(id=3, key="region"),
        GetVariable(id=4, key="region"),
    ]


def test_connection_extra_dejson_is_empty_without_extra_and_clear_when_invalid() -> None:
    assert sdk.Connection(conn_id="c", conn_type="t").extra_dejson == {}
    with pytest.raises(ValueError, match="extra of connection 'c' is not JSON"):
        _ = sdk.Connection(conn_id="c", conn_type="t", extra="{nope").extra_dejson


def test_xcom_push_sends_set_xcom(peer: Peer, channel: Channel) -> None:
    peer.send(OKResponse(id=1))
    sdk.XCom.push("rows", [1, {"a": None}])
    assert peer.receive() == SetXCom(id=1, key="rows", value=raw([1, {"a": None}]))


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (dt.date(2026, 1, 1), r"object of type datetime\.date$"),
        ({"a": [1, {2}]}, r"object of type set at \['a'\]\[1\]"),
        ({1: "x"}, "dict key 1 of type int is not a str"),
        (float("nan"), "float nan is not valid JSON"),
    ],
)
def test_xcom_push_refuses_values_that_are_not_plain_json(
    channel: Channel, value: Any, message: str
) -> None:
    with pytest.raises(TypeError, match=message):
        sdk.XCom.push("k", value)


def test_xcom_pull_sends_every_selector_and_returns_the_value(peer: Peer, channel: Channel) -> None:
    peer.send(XComResult(id=1, key="k", value=raw({"x": 1})))
    value = sdk.XCom.pull("up", "k", dag_id="d", run_id="r", map_index=3)
    assert value == {"x": 1}
    assert peer.receive() == GetXCom(
        id=1, task_id="up", key="k", dag_id="d", run_id="r", map_index=3
    )


def test_xcom_pull_defaults_to_return_value_of_this_run(peer: Peer, channel: Channel) -> None:
    peer.send(XComResult(id=1, key="return_value", value=raw(None)))
    assert sdk.XCom.pull(task_id="up") is None
    assert peer.receive() == GetXCom(id=1, task_id="up", key="return_value")


def test_xcom_pull_missing_raises_or_returns_default(peer: Peer, channel: Channel) -> None:
    peer.send(ErrorResponse(id=1, error=ErrorCode.XCOM_NOT_FOUND))
    with pytest.raises(sdk.XComNotFound):
        sdk.XCom.pull(task_id="up")
    peer.send(ErrorResponse(id=2, error=ErrorCode.XCOM_NOT_FOUND))
    assert sdk.XCom.pull(task_id="up", default=0) == 0


def test_mask_secret_waits_for_the_supervisors_confirmation(peer: Peer, channel: Channel) -> None:
    peer.send(OKResponse(id=1))
    sdk.mask_secret("hunter2", name="password")
    assert peer.receive() == MaskSecret(id=1, value="hunter2", name="password")


def test_log_methods_send_log_notifications_with_fields(peer: Peer, channel: Channel) -> None:
    sdk.log.debug("d")
    sdk.log.info("i", rows=3)
    sdk.log.warning("w")
    sdk.log.error("e")
    sdk.log.critical("c", when=dt.date(2026, 1, 1), thing=object)
    received = [peer.receive() for _ in range(5)]
    assert all(isinstance(m, Log) and m.logger == "task" for m in received)
    assert [(m.level, m.event) for m in received] == [  # type: ignore[union-attr]
        ("debug", "d"),
        ("info", "i"),
        ("warning", "w"),
        ("error", "e"),
        ("critical", "c"),
    ]
    assert received[1].fields == {"rows": 3}  # type: ignore[union-attr]
    assert received[4].fields == {  # type: ignore[union-attr]
        "when": "2026-01-01",
        "thing": "<class 'object'>",
    }


def test_log_exception_carries_the_traceback(peer: Peer, channel: Channel) -> None:
    try:
        raise KeyError("missing")
    except KeyError:
        sdk.log.exception("lookup failed")
    record = peer.receive()
    assert isinstance(record, Log)
    assert record.level == "error"
    assert "Traceback" in record.fields["exception"]
    assert "KeyError: 'missing'" in record.fields["exception"]


def test_stdlib_logging_records_become_log_notifications(peer: Peer, channel: Channel) -> None:
    logger = logging.getLogger("tests.sdk.bridge")
    logger.propagate = False
    handler = LogHandler()
    logger.addHandler(handler)
    try:
        logger.warning("disk %d%% full", 91)
        try:
            1 / 0
        except ZeroDivisionError:
            logger.exception("boom")
    finally:
        logger.removeHandler(handler)
    first, second = peer.receive(), peer.receive()
    assert isinstance(first, Log)
    assert isinstance(second, Log)
    assert (first.level, first.event, first.logger) == ("warning", "disk 91% full", logger.name)
    assert second.level == "error"
    assert "ZeroDivisionError" in second.fields["exception"]


def test_metrics_send_metric_notifications(peer: Peer, channel: Channel) -> None:
    sdk.metrics.incr("rows")
    sdk.metrics.incr("rows", 5, tags={"table": "t"})
    sdk.metrics.gauge("queue", 2.5)
    sdk.metrics.timing("load", 120)
    sdk.metrics.timing("load", dt.timedelta(seconds=1.5))
    assert [peer.receive() for _ in range(5)] == [
        Metric(kind="incr", name="rows", value=1.0),
        Metric(kind="incr", name="rows", value=5.0, tags={"table": "t"}),
        Metric(kind="gauge", name="queue", value=2.5),
        Metric(kind="timing", name="load", value=120.0),
        Metric(kind="timing", name="load", value=1500.0),
    ]


# --- errors -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "exception"),
    [
        (ErrorCode.VARIABLE_NOT_FOUND, sdk.VariableNotFound),
        (ErrorCode.CONNECTION_NOT_FOUND, sdk.ConnectionNotFound),
        (ErrorCode.XCOM_NOT_FOUND, sdk.XComNotFound),
        (ErrorCode.PERMISSION_DENIED, sdk.RequestFailed),
        (ErrorCode.API_UNREACHABLE, sdk.RequestFailed),
        (ErrorCode.API_SERVER_ERROR, sdk.RequestFailed),
    ],
)
def test_error_response_raises_the_request_failed_class_of_its_code(
    peer: Peer, channel: Channel, code: ErrorCode, exception: type[sdk.RequestFailed]
) -> None:
    peer.send(ErrorResponse(id=1, error=code, detail={"status_code": 500}))
    with pytest.raises(exception) as caught:
        sdk.Connection.get("c")
    assert type(caught.value) is exception
    assert isinstance(caught.value, sdk.SdkError)
    assert caught.value.code is code
    assert caught.value.detail == {"status_code": 500}
    assert str(code) in str(caught.value)


def test_a_result_of_the_wrong_type_is_a_supervisor_protocol_error(
    peer: Peer, channel: Channel
) -> None:
    peer.send(OKResponse(id=1))
    with pytest.raises(SupervisorProtocolError, match="expected VariableResult"):
        sdk.Variable.get("k")


def test_an_invalid_answer_fails_only_its_request(peer: Peer, channel: Channel) -> None:
    peer.send_raw(b'{"type": "VariableResult", "id": 1, "bogus": true}\n')
    with pytest.raises(SupervisorProtocolError, match="answer to request 1 is invalid"):
        sdk.Variable.get("k")
    peer.send(VariableResult(id=2, key="k", value="v"))
    assert sdk.Variable.get("k") == "v"


def test_answers_for_unknown_ids_are_ignored(
    peer: Peer, channel: Channel, capfd: pytest.CaptureFixture[str]
) -> None:
    peer.send(OKResponse(id=99))
    peer.send(VariableResult(id=1, key="k", value="v"))
    assert sdk.Variable.get("k") == "v"
    assert "unknown request id 99" in capfd.readouterr().err


def test_a_cancel_between_responses_is_recorded(peer: Peer, channel: Channel) -> None:
    peer.send(Cancel(reason="timeout"))
    peer.send(VariableResult(id=1, key="k", value="v"))
    assert sdk.Variable.get("k") == "v"
    assert channel.cancel == Cancel(reason="timeout")


def test_end_of_stream_raises_channel_closed_now_and_later(peer: Peer, channel: Channel) -> None:
    os.close(peer.to_task)
    with pytest.raises(sdk.ChannelClosedError, match="closed the channel"):
        sdk.Variable.get("k")
    with pytest.raises(sdk.ChannelClosedError):
        sdk.XCom.push("k", 1)


def test_writing_to_a_gone_supervisor_raises_channel_closed(peer: Peer, channel: Channel) -> None:
    os.close(peer.from_task)
    with pytest.raises(sdk.ChannelClosedError, match="writing to the supervisor failed"):
        sdk.log.info("nobody listens")


# --- threads ----------------------------------------------------------------------------


def _in_threads(count: int, work: Any) -> tuple[list[Any], list[threading.Thread]]:
    results: list[Any] = [None] * count

    def run(index: int) -> None:
        try:
            results[index] = work(index)
        except BaseException as exc:  # reported through results
            results[index] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    return results, threads


def test_requests_from_many_threads_get_their_own_answers_in_any_order(
    peer: Peer, channel: Channel
) -> None:
    count = 16
    results, threads = _in_threads(count, lambda i: sdk.Variable.get(f"key{i}"))
    requests = [peer.receive() for _ in range(count)]  # all in flight at once
    assert all(isinstance(r, GetVariable) for r in requests)
    for request in reversed(requests):  # answered out of order
        peer.send(VariableResult(id=request.id, key=request.key, value=f"value of {request.key}"))  # type: ignore[union-attr]
    for thread in threads:
        thread.join(timeout=10)
    assert results == [f"value of key{i}" for i in range(count)]


def test_a_request_larger_than_the_pipe_buffer_is_written_whole(
    peer: Peer, channel: Channel
) -> None:
    big = "y" * (4 * 1024 * 1024)
    results, threads = _in_threads(1, lambda i: sdk.XCom.push("big", big))
    request = peer.receive()
    assert request == SetXCom(id=1, key="big", value=raw(big))
    peer.send(OKResponse(id=1))
    threads[0].join(timeout=10)
    assert results == [None]


def test_notifications_from_many_threads_arrive_as_whole_lines(
    peer: Peer, channel: Channel
) -> None:
    count, per_thread = 8, 50
    payload = "x" * 10_000  # larger than a pipe's atomic write
    results, threads = _in_threads(
        count, lambda i: [sdk.log.info("line", thread=i, data=payload) for _ in range(per_thread)]
    )
    received = [peer.receive() for _ in range(count * per_thread)]
    for thread in threads:
        thread.join(timeout=10)
    assert all(isinstance(m, Log) and m.fields["data"] == payload for m in received)
    assert not any(isinstance(r, BaseException) for r in results)


def test_end_of_stream_wakes_every_waiting_thread_with_channel_closed(
    peer: Peer, channel: Channel
) -> None:
    count = 4
    results, threads = _in_threads(count, lambda i: sdk.Variable.get(f"key{i}"))
    for _ in range(count):
        peer.receive()  # every request is in flight
    os.close(peer.to_task)
    for thread in threads:
        thread.join(timeout=10)
    assert all(isinstance(r, sdk.ChannelClosedError) for r in results)


@settings(max_examples=25, deadline=None)
@given(
    count=st.integers(min_value=1, max_value=6),
    data=st.data(),
)
def test_any_answer_order_and_any_chunking_reach_the_right_threads(
    count: int, data: st.DataObject
) -> None:
    peer = Peer()
    channel = Channel(peer.task_reads, peer.task_writes)
    peer.send(startup_details())
    channel.start()
    peer.receive()
    try:
        with _session.installed(channel):
            results, threads = _in_threads(count, lambda i: sdk.Variable.get(f"key{i}"))
            requests = [peer.receive() for _ in range(count)]
            order = data.draw(st.permutations(requests))
            answers = [
                VariableResult(id=r.id, key=r.key, value=r.key.upper())  # type: ignore[union-attr]
                for r in order
            ]
            lines = [*answers, Cancel(reason="late")]
            blob = b"".join(encode(line) for line in data.draw(st.permutations(lines)))
            cuts = sorted(data.draw(st.sets(st.integers(1, len(blob) - 1), max_size=20)))
            for start, end in zip([0, *cuts], [*cuts, len(blob)], strict=True):
                peer.send_raw(blob[start:end])
            for thread in threads:
                thread.join(timeout=10)
        assert results == [f"KEY{i}" for i in range(count)]
    finally:
        peer.close()
        for fd in (peer.task_reads, peer.task_writes):
            os.close(fd)
