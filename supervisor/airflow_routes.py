"""The Execution API call behind each request Apache Airflow's task runner sends (3.3.2).

:data:`ROUTES` maps a body's ``"type"`` to a :class:`Route`: the struct the body must validate
as, and the handler that answers it. The facts were read from Airflow 3.3.2
(apache-airflow-task-sdk 1.3.2): ``ActivitySubprocess._handle_request`` in
``execution_time/supervisor.py``, ``execution_time/request_handlers.py``, the bodies and
results in ``execution_time/comms.py``, and each call in ``api/client.py``. No Airflow code is
imported or copied; what each handler reproduces, per call:

* method, path, query and JSON body as Airflow's client sends them (a query value of None is
  sent as ``name=``, a bool as ``true``/``false``, a list as one pair per item, as httpx
  does; datetimes in a query as ``isoformat()``);
* which failures Airflow turns into an answer rather than an error: a ``404`` on a variable,
  connection, XCom sequence item, asset or state-store key, a ``401``/``403`` on a variable
  or connection, a ``409`` on a dag-run trigger, a ``410`` on rendered fields. Those are a
  result *body*, often an ``ErrorResponse`` body (the runner checks ``isinstance(msg,
  ErrorResponse)``); every other failure is raised, and the relay answers it in the frame's
  ``error`` (:mod:`supervisor.airflow_relay`);
* the result: the server's JSON object with the result's ``"type"`` tag added. Airflow's
  supervisor validates that object into the generated model and dumps it again; the runner
  validates what it gets with pydantic in lax mode, so the same values arrive (ISO strings
  where Airflow sends datetimes; ``tests/interop/test_airflow_relay_interop.py`` proves the
  runner's models come out equal). Requests Airflow answers with no body get :data:`EMPTY`.

Bodies are validated like Airflow's pydantic models: a missing required field or a wrong type
is an error naming it; unknown keys are ignored, except where Airflow's model forbids them
(``TriggerDagRun``, ``SkipDownstreamTasks``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import uuid
from collections.abc import Callable
from typing import Annotated, Any, Literal, NamedTuple, TypeVar

import msgspec

from comms.api import ConnectionResponse
from supervisor.client import ExecutionApiClient, path_segment, xcom_path
from supervisor.errors import ApiError, Conflict, Gone, NotFound, Unauthorized
from supervisor.http import Response
from supervisor.masking import Masker, is_sensitive_key

__all__ = ["EMPTY", "OK", "ROUTES", "Api", "Body", "Reply", "Route", "error_body"]


class Reply(msgspec.Struct, frozen=True):
    """What answers one runner request: a result body, an ErrorResponse body, or neither."""

    body: dict[str, Any] | None = None
    error: dict[str, Any] | None = None


#: The answer to a request Airflow's supervisor answers with an empty frame.
EMPTY = Reply()
#: ``OKResponse(ok=True)``.
OK = Reply({"ok": True, "type": "OKResponse"})


def error_body(error: str, detail: dict[str, Any] | None) -> dict[str, Any]:
    """An ``ErrorResponse`` body; ``error`` is an ``ErrorType`` value."""
    return {"error": error, "detail": detail, "type": "ErrorResponse"}


_NO_BODY: Any = object()


class Api:
    """What a handler works with: one try's client, task instance id and masker."""

    def __init__(self, client: ExecutionApiClient, ti_id: uuid.UUID, masker: Masker) -> None:
        self.client = client
        self.ti_id = ti_id
        self.masker = masker

    def call(
        self, method: str, path: str, params: dict[str, Any] | None = None, json: Any = _NO_BODY
    ) -> Response:
        """Send one call; ``json`` (None included) is sent as the JSON body."""
        content = None if json is _NO_BODY else _encoder.encode(json)
        query = {name: _query_value(value) for name, value in (params or {}).items()}
        return self.client.request(method, path, content=content, params=query or None)

    def get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        """``GET`` and decode the JSON answer."""
        return _decoder.decode(self.call("GET", path, params).content)


def _query_value(value: Any) -> str | list[str]:
    """A query value as httpx writes it, which is how Airflow's client sends it."""
    if isinstance(value, list):
        return [str(_query_value(item)) for item in value]
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value.isoformat() if isinstance(value, dt.datetime) else str(value)


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder()
_object = msgspec.json.Decoder(dict[str, Any])

