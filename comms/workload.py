"""Apache Airflow's ``ExecuteTask`` workload: what Airflow's executors hand a worker for one try.

Airflow 3.3's executors serialize ``airflow.executors.workloads.ExecuteTask`` with
``model_dump_json()``; ``supervise`` reads that document unchanged, as Airflow's own worker
(``airflow.sdk.execution_time.execute_workload``) does. :func:`is_workload` tells it from a
taskvisor activity (a workload has a top-level ``type``, an activity a ``kind``), and
:func:`parse_workload` decodes and checks it to the standard of
:func:`comms.activity.parse_activity`, with the same limits and helpers: at most
``MAX_ACTIVITY_BYTES``, no repeated key, a JWT-shaped token that no error shows, bounded ids,
``try_number`` and ``map_index``, a relative ``dag_rel_path`` and ``log_path`` that cannot
climb out with ``..`` (the log path is joined under ``[logging] base_log_folder``), and every
error an :class:`~comms.activity.ActivityError` naming the JSON path, the value and what was
expected (``workload $.ti.try_number: got 0; expected an integer >= 1 ...``).

Only ``ExecuteTask`` is run. Airflow's other kinds (``ExecuteCallback``, ``TestConnection``,
``RunTrigger``) are refused with a message saying so.

Unknown fields are accepted, unlike an activity's. A workload is made by Airflow, not by hand,
so an unknown field is no typo: it is a field a newer Airflow patch release added, and
Airflow's own worker ignores fields it does not know (its pydantic models do). Refusing them
would make ``supervise`` fail where Airflow's worker runs. Their JSON paths are kept in
:attr:`Workload.unknown_fields`, so ``supervise`` can log one warning naming them; unknown
fields of ``ti`` also travel on to the task runner in :attr:`Workload.ti_document`, the ``ti``
object exactly as received. Fields Airflow knows are typed and checked as Airflow's models
declare them (``tests/interop/test_airflow_workload_interop.py`` compares the two).

Sans-IO: bytes in, a :class:`Workload` or an :class:`~comms.activity.ActivityError` out.
"""

from __future__ import annotations

import uuid
from typing import Any, Literal

import msgspec

from comms.activity import (
    MAX_ID_LENGTH,
    MAX_PATH_BYTES,
    ActivityError,
    _check_length,
    _check_ti,
    _check_token,
    _decode,
    _decode_tree,
    _path_key,
    _refuse_oversized_or_empty,
    _shown,
)

__all__ = [
    "WORKLOAD_KIND",
    "BundleInfo",
    "Workload",
    "WorkloadTI",
    "is_workload",
    "parse_workload",
]

#: The one workload kind ``supervise`` runs.
WORKLOAD_KIND = "ExecuteTask"
#: Airflow's other kinds, run by its own workers and triggerer, named in the refusal.
_OTHER_KINDS = ("ExecuteCallback", "TestConnection", "RunTrigger")

# Widths of the columns Airflow stores these in (task_instance, dag_run).
_INT32 = 2**31
_MAX_HOSTNAME_LENGTH = 1000
_MAX_QUEUE_LENGTH = 256


class WorkloadTI(msgspec.Struct, frozen=True, kw_only=True):
    """``ExecuteTask.ti``: Airflow's ``TaskInstanceDTO`` (Execution API ``TaskInstance`` plus
    what only executors read), field for field."""

    id: uuid.UUID
    task_id: str
    dag_id: str
    run_id: str
    try_number: int
    dag_version_id: uuid.UUID
    map_index: int = -1
    hostname: str | None = None
    #: OpenTelemetry propagation headers of the scheduler's span, for the runner's spans.
    context_carrier: dict[str, Any] | None = None
    #: The executor queue; Airflow's supervisor picks the runner's coordinator by it.
    queue: str = "default"
    pool_slots: int
    priority_weight: int
    # Accepted on input like Airflow's model does; its executors never serialize them.
    external_executor_id: str | None = None
    executor_config: dict[str, Any] | None = None


class BundleInfo(msgspec.Struct, frozen=True, kw_only=True):
    """``ExecuteTask.bundle_info``: which configured DAG bundle, at which version."""

    name: str
    #: None for a bundle without versions (a ``LocalDagBundle``) or for its latest version.
    version: str | None = None


