"""HTTP/1.1 for the Execution API client: h11 speaks the protocol, blocking sockets do the IO.

Why not httpx: importing it (with httpcore, anyio, certifi, idna, ``email`` and
``http.cookiejar``) costs every ``supervise`` ~45 ms of its ~175 ms start against Airflow, for
features one task try never uses (async, HTTP/2, proxies, cookies, redirects, decoding). h11
is the sans-IO HTTP/1.1 state machine under httpcore and uvicorn (~5 ms to import); this
module adds a keep-alive connection pool and timeouts around it, and nothing else.

Errors: every failure to exchange a request and its response is a :class:`TransportError`
(the request may or may not have reached the server; the client decides whether to retry),
the branch of :mod:`comms.errors`' tree this module owns::

    TransportError
     ├── ConnectError          could not connect: refused, unreachable, name, TLS handshake
     │   ├── CertificateError  the server's certificate failed verification
     │   └── TLSMismatchError  the URL's scheme does not match the port: https:// at a plain
     │                         HTTP port, or http:// at a port that answers in TLS
     ├── Timeout               a timeout expired: one of the three below
     │   ├── ConnectTimeout    connecting took longer than the connect timeout
     │   ├── ReadTimeout       no byte of the answer for the read timeout
     │   └── WriteTimeout      the server took no byte of the request for the write timeout
     ├── NetworkError          the connection broke mid-exchange (reset, closed early)
     └── RemoteProtocolError   the server's bytes are not HTTP/1.1

Retrying cannot cure a :class:`CertificateError` or a :class:`TLSMismatchError`.

An HTTP error status is not an exception here: it is a :class:`Response`.
"""

from __future__ import annotations

import select
import socket
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol
from urllib.parse import SplitResult, parse_qsl, unquote, urlsplit

import h11
import msgspec

from comms.errors import TaskvisorError

if TYPE_CHECKING:
    import ssl

__all__ = [
    "CertificateError",
    "ConnectError",
    "ConnectTimeout",
    "HTTPTransport",
    "NetworkError",
    "ReadTimeout",
    "RemoteProtocolError",
    "Request",
    "Response",
    "TLSMismatchError",
    "Timeout",
    "Transport",
    "TransportError",
    "WriteTimeout",
]


class TransportError(TaskvisorError):
    """A request and its answer could not be exchanged."""


class ConnectError(TransportError):
    """No connection: refused, unreachable, unknown name, or a failed TLS handshake."""


class CertificateError(ConnectError):
    """The server's TLS certificate failed verification: untrusted, expired, wrong name."""


class TLSMismatchError(ConnectError):
    """Only one side speaks TLS: an ``https://`` URL at a plain-HTTP port, or an ``http://``
    URL at a port that answers in TLS. The request never reached the server's application."""


class Timeout(TransportError):
    """A timeout expired: :class:`ConnectTimeout`, :class:`ReadTimeout` or :class:`WriteTimeout`."""


class ConnectTimeout(Timeout):
    """Connecting took longer than the connect timeout."""


class ReadTimeout(Timeout):
    """The server sent nothing for the read timeout."""


class WriteTimeout(Timeout):
    """The server took nothing of the request for the write timeout."""


class NetworkError(TransportError):
    """The connection broke during the exchange."""


class RemoteProtocolError(TransportError):
    """The server broke HTTP/1.1."""


class Request(msgspec.Struct, frozen=True):
    """One request: ``url`` is absolute and already percent-encoded."""

    method: str
    url: str
    headers: dict[str, str]
    content: bytes = b""

    @property
    def target(self) -> str:
        """The request target as sent: encoded path and query, e.g. ``/a%2Fb?x=1``."""
        return _target(urlsplit(self.url))

    @property
    def path(self) -> str:
        """The decoded path, e.g. ``/a/b`` for ``/a%2Fb``."""
        return unquote(urlsplit(self.url).path)

    @property
    def params(self) -> dict[str, str]:
        """The decoded query parameters (the last value of a repeated name)."""
        return dict(parse_qsl(urlsplit(self.url).query, keep_blank_values=True))


class Response:
    """A whole response; header names are looked up case-insensitively."""

    __slots__ = ("content", "headers", "status_code")

    def __init__(
        self, status_code: int, *, content: bytes = b"", headers: Mapping[str, str] | None = None
    ) -> None:
        self.status_code = status_code
        self.content = content
        #: Header names in lower case (a repeated header keeps its last value).
        self.headers = {k.lower(): v for k, v in (headers or {}).items()}

    def header(self, name: str) -> str | None:
        """The value of header ``name``, or ``None``."""
        return self.headers.get(name.lower())

    def __repr__(self) -> str:
        return f"<Response {self.status_code}, {len(self.content)} bytes>"