Aware = Annotated[dt.datetime, msgspec.Meta(tz=True)]
TIState = Literal[
    "removed", "scheduled", "queued", "running", "success", "restarting", "failed",
    "up_for_retry", "up_for_reschedule", "upstream_failed", "skipped", "deferred",
    "awaiting_input",
]  # fmt: skip


class Body(msgspec.Struct, kw_only=True, tag_field="type", tag=True):
    """A request body from the runner; the ``type`` tag is the class name."""


Answer = TypeVar("Answer", bound=Callable[["Api", Any], Reply])


class Route(NamedTuple):
    """How one body type is answered."""

    body: type[Body]
    answer: Callable[[Api, Any], Reply]
    #: Answered on the loop thread, without the network.
    local: bool = False


ROUTES: dict[str, Route] = {}


def _route(*bodies: type[Body], local: bool = False) -> Callable[[Answer], Answer]:
    """Register the decorated function as the answer to ``bodies``."""

    def register(answer: Answer) -> Answer:
        for body in bodies:
            ROUTES[body.__name__] = Route(body, answer, local)
        return answer

    return register


def _tagged(kind: str, response: Response) -> dict[str, Any]:
    """The server's JSON object, tagged as result ``kind``."""
    return {**_object.decode(response.content), "type": kind}


def _result(kind: str, response: Response) -> Reply:
    """A result ``kind``: the server's JSON object, tagged."""
    return Reply(_tagged(kind, response))


def _field(kind: str, name: str, value: Any) -> Reply:
    """A result ``kind`` holding the server's answer as its field ``name``."""
    return Reply({name: value, "type": kind})


def _not_found(error: str, detail: dict[str, Any]) -> Reply:
    """The ``ErrorResponse`` body Airflow answers a 404 with, for the calls that expect one."""
    return Reply(error_body(error, detail))


# --- masking ---------------------------------------------------------------------------------


class MaskSecret(Body):
    value: Any
    name: str | None = None


@_route(MaskSecret, local=True)
def _mask_secret(api: Api, body: MaskSecret) -> Reply:
    refused = api.masker.add_task_secret(secrets_to_mask(body.value, body.name))
    if refused is not None:
        return Reply(
            error=error_body("GENERIC_ERROR", {"message": f"MaskSecret refused: {refused}"})
        )
    return EMPTY


def secrets_to_mask(value: Any, name: str | None = None, depth: int = 0) -> list[str]:
    """The strings of ``value`` Airflow's ``mask_secret(value, name)`` masks.

    With a name, only if the name is sensitive; in a dict each value goes by its own key.
    The runner names every variable it reads, so other values stay readable in the log.
    """
    if depth > 8:  # as Masker: a hostile task may send deeply nested values
        return []
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in secrets_to_mask(v, str(k), depth + 1)]
    if isinstance(value, list):
        return [s for v in value for s in secrets_to_mask(v, name, depth + 1)]
    if isinstance(value, str) and (name is None or is_sensitive_key(name)):
        return [value]
    return []


# --- variables and connections -----------------------------------------------------------------


class GetConnection(Body):
    conn_id: str


@_route(GetConnection)
def _get_connection(api: Api, body: GetConnection) -> Reply:
    try:
        conn = _tagged(
            "ConnectionResult", api.call("GET", f"connections/{path_segment(body.conn_id)}")
        )
    except NotFound:
        return _not_found("CONNECTION_NOT_FOUND", {"conn_id": body.conn_id})
    except Unauthorized as exc:
        detail = {"conn_id": body.conn_id, "status_code": exc.status}
        return Reply(error_body("PERMISSION_DENIED", detail))
    secrets = msgspec.convert(conn, ConnectionResponse)
    api.masker.add_connection(secrets.password, secrets.extra)
    return Reply(conn)


class GetVariable(Body):
    key: str


