"""The activity document: what an executor hands ``supervise`` for one task try (docs/design.md).

One validator serves every side: ``supervise`` parses what it reads with
:func:`parse_activity`, and the reference server's ``taskvisor activity`` runs the document it
is about to write through the same function before it queues anything. It lives in ``comms``
because the reference server may import no other taskvisor package.

Validation is strict and complete before anything is contacted or started: unknown fields and
duplicate keys are errors (a typo or a second ``kind`` must not be silently ignored), sizes and
numbers are bounded by the ``MAX_*`` constants below, and every error names the field as a
JSON path (``$.ti.try_number``), the value (shortened, and never the token) and what was
expected. Sans-IO: bytes in, an :class:`Activity` or an :class:`ActivityError` out.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal, Protocol, TypeVar
from urllib.parse import urlsplit

import msgspec

from comms.api import TaskInstance
from comms.errors import TaskvisorError
from comms.messages import PushedValues

__all__ = [
    "MAX_ACTIVITY_BYTES",
    "MAX_EXEC_BYTES",
    "MAX_EXEC_STRING_BYTES",
    "MAX_ID_LENGTH",
    "MAX_MAP_INDEX",
    "MAX_PATH_BYTES",
    "MAX_TIMEOUT",
    "MAX_TOKEN_LENGTH",
    "MAX_TRY_NUMBER",
    "MAX_USER_NAME_LENGTH",
    "Activity",
    "ActivityError",
    "check_server_url",
    "parse_activity",
]

_KiB = 1024
_MiB = 1024 * _KiB

#: The largest activity document, in bytes. ``supervise`` reads at most one byte more, so a
#: huge file or stdin costs no more memory than this.
MAX_ACTIVITY_BYTES = 16 * _MiB
#: The longest ``ti.dag_id``, ``ti.task_id`` and ``ti.run_id``: Airflow's columns are 250 wide.
MAX_ID_LENGTH = 250
#: The highest ``ti.try_number``: far above any real retry count, far below a typo's 10**30.
MAX_TRY_NUMBER = 10_000
#: The highest ``ti.map_index``: Airflow stores it in a 32-bit integer column.
MAX_MAP_INDEX = 2**31 - 1
#: The longest ``timeout``, in seconds (30 days): beyond it, a unit mistake, not a deadline.
MAX_TIMEOUT = 30 * 24 * 3600.0
#: The longest ``token``, in characters: it travels in every request's HTTP headers.
MAX_TOKEN_LENGTH = 16 * _KiB
#: The largest ``env`` entry (``NAME=value``) or ``command`` argument, in UTF-8 bytes: Linux
#: refuses any single exec string over 128 KiB, and the task would fail only after /run.
MAX_EXEC_STRING_BYTES = 64 * _KiB
#: The largest ``env`` and ``command`` together, in UTF-8 bytes: exec's budget for arguments
#: and environment (2 MiB under the default 8 MiB stack limit) also holds supervise's own.
MAX_EXEC_BYTES = 1 * _MiB
#: The longest ``log_path``, in UTF-8 bytes: Linux's ``PATH_MAX``.
MAX_PATH_BYTES = 4096
#: The longest ``run_as`` user name: Linux's ``LOGIN_NAME_MAX``.
MAX_USER_NAME_LENGTH = 256

_ENTRYPOINT = re.compile(r"^[^:\s]+:[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# A JWS compact serialisation: header.payload.signature, each base64url without padding. The
# signature is not verified here: the supervisor has no key, the server checks it on /run.
_JWT = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$")
_AUTHORITY = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://([^/?#]*)")
_HOST = re.compile(r"^[A-Za-z0-9._-]{1,253}$")
_SERVER_EXAMPLE = "e.g. http://127.0.0.1:8080/execution/"
_T = TypeVar("_T")
#: Characters of a value an error message shows before it shortens it.
_SHOWN = 80


class ActivityError(TaskvisorError):
    """The activity is invalid. ``field`` is a JSON path such as ``$.ti.dag_id``.

    ``document`` names what was read (an ``activity``, Airflow's ``workload``, ...); the
    message is ``"{document} {field}: {reason}"``.
    """

    def __init__(self, field: str, reason: str, *, document: str = "activity") -> None:
        super().__init__(f"{document} {field}: {reason}")
        self.field = field
        self.reason = reason
        self.document = document


class Activity(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One task try to supervise (docs/design.md, "Activity file")."""

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
        """Airflow's layout under ``logs/``: ``logs/`` + :meth:`TaskInstance.log_path`."""
        return "logs/" + self.ti.log_path()


def parse_activity(data: bytes) -> Activity:
    """Decode and validate an activity; raise :class:`ActivityError` naming the field."""
    _refuse_oversized_or_empty(data, "push fewer values in context")
    _decode_tree(data)
    activity = _decode(data, Activity)
    _check(activity)
    return activity


def _refuse_oversized_or_empty(data: bytes, how_to_shrink: str) -> None:
    if len(data) > MAX_ACTIVITY_BYTES:
        raise ActivityError(
            "$",
            f"larger than {_amount(MAX_ACTIVITY_BYTES)}; expected a smaller document "
            f"({how_to_shrink})",
        )
    if not data.strip():
        raise ActivityError("$", "the document is empty; expected a JSON object")


def _decode(data: bytes, type_: type[_T]) -> _T:
    """``data`` as ``type_``; msgspec's errors become an :class:`ActivityError` at their path."""
    try:
        return msgspec.json.decode(data, type=type_)
    except msgspec.ValidationError as exc:
        raise _validation_error(str(exc), data) from None
    except msgspec.DecodeError as exc:
        raise ActivityError("$", f"not valid JSON: {exc}") from None
    except RecursionError:
        raise ActivityError("$", "nested too deeply; expected a flat document") from None


class _Duplicate:
    """Stands in for a JSON object that repeats ``key``, until the walk finds its path."""

    def __init__(self, key: str) -> None:
        self.key = key


def _decode_tree(data: bytes) -> Any:
    """The document as plain Python values; an :class:`ActivityError` for a repeated key.

    msgspec keeps the last of repeated keys. The stdlib parser is the cheap way to see them
    (~20 us for a typical activity, next to ~100 ms of supervise start-up); its errors are
    left to msgspec, which reports them better, and None is returned instead.
    """
    seen_one = False

    def pairs_hook(pairs: list[tuple[str, Any]]) -> Any:
        nonlocal seen_one
        obj = dict(pairs)
        if len(obj) == len(pairs):
            return obj
        seen_one = True
        keys: set[str] = set()
        for key, _ in pairs:
            if key in keys:
                return _Duplicate(key)
            keys.add(key)
        return obj

    try:
        doc = json.loads(data, object_pairs_hook=pairs_hook)
    except (ValueError, RecursionError):
        return None
    found = _find_duplicate(doc, "$") if seen_one else None
    if found is not None:
        path, key = found
        raise ActivityError(f"{path}.{_path_key(key)}", "appears twice; expected each key once")
    return doc


def _find_duplicate(value: Any, path: str) -> tuple[str, str] | None:
    if isinstance(value, _Duplicate):
        return path, value.key
    children = (
        ((f"{path}.{_path_key(k)}", v) for k, v in value.items())
        if isinstance(value, dict)
        else ((f"{path}[{i}]", v) for i, v in enumerate(value))
        if isinstance(value, list)
        else ()
    )
    for child_path, child in children:
        found = _find_duplicate(child, child_path)
        if found:
            return found
    return None


def _validation_error(text: str, data: bytes) -> ActivityError:
    # msgspec says e.g. "Expected `int`, got `str` - at `$.ti.try_number`", or
    # "Object missing required field `token`" (at the root, without "- at").
    message, sep, where = text.rpartition(" - at `")
    path = where.rstrip("`") if sep else "$"
    if not sep:
        message = text
    if path == "$.kind":
        message += "; expected 'ExecuteTask'"
    if path.endswith("[...]"):
        path = _name_the_key(path, data)
    named = _NAMED_FIELD.match(message)
    if named:
        problem, field = named.groups()
        wording = (
            "unknown field (check the spelling)" if problem == "contains unknown" else "missing"
        )
        return ActivityError(f"{path}.{field}", wording)
    return ActivityError(path, message)


_NAMED_FIELD = re.compile(r"^Object (contains unknown|missing required) field `([^`]*)`$")


def _name_the_key(path: str, data: bytes) -> str:
    # msgspec names a map's entry "[...]" (e.g. "$.env[...]"). Every map in an activity maps
    # to strings, so the culprit is the first entry that is not one.
    container = path.removesuffix("[...]")
    node: Any = msgspec.json.decode(data)
    try:
        for name, index in re.findall(r"\.([^.\[]+)|\[(\d+)\]", container):
            node = node[name] if name else node[int(index)]
        culprit = next(key for key, value in node.items() if not isinstance(value, str))
    except (LookupError, TypeError, AttributeError, StopIteration):
        return path
    return f"{container}.{_path_key(culprit)}"


def _check(activity: Activity) -> None:
    _check_token(activity.token)
    check_server_url(activity.server)
    _check_ti(activity.ti)
    # A NUL byte cannot cross exec or open(): refuse it now, not after the server said go.
    for path, value in (
        ("$.entrypoint", activity.entrypoint),
        ("$.log_path", activity.log_path),
        ("$.run_as", activity.run_as),
        *((f"$.command[{i}]", arg) for i, arg in enumerate(activity.command or ())),
    ):
        if value is not None and "\0" in value:
            raise ActivityError(path, "contains a NUL byte")
    if (activity.entrypoint is None) == (activity.command is None):
        raise ActivityError("$", "give exactly one of 'entrypoint' and 'command'")
    if activity.entrypoint is not None and not _ENTRYPOINT.fullmatch(activity.entrypoint):
        raise ActivityError(
            "$.entrypoint",
            f"got {_shown(activity.entrypoint)}; expected 'package.module:callable' "
            "or 'path/file.py:callable'",
        )
    if activity.command is not None and (not activity.command or not activity.command[0]):
        raise ActivityError(
            "$.command", "must be a non-empty list: the program, then its arguments"
        )
    if activity.timeout is not None and not 0 < activity.timeout <= MAX_TIMEOUT:
        raise ActivityError(
            "$.timeout",
            f"got {activity.timeout!r}; expected a number of seconds > 0 "
            f"and at most {MAX_TIMEOUT:.0f} (30 days)",
        )
    if activity.log_path is not None:
        _check_length(
            "$.log_path",
            activity.log_path,
            MAX_PATH_BYTES,
            "a file path (leave the field out for the default under ./logs/)",
        )
    if activity.run_as is not None:
        _check_length(
            "$.run_as",
            activity.run_as,
            MAX_USER_NAME_LENGTH,
            "a user name (leave the field out to run the task as supervise's user)",
        )
    _check_exec_strings(activity)
    if activity.context is not None:
        _check_context(activity.context, activity.token)


def _check_token(token: str) -> None:
    # fullmatch: re's $ also matches before a final newline, which would reach a header.
    if len(token) > MAX_TOKEN_LENGTH or not _JWT.fullmatch(token):
        # Never shown, not even in part: a nearly valid token is still a credential.
        raise ActivityError(
            "$.token",
            f"got {len(token)} characters (not shown); expected a JWT: three base64url parts "
            f"joined by '.', at most {MAX_TOKEN_LENGTH} characters",
        )


def check_server_url(server: str, field: str = "$.server") -> None:
    """Refuse an Execution API base URL the supervisor's client cannot use.

    Raises :class:`ActivityError` at ``field``; a URL holding a password is not shown.
    """
    expected = f"expected an http(s) URL with a host, {_SERVER_EXAMPLE}"
    authority = _AUTHORITY.match(server)
    if authority and "@" in authority.group(1):
        # Not shown: it holds a password. The client would drop it; the token authenticates.
        raise ActivityError(
            field, f"holds a user name or password (not shown); {expected}, without them"
        )
    shown = _shown(server)
    if not server.isprintable() or " " in server:
        raise ActivityError(field, f"got {shown}: whitespace or control characters")
    try:
        url = urlsplit(server)
        port = url.port  # parsed only here: ValueError for 99999 or "http"
    except ValueError as exc:
        raise ActivityError(field, f"got {shown}: {exc}; {expected}") from None
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ActivityError(field, f"got {shown}; {expected}")
    if not (url.netloc.startswith("[") or _HOST.match(url.hostname)):
        raise ActivityError(
            field, f"got {shown}: host {_shown(url.hostname)} is not a valid host; {expected}"
        )
    if port == 0:
        raise ActivityError(field, f"got {shown}: expected a port in 1-65535")
    if url.query or url.fragment or server.endswith(("?", "#")):
        raise ActivityError(
            field,
            f"got {shown}: expected no query or fragment (request paths are appended to it)",
        )


class _TryIdentity(Protocol):
    """What names a task try: an activity's ``ti``, or a workload's."""

    @property
    def dag_id(self) -> str: ...
    @property
    def task_id(self) -> str: ...
    @property
    def run_id(self) -> str: ...
    @property
    def try_number(self) -> int: ...
    @property
    def map_index(self) -> int: ...


def _check_ti(ti: _TryIdentity) -> None:
    for name in ("dag_id", "task_id", "run_id"):
        value: str = getattr(ti, name)
        if not 0 < len(value) <= MAX_ID_LENGTH:
            raise ActivityError(
                f"$.ti.{name}",
                f"got {_shown(value)}; expected 1 to {MAX_ID_LENGTH} characters",
            )
        if "/" in value or not value.isprintable():
            raise ActivityError(
                f"$.ti.{name}",
                f"got {_shown(value)}; expected no '/' and no control characters "
                "(it names a directory of the default log path)",
            )
    if not 1 <= ti.try_number <= MAX_TRY_NUMBER:
        raise ActivityError(
            "$.ti.try_number",
            f"got {ti.try_number}; expected an integer >= 1 and at most {MAX_TRY_NUMBER}",
        )
    if not -1 <= ti.map_index <= MAX_MAP_INDEX:
        raise ActivityError(
            "$.ti.map_index",
            f"got {ti.map_index}; expected -1 or an index >= 0 and at most {MAX_MAP_INDEX}",
        )


def _check_length(path: str, value: str, limit: int, expected: str) -> None:
    size = len(value.encode())
    if not 0 < size <= limit:
        raise ActivityError(
            path, f"got {_shown(value)}; expected {expected}, at most {_amount(limit)}"
        )


def _check_exec_strings(activity: Activity) -> None:
    total = 0
    for i, arg in enumerate(activity.command or ()):
        size = len(arg.encode()) + 1
        if size > MAX_EXEC_STRING_BYTES:
            raise ActivityError(
                f"$.command[{i}]",
                f"got {_shown(arg)}; expected an argument of at most "
                f"{_amount(MAX_EXEC_STRING_BYTES)}",
            )
        _refuse_token(f"$.command[{i}]", arg, activity.token)
        total += size
    for name, value in activity.env.items():
        path = f"$.env.{_path_key(name)}"
        if "\0" in value:
            raise ActivityError(path, "the value contains a NUL byte")
        if not _ENV_NAME.fullmatch(name):
            raise ActivityError(path, "expected a variable name of letters, digits and _")
        size = len(name) + 1 + len(value.encode()) + 1
        if size > MAX_EXEC_STRING_BYTES:
            raise ActivityError(
                path,
                f"got a value of {_amount(size)} ({_shown(value)}); expected NAME=value "
                f"within {_amount(MAX_EXEC_STRING_BYTES)}",
            )
        _refuse_token(path, value, activity.token)
        total += size
    if total > MAX_EXEC_BYTES:
        field = "$.env" if activity.env else "$.command"
        raise ActivityError(
            field,
            f"'env' and 'command' take {_amount(total)}; expected at most "
            f"{_amount(MAX_EXEC_BYTES)} together (pass bulk data in a file or a variable)",
        )


def _check_context(context: PushedValues, token: str) -> None:
    # Pushed values are sent to the task with StartupDetails.
    for key, value in context.variables.items():
        _refuse_token(f"$.context.variables.{_path_key(key)}", value, token)
    seen: set[str] = set()
    for i, conn in enumerate(context.connections):
        if conn.conn_id in seen:
            raise ActivityError(
                f"$.context.connections[{i}].conn_id",
                f"duplicate conn_id {_shown(conn.conn_id)}",
            )
        seen.add(conn.conn_id)
        for name, value in msgspec.structs.asdict(conn).items():
            if isinstance(value, str):
                _refuse_token(f"$.context.connections[{i}].{name}", value, token)


def _refuse_token(field: str, value: str, token: str) -> None:
    # For what the task receives: its environment, argv and pushed values.
    if token in value:
        raise ActivityError(field, "holds the token, which never reaches the task")


def _shown(value: str) -> str:
    """``value`` quoted for an error message; a long one is cut, a 100 MB value never echoed."""
    if len(value) <= _SHOWN:
        return repr(value)
    return f"{value[:_SHOWN]!r}... ({len(value)} characters)"


def _path_key(key: str) -> str:
    # A map key as a JSON path step, cut like a value: a key can be as long as the file.
    return key if len(key) <= _SHOWN else f"{key[:_SHOWN]}..."


def _amount(size: int) -> str:
    for unit, scale in (("MiB", _MiB), ("KiB", _KiB)):
        if size >= scale:
            return f"{size / scale:.1f}".removesuffix(".0") + f" {unit}"
    return f"{size} bytes"
