"""Echo ``correlation-id`` and ``Airflow-API-Version`` on every response, as Airflow does.

Airflow answers with the API version it served: the one the client asked for, or, when the
client sent none, its default; ours is :data:`comms.api.API_VERSION`, the one we implement.
A plain ASGI middleware (no per-request task or body buffering), so it costs a header copy.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from comms.api import API_VERSION

__all__ = ["EchoHeadersMiddleware"]

_CORRELATION_ID = b"correlation-id"
_API_VERSION = b"airflow-api-version"
_DEFAULT_VERSION = (_API_VERSION, API_VERSION.encode())


class EchoHeadersMiddleware:
    """Copy the echoed request headers onto the response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        echoed = [
            (name, value)
            for name, value in scope["headers"]
            if name in (_CORRELATION_ID, _API_VERSION)
        ]
        if not any(name == _API_VERSION for name, _ in echoed):
            echoed.append(_DEFAULT_VERSION)

        async def send_with_echo(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *echoed]
            await send(message)

        await self.app(scope, receive, send_with_echo)
