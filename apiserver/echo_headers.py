"""Echo ``correlation-id`` and ``airflow-api-version`` on every response, as Airflow does.

A plain ASGI middleware (no per-request task or body buffering), so it costs a header copy.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["EchoHeadersMiddleware"]

_ECHOED = (b"correlation-id", b"airflow-api-version")


class EchoHeadersMiddleware:
    """Copy the echoed request headers onto the response (when the request had them)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        echoed = [(name, value) for name, value in scope["headers"] if name in _ECHOED]
        if not echoed:
            await self.app(scope, receive, send)
            return

        async def send_with_echo(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *echoed]
            await send(message)

        await self.app(scope, receive, send_with_echo)
