"""``/health``: unauthenticated liveness, what ``apiserver.testing`` polls at start-up."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from apiserver.responses import json_response

__all__ = ["routes"]


async def _health(request: Request) -> Response:
    return json_response({"status": "healthy"})


def routes() -> list[Route]:
    """The health route."""
    return [Route("/health", _health, methods=["GET"])]
