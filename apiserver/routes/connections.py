"""``/connections/{conn_id}``: read a connection, within the token's team (403 otherwise)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from apiserver.auth import TokenClaims
from apiserver.responses import ApiError, json_response, not_found
from apiserver.rows import record
from apiserver.security import ServerContext, authenticated
from comms.api import ConnectionResponse

__all__ = ["routes"]


def routes(server: ServerContext) -> list[Route]:
    """The connection route, bound to ``server``."""
    db = server.db

    async def get_connection(request: Request, claims: TokenClaims) -> Response:
        conn_id = request.path_params["conn_id"]
        row = db.execute("SELECT * FROM connections WHERE conn_id = ?", (conn_id,)).fetchone()
        if row is None:
            raise not_found(f"Connection with ID {conn_id} not found")
        if row["team_name"] is not None and row["team_name"] != server.team_of(claims):
            raise ApiError(403, f"Task does not have access to connection {conn_id}")
        return json_response(record(row, ConnectionResponse))

    return [Route("/connections/{conn_id}", authenticated(server, get_connection), methods=["GET"])]
