"""supervisor.activity: strict validation, every error naming the field and what was expected."""

from __future__ import annotations

import copy
import json
import os
import pwd
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from supervisor.activity import Activity, parse_activity, resolve_run_as
from supervisor.errors import ActivityError

VALID: dict[str, Any] = {
    "kind": "ExecuteTask",
    "token": "eyJ.header.sig",
    "server": "http://127.0.0.1:8080/execution/",
    "ti": {
        "id": "3fa85f64-5717-4562-b3fc-2c963f66afa6",
        "dag_id": "dag",
        "task_id": "task",
        "run_id": "manual__1",
        "try_number": 1,
    },
    "entrypoint": "pkg.mod:run",
}


def activity(**changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(VALID)
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    return data


def with_ti(**changes: Any) -> dict[str, Any]:
    data = activity()
    for key, value in changes.items():
        if value is None:
            data["ti"].pop(key)
        else:
            data["ti"][key] = value
    return data


def error_for(data: Any) -> ActivityError:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    with pytest.raises(ActivityError) as info:
        parse_activity(raw)
    return info.value


def test_valid_activity_is_parsed_with_defaults():
    parsed = parse_activity(json.dumps(VALID).encode())
    assert isinstance(parsed, Activity)
    assert parsed.ti.map_index == -1
    assert parsed.env == {}
    assert parsed.command is None
    assert parsed.timeout is None


def test_command_activity_with_full_context_is_parsed():
    data = activity(
        entrypoint=None,
        command=["/bin/task", "--flag"],
        context={
            "connections": [{"conn_id": "db", "conn_type": "postgres", "password": "pw"}],
            "variables": {"a": "1"},
        },
        timeout=2.5,
        env={"MY_VAR": "x"},
        log_path="/tmp/x.log",
    )
    parsed = parse_activity(json.dumps(data).encode())
    assert parsed.command == ["/bin/task", "--flag"]
    assert parsed.context is not None
    assert parsed.context.connections[0].password == "pw"
    assert parsed.context.variables == {"a": "1"}


def test_not_json_is_reported_at_the_root():
    error = error_for(b"{not json")
    assert error.field == "$"
    assert "JSON" in str(error)


@pytest.mark.parametrize("field", ["token", "ti"])
def test_missing_top_level_field_is_named_as_its_json_path(field):
    error = error_for(activity(**{field: None}))
    assert error.field == f"$.{field}"
    assert "missing" in str(error)


@pytest.mark.parametrize("field", ["dag_id", "try_number"])
def test_missing_ti_field_is_named_as_its_json_path(field):
    error = error_for(with_ti(**{field: None}))
    assert error.field == f"$.ti.{field}"
    assert "missing" in str(error)


def test_unknown_top_level_field_is_an_error_naming_it():
    error = error_for(activity(tokne="typo"))
    assert error.field == "$.tokne"
    assert "unknown field" in str(error)


def test_unknown_ti_field_is_an_error_naming_its_path():
    error = error_for(with_ti(dagid="typo"))
    assert error.field == "$.ti.dagid"
    assert "unknown field" in str(error)


@pytest.mark.parametrize(
    ("data", "path", "expected"),
    [
        (with_ti(try_number="1"), "$.ti.try_number", "int"),
        (with_ti(id="not-a-uuid"), "$.ti.id", "UUID"),
        (activity(timeout="10"), "$.timeout", "float"),
        (activity(command="echo hi", entrypoint=None), "$.command", "array"),
        (activity(env={"A": 1}), "$.env", "str"),
        (activity(kind="ExecuteCallback"), "$.kind", "ExecuteCallback"),
        (activity(token=5), "$.token", "str"),
    ],
    ids=["try_number", "ti-id", "timeout", "command", "env-value", "kind", "token"],
)
def test_wrong_type_names_the_path_and_what_was_expected(data, path, expected):
    error = error_for(data)
    assert error.field.startswith(path)
    assert expected in str(error)


def test_other_kind_is_refused_naming_the_kind_expected():
    error = error_for(activity(kind="ExecuteCallback"))
    assert error.field == "$.kind"
    assert "'ExecuteCallback'" in str(error)
    assert "ExecuteTask" in str(error)


@pytest.mark.parametrize(
    "server", ["127.0.0.1:8080", "ftp://host/execution/", "http://", "", "execution"]
)
def test_server_must_be_an_http_url_with_a_host(server):
    error = error_for(activity(server=server))
    assert error.field == "$.server"
    assert "http(s) URL" in str(error)
    assert repr(server) in str(error)


def test_blank_token_is_refused():
    error = error_for(activity(token="  "))
    assert error.field == "$.token"


def test_both_entrypoint_and_command_is_refused():
    error = error_for(activity(command=["/bin/true"]))
    assert "exactly one of 'entrypoint' and 'command'" in str(error)


def test_neither_entrypoint_nor_command_is_refused():
    error = error_for(activity(entrypoint=None))
    assert "exactly one of 'entrypoint' and 'command'" in str(error)


@pytest.mark.parametrize(
    "entrypoint", ["pkg.mod", "pkg.mod:", ":run", "pkg mod:run", "pkg.mod:1run", "a:b:c"]
)
def test_bad_entrypoint_names_the_expected_forms(entrypoint):
    error = error_for(activity(entrypoint=entrypoint))
    assert error.field == "$.entrypoint"
    assert "package.module:callable" in str(error)
    assert "path/file.py:callable" in str(error)


@pytest.mark.parametrize("entrypoint", ["pkg.mod:run", "dags/my_file.py:Task.execute", "m:_f"])
def test_good_entrypoints_are_accepted(entrypoint):
    assert parse_activity(json.dumps(activity(entrypoint=entrypoint)).encode()).entrypoint


@pytest.mark.parametrize("command", [[], [""]])
def test_empty_command_is_refused(command):
    error = error_for(activity(entrypoint=None, command=command))
    assert error.field == "$.command"


@pytest.mark.parametrize("timeout", [0, -1, -0.5])
def test_timeout_must_be_positive(timeout):
    error = error_for(activity(timeout=timeout))
    assert error.field == "$.timeout"
    assert "> 0" in str(error)


@pytest.mark.parametrize("try_number", [0, -3])
def test_try_number_must_be_at_least_one(try_number):
    error = error_for(with_ti(try_number=try_number))
    assert error.field == "$.ti.try_number"
    assert ">= 1" in str(error)


def test_map_index_below_minus_one_is_refused():
    error = error_for(with_ti(map_index=-2))
    assert error.field == "$.ti.map_index"


@pytest.mark.parametrize("name", ["1ABC", "A-B", "A B", "", "A=B"])
def test_env_names_must_be_identifiers(name):
    error = error_for(activity(env={name: "x"}))
    assert error.field == f"$.env.{name}"
    assert "letters, digits and _" in str(error)


def test_env_value_with_nul_byte_is_refused_naming_the_value_as_the_problem():
    error = error_for(activity(env={"GOOD_NAME": "a\u0000b"}))
    assert error.field == "$.env.GOOD_NAME"
    # The name is fine: the message must not blame it.
    assert "NUL" in str(error) or "value" in str(error)


@pytest.mark.parametrize(
    ("changes", "path"),
    [
        ({"entrypoint": None, "command": ["/bin/echo", "a\u0000b"]}, "$.command"),
        ({"entrypoint": "pkg\u0000.mod:run"}, "$.entrypoint"),
        ({"log_path": "logs/a\u0000b.log"}, "$.log_path"),
    ],
    ids=["command", "entrypoint", "log_path"],
)
def test_nul_byte_in_a_program_path_or_argument_is_refused_before_anything_starts(changes, path):
    # Without this check the error only surfaces after /run, in the zygote or the log opener.
    error = error_for(activity(**changes))
    assert error.field.startswith(path)


def test_duplicate_conn_id_in_context_names_the_second_entry():
    conn = {"conn_id": "db", "conn_type": "postgres"}
    error = error_for(
        activity(context={"connections": [conn, {"conn_id": "x", "conn_type": "y"}, conn]})
    )
    assert error.field == "$.context.connections[2].conn_id"
    assert "duplicate" in str(error)
    assert "'db'" in str(error)


def test_unknown_field_in_a_pushed_connection_is_an_error():
    conn = {"conn_id": "db", "conn_type": "postgres", "pasword": "typo"}
    error = error_for(activity(context={"connections": [conn]}))
    assert error.field.startswith("$.context.connections[0]")
    assert "pasword" in str(error)


def test_error_message_starts_with_the_field():
    error = error_for(activity(timeout=-1))
    assert str(error).startswith("activity $.timeout: ")


def test_run_as_needs_root():
    with pytest.raises(ActivityError) as info:
        resolve_run_as("nobody", euid=1000)
    assert info.value.field == "$.run_as"
    assert "root" in str(info.value)


def test_run_as_unknown_user_is_refused():
    with pytest.raises(ActivityError) as info:
        resolve_run_as("no-such-user-taskvisor", euid=0)
    assert info.value.field == "$.run_as"
    assert "no such user 'no-such-user-taskvisor'" in str(info.value)


def test_run_as_known_user_resolves_uid_gid_groups_and_home():
    me = pwd.getpwuid(os.getuid())
    resolved = resolve_run_as(me.pw_name, euid=0)
    assert (resolved.uid, resolved.gid, resolved.home) == (me.pw_uid, me.pw_gid, me.pw_dir)
    assert me.pw_gid in resolved.groups


def test_default_log_path_follows_airflows_layout():
    parsed = parse_activity(json.dumps(with_ti(try_number=3)).encode())
    assert parsed.default_log_path() == (
        "logs/dag_id=dag/run_id=manual__1/task_id=task/attempt=3.log"
    )


def test_default_log_path_of_a_mapped_task_has_the_map_index():
    parsed = parse_activity(json.dumps(with_ti(try_number=2, map_index=4)).encode())
    assert parsed.default_log_path() == (
        "logs/dag_id=dag/run_id=manual__1/task_id=task/map_index=4/attempt=2.log"
    )


def test_describe_never_includes_the_token_or_context():
    from supervisor.activity import describe

    data = activity(context={"variables": {"secret_key": "s3cr3t-value"}})
    described = describe(parse_activity(json.dumps(data).encode()))
    text = json.dumps(described)
    assert VALID["token"] not in text
    assert "s3cr3t-value" not in text
    assert described["dag_id"] == "dag"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)


@settings(max_examples=300, deadline=None)
@given(
    where=st.sampled_from(["top", "ti", "context"]),
    key=st.sampled_from([*VALID, *VALID["ti"], "command", "env", "timeout", "context", "x"]),
    value=json_values,
)
def test_any_mutation_of_a_valid_activity_is_accepted_or_refused_as_an_activity_error(
    where, key, value
):
    data = activity()
    if where == "top":
        data[key] = value
    elif where == "ti":
        data["ti"][key] = value
    else:
        data["context"] = {key: value}
    error: ActivityError | None = None
    try:
        parse_activity(json.dumps(data).encode())
    except ActivityError as exc:  # anything else escapes and fails the test
        error = exc
    if error is not None:
        assert error.field.startswith("$")
        assert str(error).startswith(f"activity {error.field}")


@settings(max_examples=200, deadline=None)
@given(raw=st.binary(max_size=200))
def test_arbitrary_bytes_are_refused_as_an_activity_error(raw):
    with pytest.raises(ActivityError):
        parse_activity(raw)
