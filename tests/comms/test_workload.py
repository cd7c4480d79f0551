"""comms.workload: Airflow's ExecuteTask workload, checked to the activity's standard."""

from __future__ import annotations

import copy
import json
import uuid
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from comms.activity import (
    MAX_ACTIVITY_BYTES,
    MAX_ID_LENGTH,
    MAX_MAP_INDEX,
    MAX_PATH_BYTES,
    MAX_TRY_NUMBER,
    ActivityError,
    parse_activity,
)
from comms.workload import BundleInfo, Workload, WorkloadTI, is_workload, parse_workload

TOKEN = "eyJhbGciOiJIUzUxMiIsInR5cCI6IkpXVCJ9." + "p" * 120 + "." + "s" * 86
TI_ID = "0197e2a4-5e1f-7c3b-9a2d-4b8e6f1c0a11"
DAG_VERSION_ID = "0197e2a4-5e1f-7c3b-9a2d-4b8e6f1c0a22"

# What ExecuteTask.make(ti).model_dump_json() writes, key for key in its order.
VALID: dict[str, Any] = {
    "token": TOKEN,
    "dag_rel_path": "team/etl.py",
    "bundle_info": {"name": "dags-folder", "version": None},
    "log_path": "dag_id=etl/run_id=manual__1/task_id=load/attempt=1.log",
    "ti": {
        "id": TI_ID,
        "task_id": "load",
        "dag_id": "etl",
        "run_id": "manual__1",
        "try_number": 1,
        "dag_version_id": DAG_VERSION_ID,
        "map_index": -1,
        "hostname": None,
        "context_carrier": {
            "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        },
        "queue": "default",
        "pool_slots": 1,
        "priority_weight": 3,
    },
    "sentry_integration": "",
    "type": "ExecuteTask",
}


def workload(**changes: Any) -> dict[str, Any]:
    """VALID with top-level fields replaced; ``None`` removes one."""
    data = copy.deepcopy(VALID)
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    return data


def with_ti(**changes: Any) -> dict[str, Any]:
    data = workload()
    for key, value in changes.items():
        if value is None:
            data["ti"].pop(key)
        else:
            data["ti"][key] = value
    return data


def raw(data: Any) -> bytes:
    return json.dumps(data).encode()


def error_for(data: Any) -> ActivityError:
    with pytest.raises(ActivityError) as info:
        parse_workload(data if isinstance(data, bytes) else raw(data))
    assert TOKEN not in str(info.value)
    return info.value


# --- accepted shapes -------------------------------------------------------------------------


def test_a_workload_as_airflow_dumps_it_is_parsed_field_for_field():
    parsed = parse_workload(raw(VALID))
    assert isinstance(parsed, Workload)
    assert parsed.type == "ExecuteTask"
    assert parsed.token == TOKEN
    assert parsed.ti == WorkloadTI(
        id=uuid.UUID(TI_ID),
        task_id="load",
        dag_id="etl",
        run_id="manual__1",
        try_number=1,
        dag_version_id=uuid.UUID(DAG_VERSION_ID),
        map_index=-1,
        hostname=None,
        context_carrier=VALID["ti"]["context_carrier"],
        queue="default",
        pool_slots=1,
        priority_weight=3,
    )
    assert parsed.dag_rel_path == "team/etl.py"
    assert parsed.bundle_info == BundleInfo(name="dags-folder", version=None)
    assert parsed.log_path == VALID["log_path"]
    assert parsed.sentry_integration == ""
    assert parsed.unknown_fields == ()


def test_fields_airflow_gives_defaults_may_be_left_out():
    data = workload(sentry_integration=None, type="ExecuteTask")
    for key in ("map_index", "hostname", "context_carrier", "queue"):
        del data["ti"][key]
    del data["bundle_info"]["version"]
    parsed = parse_workload(raw(data))
    assert parsed.ti.map_index == -1
    assert parsed.ti.hostname is None
    assert parsed.ti.context_carrier is None
    assert parsed.ti.queue == "default"
    assert parsed.bundle_info.version is None
    assert parsed.sentry_integration == ""


def test_a_mapped_versioned_workload_without_a_log_file_is_accepted():
    data = with_ti(map_index=MAX_MAP_INDEX, hostname="worker-1.example", queue="")
    data.update(
        log_path=None,
        bundle_info={"name": "repo", "version": "v" * MAX_ID_LENGTH},
        sentry_integration="company.sentry:init",
        dag_rel_path=".",
    )
    parsed = parse_workload(raw(data))
    assert parsed.log_path is None
    assert parsed.ti.map_index == MAX_MAP_INDEX
    assert parsed.bundle_info.version == "v" * MAX_ID_LENGTH
    assert parsed.sentry_integration == "company.sentry:init"
    assert parsed.dag_rel_path == "."


def test_airflows_input_only_ti_fields_are_typed_not_unknown():
    data = with_ti(external_executor_id="celery-123", executor_config={"pod": {"cpu": 1}})
    parsed = parse_workload(raw(data))
    assert parsed.ti.external_executor_id == "celery-123"
    assert parsed.ti.executor_config == {"pod": {"cpu": 1}}
    assert parsed.unknown_fields == ()


def test_ti_document_is_the_ti_object_exactly_as_received():
    data = with_ti(added_in_3_3_3={"nested": [1, 2.5, None]})
    parsed = parse_workload(raw(data))
    assert parsed.ti_document == data["ti"]
    assert list(parsed.ti_document) == list(data["ti"])  # key order kept


def test_unknown_fields_are_accepted_and_named_by_json_path():
    data = workload(new_top=1)
    data["ti"]["new_ti_field"] = "x"
    data["bundle_info"]["new_bundle_field"] = True
    parsed = parse_workload(raw(data))
    assert parsed.unknown_fields == (
        "$.new_top",
        "$.ti.new_ti_field",
        "$.bundle_info.new_bundle_field",
    )


def test_an_overlong_unknown_field_name_is_shortened_in_its_path():
    parsed = parse_workload(raw(workload(**{"k" * 1000: 1})))
    (path,) = parsed.unknown_fields
    assert path == "$." + "k" * 80 + "..."


@pytest.mark.parametrize("dag_rel_path", ["etl.py", "a/b/c.py", "a..b/c.py", "./x.py", "."])
def test_relative_dag_paths_that_stay_in_the_bundle_are_accepted(dag_rel_path):
    assert parse_workload(raw(workload(dag_rel_path=dag_rel_path))).dag_rel_path == dag_rel_path


def test_repr_never_shows_the_token():
    parsed = parse_workload(raw(VALID))
    assert TOKEN not in repr(parsed)
    assert TOKEN.split(".")[2] not in repr(parsed)
    assert TI_ID in repr(parsed)


# --- is_workload --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (raw(VALID), True),
        (b'{"type": 5}', True),  # a workload, if a bad one: parse_workload says why
        (b'{"kind": "ExecuteTask", "token": "a.b.c"}', False),
        (b"[1, 2]", False),
        (b'"type"', False),
        (b"", False),
        (b"{not json", False),
        (b"\xff\xfe", False),
    ],
    ids=["workload", "bad-type", "activity", "array", "string", "empty", "broken", "binary"],
)
def test_is_workload_looks_for_a_top_level_type(data, expected):
    assert is_workload(data) is expected


