"""The reference server's state: one SQLite file, opened in WAL mode.

Both the HTTP app and :class:`apiserver.admin.Admin` open the same file; WAL lets a test read
task state while the server writes it. Timestamps are ISO-8601 UTC strings; JSON columns
(``conf``, ``state_payload``, XCom values) hold JSON text exactly as received.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import sqlite3
from collections.abc import Iterator
from pathlib import Path

__all__ = ["SCHEMA", "connect", "immediate", "now_iso"]

#: The whole schema. ``CREATE ... IF NOT EXISTS`` so that reopening a database (a server
#: restart) keeps its rows.
SCHEMA = """
CREATE TABLE IF NOT EXISTS dag_runs (
    dag_id              TEXT NOT NULL,
    run_id              TEXT NOT NULL,
    logical_date        TEXT,
    data_interval_start TEXT,
    data_interval_end   TEXT,
    run_after           TEXT,
    start_date          TEXT,
    end_date            TEXT,
    clear_number        INTEGER NOT NULL DEFAULT 0,
    run_type            TEXT NOT NULL DEFAULT 'manual',
    state               TEXT NOT NULL DEFAULT 'running',
    conf                TEXT,
    team_name           TEXT,
    PRIMARY KEY (dag_id, run_id)
);

CREATE TABLE IF NOT EXISTS task_instances (
    id                TEXT PRIMARY KEY,
    dag_id            TEXT NOT NULL,
    task_id           TEXT NOT NULL,
    run_id            TEXT NOT NULL,
    map_index         INTEGER NOT NULL DEFAULT -1,
    try_number        INTEGER NOT NULL DEFAULT 1,
    max_tries         INTEGER NOT NULL DEFAULT 0,
    state             TEXT,
    hostname          TEXT,
    unixname          TEXT,
    pid               INTEGER,
    start_date        TEXT,
    end_date          TEXT,
    last_heartbeat_at TEXT,
    heartbeat_count   INTEGER NOT NULL DEFAULT 0,
    state_payload     TEXT,
    next_method       TEXT,
    next_kwargs       TEXT,
    -- 1 once the row was cleared (archived to history, as Airflow does): heartbeats get 410.
    archived          INTEGER NOT NULL DEFAULT 0,
    FOREIGN KEY (dag_id, run_id) REFERENCES dag_runs (dag_id, run_id)
);

CREATE UNIQUE INDEX IF NOT EXISTS task_instances_live
    ON task_instances (dag_id, run_id, task_id, map_index) WHERE archived = 0;

CREATE TABLE IF NOT EXISTS variables (
    key         TEXT PRIMARY KEY,
    val         TEXT,
    description TEXT,
    team_name   TEXT
);

CREATE TABLE IF NOT EXISTS connections (
    conn_id   TEXT PRIMARY KEY,
    conn_type TEXT NOT NULL,
    host      TEXT,
    schema    TEXT,
    login     TEXT,
    password  TEXT,
    port      INTEGER,
    extra     TEXT,
    team_name TEXT
);

CREATE TABLE IF NOT EXISTS xcoms (
    dag_id    TEXT NOT NULL,
    run_id    TEXT NOT NULL,
    task_id   TEXT NOT NULL,
    map_index INTEGER NOT NULL DEFAULT -1,
    key       TEXT NOT NULL,
    -- The JSON as received; large values live in a file instead (apiserver.blobs), named here.
    value     BLOB,
    blob      TEXT,
    timestamp TEXT NOT NULL,
    CHECK ((value IS NULL) != (blob IS NULL)),
    PRIMARY KEY (dag_id, run_id, task_id, map_index, key)
);
"""


def now_iso() -> str:
    """The current time as the ISO-8601 UTC string stored in every timestamp column."""
    return dt.datetime.now(dt.UTC).isoformat()


def connect(path: str | Path) -> sqlite3.Connection:
    """Open (creating if needed) the database at ``path``, in WAL mode with the schema applied.

    The connection is in autocommit mode (``isolation_level=None``): callers group writes with
    explicit ``BEGIN IMMEDIATE`` where a read-then-write must be atomic. It may be used from
    another thread than the one that opened it, but by one thread at a time.
    """
    conn = sqlite3.connect(
        str(path), isolation_level=None, check_same_thread=False, cached_statements=256
    )
    conn.row_factory = sqlite3.Row
    # Readers (the Admin API in a test) must not block the server, and the server must not fail
    # on a short write lock held by the Admin: WAL plus a busy timeout gives both.
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA busy_timeout=10000")
    # NORMAL is durable against process crashes (what the fault tests do) and much faster.
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.executescript(SCHEMA)
    return conn


@contextlib.contextmanager
def immediate(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """A write transaction taken up front (``BEGIN IMMEDIATE``): committed, or rolled back on
    any exception. Reads inside it see a state no other writer can change before the commit.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