@_route(GetVariable)
def _get_variable(api: Api, body: GetVariable) -> Reply:
    try:
        var = _tagged("VariableResult", api.call("GET", f"variables/{path_segment(body.key)}"))
    except NotFound:
        return _not_found("VARIABLE_NOT_FOUND", {"key": body.key})
    except Unauthorized as exc:
        return Reply(error_body("PERMISSION_DENIED", {"key": body.key, "status_code": exc.status}))
    if isinstance(var.get("value"), str) and is_sensitive_key(body.key):
        api.masker.add(var["value"])
    return Reply(var)


class GetVariableKeys(Body):
    prefix: str | None = None
    limit: int = 1000
    offset: int = 0


@_route(GetVariableKeys)
def _get_variable_keys(api: Api, body: GetVariableKeys) -> Reply:
    params: dict[str, Any] = {"limit": body.limit, "offset": body.offset}
    if body.prefix is not None:
        params["prefix"] = body.prefix
    return _result("VariableKeysResult", api.call("GET", "variables/keys", params))


class PutVariable(Body):
    key: str
    value: str | None
    description: str | None


@_route(PutVariable)
def _put_variable(api: Api, body: PutVariable) -> Reply:
    if body.value is not None and is_sensitive_key(body.key):
        api.masker.add(body.value)  # before it can reach a log; the relay checked the caps
    payload = {"val": body.value, "description": body.description}
    api.call("PUT", f"variables/{path_segment(body.key)}", json=payload)
    return EMPTY


class DeleteVariable(Body):
    key: str


@_route(DeleteVariable)
def _delete_variable(api: Api, body: DeleteVariable) -> Reply:
    api.call("DELETE", f"variables/{path_segment(body.key)}")
    return OK


# --- XComs -----------------------------------------------------------------------------------


class _XComBody(Body):
    key: str
    dag_id: str
    run_id: str
    task_id: str

    @property
    def path(self) -> str:
        return xcom_path(self.dag_id, self.run_id, self.task_id, self.key)


class GetXCom(_XComBody):
    map_index: int | None = None
    include_prior_dates: bool = False


@_route(GetXCom)
def _get_xcom(api: Api, body: GetXCom) -> Reply:
    params: dict[str, Any] = {}
    if body.map_index is not None and body.map_index >= 0:
        params["map_index"] = body.map_index
    if body.include_prior_dates:
        params["include_prior_dates"] = True
    try:
        return _result("XComResult", api.call("GET", body.path, params))
    except NotFound:  # as in Airflow 2: a missing XCom pulls as None
        return Reply({"key": body.key, "value": None, "type": "XComResult"})


class GetXComCount(_XComBody):
    pass


@_route(GetXComCount)
def _get_xcom_count(api: Api, body: GetXComCount) -> Reply:
    unit, _, count = (api.call("HEAD", body.path).header("Content-Range") or "").partition(" ")
    if unit != "map_indexes" or not count.isdigit():
        raise ApiError(f"HEAD {body.path}: no Content-Range of map_indexes in the answer")
    return _field("XComCountResponse", "len", int(count))


class GetXComSequenceItem(_XComBody):
    offset: int


@_route(GetXComSequenceItem)
def _get_xcom_sequence_item(api: Api, body: GetXComSequenceItem) -> Reply:
    try:
        item = api.get(f"{body.path}/item/{body.offset}")
    except NotFound:
        detail = {"dag_id": body.dag_id, "run_id": body.run_id, "task_id": body.task_id}
        return _not_found("XCOM_NOT_FOUND", {**detail, "key": body.key, "offset": body.offset})
    return _field("XComSequenceIndexResult", "root", item)


class GetXComSequenceSlice(_XComBody):
    start: int | None
    stop: int | None
    step: int | None
    include_prior_dates: bool = False


@_route(GetXComSequenceSlice)
def _get_xcom_sequence_slice(api: Api, body: GetXComSequenceSlice) -> Reply:
    bounds = {"start": body.start, "stop": body.stop, "step": body.step}
    params: dict[str, Any] = {k: v for k, v in bounds.items() if v is not None}
    if body.include_prior_dates:
        params["include_prior_dates"] = True
    return _field("XComSequenceSliceResult", "root", api.get(f"{body.path}/slice", params))


class SetXCom(_XComBody):
    value: Any
    map_index: int | None = None
    dag_result: bool = False
    mapped_length: int | None = None


