"""The scheduler's side of the reference server: a Python API on the same SQLite database.

Executors, tests and benchmarks use :class:`Admin` to create dag runs and queued task
instances, seed variables and connections, read back what a task did, and play the UI
("mark failed", "clear"). It is deliberately not reachable over HTTP: a task token can never
reach it. It may be used while the server runs (WAL mode), from any thread.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import threading
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from apiserver.activity import activity_document, writing_activity_file
from apiserver.auth import Scope, mint_token
from apiserver.blobs import BlobStore
from apiserver.db import connect, immediate, now_iso
from apiserver.rows import record

__all__ = ["Admin", "TaskInstanceRecord"]


@dataclass(frozen=True)
class TaskInstanceRecord:
    """A task instance as the server sees it."""

    id: str
    dag_id: str
    task_id: str
    run_id: str
    map_index: int
    try_number: int
    max_tries: int
    state: str | None
    hostname: str | None
    unixname: str | None
    pid: int | None
    start_date: dt.datetime | None
    end_date: dt.datetime | None
    last_heartbeat_at: dt.datetime | None
    #: Successful ``PUT /heartbeat`` calls so far.
    heartbeat_count: int
    #: The last ``PATCH /state`` body, decoded (None before any).
    state_payload: dict[str, Any] | None
    #: The dag run's team (None: no team).
    team_name: str | None
    #: True once :meth:`Admin.clear` archived this try.
    cleared: bool


def _new_run_id() -> str:
    return f"manual__{uuid.uuid4().hex}"


class Admin:
    """Scheduler-side access to the reference server's database at ``db_path``."""

    def __init__(self, db_path: str | Path) -> None:
        self.db_path = Path(db_path)
        self._db = connect(self.db_path)
        self._blobs = BlobStore(self.db_path)
        self._lock = threading.Lock()

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> Admin:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        with self._lock:
            return self._db.execute(sql, params)

    def _one(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Row | None:
        with self._lock:
            row: sqlite3.Row | None = self._db.execute(sql, params).fetchone()
            return row

    # --- dag runs and task instances ---------------------------------------------------

    def create_dag_run(
        self,
        dag_id: str,
        run_id: str,
        *,
        team: str | None = None,
        conf: Mapping[str, Any] | None = None,
        logical_date: dt.datetime | None = None,
        run_type: str = "manual",
        state: str = "running",
    ) -> None:
        """Create a dag run (``ValueError`` if it exists)."""
        now = now_iso()
        try:
            self._execute(
                "INSERT INTO dag_runs (dag_id, run_id, logical_date, data_interval_start,"
                " data_interval_end, run_after, start_date, run_type, state, conf, team_name)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    dag_id,
                    run_id,
                    None if logical_date is None else logical_date.isoformat(),
                    None if logical_date is None else logical_date.isoformat(),
                    None if logical_date is None else logical_date.isoformat(),
                    now,
                    now,
                    run_type,
                    state,
                    None if conf is None else json.dumps(dict(conf)),
                    team,
                ),
            )
        except sqlite3.IntegrityError as exc:
            raise ValueError(f"dag run {dag_id}/{run_id} already exists") from exc

    def create_task_instance(
        self,
        dag_id: str = "taskvisor",
        task_id: str = "task",
        run_id: str | None = None,
        *,
        map_index: int = -1,
        try_number: int = 1,
        max_tries: int = 0,
        team: str | None = None,
        state: str | None = "queued",
        ti_id: str | None = None,
    ) -> str:
        """Create a task instance (queued by default) and return its id.

        ``run_id`` None makes a fresh dag run; a missing dag run is created with ``team``. A
        task instance's team is its dag run's, so ``team`` must match an existing run's.
        """
        run_id = run_id or _new_run_id()
        run = self._one(
            "SELECT team_name FROM dag_runs WHERE dag_id = ? AND run_id = ?", (dag_id, run_id)
        )
        if run is None:
            self.create_dag_run(dag_id, run_id, team=team)
        elif team is not None and run["team_name"] != team:
            raise ValueError(
                f"dag run {dag_id}/{run_id} belongs to team {run['team_name']!r}, not {team!r}"
            )
        ti_id = ti_id or str(uuid.uuid4())
        try:
            self._execute(
                "INSERT INTO task_instances (id, dag_id, task_id, run_id, map_index, try_number,"
                " max_tries, state) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    str(uuid.UUID(ti_id)),
                    dag_id,
                    task_id,
                    run_id,
                    map_index,
                    try_number,
                    max_tries,
                    state,
                ),
            )
        except sqlite3.IntegrityError as exc:
            raise ValueError(
                f"task instance {dag_id}/{run_id}/{task_id}[{map_index}] already exists"
            ) from exc
        return str(uuid.UUID(ti_id))

    def get_task_instance(self, ti_id: str) -> TaskInstanceRecord:
        """Read a task instance back (``KeyError`` if unknown)."""
        row = self._one(
            "SELECT ti.*, dr.team_name FROM task_instances ti"
            " JOIN dag_runs dr USING (dag_id, run_id) WHERE ti.id = ?",
            (str(ti_id),),
        )
        if row is None:
            raise KeyError(f"no task instance {ti_id}")
        return record(row, TaskInstanceRecord, cleared=bool(row["archived"]))

    def set_state(self, ti_id: str, state: str | None) -> None:
        """Force a task instance's state, as "mark failed/success" in the UI does.

        A running task's next heartbeat then gets 409 ``not_running``.
        """
        if not self._execute(
            "UPDATE task_instances SET state = ? WHERE id = ? AND archived = 0", (state, ti_id)
        ).rowcount:
            raise KeyError(f"no live task instance {ti_id}")

    def clear(self, ti_id: str, *, requeue: bool = False) -> str:
        """Clear a task instance, as the UI does: archive this try and create the next one.

        The archived try's next heartbeat gets 410. Returns the new task instance's id (state
        None, or queued with ``requeue``), with ``try_number`` one higher.
        """
        new_id = str(uuid.uuid4())
        with self._lock, immediate(self._db) as db:
            # Archived first: a dag run holds one live try of a task (the task_instances_live
            # index), and the next try is copied from the archived one by SQL.
            if not db.execute(
                "UPDATE task_instances SET archived = 1 WHERE id = ? AND archived = 0", (ti_id,)
            ).rowcount:
                raise KeyError(f"no live task instance {ti_id}")
            db.execute(
                "INSERT INTO task_instances (id, dag_id, task_id, run_id, map_index,"
                " try_number, max_tries, state) SELECT ?, dag_id, task_id, run_id, map_index,"
                " try_number + 1, max_tries, ? FROM task_instances WHERE id = ?",
                (new_id, "queued" if requeue else None, ti_id),
            )
        return new_id

    # --- variables and connections -----------------------------------------------------

    def set_variable(
        self,
        key: str,
        value: str | None,
        *,
        description: str | None = None,
        team: str | None = None,
    ) -> None:
        """Create or replace a variable (``team`` None: visible to every task)."""
        self._execute(
            "INSERT OR REPLACE INTO variables (key, val, description, team_name)"
            " VALUES (?, ?, ?, ?)",
            (key, value, description, team),
        )

    def get_variable(self, key: str) -> str | None:
        """A variable's value (``KeyError`` if there is none)."""
        row = self._one("SELECT val FROM variables WHERE key = ?", (key,))
        if row is None:
            raise KeyError(key)
        value: str | None = row[0]
        return value

    def delete_variable(self, key: str) -> None:
        """Delete a variable if it exists."""
        self._execute("DELETE FROM variables WHERE key = ?", (key,))

    def set_connection(
        self,
        conn_id: str,
        conn_type: str,
        *,
        host: str | None = None,
        schema: str | None = None,
        login: str | None = None,
        password: str | None = None,
        port: int | None = None,
        extra: str | Mapping[str, Any] | None = None,
        team: str | None = None,
    ) -> None:
        """Create or replace a connection; a mapping ``extra`` is stored as its JSON text."""
        if extra is not None and not isinstance(extra, str):
            extra = json.dumps(dict(extra))
        self._execute(
            "INSERT OR REPLACE INTO connections (conn_id, conn_type, host, schema, login,"
            " password, port, extra, team_name) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (conn_id, conn_type, host, schema, login, password, port, extra, team),
        )

    def get_connection(self, conn_id: str) -> dict[str, Any]:
        """A connection's fields, ``team_name`` included (``KeyError`` if there is none)."""
        row = self._one("SELECT * FROM connections WHERE conn_id = ?", (conn_id,))
        if row is None:
            raise KeyError(conn_id)
        return dict(row)

    # --- XComs -------------------------------------------------------------------------

    def get_xcom(
        self,
        dag_id: str,
        run_id: str,
        task_id: str,
        key: str = "return_value",
        *,
        map_index: int = -1,
    ) -> Any:
        """An XCom's value, decoded from its JSON (``KeyError`` if there is none)."""
        row = self._one(
            "SELECT value, blob FROM xcoms WHERE dag_id = ? AND run_id = ? AND task_id = ?"
            " AND map_index = ? AND key = ?",
            (dag_id, run_id, task_id, map_index, key),
        )
        if row is None:
            raise KeyError(f"no XCom {key!r} for {dag_id}/{run_id}/{task_id}[{map_index}]")
        return self._xcom_value(row)

    def _xcom_value(self, row: sqlite3.Row) -> Any:
        raw = row["value"] if row["blob"] is None else self._blobs.read(row["blob"])
        return json.loads(raw)

    def xcoms_of(self, ti_id: str) -> dict[str, Any]:
        """Every XCom the task instance ``ti_id`` has pushed, by key, decoded."""
        ti = self.get_task_instance(ti_id)
        with self._lock:
            rows = self._db.execute(
                "SELECT key, value, blob FROM xcoms WHERE dag_id = ? AND run_id = ? AND task_id = ?"
                " AND map_index = ? ORDER BY key",
                (ti.dag_id, ti.run_id, ti.task_id, ti.map_index),
            ).fetchall()
        return {row["key"]: self._xcom_value(row) for row in rows}

    def set_xcom(
        self, dag_id: str, run_id: str, task_id: str, *, key: str, value: Any, map_index: int = -1
    ) -> None:
        """Store an XCom as an upstream task would have (``value`` is JSON-encoded)."""
        where = (dag_id, run_id, task_id, map_index, key)
        with self._lock, immediate(self._db) as db:
            old = db.execute(
                "SELECT blob FROM xcoms WHERE dag_id = ? AND run_id = ? AND task_id = ?"
                " AND map_index = ? AND key = ?",
                where,
            ).fetchone()
            db.execute(
                "INSERT OR REPLACE INTO xcoms (dag_id, run_id, task_id, map_index, key, value,"
                " timestamp) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (*where, json.dumps(value).encode(), now_iso()),
            )
        if old is not None and old["blob"] is not None:
            self._blobs.delete(old["blob"])

    # --- activity files ----------------------------------------------------------------

    def write_activity(
        self,
        path: str | Path,
        *,
        server: str,
        secret: str,
        entrypoint: str | None = None,
        command: Sequence[str] | None = None,
        dag_id: str = "taskvisor",
        task_id: str = "task",
        run_id: str | None = None,
        map_index: int = -1,
        try_number: int = 1,
        max_tries: int = 0,
        team: str | None = None,
        context: Mapping[str, Any] | None = None,
        log_path: str | Path | None = None,
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
        run_as: str | None = None,
        scope: Scope = "workload",
        token_lifetime: float = 600,
        extra_fields: Mapping[str, Any] | None = None,
        ti_id: str | None = None,
    ) -> str:
        """Create a queued task instance and write its activity file to ``path``.

        The token is ``workload``-scoped by default, as Airflow 3.3's executors ship it; the
        supervisor trades it for an execution token on ``/run``. The document is checked with
        ``supervise``'s own validator first: an activity it would refuse raises
        :class:`comms.activity.ActivityError`, and nothing is queued or written. So does a
        ``path`` that cannot be written. ``extra_fields`` are merged into the document as given
        and skip that check (they are for tests of the supervisor's validation). ``ti_id``
        None picks a new UUID. Returns the task instance id.
        """
        if (entrypoint is None) == (command is None):
            raise ValueError("give exactly one of entrypoint and command")
        ti_id = str(uuid.UUID(ti_id)) if ti_id else str(uuid.uuid4())
        run_id = run_id or _new_run_id()
        doc = activity_document(
            token=mint_token(secret, ti_id, scope=scope, lifetime=token_lifetime),
            server=server,
            ti={
                "id": ti_id,
                "dag_id": dag_id,
                "task_id": task_id,
                "run_id": run_id,
                "try_number": try_number,
                "map_index": map_index,
            },
            entrypoint=entrypoint,
            command=command,
            context=context,
            log_path=log_path,
            timeout=timeout,
            env=env,
            run_as=run_as,
        )
        doc.update(extra_fields or {})
        with writing_activity_file(path, doc, check=not extra_fields):
            self.create_task_instance(
                dag_id,
                task_id,
                run_id,
                map_index=map_index,
                try_number=try_number,
                max_tries=max_tries,
                team=team,
                ti_id=ti_id,
            )
        return ti_id