def test_is_workload_survives_deep_nesting():
    assert is_workload(b'{"x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}") is False


# --- refusals -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["ExecuteCallback", "TestConnection", "RunTrigger", "executetask"])
def test_other_workload_kinds_are_refused_saying_what_supervise_runs(kind):
    error = error_for(workload(type=kind))
    assert error.field == "$.type"
    assert f"got {kind!r}; expected 'ExecuteTask': supervise runs task workloads only" in str(error)
    assert "RunTrigger are for Airflow's own workers and triggerer" in str(error)


def test_a_kind_holding_the_token_is_refused_without_showing_it():
    error = error_for(workload(type=f"x{TOKEN}"))
    assert "a value holding the token (not shown)" in str(error)


@pytest.mark.parametrize(
    ("data", "path"),
    [
        (workload(type=None), "$.type"),
        (workload(token=None), "$.token"),
        (workload(dag_rel_path=None), "$.dag_rel_path"),
        (workload(bundle_info=None), "$.bundle_info"),
        (workload(log_path=None), "$.log_path"),  # Airflow requires it, null or not
        (workload(bundle_info={"version": "1"}), "$.bundle_info.name"),
        (with_ti(dag_version_id=None), "$.ti.dag_version_id"),
        (with_ti(pool_slots=None), "$.ti.pool_slots"),
        (with_ti(priority_weight=None), "$.ti.priority_weight"),
        (with_ti(try_number=None), "$.ti.try_number"),
    ],
)
def test_a_missing_field_is_named_by_its_json_path(data, path):
    error = error_for(data)
    assert error.field == path
    assert str(error) == f"workload {path}: missing"


@pytest.mark.parametrize(
    ("data", "path", "expected"),
    [
        (with_ti(try_number="1"), "$.ti.try_number", "Expected `int`, got `str`"),
        (with_ti(try_number=1.0), "$.ti.try_number", "Expected `int`, got `float`"),
        (with_ti(id="not-a-uuid"), "$.ti.id", "Invalid UUID"),
        (with_ti(dag_version_id=7), "$.ti.dag_version_id", "Expected `uuid`, got `int`"),
        (with_ti(context_carrier=[]), "$.ti.context_carrier", "Expected `object | null`"),
        (workload(log_path=3), "$.log_path", "Expected `str | null`, got `int`"),
        (workload(ti=[]), "$.ti", "Expected `object`, got `array`"),
        (workload(sentry_integration=None, type=1), "$.type", "Expected `str`, got `int`"),
    ],
)
def test_a_wrong_type_names_the_path_and_what_was_expected(data, path, expected):
    error = error_for(data)
    assert error.field == path
    assert expected in str(error)


@pytest.mark.parametrize(
    ("ti", "path", "expected"),
    [
        ({"try_number": 0}, "$.ti.try_number", "got 0; expected an integer >= 1 and at most"),
        ({"try_number": MAX_TRY_NUMBER + 1}, "$.ti.try_number", f"at most {MAX_TRY_NUMBER}"),
        ({"map_index": -2}, "$.ti.map_index", "got -2; expected -1 or an index >= 0"),
        ({"map_index": MAX_MAP_INDEX + 1}, "$.ti.map_index", f"at most {MAX_MAP_INDEX}"),
        ({"dag_id": ""}, "$.ti.dag_id", f"got ''; expected 1 to {MAX_ID_LENGTH} characters"),
        ({"task_id": "t" * 251}, "$.ti.task_id", f"expected 1 to {MAX_ID_LENGTH} characters"),
        ({"run_id": "a/b"}, "$.ti.run_id", "expected no '/' and no control characters"),
        ({"pool_slots": 0}, "$.ti.pool_slots", "got 0; expected an integer >= 1 and < 2**31"),
        ({"pool_slots": 2**31}, "$.ti.pool_slots", "expected an integer >= 1 and < 2**31"),
        ({"priority_weight": 2**31}, "$.ti.priority_weight", "expected a 32-bit integer"),
        ({"priority_weight": -(2**31) - 1}, "$.ti.priority_weight", "a 32-bit integer"),
        ({"queue": "q" * 257}, "$.ti.queue", "expected 0 to 256 characters"),
        ({"hostname": "h" * 1001}, "$.ti.hostname", "expected 0 to 1000 characters"),
        ({"hostname": "host\n"}, "$.ti.hostname", "expected no control characters"),
    ],
)
def test_ti_fields_are_bounded_naming_value_and_bounds(ti, path, expected):
    error = error_for(with_ti(**ti))
    assert error.field == path
    assert expected in str(error)


def test_the_error_message_reads_workload_path_value_expectation():
    error = error_for(with_ti(try_number=0))
    assert str(error) == (
        "workload $.ti.try_number: got 0; expected an integer >= 1 and at most 10000"
    )
    assert error.document == "workload"
    assert error.reason == "got 0; expected an integer >= 1 and at most 10000"


@pytest.mark.parametrize(
    ("bundle_info", "path", "expected"),
    [
        ({"name": ""}, "$.bundle_info.name", "got ''; expected 1 to 250 characters"),
        ({"name": "b" * 251}, "$.bundle_info.name", "expected 1 to 250 characters"),
        ({"name": "a\x00b"}, "$.bundle_info.name", "expected no control characters"),
        ({"name": "b", "version": "v" * 251}, "$.bundle_info.version", "1 to 250 characters"),
    ],
)
def test_bundle_info_is_bounded(bundle_info, path, expected):
    error = error_for(workload(bundle_info=bundle_info))
    assert error.field == path
    assert expected in str(error)


@pytest.mark.parametrize("field", ["dag_rel_path", "log_path"])
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", "got ''; expected"),
        ("/etc/passwd", "got '/etc/passwd': absolute; expected"),
        ("../../etc/cron.d/x", "'..' would leave its folder; expected"),
        ("a/../../b", "'..' would leave its folder"),
        ("a/..", "'..' would leave its folder"),
        ("a\x00b", "contains a NUL byte"),
        ("p" * (MAX_PATH_BYTES + 1), f"at most {MAX_PATH_BYTES // 1024} KiB"),
    ],
    ids=["empty", "absolute", "climbs", "climbs-inside", "ends-climbing", "nul", "too-long"],
)
def test_paths_must_stay_relative_to_their_folder(field, value, expected):
    error = error_for(workload(**{field: value}))
    assert error.field == f"$.{field}"
    assert expected in str(error)