@_route(SetXCom)
def _set_xcom(api: Api, body: SetXCom) -> Reply:
    params: dict[str, Any] = {}
    if body.dag_result:
        params["dag_result"] = True
    if body.map_index is not None and body.map_index >= 0:
        params["map_index"] = body.map_index
    if body.mapped_length is not None and body.mapped_length >= 0:
        params["mapped_length"] = body.mapped_length
    api.call("POST", body.path, params, json=body.value)
    return EMPTY


class DeleteXCom(_XComBody):
    map_index: int | None = None


@_route(DeleteXCom)
def _delete_xcom(api: Api, body: DeleteXCom) -> Reply:
    params = (
        {"map_index": body.map_index} if body.map_index is not None and body.map_index >= 0 else {}
    )
    api.call("DELETE", body.path, params)
    return EMPTY


# --- this task instance ----------------------------------------------------------------------


class SetRenderedFields(Body):
    rendered_fields: dict[str, Any]


@_route(SetRenderedFields)
def _set_rendered_fields(api: Api, body: SetRenderedFields) -> Reply:
    # A 410: the try was cleared or retried, and a late overwrite has nothing to land on.
    with contextlib.suppress(Gone):
        api.call("PUT", f"task-instances/{api.ti_id}/rtif", json=body.rendered_fields)
    return EMPTY


class SetRenderedMapIndex(Body):
    rendered_map_index: str


@_route(SetRenderedMapIndex)
def _set_rendered_map_index(api: Api, body: SetRenderedMapIndex) -> Reply:
    path = f"task-instances/{api.ti_id}/rendered-map-index"
    api.call("PATCH", path, json=body.rendered_map_index)
    return EMPTY


class SkipDownstreamTasks(Body, forbid_unknown_fields=True):
    tasks: list[str | tuple[str, int]]


@_route(SkipDownstreamTasks)
def _skip_downstream_tasks(api: Api, body: SkipDownstreamTasks) -> Reply:
    path = f"task-instances/{api.ti_id}/skip-downstream"
    api.call("PATCH", path, json={"tasks": body.tasks})
    return EMPTY


class GetPrevSuccessfulDagRun(Body):
    ti_id: uuid.UUID  # unused: Airflow asks about the try it supervises


@_route(GetPrevSuccessfulDagRun)
def _get_prev_successful_dag_run(api: Api, body: GetPrevSuccessfulDagRun) -> Reply:
    path = f"task-instances/{api.ti_id}/previous-successful-dagrun"
    return _result("PrevSuccessfulDagRunResult", api.call("GET", path))


class GetTaskRescheduleStartDate(Body):
    ti_id: uuid.UUID
    try_number: int = 1


_start_date = msgspec.json.Decoder(Aware | None)


@_route(GetTaskRescheduleStartDate)
def _get_task_reschedule_start_date(api: Api, body: GetTaskRescheduleStartDate) -> Reply:
    path = f"task-reschedules/{body.ti_id}/start_date"
    start = _start_date.decode(api.call("GET", path, {"try_number": body.try_number}).content)
    return _field("TaskRescheduleStartDate", "start_date", start)


class ValidateInletsAndOutlets(Body):
    ti_id: uuid.UUID


@_route(ValidateInletsAndOutlets)
def _validate_inlets_and_outlets(api: Api, body: ValidateInletsAndOutlets) -> Reply:
    path = f"task-instances/{body.ti_id}/validate-inlets-and-outlets"
    return _result("InactiveAssetsResult", api.call("GET", path))


# --- other task instances and dag runs ------------------------------------------------------


class _TIQuery(Body):
    dag_id: str
    map_index: int | None = None
    task_ids: list[str] | None = None
    task_group_id: str | None = None
    logical_dates: list[Aware] | None = None
    run_ids: list[str] | None = None

    def params(self, **more: Any) -> dict[str, Any]:
        wanted: dict[str, Any] = {
            "dag_id": self.dag_id,
            "task_ids": self.task_ids,
            "task_group_id": self.task_group_id,
            "logical_dates": self.logical_dates,
            "run_ids": self.run_ids,
            **more,
        }
        params = {k: v for k, v in wanted.items() if v is not None}
        if self.map_index is not None and self.map_index >= 0:
            params["map_index"] = self.map_index
        return params


