"""supervisor.heartbeat: periodic beats on a thread; stop, lost and failure callbacks."""

from __future__ import annotations

import threading
import uuid

import pytest
from http_doubles import MockTransport, Response

from comms.api import TIHeartbeatInfo
from supervisor.client import ExecutionApiClient, RetryPolicy
from supervisor.errors import Conflict, Gone, NotFound, ServerResponseError
from supervisor.heartbeat import Heartbeat
from supervisor.http import ConnectError, Request

TI_ID = uuid.UUID("3fa85f64-5717-4562-b3fc-2c963f66afa6")
WAIT = 10.0  # generous upper bound for events on a loaded machine; never a sleep


class Server:
    """MockTransport handler: each heartbeat is answered by ``answer(n)`` (n counts from 1)."""

    def __init__(self, answer) -> None:
        self.answer = answer
        self.count = 0
        self.lock = threading.Lock()
        self.reached = {}

    def expect(self, n: int) -> threading.Event:
        event = threading.Event()
        self.reached[n] = event
        return event

    def __call__(self, request: Request) -> Response:
        with self.lock:
            self.count += 1
            n = self.count
        try:
            result = self.answer(n)
        finally:
            if n in self.reached:
                self.reached[n].set()
        if isinstance(result, Exception):
            raise result
        return result


class Calls:
    def __init__(self) -> None:
        self.stop: list[ServerResponseError] = []
        self.lost: list[str] = []
        self.failure: list[str] = []
        self.stopped = threading.Event()
        self.lost_event = threading.Event()

    def on_stop(self, exc):
        self.stop.append(exc)
        self.stopped.set()

    def on_lost(self, why):
        self.lost.append(why)
        self.lost_event.set()

    def on_failure(self, why):
        self.failure.append(why)


def make_heartbeat(server: Server, calls: Calls, *, interval=0.005, tolerance=300.0) -> Heartbeat:
    client = ExecutionApiClient(
        "http://api.test/execution/",
        "tok",
        retry=RetryPolicy(budget=60.0, first_wait=0.001, max_wait=0.001),
        transport=MockTransport(server),
    )
    return Heartbeat(
        client,
        TI_ID,
        TIHeartbeatInfo(hostname="host", pid=123),
        interval=interval,
        tolerance=tolerance,
        on_stop=calls.on_stop,
        on_lost=calls.on_lost,
        on_failure=calls.on_failure,
    )


def finish(hb: Heartbeat) -> None:
    hb.stop()
    hb.join(WAIT)


def test_heartbeats_are_sent_periodically_until_stopped():
    server = Server(lambda n: Response(204))
    calls = Calls()
    third = server.expect(3)
    hb = make_heartbeat(server, calls)
    hb.start()
    assert third.wait(WAIT)
    finish(hb)
    assert hb.sent >= 3
    assert calls.stop == calls.lost == calls.failure == []


@pytest.mark.parametrize(("status", "error_type"), [(404, NotFound), (409, Conflict), (410, Gone)])
def test_server_says_stop_calls_on_stop_once_and_sends_no_more_beats(status, error_type):
    server = Server(
        lambda n: Response(204) if n == 1 else Response.with_json(status, {"detail": "cleared"})
    )
    calls = Calls()
    hb = make_heartbeat(server, calls)
    hb.start()
    assert calls.stopped.wait(WAIT)
    hb.join(WAIT)  # the thread ends by itself
    assert not hb._thread.is_alive()
    assert len(calls.stop) == 1
    assert type(calls.stop[0]) is error_type
    assert calls.stop[0].status == status
    assert server.count == 2
    assert calls.lost == calls.failure == []