class _WorkloadDocument(msgspec.Struct, frozen=True, kw_only=True):
    """The fields of Airflow 3.3's ``ExecuteTask``, as its ``model_dump_json`` writes them."""

    type: Literal["ExecuteTask"]
    token: str
    ti: WorkloadTI
    #: The DAG file, relative to the bundle's root.
    dag_rel_path: str
    bundle_info: BundleInfo
    #: The task log, relative to ``[logging] base_log_folder``; None for no log file.
    log_path: str | None
    #: Import path of the executor's Sentry set-up, run by the task runner; "" for none.
    sentry_integration: str = ""


class Workload(_WorkloadDocument, frozen=True, kw_only=True):
    """One ``ExecuteTask`` workload, checked; built by :func:`parse_workload` only.

    Its ``repr`` never shows the token.
    """

    #: The ``ti`` object exactly as received (unknown fields included), for the task runner.
    ti_document: dict[str, Any] = msgspec.field(default_factory=dict)
    #: JSON paths of the fields Airflow 3.3.2 does not define (``$.ti.new_field``): a newer
    #: Airflow's additions, ignored here. Top level first, then ``ti``, then ``bundle_info``.
    unknown_fields: tuple[str, ...] = ()

    def __repr__(self) -> str:
        ti = self.ti
        return (
            f"Workload(type={self.type!r}, token=<{len(self.token)} characters, not shown>, "
            f"ti=WorkloadTI(id={str(ti.id)!r}, dag_id={ti.dag_id!r}, task_id={ti.task_id!r}, "
            f"run_id={ti.run_id!r}, try_number={ti.try_number}, map_index={ti.map_index}), "
            f"dag_rel_path={self.dag_rel_path!r}, bundle_info={self.bundle_info!r}, "
            f"log_path={self.log_path!r}, unknown_fields={self.unknown_fields!r})"
        )


class _TypeProbe(msgspec.Struct):
    type: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET


_PROBE = msgspec.json.Decoder(_TypeProbe)


def is_workload(data: bytes) -> bool:
    """Whether ``data`` is a JSON object with a top-level ``type``: an Airflow workload, not a
    taskvisor activity (which has ``kind``). Anything else, invalid JSON included, is not."""
    try:
        return _PROBE.decode(data).type is not msgspec.UNSET
    except (msgspec.DecodeError, RecursionError):  # ValidationError is a DecodeError
        return False


def parse_workload(data: bytes) -> Workload:
    """Decode and check an ``ExecuteTask`` workload; raise :class:`ActivityError` naming the
    field (``workload $.ti.try_number: ...``)."""
    try:
        return _parse(data)
    except ActivityError as exc:
        # The shared checks of comms.activity say "activity"; this document is a workload.
        raise ActivityError(exc.field, exc.reason, document="workload") from None


def _parse(data: bytes) -> Workload:
    _refuse_oversized_or_empty(data, "an Airflow workload takes a few KiB")
    _decode(data, _TypeProbe)  # JSON msgspec reads, an object: the stdlib's NaN is not JSON
    tree = _decode_tree(data)
    if not isinstance(tree, dict):
        # msgspec read what the stdlib parser could not (nesting between their depth limits).
        raise ActivityError("$", "nested too deeply; expected a flat document")
    _check_kind(tree)
    document = _decode(data, _WorkloadDocument)
    ti_document: dict[str, Any] = tree["ti"]
    _check_token(document.token)
    # Before any check that shows a value: a value holding the token is never shown.
    _refuse_token_in_values(document, ti_document)
    _check(document)
    fields = {name: getattr(document, name) for name in document.__struct_fields__}
    return Workload(**fields, ti_document=ti_document, unknown_fields=_unknown_fields(tree))


