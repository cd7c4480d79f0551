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

from comms.activity import (
    MAX_ACTIVITY_BYTES,
    MAX_EXEC_STRING_BYTES,
    MAX_ID_LENGTH,
    MAX_MAP_INDEX,
    MAX_PATH_BYTES,
    MAX_TIMEOUT,
    MAX_TOKEN_LENGTH,
    MAX_TRY_NUMBER,
    MAX_USER_NAME_LENGTH,
)
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
    "entrypoint",
    ["pkg.mod", "pkg.mod:", ":run", "pkg mod:run", "pkg.mod:1run", "a:b:c", "pkg.mod:run\n"],
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


@pytest.mark.parametrize("name", ["1ABC", "A-B", "A B", "", "A=B", "A\n"])
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


# --- bounds: every one refused before anything starts, naming field, value and limit -------


def test_the_limits_are_public_constants_of_comms_activity():
    import comms.activity as limits

    assert limits.MAX_ACTIVITY_BYTES == 16 * 1024 * 1024
    assert {name for name in limits.__all__ if name.startswith("MAX_")} == {
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
    }


def test_supervisor_and_comms_raise_the_same_activity_error():
    import comms.activity
    import supervisor.errors

    assert supervisor.errors.ActivityError is comms.activity.ActivityError


def test_empty_run_as_is_refused_instead_of_running_the_task_as_supervises_user():
    error = error_for(activity(run_as=""))
    assert error.field == "$.run_as"
    assert "got ''; expected a user name" in str(error)


def test_overlong_run_as_is_refused_naming_the_limit():
    error = error_for(activity(run_as="u" * (MAX_USER_NAME_LENGTH + 1)))
    assert error.field == "$.run_as"
    assert f"at most {MAX_USER_NAME_LENGTH} bytes" in str(error)


@pytest.mark.parametrize(
    ("server", "problem"),
    [
        ("http://127.0.0.1:99999/execution/", "Port out of range"),
        ("http://127.0.0.1:http/execution/", "Port could not be cast"),
        ("http://127.0.0.1:0/execution/", "expected a port in 1-65535"),
        ("http://[::1/execution/", "Invalid IPv6 URL"),
        ("http://exa mple.com/execution/", "whitespace or control characters"),
        ("http://host\t/execution/", "whitespace or control characters"),
        ("http://h\u00e9/execution/", "is not a valid host"),
        ("http://h/execution/?team=a", "expected no query or fragment"),
        ("http://h/execution/#x", "expected no query or fragment"),
    ],
)
def test_server_url_is_validated_whole_naming_what_is_wrong(server, problem):
    error = error_for(activity(server=server))
    assert error.field == "$.server"
    assert problem in str(error)


def test_server_url_with_credentials_is_refused_without_showing_them():
    error = error_for(activity(server="https://admin:hunter2@api.example/execution/"))
    assert error.field == "$.server"
    assert "user name or password (not shown)" in str(error)
    assert "hunter2" not in str(error)


@pytest.mark.parametrize(
    "server",
    [
        "http://127.0.0.1:8080/execution/",
        "https://airflow-api.example.com/execution",
        "http://[::1]:8080/execution/",
        "http://api_server:65535/",
        "https://localhost",
    ],
)
def test_good_server_urls_are_accepted(server):
    assert parse_activity(json.dumps(activity(server=server)).encode()).server == server


@pytest.mark.parametrize(
    "token",
    ["hello world", "a.b", "a.b.c.d", "a..c", "eyJ.e+J.sig", "eyJ.eyJ.sig=", "x" * 10],
)
def test_token_that_is_not_three_base64url_parts_is_refused_without_being_shown(token):
    error = error_for(activity(token=token))
    assert error.field == "$.token"
    assert "expected a JWT: three base64url parts" in str(error)
    assert f"got {len(token)} characters (not shown)" in str(error)
    assert token not in str(error)


def test_overlong_token_is_refused_naming_the_limit():
    error = error_for(activity(token=f"eyJ.{'a' * MAX_TOKEN_LENGTH}.sig"))
    assert error.field == "$.token"
    assert f"at most {MAX_TOKEN_LENGTH} characters" in str(error)


@pytest.mark.parametrize("try_number", [MAX_TRY_NUMBER + 1, 10**30])
def test_try_number_above_the_bound_is_refused(try_number):
    error = error_for(with_ti(try_number=try_number))
    assert error.field == "$.ti.try_number"
    assert f"got {try_number}; expected an integer >= 1 and at most {MAX_TRY_NUMBER}" in str(error)


def test_map_index_beyond_airflows_32_bit_column_is_refused():
    error = error_for(with_ti(map_index=MAX_MAP_INDEX + 1))
    assert error.field == "$.ti.map_index"
    assert f"at most {MAX_MAP_INDEX}" in str(error)


@pytest.mark.parametrize("timeout", [MAX_TIMEOUT + 1, 1e308])
def test_timeout_above_the_bound_is_refused(timeout):
    error = error_for(activity(timeout=timeout))
    assert error.field == "$.timeout"
    assert f"got {timeout!r}; expected a number of seconds > 0 and at most 2592000" in str(error)


@pytest.mark.parametrize("field", ["dag_id", "task_id", "run_id"])
@pytest.mark.parametrize("value", ["", "x" * (MAX_ID_LENGTH + 1)], ids=["empty", "too-long"])
def test_ti_ids_must_be_non_empty_and_fit_airflows_columns(field, value):
    error = error_for(with_ti(**{field: value}))
    assert error.field == f"$.ti.{field}"
    assert f"expected 1 to {MAX_ID_LENGTH} characters" in str(error)