def test_the_log_path_error_says_it_is_joined_under_base_log_folder():
    error = error_for(workload(log_path="/var/log/x.log"))
    assert "expected a path under [logging] base_log_folder, or null for no log file" in str(error)


def test_a_sentry_integration_with_control_characters_is_refused():
    error = error_for(workload(sentry_integration="mod:init\n"))
    assert error.field == "$.sentry_integration"


@pytest.mark.parametrize("token", ["", "abc", "a.b", "a.b.c.d", "a.b.c ", "a.b.c\n", "é.b.c"])
def test_a_token_that_is_not_a_jwt_is_refused_without_being_shown(token):
    error = error_for(workload(token=token))
    assert error.field == "$.token"
    assert "(not shown); expected a JWT" in str(error)
    if token:
        assert token not in str(error)


@pytest.mark.parametrize(
    ("data", "path"),
    [
        (with_ti(hostname=f"host-{TOKEN}"), "$.ti"),
        (with_ti(task_id=f"{TOKEN}-x"), "$.ti"),  # would otherwise be shown, being too long
        (with_ti(context_carrier={"authorization": f"Bearer {TOKEN}"}), "$.ti"),
        (with_ti(smuggled=TOKEN), "$.ti"),
        (workload(dag_rel_path=f"{TOKEN}.py"), "$.dag_rel_path"),
        (workload(bundle_info={"name": "b", "version": TOKEN}), "$.bundle_info.version"),
        (workload(log_path=f"{TOKEN}.log"), "$.log_path"),
        (workload(sentry_integration=f"m:{TOKEN}"), "$.sentry_integration"),
    ],
)
def test_a_value_holding_the_token_is_refused_without_showing_it(data, path):
    error = error_for(data)
    assert error.field == path
    assert "holds the token" in str(error)