def _check_kind(tree: dict[str, Any]) -> None:
    # First, as it says what the document is. A string other than ExecuteTask gets this
    # message, any other value msgspec's.
    if "type" not in tree:
        raise ActivityError("$.type", "missing")
    kind = tree["type"]
    if isinstance(kind, str) and kind != WORKLOAD_KIND:
        token = tree.get("token")
        holds_token = isinstance(token, str) and token and token in kind
        shown = "a value holding the token (not shown)" if holds_token else _shown(kind)
        raise ActivityError(
            "$.type",
            f"got {shown}; expected {WORKLOAD_KIND!r}: supervise runs task workloads "
            f"only ({', '.join(_OTHER_KINDS[:-1])} and {_OTHER_KINDS[-1]} are for Airflow's own "
            "workers and triggerer)",
        )


def _check(workload: _WorkloadDocument) -> None:
    ti = workload.ti
    _check_ti(ti)
    if not 1 <= ti.pool_slots < _INT32:
        raise ActivityError(
            "$.ti.pool_slots", f"got {ti.pool_slots}; expected an integer >= 1 and < 2**31"
        )
    if not -_INT32 <= ti.priority_weight < _INT32:
        raise ActivityError(
            "$.ti.priority_weight",
            f"got {ti.priority_weight}; expected a 32-bit integer (-2**31 to 2**31 - 1)",
        )
    _check_printable("$.ti.queue", ti.queue, _MAX_QUEUE_LENGTH, empty_ok=True)
    if ti.hostname is not None:
        _check_printable("$.ti.hostname", ti.hostname, _MAX_HOSTNAME_LENGTH, empty_ok=True)
    _check_printable("$.bundle_info.name", workload.bundle_info.name, MAX_ID_LENGTH)
    if workload.bundle_info.version is not None:
        _check_printable("$.bundle_info.version", workload.bundle_info.version, MAX_ID_LENGTH)
    _check_relative_path(
        "$.dag_rel_path", workload.dag_rel_path, "the DAG file's path inside its bundle"
    )
    if workload.log_path is not None:
        _check_relative_path(
            "$.log_path",
            workload.log_path,
            "a path under [logging] base_log_folder, or null for no log file",
        )
    if workload.sentry_integration:
        _check_printable("$.sentry_integration", workload.sentry_integration, MAX_PATH_BYTES)


def _check_printable(path: str, value: str, limit: int, *, empty_ok: bool = False) -> None:
    if len(value) > limit or not (value or empty_ok):
        raise ActivityError(
            path,
            f"got {_shown(value)}; expected {'0' if empty_ok else '1'} to {limit} characters",
        )
    if not value.isprintable():
        raise ActivityError(path, f"got {_shown(value)}; expected no control characters")


def _check_relative_path(path: str, value: str, expected: str) -> None:
    _check_length(path, value, MAX_PATH_BYTES, expected)
    if "\0" in value:
        raise ActivityError(path, "contains a NUL byte")
    if value.startswith("/"):
        raise ActivityError(path, f"got {_shown(value)}: absolute; expected {expected}")
    if ".." in value.split("/"):
        raise ActivityError(
            path, f"got {_shown(value)}: '..' would leave its folder; expected {expected}"
        )


def _refuse_token_in_values(workload: _WorkloadDocument, ti_document: dict[str, Any]) -> None:
    # The task runner receives all but the log path, which names a file on disk; the token
    # reaches neither.
    token = workload.token
    values = (
        ("$.ti", msgspec.json.encode(ti_document).decode()),
        ("$.dag_rel_path", workload.dag_rel_path),
        ("$.bundle_info.name", workload.bundle_info.name),
        ("$.bundle_info.version", workload.bundle_info.version or ""),
        ("$.log_path", workload.log_path or ""),
        ("$.sentry_integration", workload.sentry_integration),
    )
    for path, value in values:
        if token in value:
            raise ActivityError(path, "holds the token, which never reaches the task or a path")


_KNOWN: dict[str, frozenset[str]] = {
    "$": frozenset(_WorkloadDocument.__struct_fields__),
    "$.ti": frozenset(WorkloadTI.__struct_fields__),
    "$.bundle_info": frozenset(BundleInfo.__struct_fields__),
}


def _unknown_fields(tree: dict[str, Any]) -> tuple[str, ...]:
    objects = {"$": tree, "$.ti": tree["ti"], "$.bundle_info": tree["bundle_info"]}
    return tuple(
        f"{path}.{_path_key(key)}"
        for path, obj in objects.items()
        for key in obj
        if key not in _KNOWN[path]
    )