class Transport(Protocol):
    """What sends a :class:`Request`: :class:`HTTPTransport`, or a test double."""

    def handle_request(self, request: Request) -> Response:
        """Send ``request``, return the whole response or raise :class:`TransportError`."""
        ...

    def close(self) -> None:
        """Release the transport's connections."""
        ...


_Origin = tuple[str, str, int]  # scheme, host, port
_DEFAULT_PORTS = {"http": 80, "https": 443}
_RECV = 256 * 1024
_COALESCE = 64 * 1024  # bodies up to this size go out in the same send as the head


class HTTPTransport:
    """Keep-alive HTTP/1.1 over TCP, or TLS for ``https://`` (verified against the system's
    CA store; ``SSL_CERT_FILE``/``SSL_CERT_DIR`` add private CAs). Thread-safe: each request
    borrows its own connection.

    ``timeout`` bounds each read and each write; ``connect_timeout`` bounds connecting and
    the TLS handshake. Idle connections are kept for ``keepalive_expiry`` seconds (less than
    the 5 s after which uvicorn, under Airflow's api-server, closes them: reusing one the
    server is closing at that moment would fail the request), at most ``max_idle`` of them.
    A failed exchange is not retried here; :class:`supervisor.client.ExecutionApiClient`
    retries, logs and bounds that.
    """

    def __init__(
        self,
        *,
        timeout: float = 30.0,
        connect_timeout: float = 10.0,
        keepalive_expiry: float = 4.0,
        max_idle: int = 4,
    ) -> None:
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.keepalive_expiry = keepalive_expiry
        self.max_idle = max_idle
        self._idle: list[tuple[_Origin, _Connection, float]] = []
        self._lock = threading.Lock()
        self._tls: ssl.SSLContext | None = None

    def handle_request(self, request: Request) -> Response:
        """Send ``request`` on an idle connection to its origin or a new one."""
        origin, target = _origin_and_target(request.url)
        conn = self._take_idle(origin) or self._connect(origin)
        try:
            response = conn.exchange(request, target)
        except BaseException:
            conn.close()
            raise
        if conn.reusable():
            self._put_idle(origin, conn)
        else:
            conn.close()
        return response

    def close(self) -> None:
        """Close the idle connections."""
        with self._lock:
            idle, self._idle = self._idle, []
        for _, conn, _ in idle:
            conn.close()

    def _take_idle(self, origin: _Origin) -> _Connection | None:
        now = time.monotonic()
        with self._lock:
            for i in range(len(self._idle) - 1, -1, -1):
                where, conn, since = self._idle[i]
                if where == origin:
                    del self._idle[i]
                    if now - since < self.keepalive_expiry and not conn.readable():
                        return conn
                    conn.close()  # expired, or the server closed it (EOF is readable)
        return None

    def _put_idle(self, origin: _Origin, conn: _Connection) -> None:
        with self._lock:
            self._idle.append((origin, conn, time.monotonic()))
            surplus = self._idle[: -self.max_idle] if len(self._idle) > self.max_idle else []
            del self._idle[: len(surplus)]
        for _, old, _ in surplus:
            old.close()

    def _connect(self, origin: _Origin) -> _Connection:
        scheme, host, port = origin
        try:
            sock = socket.create_connection((host, port), timeout=self.connect_timeout)
        except TimeoutError:
            raise ConnectTimeout(f"connecting to {host}:{port} timed out") from None
        except OSError as exc:
            raise ConnectError(f"cannot connect to {host}:{port}: {_reason(exc)}") from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # a head, then no wait
        if scheme == "https":
            try:
                sock = self._tls_context().wrap_socket(sock, server_hostname=host)
            except TimeoutError:
                sock.close()
                raise ConnectTimeout(f"TLS handshake with {host}:{port} timed out") from None
            except OSError as exc:  # ssl.SSLError is an OSError
                sock.close()
                raise _tls_failure(exc, host, port) from None
        sock.settimeout(self.timeout)
        name = f"[{host}]" if ":" in host else host  # an IPv6 address, as in the URL
        return _Connection(sock, name if port == _DEFAULT_PORTS[scheme] else f"{name}:{port}")

    def _tls_context(self) -> ssl.SSLContext:
        with self._lock:
            if self._tls is None:
                import ssl  # only for https: OpenSSL's set-up costs ~1.5 ms and 0.2 MB

                self._tls = ssl.create_default_context()
            return self._tls