class GetTICount(_TIQuery):
    states: list[str] | None = None


@_route(GetTICount)
def _get_ti_count(api: Api, body: GetTICount) -> Reply:
    count = api.get("task-instances/count", body.params(states=body.states))
    return _field("TICount", "count", msgspec.convert(count, int))


class GetTaskStates(_TIQuery):
    pass


@_route(GetTaskStates)
def _get_task_states(api: Api, body: GetTaskStates) -> Reply:
    return _result("TaskStatesResult", api.call("GET", "task-instances/states", body.params()))


class GetTaskBreadcrumbs(Body):
    dag_id: str
    run_id: str


@_route(GetTaskBreadcrumbs)
def _get_task_breadcrumbs(api: Api, body: GetTaskBreadcrumbs) -> Reply:
    params = {"dag_id": body.dag_id, "run_id": body.run_id}
    return _result("TaskBreadcrumbsResult", api.call("GET", "task-instances/breadcrumbs", params))


class GetPreviousTI(Body):
    dag_id: str
    task_id: str
    logical_date: Aware | None = None
    map_index: int = -1
    state: TIState | None = None


@_route(GetPreviousTI)
def _get_previous_ti(api: Api, body: GetPreviousTI) -> Reply:
    params: dict[str, Any] = {"map_index": body.map_index}
    if body.logical_date:
        params["logical_date"] = body.logical_date
    if body.state:
        params["state"] = body.state
    path = f"task-instances/previous/{path_segment(body.dag_id)}/{path_segment(body.task_id)}"
    return _field("PreviousTIResult", "task_instance", _object_or_none(api.get(path, params)))


class GetDRCount(Body):
    dag_id: str
    logical_dates: list[Aware] | None = None
    run_ids: list[str] | None = None
    states: list[str] | None = None


@_route(GetDRCount)
def _get_dr_count(api: Api, body: GetDRCount) -> Reply:
    wanted: dict[str, Any] = {"dag_id": body.dag_id, "logical_dates": body.logical_dates}
    wanted |= {"run_ids": body.run_ids, "states": body.states}
    params = {k: v for k, v in wanted.items() if v is not None}
    return _field("DRCount", "count", msgspec.convert(api.get("dag-runs/count", params), int))


class GetDagRun(Body):
    dag_id: str
    run_id: str


@_route(GetDagRun)
def _get_dag_run(api: Api, body: GetDagRun) -> Reply:
    path = f"dag-runs/{path_segment(body.dag_id)}/{path_segment(body.run_id)}"
    return _result("DagRunResult", api.call("GET", path))


class GetDagRunState(GetDagRun):
    pass


@_route(GetDagRunState)
def _get_dag_run_state(api: Api, body: GetDagRunState) -> Reply:
    path = f"dag-runs/{path_segment(body.dag_id)}/{path_segment(body.run_id)}/state"
    return _result("DagRunStateResult", api.call("GET", path))


class GetPreviousDagRun(Body):
    dag_id: str
    logical_date: Aware
    state: str | None = None


@_route(GetPreviousDagRun)
def _get_previous_dag_run(api: Api, body: GetPreviousDagRun) -> Reply:
    params: dict[str, Any] = {"dag_id": body.dag_id, "logical_date": body.logical_date}
    if body.state:
        params["state"] = body.state
    dag_run = _object_or_none(api.get("dag-runs/previous", params))
    return _field("PreviousDagRunResult", "dag_run", dag_run)


class TriggerDagRun(Body, forbid_unknown_fields=True):
    dag_id: str
    run_id: str
    logical_date: Aware | None = None
    run_after: Aware | None = None
    conf: dict[str, Any] | None = None
    reset_dag_run: bool | None = False
    partition_key: str | None = None  # validated, but Airflow's supervisor does not send it
    note: str | None = None


