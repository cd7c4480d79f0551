"""supervisor.http: HTTP/1.1 over real loopback sockets, with a scripted server per test."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Callable, Iterator

import pytest

from supervisor.http import (
    CertificateError,
    ConnectError,
    ConnectTimeout,
    HTTPTransport,
    NetworkError,
    ReadTimeout,
    RemoteProtocolError,
    Request,
    Timeout,
    TLSMismatchError,
    TransportError,
    WriteTimeout,
)

#: Reads one request from a connection and answers it; returns False to close the connection.
Script = Callable[[socket.socket, bytes], bool]

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


class ScriptedServer:
    """A loopback TCP server that runs ``script`` for each request on each connection."""

    def __init__(
        self, script: Script, tls: ssl.SSLContext | None = None, host: str = "127.0.0.1"
    ) -> None:
        self.script = script
        self.tls = tls
        self.requests: list[bytes] = []
        self.connections = 0
        #: Set each time the server has closed a connection.
        self.hung_up = threading.Event()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.listener = socket.create_server((host, 0), family=family)
        self.host = f"[{host}]" if ":" in host else host
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def url(self, path: str = "/x", scheme: str = "http") -> str:
        return f"{scheme}://{self.host}:{self.port}{path}"

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._connection, args=(conn,), daemon=True).start()

    def _connection(self, conn: socket.socket) -> None:
        try:
            if self.tls is not None:
                conn = self.tls.wrap_socket(conn, server_side=True)
            with conn:
                while True:
                    head = _read_head(conn)
                    if not head:
                        return
                    self.requests.append(head)
                    if not self.script(conn, head):
                        return
        except OSError:
            return
        finally:
            self.hung_up.set()

    def close(self) -> None:
        self.listener.close()


def _read_head(conn: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return b""
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length":
            missing = int(value) - len(rest)
            while missing > 0:
                chunk = conn.recv(min(missing, 1 << 20))
                missing -= len(chunk)
                rest += chunk
    return head + b"\r\n\r\n" + rest


@pytest.fixture
def serve() -> Iterator[Callable[..., ScriptedServer]]:
    servers: list[ScriptedServer] = []

    def start(script: Script, **kwargs: object) -> ScriptedServer:
        servers.append(ScriptedServer(script, **kwargs))  # type: ignore[arg-type]
        return servers[-1]

    yield start
    for server in servers:
        server.close()


@pytest.fixture
def transport() -> Iterator[HTTPTransport]:
    t = HTTPTransport(timeout=2.0, connect_timeout=2.0)
    yield t
    t.close()


def answer(raw: bytes) -> Script:
    def script(conn: socket.socket, head: bytes) -> bool:
        conn.sendall(raw)
        return True

    return script


def get(url: str, **headers: str) -> Request:
    return Request("GET", url, headers)


def test_request_goes_out_with_host_header_and_the_answer_comes_back_whole(serve, transport):
    server = serve(answer(b"HTTP/1.1 201 Created\r\nX-Thing: 1\r\nContent-Length: 5\r\n\r\nhello"))
    response = transport.handle_request(get(server.url("/a%2Fb?q=1"), Accept="*/*"))
    assert (response.status_code, response.content) == (201, b"hello")
    assert response.header("x-thing") == response.header("X-THING") == "1"
    head = server.requests[0]
    assert head.startswith(b"GET /a%2Fb?q=1 HTTP/1.1\r\n")
    assert f"host: 127.0.0.1:{server.port}".encode() in head.lower()
    assert b"accept: */*" in head.lower()
    assert b"content-length" not in head.lower()


def test_ipv6_address_is_bracketed_in_the_host_header(serve, transport):
    server = serve(answer(OK), host="::1")
    assert transport.handle_request(get(server.url())).status_code == 200
    assert f"host: [::1]:{server.port}\r\n".encode() in server.requests[0].lower()


def test_kept_alive_connection_serves_the_next_request(serve, transport):
    server = serve(answer(OK))
    for _ in range(3):
        assert transport.handle_request(get(server.url())).content == b"ok"
    assert server.connections == 1


def test_proxy_variables_are_not_used(serve, transport, monkeypatch):
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")  # the discard port: nothing answers
    server = serve(answer(OK))
    assert transport.handle_request(get(server.url())).content == b"ok"
    assert server.connections == 1


def test_connection_close_from_the_server_means_a_new_connection_next_time(serve, transport):
    server = serve(answer(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"))
    transport.handle_request(get(server.url()))
    transport.handle_request(get(server.url()))
    assert server.connections == 2


def test_idle_connection_the_server_closed_is_replaced_without_an_error(serve, transport):
    def answer_then_hang_up(conn: socket.socket, head: bytes) -> bool:
        conn.sendall(OK)
        return False  # closes the kept-alive connection, as a server's idle timeout does

    server = serve(answer_then_hang_up)
    transport.handle_request(get(server.url()))
    assert server.hung_up.wait(5)
    assert transport.handle_request(get(server.url())).content == b"ok"
    assert server.connections == 2


def test_kept_alive_connection_dropped_before_an_answer_fails_the_request_and_is_discarded(serve):
    # The server reads the second request on a connection and hangs up without answering.
    # Not retried here: the request may have reached the server, so the client decides (and
    # logs) whether to send it again; the next request gets a new connection.
    answered: set[socket.socket] = set()

    def first_answered_then_dropped(conn: socket.socket, head: bytes) -> bool:
        if conn in answered:
            return False
        answered.add(conn)
        conn.sendall(OK)
        return True

    server = serve(first_answered_then_dropped)
    transport = HTTPTransport(timeout=2.0)
    try:
        transport.handle_request(get(server.url()))
        with pytest.raises(NetworkError, match="without answering"):
            transport.handle_request(get(server.url()))
        assert transport.handle_request(get(server.url())).content == b"ok"
    finally:
        transport.close()
    assert (server.connections, len(server.requests)) == (2, 3)


def test_fresh_connection_closed_without_an_answer_is_a_network_error(serve, transport):
    server = serve(lambda conn, head: False)
    with pytest.raises(NetworkError, match="without answering"):
        transport.handle_request(get(server.url()))


def test_chunked_answer_is_reassembled(serve, transport):
    body = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    server = serve(answer(body))
    assert transport.handle_request(get(server.url())).content == b"abcde"
    assert transport.handle_request(get(server.url())).content == b"abcde"
    assert server.connections == 1


def test_answer_read_until_close_when_it_has_no_length(serve, transport):
    def answer_and_close(conn: socket.socket, head: bytes) -> bool:
        conn.sendall(b"HTTP/1.1 200 OK\r\n\r\nto the end")
        return False

    server = serve(answer_and_close)
    assert transport.handle_request(get(server.url())).content == b"to the end"


def test_interim_100_continue_is_skipped(serve, transport):
    server = serve(answer(b"HTTP/1.1 100 Continue\r\n\r\n" + OK))
    assert transport.handle_request(get(server.url())).status_code == 200


def test_bytes_that_are_not_http_are_a_remote_protocol_error(serve, transport):
    server = serve(answer(b"SSH-2.0-OpenSSH_9.6\r\n\r\n"))
    with pytest.raises(RemoteProtocolError):
        transport.handle_request(get(server.url()))


def test_large_body_arrives_intact_with_its_length(serve, transport):
    server = serve(answer(OK))
    body = bytes(range(256)) * 8192  # 2 MiB: sent apart from the head
    transport.handle_request(Request("POST", server.url(), {}, body))
    assert b"content-length: 2097152" in server.requests[0].lower()
    assert server.requests[0].endswith(body)


def test_empty_post_says_content_length_zero(serve, transport):
    server = serve(answer(OK))
    transport.handle_request(Request("POST", server.url(), {}))
    assert b"content-length: 0" in server.requests[0].lower()


def test_refused_connection_is_a_connect_error(transport):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    with pytest.raises(ConnectError, match="refused"):
        transport.handle_request(get(f"http://127.0.0.1:{port}/x"))


def test_silent_server_is_a_read_timeout(serve):
    release = threading.Event()
    server = serve(lambda conn, head: release.wait(10) and False)
    try:
        with pytest.raises(ReadTimeout):
            HTTPTransport(timeout=0.2).handle_request(get(server.url()))
    finally:
        release.set()
    assert len(server.requests) == 1


def test_server_that_reads_nothing_is_a_write_timeout():
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        transport = HTTPTransport(timeout=0.2)
        body = b"x" * (64 << 20)  # far more than the kernel buffers between us hold
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/"
        with pytest.raises(WriteTimeout):
            transport.handle_request(Request("PUT", url, {}, body))


@pytest.mark.parametrize("url", ["ftp://h/x", "http:///x", "relative/path"])
def test_url_that_is_not_http_with_a_host_is_refused_by_name(transport, url):
    with pytest.raises(ValueError, match="expected an http:// or https:// URL"):
        transport.handle_request(get(url))


def test_request_names_its_target_path_and_params():
    request = get("http://h:1/execution/xcoms/my%20dag/k%2F1?map_index=-1&x=")
    assert request.target == "/execution/xcoms/my%20dag/k%2F1?map_index=-1&x="
    assert request.path == "/execution/xcoms/my dag/k/1"
    assert request.params == {"map_index": "-1", "x": ""}


@pytest.mark.parametrize("cls", [ConnectTimeout, ReadTimeout, WriteTimeout])
def test_every_timeout_is_caught_as_timeout_and_as_a_transport_error(cls):
    assert issubclass(cls, Timeout)
    assert issubclass(cls, TransportError)
    assert not issubclass(cls, ConnectError | NetworkError)


# --- TLS -------------------------------------------------------------------------------


@pytest.fixture
def tls_server(serve, certificate) -> ScriptedServer:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    return serve(answer(OK), tls=context)


def test_https_refuses_a_certificate_the_system_does_not_trust(tls_server, monkeypatch):
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    transport = HTTPTransport(timeout=2.0)
    with pytest.raises(CertificateError, match="certificate verify failed"):
        transport.handle_request(get(tls_server.url(scheme="https")))


def test_https_trusts_a_ca_named_by_ssl_cert_file_and_keeps_the_connection(
    tls_server, certificate, monkeypatch
):
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))
    transport = HTTPTransport(timeout=2.0)
    try:
        for _ in range(2):
            assert transport.handle_request(get(tls_server.url(scheme="https"))).content == b"ok"
    finally:
        transport.close()
    assert tls_server.connections == 1


def test_https_at_a_plain_http_port_is_a_tls_mismatch_that_says_to_use_http(transport):
    # What uvicorn (and most plain servers) do with a TLS ClientHello: a plain-HTTP 400.
    with socket.create_server(("127.0.0.1", 0)) as listener:

        def answer_in_plain_http() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

        threading.Thread(target=answer_in_plain_http, daemon=True).start()
        port = listener.getsockname()[1]
        with pytest.raises(TLSMismatchError) as info:
            transport.handle_request(get(f"https://127.0.0.1:{port}/x"))
    assert f"127.0.0.1:{port} does not speak TLS on that port" in str(info.value)
    assert "use an http:// URL, or check the port" in str(info.value)
    assert "WRONG_VERSION_NUMBER" in str(info.value)


@pytest.mark.parametrize("hang_up", [True, False])
def test_http_at_a_port_that_answers_with_a_tls_alert_is_a_tls_mismatch(serve, transport, hang_up):
    def tls_alert(conn: socket.socket, head: bytes) -> bool:
        conn.sendall(b"\x15\x03\x03\x00\x02\x02\x0a")  # fatal unexpected_message
        return not hang_up

    server = serve(tls_alert)
    with pytest.raises(TLSMismatchError) as info:
        transport.handle_request(get(server.url()))
    assert str(info.value) == (
        f"http:// URL, but 127.0.0.1:{server.port} answered in TLS: "
        "use an https:// URL, or check the port"
    )


def test_plain_http_never_sets_up_tls(serve, transport, monkeypatch):
    def forbidden(*args: object, **kwargs: object) -> ssl.SSLContext:
        raise AssertionError("a TLS context was made for a plain-HTTP server")

    monkeypatch.setattr(ssl, "SSLContext", forbidden)
    monkeypatch.setattr(ssl, "create_default_context", forbidden)
    server = serve(answer(OK))
    assert transport.handle_request(get(server.url())).status_code == 200


def test_public_surface_is_exactly_the_documented_names_each_with_a_docstring():
    import supervisor.http as http

    assert sorted(http.__all__) == sorted(
        ["CertificateError", "ConnectError", "ConnectTimeout", "HTTPTransport", "NetworkError",
         "ReadTimeout", "RemoteProtocolError", "Request", "Response", "TLSMismatchError",
         "Timeout", "Transport", "TransportError", "WriteTimeout"]
    )  # fmt: skip
    assert all(getattr(http, name).__doc__ for name in http.__all__)
    assert all(name in http.__doc__ for name in http.__all__ if name.endswith(("Error", "Timeout")))