class _Connection:
    """One socket and its h11 state; used by one request at a time."""

    def __init__(self, sock: socket.socket, host: str) -> None:
        self._sock = sock
        self._host = host
        self._h11 = h11.Connection(h11.CLIENT)

    def exchange(self, request: Request, target: str) -> Response:
        h = self._h11
        if h.our_state is h11.DONE:  # kept alive after an earlier exchange
            h.start_next_cycle()
        headers = [("Host", self._host), *request.headers.items()]
        if request.content or request.method in ("POST", "PUT", "PATCH"):
            headers.append(("Content-Length", str(len(request.content))))
        try:
            wire = [h.send(h11.Request(method=request.method, target=target, headers=headers))]
            if request.content:  # passed through: a 100 MB XCom is not copied here
                wire += h.send_with_data_passthrough(h11.Data(data=request.content)) or ()
            wire.append(h.send(h11.EndOfMessage()))
        except h11.LocalProtocolError as exc:
            raise ValueError(f"cannot send {request.method} {target}: {exc}") from None
        try:
            if len(request.content) <= _COALESCE:
                self._sock.sendall(b"".join(filter(None, wire)))
            else:
                for chunk in filter(None, wire):
                    self._sock.sendall(chunk)
        except TimeoutError:
            raise WriteTimeout(f"sending {request.method} {target} timed out") from None
        except OSError as exc:
            raise NetworkError(f"sending {request.method} {target}: {_reason(exc)}") from None
        return self._read_response()

    def _read_response(self) -> Response:
        h = self._h11
        status, headers, chunks = 0, {}, []
        while True:
            try:
                event = h.next_event()
            except h11.RemoteProtocolError as exc:
                raise RemoteProtocolError(str(exc)) from None
            if event is h11.NEED_DATA:
                data = self._recv()
                if not data and h.their_state is h11.SEND_RESPONSE:
                    raise NetworkError("the server closed the connection without answering")
                h.receive_data(data)
                if not status and _is_tls_record(h.trailing_data[0]):
                    raise TLSMismatchError(
                        f"http:// URL, but {self._host} answered in TLS: "
                        "use an https:// URL, or check the port"
                    )
            elif isinstance(event, h11.Response):
                status = event.status_code
                headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in event.headers}
            elif isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                return Response(status, content=b"".join(chunks), headers=headers)
            elif isinstance(event, h11.ConnectionClosed):
                raise NetworkError("the server closed the connection mid-answer")
            # h11.InformationalResponse (100 Continue and the like): keep reading

    def _recv(self) -> bytes:
        try:
            return self._sock.recv(_RECV)
        except TimeoutError:
            raise ReadTimeout(f"no answer within {self._sock.gettimeout():g} s") from None
        except OSError as exc:
            raise NetworkError(f"receiving the answer: {_reason(exc)}") from None

    def reusable(self) -> bool:
        """Whether both sides finished cleanly and the server keeps the connection open."""
        return self._h11.our_state is h11.DONE and self._h11.their_state is h11.DONE

    def readable(self) -> bool:
        """Whether an idle connection has something to read: EOF (closed) or stray bytes."""
        try:
            ready, _, _ = select.select([self._sock], [], [], 0)
        except (OSError, ValueError):
            return True
        return bool(ready)

    def close(self) -> None:
        self._sock.close()


def _origin_and_target(url: str) -> tuple[_Origin, str]:
    parts = urlsplit(url)
    scheme = parts.scheme
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise ValueError(f"expected an http:// or https:// URL with a host, got {url!r}")
    return (scheme, parts.hostname, parts.port or _DEFAULT_PORTS[scheme]), _target(parts)


def _target(parts: SplitResult) -> str:
    path = parts.path or "/"
    return f"{path}?{parts.query}" if parts.query else path


def _tls_failure(exc: OSError, host: str, port: int) -> ConnectError:
    """The error for a failed TLS handshake with ``host:port``."""
    import ssl

    if isinstance(exc, ssl.SSLCertVerificationError):
        return CertificateError(f"TLS with {host}:{port} failed: {_reason(exc)}")
    # The answer to our ClientHello is not a TLS record: typically a plain-HTTP server's
    # "HTTP/1.1 400" (OpenSSL reads "HT" as a protocol version).
    if isinstance(exc, ssl.SSLError) and exc.reason == "WRONG_VERSION_NUMBER":
        return TLSMismatchError(
            f"https:// URL, but {host}:{port} does not speak TLS on that port: "
            f"use an http:// URL, or check the port ({_reason(exc)})"
        )
    return ConnectError(f"TLS with {host}:{port} failed: {_reason(exc)}")


def _is_tls_record(head: bytes) -> bool:
    """Whether an answer starts like a TLS alert or handshake record, never like HTTP.

    A TLS server that receives a plain request may answer with an alert before it hangs up
    (OpenSSL's, under uvicorn, hangs up silently: that stays "closed without answering").
    """
    return head[:1] in (b"\x15", b"\x16") and head[1:2] == b"\x03"


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__