@_route(TriggerDagRun)
def _trigger_dag_run(api: Api, body: TriggerDagRun) -> Reply:
    # Airflow sends its payload without the fields left at their defaults; conf is {} if unset.
    payload: dict[str, Any] = {"conf": body.conf or {}}
    optional = {"logical_date": body.logical_date, "run_after": body.run_after, "note": body.note}
    payload |= {k: v for k, v in optional.items() if v is not None}
    if body.reset_dag_run is not False:
        payload["reset_dag_run"] = body.reset_dag_run
    path = f"dag-runs/{path_segment(body.dag_id)}/{path_segment(body.run_id)}"
    try:
        api.call("POST", path, json=payload)
    except Conflict:
        if not body.reset_dag_run:
            return Reply(error_body("DAGRUN_ALREADY_EXISTS", None))
        api.call("POST", f"{path}/clear")
    return OK


class GetDag(Body):
    dag_id: str


@_route(GetDag)
def _get_dag(api: Api, body: GetDag) -> Reply:
    return _result("DagResult", api.call("GET", f"dags/{path_segment(body.dag_id)}"))


# --- assets and asset events ------------------------------------------------------------------


class GetAssetByName(Body):
    name: str


class GetAssetByUri(Body):
    uri: str


@_route(GetAssetByName, GetAssetByUri)
def _get_asset(api: Api, body: GetAssetByName | GetAssetByUri) -> Reply:
    params = {"name": body.name} if isinstance(body, GetAssetByName) else {"uri": body.uri}
    by = next(iter(params))
    try:
        return _result("AssetResult", api.call("GET", f"assets/by-{by}", params))
    except NotFound:
        return _not_found("ASSET_NOT_FOUND", params)


class GetAssetsByAlias(Body):
    alias_name: str


@_route(GetAssetsByAlias)
def _get_assets_by_alias(api: Api, body: GetAssetsByAlias) -> Reply:
    assets = api.get("assets/by-alias", {"alias_name": body.alias_name})
    return _field("AssetsByAliasResult", "assets", msgspec.convert(assets, list[dict[str, Any]]))


class _AssetEventQuery(Body):
    after: Aware | None = None
    before: Aware | None = None
    limit: int | None = None
    ascending: bool = True

    def params(self, **selected: Any) -> dict[str, Any]:
        params = dict(selected)
        if self.after:
            params["after"] = self.after
        if self.before:
            params["before"] = self.before
        params["ascending"] = self.ascending
        if self.limit:
            params["limit"] = self.limit
        return params


class GetAssetEventByAsset(_AssetEventQuery, kw_only=True):
    name: str | None
    uri: str | None


@_route(GetAssetEventByAsset)
def _get_asset_event_by_asset(api: Api, body: GetAssetEventByAsset) -> Reply:
    params = body.params(name=body.name, uri=body.uri)
    return _result("AssetEventsResult", api.call("GET", "asset-events/by-asset", params))


class GetAssetEventByAssetAlias(_AssetEventQuery, kw_only=True):
    alias_name: str


@_route(GetAssetEventByAssetAlias)
def _get_asset_event_by_alias(api: Api, body: GetAssetEventByAssetAlias) -> Reply:
    params = body.params(name=body.alias_name)
    return _result("AssetEventsResult", api.call("GET", "asset-events/by-asset-alias", params))


# --- state stores ----------------------------------------------------------------------------


class GetTaskStateStore(Body):
    ti_id: uuid.UUID
    key: str


@_route(GetTaskStateStore)
def _get_task_state_store(api: Api, body: GetTaskStateStore) -> Reply:
    try:
        return _result("TaskStateStoreResult", api.call("GET", _task_store(body.ti_id, body.key)))
    except NotFound:
        return _not_found("TASK_STORE_NOT_FOUND", {"key": body.key})


class SetTaskStateStore(Body):
    ti_id: uuid.UUID
    key: str
    value: Any
    expires_at: Aware | None


@_route(SetTaskStateStore)
def _set_task_state_store(api: Api, body: SetTaskStateStore) -> Reply:
    payload = {"value": body.value, "expires_at": body.expires_at}
    api.call("PUT", _task_store(body.ti_id, body.key), json=payload)
    return OK


class DeleteTaskStateStore(Body):
    ti_id: uuid.UUID
    key: str


@_route(DeleteTaskStateStore)
def _delete_task_state_store(api: Api, body: DeleteTaskStateStore) -> Reply:
    api.call("DELETE", _task_store(body.ti_id, body.key))
    return OK


