"""Who may call what: bearer-token checks wrapped around every route but ``/health``.

Order of checks, as Airflow's FastAPI dependencies give it: no bearer → 401; a token that does
not verify → 403 ``Invalid auth token: ...``; a ``workload`` token on any route but ``/run`` →
403; on ``/task-instances/{id}/...`` a ``sub`` other than ``id`` → 403. After the route ran, a
valid ``execution`` token close to expiry gets a replacement in ``Refreshed-API-Token``.
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from starlette.requests import Request
from starlette.responses import Response

from apiserver.auth import (
    InvalidToken,
    TokenClaims,
    check_time_claims,
    decode_token,
    mint_token,
    reissue_token,
)
from apiserver.responses import ApiError, validation_error

__all__ = [
    "REFRESHED_TOKEN_HEADER",
    "Endpoint",
    "Handler",
    "ServerContext",
    "TaskIdentity",
    "authenticated",
]

#: A route body: gets the request and the verified claims.
Handler = Callable[[Request, TokenClaims], Awaitable[Response]]
#: What Starlette calls.
Endpoint = Callable[[Request], Awaitable[Response]]

#: The response header that carries a replacement token.
REFRESHED_TOKEN_HEADER = "Refreshed-API-Token"  # noqa: S105 (a header name)

_VERIFIED_CACHE_SIZE = 4096


@dataclass(frozen=True)
class TaskIdentity:
    """Where a task instance's XComs live, and the team of its dag run."""

    dag_id: str
    run_id: str
    task_id: str
    map_index: int
    team_name: str | None


@dataclass
class ServerContext:
    """Everything a route needs: the database and the token policy."""

    db: sqlite3.Connection
    secret: str
    token_lifetime: float
    leeway: float
    #: Reissue when fewer seconds than this are left: Airflow's max(20% of lifetime, 30 s).
    refresh_threshold: float
    #: Tokens that verified, by their exact text: a supervisor sends the same token many
    #: times, and re-checking the signature is most of the per-request cost.
    _verified: dict[str, TokenClaims] = field(default_factory=dict)

    def task_identity(self, ti_id: str) -> TaskIdentity | None:
        """The live task instance ``ti_id`` with its run's team, or None if there is none."""
        row = self.db.execute(
            "SELECT ti.dag_id, ti.run_id, ti.task_id, ti.map_index, dr.team_name"
            " FROM task_instances ti JOIN dag_runs dr USING (dag_id, run_id)"
            " WHERE ti.id = ? AND ti.archived = 0",
            (ti_id,),
        ).fetchone()
        return None if row is None else TaskIdentity(*row)

    def team_of(self, claims: TokenClaims) -> str | None:
        """The team a token acts for: its task instance's dag run team (None: no team)."""
        identity = self.task_identity(claims.ti_id)
        return None if identity is None else identity.team_name

    def mint_execution_token(self, ti_id: str) -> str:
        """A fresh ``execution`` token for ``ti_id`` (what ``/run`` trades a workload token for)."""
        return mint_token(self.secret, ti_id, scope="execution", lifetime=self.token_lifetime)

    def _verify(self, token: str) -> TokenClaims:
        now = time.time()
        try:
            claims = self._verified.get(token)
            if claims is None:
                claims = decode_token(token, self.secret, leeway=self.leeway, now=now)
                if len(self._verified) >= _VERIFIED_CACHE_SIZE:
                    self._verified.clear()
                self._verified[token] = claims
            else:
                # The signature was checked once; the time claims are checked every time.
                check_time_claims(claims, now, leeway=self.leeway)
        except InvalidToken as exc:
            self._verified.pop(token, None)
            raise ApiError(403, f"Invalid auth token: {exc}") from exc
        return claims

    def authenticate(self, request: Request, *, workload_ok: bool, ti_self: bool) -> TokenClaims:
        """Verify the request's bearer token for this route, or raise the :class:`ApiError`."""
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(401, "Missing auth token")
        claims = self._verify(token.strip())
        if claims.scope == "workload" and not workload_ok:
            raise ApiError(403, "Token type 'workload' not allowed for this endpoint")
        if ti_self:
            path_id = request.path_params["task_instance_id"]
            try:
                parsed = uuid.UUID(path_id)
            except ValueError as exc:
                raise validation_error(
                    ["path", "task_instance_id"],
                    "Input should be a valid UUID",
                    "uuid_parsing",
                ) from exc
            if parsed != claims.sub:
                raise ApiError(403, "Token subject does not match task instance ID")
        return claims


def authenticated(
    server: ServerContext, handler: Handler, *, workload_ok: bool = False, ti_self: bool = False
) -> Endpoint:
    """Wrap ``handler`` with the token checks and the near-expiry reissue.

    ``workload_ok``: accept ``workload`` tokens (only ``/run``). ``ti_self``: the path's
    ``task_instance_id`` must be the token's ``sub``.
    """

    async def endpoint(request: Request) -> Response:
        try:
            claims = server.authenticate(request, workload_ok=workload_ok, ti_self=ti_self)
        except ApiError as exc:
            return exc.response()
        try:
            response = await handler(request, claims)
        except ApiError as exc:
            response = exc.response()
        # Workload tokens are exchanged on /run instead (the route sets the header itself).
        if (
            claims.scope == "execution"
            and REFRESHED_TOKEN_HEADER not in response.headers
            and claims.exp - time.time() < server.refresh_threshold
        ):
            response.headers[REFRESHED_TOKEN_HEADER] = reissue_token(
                server.secret, claims, lifetime=server.token_lifetime
            )
        return response

    return endpoint
