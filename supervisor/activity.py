"""The activity file: what an executor hands ``supervise`` for one task try.

Validation is strict and complete before anything is contacted or started: unknown fields
are errors (a typo must not be silently ignored), and every error names the field as a JSON
path (``$.ti.try_number``), the value, and what was expected.
"""

from __future__ import annotations

import os
import pwd
import re
from typing import Any, Literal
from urllib.parse import urlsplit

import msgspec

from comms.api import TaskInstance
from comms.messages import PushedValues
from supervisor.errors import ActivityError

__all__ = ["Activity", "RunAs", "parse_activity", "resolve_run_as"]

_ENTRYPOINT = re.compile(r"^[^:\s]+:[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class Activity(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One task try to supervise (DESIGN.md, "Activity file")."""

    kind: Literal["ExecuteTask"]
    token: str
    server: str
    ti: TaskInstance
    entrypoint: str | None = None
    command: list[str] | None = None
    #: Push mode: sent to the task with StartupDetails (see :mod:`comms.pushed`).
    context: PushedValues | None = None
    log_path: str | None = None
    timeout: float | None = None
    env: dict[str, str] = msgspec.field(default_factory=dict)
    run_as: str | None = None
    isolate_network: bool = False

    def default_log_path(self) -> str:
        """Airflow's layout: ``logs/dag_id=D/run_id=R/task_id=T/[map_index=I/]attempt=N.log``."""
        ti = self.ti
        mapped = f"map_index={ti.map_index}/" if ti.map_index >= 0 else ""
        return (
            f"logs/dag_id={ti.dag_id}/run_id={ti.run_id}/task_id={ti.task_id}/"
            f"{mapped}attempt={ti.try_number}.log"
        )


class RunAs(msgspec.Struct, frozen=True):
    """A resolved OS user to run the task as."""

    name: str
    uid: int
    gid: int
    groups: list[int]
    home: str


def parse_activity(data: bytes) -> Activity:
    """Decode and validate an activity; raise :class:`ActivityError` naming the field."""
    try:
        activity = msgspec.json.decode(data, type=Activity)
    except msgspec.ValidationError as exc:
        raise _validation_error(str(exc)) from None
    except msgspec.DecodeError as exc:
        raise ActivityError("$", f"not valid JSON: {exc}") from None
    _check(activity)
    return activity


def _validation_error(text: str) -> ActivityError:
    # msgspec says e.g. "Expected `int`, got `str` - at `$.ti.try_number`", or
    # "Object missing required field `token`" (at the root, without "- at").
    message, sep, where = text.rpartition(" - at `")
    path = where.rstrip("`") if sep else "$"
    if not sep:
        message = text
    if path == "$.kind":
        message += "; expected 'ExecuteTask'"
    named = _NAMED_FIELD.match(message)
    if named:
        problem, field = named.groups()
        wording = (
            "unknown field (check the spelling)" if problem == "contains unknown" else "missing"
        )
        return ActivityError(f"{path}.{field}", wording)
    return ActivityError(path, message)


_NAMED_FIELD = re.compile(r"^Object (contains unknown|missing required) field `([^`]*)`$")


def _check(activity: Activity) -> None:
    # A NUL byte cannot cross exec or open(): refuse it now, not after the server said go.
    for path, value in (
        ("$.entrypoint", activity.entrypoint),
        ("$.log_path", activity.log_path),
        *((f"$.command[{i}]", arg) for i, arg in enumerate(activity.command or ())),
    ):
        if value is not None and "\0" in value:
            raise ActivityError(path, "contains a NUL byte")
    if not activity.token.strip():
        raise ActivityError("$.token", "must be a non-empty JWT")
    url = urlsplit(activity.server)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ActivityError(
            "$.server",
            f"got {activity.server!r}; expected an http(s) URL with a host, "
            "e.g. http://127.0.0.1:8080/execution/",
        )
    if (activity.entrypoint is None) == (activity.command is None):
        raise ActivityError("$", "give exactly one of 'entrypoint' and 'command'")
    if activity.entrypoint is not None and not _ENTRYPOINT.match(activity.entrypoint):
        raise ActivityError(
            "$.entrypoint",
            f"got {activity.entrypoint!r}; expected 'package.module:callable' "
            "or 'path/file.py:callable'",
        )
    if activity.command is not None and (not activity.command or not activity.command[0]):
        raise ActivityError(
            "$.command", "must be a non-empty list: the program, then its arguments"
        )
    for i, arg in enumerate(activity.command or ()):
        _refuse_token(f"$.command[{i}]", arg, activity.token)
    if activity.timeout is not None and not activity.timeout > 0:
        raise ActivityError(
            "$.timeout", f"got {activity.timeout!r}; expected a number of seconds > 0"
        )
    if activity.ti.try_number < 1:
        raise ActivityError(
            "$.ti.try_number", f"got {activity.ti.try_number}; expected an integer >= 1"
        )
    if activity.ti.map_index < -1:
        raise ActivityError(
            "$.ti.map_index", f"got {activity.ti.map_index}; expected -1 or an index >= 0"
        )
    for name, value in activity.env.items():
        if "\0" in value:
            raise ActivityError(f"$.env.{name}", "the value contains a NUL byte")
        if not _ENV_NAME.match(name):
            raise ActivityError(
                f"$.env.{name}", "expected a variable name of letters, digits and _"
            )
        _refuse_token(f"$.env.{name}", value, activity.token)
    if activity.context is not None:
        _check_context(activity.context, activity.token)


def _check_context(context: PushedValues, token: str) -> None:
    # Pushed values are sent to the task with StartupDetails.
    for key, value in context.variables.items():
        _refuse_token(f"$.context.variables.{key}", value, token)
    seen: set[str] = set()
    for i, conn in enumerate(context.connections):
        if conn.conn_id in seen:
            raise ActivityError(
                f"$.context.connections[{i}].conn_id", f"duplicate conn_id {conn.conn_id!r}"
            )
        seen.add(conn.conn_id)
        for name, value in msgspec.structs.asdict(conn).items():
            if isinstance(value, str):
                _refuse_token(f"$.context.connections[{i}].{name}", value, token)


def _refuse_token(field: str, value: str, token: str) -> None:
    # For what the task receives: its environment, argv and pushed values.
    if token in value:
        raise ActivityError(field, "holds the token, which never reaches the task")


def resolve_run_as(name: str, *, euid: int) -> RunAs:
    """Look up the user ``run_as`` names; raise :class:`ActivityError` if impossible."""
    if euid != 0:
        raise ActivityError("$.run_as", f"running as {name!r} needs supervise to run as root")
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise ActivityError("$.run_as", f"no such user {name!r} on this machine") from None
    groups = os.getgrouplist(name, entry.pw_gid)
    return RunAs(name, entry.pw_uid, entry.pw_gid, groups, entry.pw_dir)


def describe(activity: Activity) -> dict[str, Any]:
    """The activity for log records: identity only, never the token or the context."""
    return {
        "ti_id": str(activity.ti.id),
        "dag_id": activity.ti.dag_id,
        "task_id": activity.ti.task_id,
        "run_id": activity.ti.run_id,
        "try_number": activity.ti.try_number,
    }
