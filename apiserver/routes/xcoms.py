"""``/xcoms/{dag_id}/{run_id}/{task_id}/{key}``: task results passed between tasks.

Values are stored as the raw JSON the task sent and answered without being parsed again, so a
100 MB value costs a few linear copies, not a decode and re-encode; large ones go to files
(:mod:`apiserver.blobs`) through worker threads, so they never stall other requests. Any valid
token may read any XCom (a task pulls its upstreams' results, as in Airflow); only the task
instance a token belongs to may write or delete its own XComs.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import BinaryIO

import msgspec
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from apiserver.auth import TokenClaims
from apiserver.blobs import INLINE_LIMIT, READ_CHUNK, BlobStore
from apiserver.db import now_iso
from apiserver.inputs import json_body, query_bool, query_int
from apiserver.responses import ApiError, json_response, not_found
from apiserver.security import ServerContext, authenticated
from comms.api import XComResponse

__all__ = ["MAX_MAP_LENGTH", "routes"]

#: Airflow's ``[core] max_map_length`` default: the most mapped task instances a value may feed.
MAX_MAP_LENGTH = 1024


class _Where:
    """The XCom a request names: path parameters plus ``map_index``."""

    def __init__(self, request: Request) -> None:
        params = request.path_params
        self.dag_id: str = params["dag_id"]
        self.run_id: str = params["run_id"]
        self.task_id: str = params["task_id"]
        self.key: str = params["key"]
        self.map_index = query_int(request, "map_index", -1)
        if not self.key:
            raise ApiError(400, {"reason": "invalid_key", "message": "XCom key must not be empty"})


def _check_json(body: bytes) -> None:
    try:
        # Validates without building Python objects: the value is stored as sent.
        msgspec.json.decode(body, type=msgspec.Raw)
    except msgspec.DecodeError as exc:
        raise ApiError(
            400, {"reason": "invalid_format", "message": f"XCom value is not JSON: {exc}"}
        ) from exc


def _streamed(key: str, file: BinaryIO, size: int) -> Response:
    """``{"key": key, "value": <file>}`` streamed from a blob file, read in worker threads."""
    head = b'{"key":' + msgspec.json.encode(key) + b',"value":'

    async def chunks() -> AsyncIterator[bytes]:
        try:
            yield head
            while chunk := await run_in_threadpool(file.read, READ_CHUNK):
                yield chunk
            yield b"}"
        finally:
            file.close()

    return StreamingResponse(
        chunks(),
        media_type="application/json",
        headers={"Content-Length": str(len(head) + size + 1)},
    )


def routes(server: ServerContext, blobs: BlobStore) -> list[Route]:
    """The XCom routes, bound to ``server``; large values live in ``blobs``."""
    db = server.db

    def check_own(where: _Where, claims: TokenClaims) -> None:
        identity = server.task_identity(claims.ti_id)
        if identity is None or (
            identity.dag_id,
            identity.run_id,
            identity.task_id,
            identity.map_index,
        ) != (where.dag_id, where.run_id, where.task_id, where.map_index):
            raise ApiError(403, "Task instance may only write or delete its own XComs")

    def stored_blob(where: _Where) -> str | None:
        row = db.execute(
            "SELECT blob FROM xcoms WHERE dag_id = ? AND run_id = ? AND task_id = ?"
            " AND map_index = ? AND key = ?",
            (where.dag_id, where.run_id, where.task_id, where.map_index, where.key),
        ).fetchone()
        return None if row is None else row[0]

    async def get_xcom(request: Request, claims: TokenClaims) -> Response:
        where = _Where(request)
        include_prior_dates = query_bool(request, "include_prior_dates", False)
        row = db.execute(
            "SELECT value, blob FROM xcoms WHERE dag_id = ? AND run_id = ? AND task_id = ?"
            " AND map_index = ? AND key = ?",
            (where.dag_id, where.run_id, where.task_id, where.map_index, where.key),
        ).fetchone()
        if row is None and include_prior_dates:
            # The latest value from this or an earlier run of the same dag.
            row = db.execute(
                "SELECT x.value, x.blob FROM xcoms x JOIN dag_runs dr USING (dag_id, run_id)"
                " WHERE x.dag_id = ? AND x.task_id = ? AND x.map_index = ? AND x.key = ?"
                " AND coalesce(dr.logical_date, dr.run_after, '') <= (SELECT"
                "   coalesce(logical_date, run_after, '') FROM dag_runs"
                "   WHERE dag_id = ? AND run_id = ?)"
                " ORDER BY coalesce(dr.logical_date, dr.run_after, '') DESC, x.timestamp DESC"
                " LIMIT 1",
                (
                    where.dag_id,
                    where.task_id,
                    where.map_index,
                    where.key,
                    where.dag_id,
                    where.run_id,
                ),
            ).fetchone()
        if row is None:
            raise not_found(
                f"XCom with key='{where.key}' map_index={where.map_index} not found for task "
                f"'{where.task_id}' in DAG run '{where.run_id}' of '{where.dag_id}'"
            )
        value, blob = row
        if blob is None:
            return json_response(XComResponse(key=where.key, value=msgspec.Raw(value)))
        # Opened now, on the loop: a concurrent replace may unlink the file, not this handle.
        file = blobs.open(blob)
        return _streamed(where.key, file, os.fstat(file.fileno()).st_size)

    async def count_xcoms(request: Request, claims: TokenClaims) -> Response:
        if "map_index" in request.query_params:
            raise ApiError(400, "map_index is not allowed when counting XComs")
        where = _Where(request)
        (count,) = db.execute(
            "SELECT count(*) FROM xcoms WHERE dag_id = ? AND run_id = ? AND task_id = ?"
            " AND key = ?",
            (where.dag_id, where.run_id, where.task_id, where.key),
        ).fetchone()
        return Response(status_code=200, headers={"Content-Range": f"map_indexes {count}"})

    async def set_xcom(request: Request, claims: TokenClaims) -> Response:
        where = _Where(request)
        check_own(where, claims)
        mapped_length = query_int(request, "mapped_length", 0)
        if mapped_length > MAX_MAP_LENGTH:
            raise ApiError(
                400,
                {
                    "reason": "unmappable_return_value_length",
                    "message": f"pushing {mapped_length} values would exceed the maximum of "
                    f"{MAX_MAP_LENGTH} mapped task instances",
                },
            )
        body = await json_body(request)
        value: bytes | None = body
        blob: str | None = None
        if len(body) > INLINE_LIMIT:
            await run_in_threadpool(_check_json, body)
            blob = await run_in_threadpool(blobs.write, body)
            value = None
        else:
            _check_json(body)
        # No await between reading the old row and replacing it: no other request interleaves.
        replaced = stored_blob(where)
        db.execute(
            "INSERT INTO xcoms (dag_id, run_id, task_id, map_index, key, value, blob, timestamp)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (dag_id, run_id, task_id, map_index, key)"
            " DO UPDATE SET value = excluded.value, blob = excluded.blob,"
            " timestamp = excluded.timestamp",
            (
                where.dag_id,
                where.run_id,
                where.task_id,
                where.map_index,
                where.key,
                value,
                blob,
                now_iso(),
            ),
        )
        if replaced is not None:
            await run_in_threadpool(blobs.delete, replaced)
        return json_response({"message": "XCom successfully set"}, 201)

    async def delete_xcom(request: Request, claims: TokenClaims) -> Response:
        where = _Where(request)
        check_own(where, claims)
        replaced = stored_blob(where)
        db.execute(
            "DELETE FROM xcoms WHERE dag_id = ? AND run_id = ? AND task_id = ? AND map_index = ?"
            " AND key = ?",
            (where.dag_id, where.run_id, where.task_id, where.map_index, where.key),
        )
        if replaced is not None:
            await run_in_threadpool(blobs.delete, replaced)
        return json_response({"message": f"XCom with key: {where.key} successfully deleted."})

    path = "/xcoms/{dag_id}/{run_id}/{task_id}/{key:path}"
    return [
        # HEAD first: Starlette also answers HEAD on a GET route.
        Route(path, authenticated(server, count_xcoms), methods=["HEAD"]),
        Route(path, authenticated(server, get_xcom), methods=["GET"]),
        Route(path, authenticated(server, set_xcom), methods=["POST"]),
        Route(path, authenticated(server, delete_xcom), methods=["DELETE"]),
    ]