def _with_raw(prefix: str, suffix: str = "") -> bytes:
    text = json.dumps(VALID)
    return (prefix + text[1:-1] + suffix + "}").encode()


@pytest.mark.parametrize(
    ("data", "path"),
    [
        (_with_raw('{"type": "RunTrigger", '), "$.type"),
        (_with_raw("{", ', "token": "a.b.c"'), "$.token"),
        (
            raw(VALID).replace(b'{"name": "dags-folder"', b'{"name": "a", "name": "dags-folder"'),
            "$.bundle_info.name",
        ),
    ],
    ids=["type", "token-last-wins", "nested"],
)
def test_a_duplicate_key_at_any_depth_is_refused_naming_its_path(data, path):
    error = error_for(data)
    assert error.field == path
    assert "appears twice; expected each key once" in str(error)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", "the document is empty; expected a JSON object"),
        (b" \n", "the document is empty"),
        (b"{", "not valid JSON"),
        (b"[]", "Expected `object`, got `array`"),
        (b"null", "Expected `object`, got `null`"),
        (b'{"a": NaN}', "not valid JSON"),
    ],
)
def test_a_document_that_is_no_object_is_refused_at_the_root(data, expected):
    error = error_for(data)
    assert error.field == "$"
    assert expected in str(error)


def test_a_document_over_the_size_cap_is_refused_before_it_is_parsed():
    data = raw(with_ti(context_carrier={"big": "x" * MAX_ACTIVITY_BYTES}))
    error = error_for(data)
    assert error.field == "$"
    assert "larger than 16 MiB" in str(error)


