"""The reference Execution API server as a Starlette app, mounted under ``/execution/``.

Routes, bodies, status codes and token rules follow Apache Airflow 3's Execution API (the
subset taskvisor's supervisor uses); see ``docs/apiserver.md``. Handlers are ``async`` and
use one SQLite connection on the event loop thread: each query takes microseconds, and not
hopping to a thread pool keeps the per-request overhead small.
"""

from __future__ import annotations

from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount

from apiserver.auth import check_secret
from apiserver.blobs import BlobStore
from apiserver.db import connect
from apiserver.echo_headers import EchoHeadersMiddleware
from apiserver.responses import json_response
from apiserver.routes import connections, health, task_instances, variables, xcoms
from apiserver.security import ServerContext

__all__ = ["create_app"]

#: Airflow's floor for the reissue window: tokens with less than this left are always renewed.
REFRESH_FLOOR_SECONDS = 30.0


async def _http_error(request: Request, exc: Exception) -> Response:
    # Unknown paths and methods answer in FastAPI's JSON shape, not Starlette's plain text.
    assert isinstance(exc, HTTPException)
    return json_response({"detail": exc.detail}, exc.status_code, headers=exc.headers)


async def _internal_error(request: Request, exc: Exception) -> Response:
    return json_response({"detail": "Internal server error"}, 500)


def create_app(
    db_path: str | Path,
    secret: str,
    *,
    token_lifetime: float = 600,
    leeway: float = 10,
    refresh_floor: float = REFRESH_FLOOR_SECONDS,
) -> Starlette:
    """Build the server on the database at ``db_path`` (created if missing).

    ``secret`` signs and verifies HS512 task tokens (at least 64 bytes). ``token_lifetime``
    is the life of tokens this server issues (``/run`` exchange and reissue). A token is
    reissued when it has less than ``max(20% of token_lifetime, refresh_floor)`` seconds
    left; ``leeway`` is the clock skew tolerated on ``exp`` and ``nbf``.
    """
    check_secret(secret)
    server = ServerContext(
        db=connect(db_path),
        secret=secret,
        token_lifetime=token_lifetime,
        leeway=leeway,
        refresh_threshold=max(0.2 * token_lifetime, refresh_floor),
    )
    api = [
        *health.routes(),
        *task_instances.routes(server),
        *variables.routes(server),
        *connections.routes(server),
        *xcoms.routes(server, BlobStore(db_path)),
    ]
    return Starlette(
        routes=[Mount("/execution", routes=api)],
        exception_handlers={HTTPException: _http_error, Exception: _internal_error},
        middleware=[Middleware(EchoHeadersMiddleware)],
    )
