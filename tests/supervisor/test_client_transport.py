"""supervisor.client over real sockets (the transport alone: test_http.py)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from supervisor.client import ExecutionApiClient, RetryPolicy
from supervisor.errors import NotFound, ServerUnreachable

ONE_TRY = RetryPolicy(budget=0.0)


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path.endswith("/variables/missing"):
            self._answer(404, b'{"detail": {"reason": "not_found"}}')
        else:
            body = b'{"key": "k", "value": "%s"}' % self.headers["Authorization"].encode()
            self._answer(200, body, {"Refreshed-API-Token": "tok-1"})

    def _answer(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in {"Content-Type": "application/json", **(headers or {})}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def http_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/execution"
    finally:
        server.shutdown()
        server.server_close()


def test_plain_http_requests_keep_the_connection_and_adopt_refreshed_tokens(http_server):
    client = ExecutionApiClient(http_server, "tok-0", retry=ONE_TRY)
    try:
        assert client.get_variable("k").value == "Bearer tok-0"
        assert client.get_variable("k").value == "Bearer tok-1"
        with pytest.raises(NotFound):
            client.get_variable("missing")
    finally:
        client.close()


def test_refused_connection_is_a_retryable_connect_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again below: nothing listens there
    client = ExecutionApiClient(f"http://127.0.0.1:{port}/execution", "tok", retry=ONE_TRY)
    with pytest.raises(ServerUnreachable, match="ConnectError"):
        client.get_variable("k")


def test_a_server_that_never_answers_is_a_read_timeout():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/execution"
        client = ExecutionApiClient(url, "tok", retry=ONE_TRY, timeout=0.2)
        with pytest.raises(ServerUnreachable, match="ReadTimeout"):
            client.get_variable("k")