@pytest.mark.parametrize("field", ["dag_id", "task_id", "run_id"])
@pytest.mark.parametrize("value", ["a/b", "../x", "a\nb", "a\u0000b"])
def test_ti_ids_that_would_break_the_default_log_path_are_refused(field, value):
    error = error_for(with_ti(**{field: value}))
    assert error.field == f"$.ti.{field}"
    assert "expected no '/' and no control characters" in str(error)


def test_empty_log_path_is_refused_instead_of_silently_using_the_default():
    error = error_for(activity(log_path=""))
    assert error.field == "$.log_path"
    assert "got ''; expected a file path (leave the field out for the default" in str(error)


def test_overlong_log_path_is_refused_naming_the_limit():
    error = error_for(activity(log_path="/tmp/" + "x" * MAX_PATH_BYTES))
    assert error.field == "$.log_path"
    assert "at most 4 KiB" in str(error)


def test_huge_env_value_is_refused_naming_the_key_and_never_echoed_whole():
    value = "v" * (MAX_EXEC_STRING_BYTES * 4)
    error = error_for(activity(env={"BIG": value}))
    assert error.field == "$.env.BIG"
    assert "expected NAME=value within 64 KiB" in str(error)
    assert f"({len(value)} characters)" in str(error)
    assert len(str(error)) < 300


def test_env_and_command_over_the_total_exec_budget_are_refused():
    env = {f"V{i}": "v" * (MAX_EXEC_STRING_BYTES - 10) for i in range(20)}
    error = error_for(activity(env=env))
    assert error.field == "$.env"
    assert "expected at most 1 MiB together" in str(error)


def test_huge_command_argument_is_refused_naming_its_index():
    arg = "a" * (MAX_EXEC_STRING_BYTES + 1)
    error = error_for(activity(entrypoint=None, command=["/bin/echo", arg]))
    assert error.field == "$.command[1]"
    assert "expected an argument of at most 64 KiB" in str(error)
    assert len(str(error)) < 300


def test_a_non_string_env_value_names_its_key():
    error = error_for(activity(env={"GOOD": "x", "A": 1}))
    assert error.field == "$.env.A"
    assert "Expected `str`, got `int`" in str(error)


def test_a_non_string_pushed_variable_names_its_key():
    error = error_for(activity(context={"variables": {"ok": "1", "count": 3}}))
    assert error.field == "$.context.variables.count"


def test_values_at_the_bounds_are_accepted():
    data = activity(
        token=f"eyJ.{'a' * (MAX_TOKEN_LENGTH - 8)}.sig",
        timeout=MAX_TIMEOUT,
        env={"V": "v" * (MAX_EXEC_STRING_BYTES - 4)},
        log_path="x" * MAX_PATH_BYTES,
        run_as="u" * MAX_USER_NAME_LENGTH,
    )
    data["ti"].update(
        dag_id="d" * MAX_ID_LENGTH,
        task_id="group.task-1",
        run_id="scheduled__2024-01-01T00:00:00+00:00",
        try_number=MAX_TRY_NUMBER,
        map_index=MAX_MAP_INDEX,
    )
    parsed = parse_activity(json.dumps(data).encode())
    assert parsed.ti.try_number == MAX_TRY_NUMBER


# --- the document as a whole -----------------------------------------------------------


@pytest.mark.parametrize("raw", [b"", b" \n\t "])
def test_an_empty_document_says_it_is_empty(raw):
    error = error_for(raw)
    assert error.field == "$"
    assert "the document is empty; expected a JSON object" in str(error)


def test_a_document_over_the_size_cap_is_refused_naming_the_cap():
    error = error_for(b" " * MAX_ACTIVITY_BYTES + b"{}")
    assert error.field == "$"
    assert "larger than 16 MiB" in str(error)


def _with_raw(prefix: str, suffix: str = "") -> bytes:
    # VALID as JSON, with text spliced in: json.dumps cannot write a key twice.
    text = json.dumps(VALID)
    return (prefix + text[1:-1] + suffix + "}").encode()


@pytest.mark.parametrize(
    ("raw", "path"),
    [
        (_with_raw('{"kind": "ExecuteCallback", '), "$.kind"),
        (_with_raw("{", ', "entrypoint": "other.mod:run"'), "$.entrypoint"),
        (
            _with_raw("{", ', "context": {"variables": {"a": "1", "b": "2", "a": "3"}}'),
            "$.context.variables.a",
        ),
        (
            _with_raw(
                "{",
                ', "context": {"connections": [{"conn_id": "x", "conn_type": "http",'
                ' "host": "h1", "host": "h2"}]}',
            ),
            "$.context.connections[0].host",
        ),
    ],
    ids=["top-level", "last-wins", "in-a-map", "in-a-list"],
)
def test_a_duplicate_key_at_any_depth_is_refused_naming_its_path(raw, path):
    error = error_for(raw)
    assert error.field == path
    assert "appears twice; expected each key once" in str(error)


def test_the_duplicate_key_check_costs_little_next_to_supervise_start_up():
    import time

    raw = json.dumps(activity(context={"variables": {f"k{i}": "v" for i in range(100)}}))
    start = time.perf_counter()
    for _ in range(100):
        parse_activity(raw.encode())
    # ~100 ms of start-up: the whole parse must stay a rounding error of it.
    assert (time.perf_counter() - start) / 100 < 0.002