class ClearTaskStateStore(Body):
    ti_id: uuid.UUID


@_route(ClearTaskStateStore)
def _clear_task_state_store(api: Api, body: ClearTaskStateStore) -> Reply:
    api.call("DELETE", _task_store(body.ti_id))
    return OK


def _task_store(ti_id: uuid.UUID, key: str | None = None) -> str:
    return f"store/ti/{ti_id}" if key is None else f"store/ti/{ti_id}/{path_segment(key)}"


# An asset's store is addressed by name or by uri: each body comes in both kinds, the same
# route but for the path and the query (Airflow's ``AssetStateStoreOperations``).
class _ByName(Body):
    name: str


class _ByUri(Body):
    uri: str


def _asset_store(
    body: _ByName | _ByUri, op: str, key: str | None = None
) -> tuple[str, dict[str, Any]]:
    """Path and query of ``store/asset/by-{name,uri}/{op}``, with ``key`` if given."""
    params = {"name": body.name} if isinstance(body, _ByName) else {"uri": body.uri}
    path = f"store/asset/by-{next(iter(params))}/{op}"
    return path, params if key is None else {**params, "key": key}


class GetAssetStateStoreByName(_ByName):
    key: str


class GetAssetStateStoreByUri(_ByUri):
    key: str


@_route(GetAssetStateStoreByName, GetAssetStateStoreByUri)
def _get_asset_state_store(
    api: Api, body: GetAssetStateStoreByName | GetAssetStateStoreByUri
) -> Reply:
    try:
        return _result(
            "AssetStateStoreResult", api.call("GET", *_asset_store(body, "value", body.key))
        )
    except NotFound:
        return _not_found("ASSET_STORE_NOT_FOUND", {"key": body.key})


class SetAssetStateStoreByName(_ByName):
    key: str
    value: Any


class SetAssetStateStoreByUri(_ByUri):
    key: str
    value: Any


@_route(SetAssetStateStoreByName, SetAssetStateStoreByUri)
def _set_asset_state_store(
    api: Api, body: SetAssetStateStoreByName | SetAssetStateStoreByUri
) -> Reply:
    path, params = _asset_store(body, "value", body.key)
    api.call("PUT", path, params, json={"value": body.value})
    return OK


class DeleteAssetStateStoreByName(_ByName):
    key: str


class DeleteAssetStateStoreByUri(_ByUri):
    key: str


@_route(DeleteAssetStateStoreByName, DeleteAssetStateStoreByUri)
def _delete_asset_state_store(
    api: Api, body: DeleteAssetStateStoreByName | DeleteAssetStateStoreByUri
) -> Reply:
    api.call("DELETE", *_asset_store(body, "value", body.key))
    return OK


class ClearAssetStateStoreByName(_ByName):
    pass


class ClearAssetStateStoreByUri(_ByUri):
    pass


@_route(ClearAssetStateStoreByName, ClearAssetStateStoreByUri)
def _clear_asset_state_store(api: Api, body: _ByName | _ByUri) -> Reply:
    api.call("DELETE", *_asset_store(body, "clear"))
    return OK


# --- human in the loop -----------------------------------------------------------------------


class HITLUser(msgspec.Struct, frozen=True):
    id: str
    name: str


class CreateHITLDetailPayload(Body):
    ti_id: uuid.UUID
    options: Annotated[list[str], msgspec.Meta(min_length=1)]
    subject: str
    body: str | None = None
    defaults: list[str] | None = None
    multiple: bool | None = False
    params: dict[str, dict[str, Any]] | None = None
    assigned_users: list[HITLUser] | None = None


@_route(CreateHITLDetailPayload)
def _create_hitl_detail(api: Api, body: CreateHITLDetailPayload) -> Reply:
    # Airflow posts the whole request model, its "type" tag included.
    payload = msgspec.to_builtins(body)
    payload["type"] = payload.pop("type")  # last, as pydantic dumps it
    response = api.call("POST", f"hitlDetails/{body.ti_id}", json=payload)
    return _result("HITLDetailRequestResult", response)


def _object_or_none(value: Any) -> dict[str, Any] | None:
    return None if value is None else msgspec.convert(value, dict[str, Any])
