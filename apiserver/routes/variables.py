"""``/variables/{key}``: read, set and delete variables, within the token's team.

Team rule: a variable with no team is global; one with a team is visible only to tokens whose
task instance's dag run has that team. Another team's variable answers 403, as Airflow's
multi-team mode does (it says the variable exists, never its value).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from apiserver.auth import TokenClaims
from apiserver.inputs import decode_body, json_body
from apiserver.responses import ApiError, json_response, not_found
from apiserver.security import ServerContext, authenticated
from comms.api import VariablePostBody, VariableResponse

__all__ = ["routes"]


def routes(server: ServerContext) -> list[Route]:
    """The variable routes, bound to ``server``."""
    db = server.db

    def check_team(key: str, claims: TokenClaims) -> tuple[bool, str | None]:
        """(exists, its team), after refusing another team's variable with 403."""
        row = db.execute("SELECT team_name FROM variables WHERE key = ?", (key,)).fetchone()
        if row is None:
            return False, None
        team = row[0]
        if team is not None and team != server.team_of(claims):
            raise ApiError(403, f"Task does not have access to variable {key}")
        return True, team

    async def get_variable(request: Request, claims: TokenClaims) -> Response:
        key = request.path_params["key"]
        check_team(key, claims)
        row = db.execute("SELECT val FROM variables WHERE key = ?", (key,)).fetchone()
        if row is None:
            raise not_found(f"Variable with key '{key}' not found")
        return json_response(VariableResponse(key=key, value=row[0]))

    async def put_variable(request: Request, claims: TokenClaims) -> Response:
        key = request.path_params["key"]
        body = decode_body(await json_body(request), VariablePostBody)
        exists, team = check_team(key, claims)
        # A new variable belongs to the writer's team; an existing one keeps its owner.
        if not exists:
            team = server.team_of(claims)
        db.execute(
            "INSERT INTO variables (key, val, description, team_name) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (key) DO UPDATE SET val = excluded.val,"
            " description = excluded.description",
            (key, body.val, body.description, team),
        )
        return json_response({"message": "Variable successfully set"}, 201)

    async def delete_variable(request: Request, claims: TokenClaims) -> Response:
        key = request.path_params["key"]
        check_team(key, claims)
        db.execute("DELETE FROM variables WHERE key = ?", (key,))
        return Response(status_code=204)

    return [
        Route("/variables/{key:path}", authenticated(server, get_variable), methods=["GET"]),
        Route("/variables/{key:path}", authenticated(server, put_variable), methods=["PUT"]),
        Route("/variables/{key:path}", authenticated(server, delete_variable), methods=["DELETE"]),
    ]