@pytest.mark.parametrize("depth", [2_000, 100_000])
def test_deep_nesting_is_refused_as_an_activity_error(depth):
    deep = "[" * depth + "]" * depth
    data = json.dumps(VALID).replace(
        '"context_carrier": {', '"context_carrier": {"x": ' + deep + ", "
    )
    error = error_for(data.encode())
    assert str(error) == "workload $: nested too deeply; expected a flat document"


def test_an_activity_is_not_a_workload_and_a_workload_not_an_activity():
    activity = {
        "kind": "ExecuteTask",
        "token": TOKEN,
        "server": "http://127.0.0.1:8080/execution/",
        "ti": {"id": TI_ID, "dag_id": "d", "task_id": "t", "run_id": "r", "try_number": 1},
        "entrypoint": "pkg.mod:run",
    }
    assert error_for(activity).field == "$.type"
    with pytest.raises(ActivityError, match=r"^activity \$\.\w+: unknown field"):
        parse_activity(raw(VALID))


# --- fuzz: only ActivityError, never the token ------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)


@settings(max_examples=300, deadline=None)
@given(
    where=st.sampled_from(["top", "ti", "bundle_info"]),
    key=st.sampled_from([*VALID, *VALID["ti"], "name", "version", "external_executor_id", "x"]),
    value=json_values | st.just(TOKEN) | st.text(max_size=4).map(lambda s: s + TOKEN),
)
def test_any_mutation_is_accepted_or_refused_as_an_activity_error_never_showing_the_token(
    where, key, value
):
    data = workload()
    target = data if where == "top" else data[where]
    target[key] = value
    error: ActivityError | None = None
    try:
        parse_workload(raw(data))
    except ActivityError as exc:  # anything else escapes and fails the test
        error = exc
    if error is not None:
        assert str(error).startswith(f"workload {error.field}: ")
        assert TOKEN.split(".")[1][:20] not in str(error)


@settings(max_examples=200, deadline=None)
@given(value=json_values)
def test_arbitrary_json_is_refused_as_an_activity_error(value):
    with pytest.raises(ActivityError):
        parse_workload(raw(value))


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=200))
def test_arbitrary_bytes_are_refused_as_an_activity_error(data):
    with pytest.raises(ActivityError):
        parse_workload(data)