def test_transient_failures_are_reported_then_lost_once_past_the_tolerance():
    server = Server(lambda n: Response(503) if n % 2 else ConnectError("refused"))
    calls = Calls()
    hb = make_heartbeat(server, calls, interval=0.005, tolerance=0.1)
    hb.start()
    assert calls.lost_event.wait(WAIT)
    hb.join(WAIT)
    assert not hb._thread.is_alive()
    assert len(calls.lost) == 1
    assert "no successful heartbeat" in calls.lost[0]
    assert len(calls.failure) >= 1
    assert all("heartbeat failed" in f for f in calls.failure)
    assert server.count == len(calls.failure) + 1  # one request per beat, none after lost
    assert calls.stop == []


def test_a_success_resets_the_tolerance():
    # Fail, succeed, fail, ... : silence never lasts long, so it is never lost.
    server = Server(lambda n: Response(500) if n % 2 else Response(204))
    calls = Calls()
    tenth = server.expect(10)
    hb = make_heartbeat(server, calls, interval=0.005, tolerance=5.0)
    hb.start()
    assert tenth.wait(WAIT)
    finish(hb)
    assert calls.lost == []
    assert len(calls.failure) >= 5


def test_heartbeat_failures_are_not_retried_within_one_beat():
    server = Server(lambda n: Response(500))
    calls = Calls()
    second = server.expect(2)
    hb = make_heartbeat(server, calls, tolerance=60.0)
    hb.start()
    assert second.wait(WAIT)
    finish(hb)
    # Every request was a beat of its own, each reported as one failure.
    assert len(calls.failure) in (server.count, server.count - 1)


def test_stop_while_a_beat_is_in_flight_sends_no_further_beat():
    calls = Calls()
    holder: list[Heartbeat] = []

    def answer(n):
        if n == 2:
            holder[0].stop()  # a terminal state is recorded during beat 2
        return Response(204)

    server = Server(answer)
    second = server.expect(2)
    hb = make_heartbeat(server, calls)
    holder.append(hb)
    hb.start()
    assert second.wait(WAIT)
    hb.join(WAIT)
    assert not hb._thread.is_alive()
    assert server.count == 2


def test_conflict_after_stop_does_not_call_on_stop():
    calls = Calls()
    holder: list[Heartbeat] = []

    def answer(n):
        holder[0].stop()  # the task finished; its in-flight beat sees the finished state
        return Response.with_json(409, {"detail": "not running"})

    server = Server(answer)
    first = server.expect(1)
    hb = make_heartbeat(server, calls)
    holder.append(hb)
    hb.start()
    assert first.wait(WAIT)
    hb.join(WAIT)
    assert not hb._thread.is_alive()
    assert calls.stop == []
    assert server.count == 1


def test_failure_after_stop_is_not_reported():
    calls = Calls()
    holder: list[Heartbeat] = []

    def answer(n):
        holder[0].stop()
        return Response(503)

    server = Server(answer)
    hb = make_heartbeat(server, calls, tolerance=0.0)
    holder.append(hb)
    hb.start()
    hb.join(WAIT)
    assert not hb._thread.is_alive()
    assert calls.failure == calls.lost == []


def test_stop_before_the_first_interval_sends_nothing():
    server = Server(lambda n: Response(204))
    calls = Calls()
    hb = make_heartbeat(server, calls, interval=3600)
    hb.start()
    finish(hb)
    assert not hb._thread.is_alive()
    assert server.count == 0


def test_heartbeat_body_names_host_and_pid():
    bodies: list[bytes] = []
    server = Server(lambda n: Response(204))
    calls = Calls()
    first = server.expect(1)

    def recording(request):
        bodies.append(request.content)
        return server(request)

    client = ExecutionApiClient(
        "http://api.test/execution/", "tok", transport=MockTransport(recording)
    )
    hb = Heartbeat(
        client,
        TI_ID,
        TIHeartbeatInfo(hostname="host", pid=123),
        interval=0.005,
        tolerance=60,
        on_stop=calls.on_stop,
        on_lost=calls.on_lost,
        on_failure=calls.on_failure,
    )
    hb.start()
    assert first.wait(WAIT)
    finish(hb)
    assert bodies[0] == b'{"hostname":"host","pid":123}'
