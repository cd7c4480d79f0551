"""Test doubles of :mod:`supervisor.http`: test the client and its users without a server.

``MockTransport(handler)`` hands each request to ``handler``, which returns a response or
raises a :class:`supervisor.http.TransportError` (like ``httpx.MockTransport``).
``Response`` is :class:`supervisor.http.Response` with a JSON constructor for such handlers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import msgspec

from supervisor import http
from supervisor.http import Request

__all__ = ["MockTransport", "Response"]


class Response(http.Response):
    """:class:`supervisor.http.Response`, plus :meth:`with_json`."""

    __slots__ = ()

    @classmethod
    def with_json(
        cls, status_code: int, body: Any, *, headers: Mapping[str, str] | None = None
    ) -> Response:
        """A response carrying ``body`` as JSON, as the Execution API answers."""
        return cls(
            status_code,
            content=msgspec.json.encode(body),
            headers={"content-type": "application/json", **(headers or {})},
        )


class MockTransport:
    """A :class:`supervisor.http.Transport` that answers each request with ``handler``."""

    def __init__(self, handler: Callable[[Request], http.Response]) -> None:
        self._handler = handler

    def handle_request(self, request: Request) -> http.Response:
        """Answer with whatever the handler says (or raise what it raises)."""
        return self._handler(request)

    def close(self) -> None:
        """Nothing to release."""
