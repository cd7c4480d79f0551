"""``/task-instances/{id}/run``, ``/state`` and ``/heartbeat``: a task try's lifecycle.

Every route here needs the token's ``sub`` to be the path's id. State changes run inside
``BEGIN IMMEDIATE`` so that a check and its update are one step, as Airflow's
``SELECT ... FOR UPDATE`` makes them.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from apiserver.auth import TokenClaims
from apiserver.db import immediate, now_iso
from apiserver.inputs import decode_body, json_body
from apiserver.responses import ApiError, json_response, not_found, validation_error_from_msgspec
from apiserver.rows import record
from apiserver.security import REFRESHED_TOKEN_HEADER, ServerContext, authenticated
from comms.api import (
    DagRun,
    TIDeferredStatePayload,
    TIEnterRunningPayload,
    TIHeartbeatInfo,
    TIRunContext,
    TIStateUpdate,
    TITerminalStatePayload,
    state_update_decoder,
)

__all__ = ["routes"]

_TI_NOT_FOUND = "Task Instance not found"
_RUNNABLE = ("queued", "restarting")


def _iso(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).isoformat()


def _state_of(payload: TIStateUpdate) -> str:
    if isinstance(payload, TITerminalStatePayload):
        return payload.state
    tag = type(payload).__struct_config__.tag
    assert isinstance(tag, str)
    return tag


def _live_ti(db: sqlite3.Connection, ti_id: str) -> sqlite3.Row:
    row: sqlite3.Row | None = db.execute(
        "SELECT * FROM task_instances WHERE id = ? AND archived = 0", (ti_id,)
    ).fetchone()
    if row is None:
        raise not_found(_TI_NOT_FOUND)
    return row


def routes(server: ServerContext) -> list[Route]:
    """The task instance routes, bound to ``server``."""
    db = server.db

    async def run(request: Request, claims: TokenClaims) -> Response:
        payload = decode_body(await json_body(request), TIEnterRunningPayload)
        ti_id = claims.ti_id
        with immediate(db):
            context = _enter_running(db, ti_id, payload)
        headers = {}
        if claims.scope == "workload":
            headers[REFRESHED_TOKEN_HEADER] = server.mint_execution_token(ti_id)
        return json_response(context, headers=headers)

    async def update_state(request: Request, claims: TokenClaims) -> Response:
        body = await json_body(request)
        try:
            payload = state_update_decoder(body)
        except msgspec.MsgspecError as exc:
            raise validation_error_from_msgspec(exc) from exc
        with immediate(db):
            status = _apply_state(db, claims.ti_id, payload, body)
        return Response(status_code=status)

    async def heartbeat(request: Request, claims: TokenClaims) -> Response:
        info = decode_body(await json_body(request), TIHeartbeatInfo)
        ti_id = claims.ti_id
        # Hot path, one statement: the TI is running here, so just record the beat.
        updated = db.execute(
            "UPDATE task_instances SET last_heartbeat_at = ?, heartbeat_count = heartbeat_count + 1"
            " WHERE id = ? AND archived = 0 AND state = 'running' AND hostname = ? AND pid = ?",
            (now_iso(), ti_id, info.hostname, info.pid),
        ).rowcount
        if updated:
            return Response(status_code=204)
        row = db.execute(
            "SELECT state, hostname, pid, archived FROM task_instances WHERE id = ?", (ti_id,)
        ).fetchone()
        if row is None:
            raise not_found(_TI_NOT_FOUND)
        if row["archived"]:
            raise ApiError(
                410,
                {
                    "reason": "cleared",
                    "message": "Task Instance was cleared while running: this try is over",
                },
            )
        if (row["hostname"], row["pid"]) != (info.hostname, info.pid):
            raise ApiError(
                409,
                {
                    "reason": "running_elsewhere",
                    "message": "TI is already running elsewhere",
                    "current_hostname": row["hostname"],
                    "current_pid": row["pid"],
                },
            )
        raise ApiError(
            409,
            {
                "reason": "not_running",
                "message": "TI is no longer in the running state and task should terminate",
                "current_state": row["state"],
            },
        )

    prefix = "/task-instances/{task_instance_id}"
    return [
        Route(
            f"{prefix}/run",
            authenticated(server, run, workload_ok=True, ti_self=True),
            methods=["PATCH"],
        ),
        Route(
            f"{prefix}/state", authenticated(server, update_state, ti_self=True), methods=["PATCH"]
        ),
        Route(
            f"{prefix}/heartbeat", authenticated(server, heartbeat, ti_self=True), methods=["PUT"]
        ),
    ]


def _enter_running(
    db: sqlite3.Connection, ti_id: str, payload: TIEnterRunningPayload
) -> TIRunContext:
    ti = _live_ti(db, ti_id)
    previous = ti["state"]
    same_client = (ti["hostname"], ti["unixname"], ti["pid"]) == (
        payload.hostname,
        payload.unixname,
        payload.pid,
    )
    # A retried /run from the same process (its first answer was lost) is answered again.
    if not (previous == "running" and same_client) and previous not in _RUNNABLE:
        raise ApiError(
            409,
            {
                "reason": "invalid_state",
                "message": "TI was not in a state where it could be marked as running",
                "previous_state": previous,
            },
        )
    resuming = ti["next_method"] is not None
    db.execute(
        "UPDATE task_instances SET state = 'running', hostname = ?, unixname = ?, pid = ?,"
        " start_date = ?, end_date = NULL, last_heartbeat_at = ? WHERE id = ?",
        (
            payload.hostname,
            payload.unixname,
            payload.pid,
            # A task resuming from deferral keeps the start of its first run.
            ti["start_date"] if resuming else _iso(payload.start_date),
            now_iso(),
            ti_id,
        ),
    )
    dag_run = db.execute(
        "SELECT * FROM dag_runs WHERE dag_id = ? AND run_id = ?", (ti["dag_id"], ti["run_id"])
    ).fetchone()
    keys: list[str] = []
    # XComs of an earlier try are the worker's to clear; not when resuming (they are its own).
    if not resuming:
        query = "SELECT key FROM xcoms WHERE dag_id = ? AND run_id = ? AND task_id = ?"
        params: tuple[Any, ...] = (ti["dag_id"], ti["run_id"], ti["task_id"])
        if ti["map_index"] >= 0:
            query += " AND map_index = ?"
            params += (ti["map_index"],)
        keys = [row[0] for row in db.execute(query + " ORDER BY key", params)]
    max_tries = ti["max_tries"]
    return record(
        ti,  # max_tries, next_method, next_kwargs
        TIRunContext,
        dag_run=record(dag_run, DagRun),
        should_retry=previous == "restarting" or (max_tries != 0 and ti["try_number"] <= max_tries),
        xcom_keys_to_clear=keys,
    )


def _apply_state(db: sqlite3.Connection, ti_id: str, payload: TIStateUpdate, body: bytes) -> int:
    ti = _live_ti(db, ti_id)
    state = _state_of(payload)
    previous = ti["state"]
    if previous == state:
        return 200
    if previous != "running":
        raise ApiError(
            409,
            {
                "reason": "invalid_state",
                "message": "TI was not in the running state so it cannot be updated",
                "previous_state": previous,
            },
        )
    end_date = getattr(payload, "end_date", None)
    next_method: str | None = None
    next_kwargs: str | None = None
    if isinstance(payload, TIDeferredStatePayload):
        next_method = payload.next_method
        next_kwargs = json.dumps(payload.next_kwargs)
    db.execute(
        "UPDATE task_instances SET state = ?, end_date = ?, state_payload = ?,"
        " next_method = ?, next_kwargs = ? WHERE id = ?",
        (
            state,
            None if end_date is None else _iso(end_date),
            body.decode(),
            next_method,
            next_kwargs,
            ti_id,
        ),
    )
    return 204
