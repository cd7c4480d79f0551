"""SQLite rows to typed records, in one place: the routes' ``comms.api`` structs and
:class:`apiserver.admin.TaskInstanceRecord` are built from rows by :func:`record`.

Columns are matched to fields by name (other columns are ignored); ISO-8601 timestamps become
datetimes; the JSON-text columns of :data:`JSON_COLUMNS` are decoded, as they were stored
(:mod:`apiserver.db`).
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any, TypeVar

import msgspec

__all__ = ["JSON_COLUMNS", "record"]

T = TypeVar("T")

#: Columns holding a JSON document that records carry decoded. ``connections.extra`` is JSON
#: text too but is not here: Airflow's ``ConnectionResponse`` sends it as a string.
JSON_COLUMNS = frozenset({"conf", "state_payload", "next_kwargs"})


def record(row: sqlite3.Row, kind: type[T], **fields: Any) -> T:
    """``row`` as a ``kind`` (a msgspec struct or a dataclass); ``fields`` add to the row's
    columns or replace them (values no column holds, e.g. a bool SQLite stores as 0/1).

    A row that does not fit ``kind`` raises :class:`msgspec.ValidationError`: the schema and
    the record disagree, a bug rather than bad input.
    """
    values = dict(row)
    for column in JSON_COLUMNS.intersection(values):
        if values[column] is not None:
            # json.loads, not msgspec: Admin writes conf with json.dumps, which may write NaN.
            values[column] = json.loads(values[column])
    values.update(fields)
    return msgspec.convert(values, kind)
