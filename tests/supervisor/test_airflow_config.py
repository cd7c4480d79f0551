"""supervisor.airflow_config: Airflow's worker settings, read as Airflow 3.3.2 reads them.

Each test hands ``read_airflow_settings`` its own environment; Airflow agreeing with these
readings is checked in tests/interop/test_airflow_workload_interop.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from comms.activity import ActivityError
from supervisor.airflow_config import (
    LOCAL_DAG_BUNDLE,
    AirflowConfigError,
    AirflowSettings,
    Bundle,
    bundle_path,
    read_airflow_settings,
)

GIT_BUNDLE = "airflow.providers.git.bundles.git.GitDagBundle"


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "airflow"


@pytest.fixture
def env(tmp_path: Path, home: Path) -> dict[str, str]:
    return {"HOME": str(tmp_path), "AIRFLOW_HOME": str(home)}


def write_cfg(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def error_for(env: dict[str, str]) -> AirflowConfigError:
    with pytest.raises(AirflowConfigError) as info:
        read_airflow_settings(env)
    assert str(info.value).startswith(f"Airflow configuration {info.value.field}: ")
    return info.value


def default_bundle() -> Bundle:
    return Bundle(name="dags-folder", classpath=LOCAL_DAG_BUNDLE, kwargs={})


# --- defaults ----------------------------------------------------------------------------


def test_without_airflow_cfg_every_setting_is_airflows_default(env, home):
    assert read_airflow_settings(env) == AirflowSettings(
        home=str(home),
        config_file=None,
        execution_api_server_url="http://localhost:8080/execution/",
        base_log_folder=f"{home}/logs",
        dags_folder=f"{home}/dags",
        bundles=(default_bundle(),),
        example_bundles=True,
    )


def test_airflow_home_defaults_to_tilde_airflow_under_home(tmp_path):
    settings = read_airflow_settings({"HOME": str(tmp_path)})
    assert settings.home == f"{tmp_path}/airflow"
    assert settings.dags_folder == f"{tmp_path}/airflow/dags"


def test_airflow_home_expands_variables_and_tilde(tmp_path):
    settings = read_airflow_settings(
        {"HOME": str(tmp_path), "BASE": "~/x", "AIRFLOW_HOME": "$BASE/af"}
    )
    assert settings.home == f"{tmp_path}/x/af"
    assert settings.base_log_folder == f"{tmp_path}/x/af/logs"


def test_airflow_cfg_is_found_in_airflow_home(env, home):
    cfg = write_cfg(home / "airflow.cfg", "[core]\ndags_folder = /srv/dags\n")
    settings = read_airflow_settings(env)
    assert settings.config_file == str(cfg)
    assert settings.dags_folder == "/srv/dags"


def test_airflow_config_names_another_file_with_variables_expanded(env, tmp_path):
    cfg = write_cfg(tmp_path / "etc" / "af.cfg", "[logging]\nbase_log_folder = /var/log/af\n")
    settings = read_airflow_settings(
        {**env, "ETC": str(tmp_path / "etc"), "AIRFLOW_CONFIG": "$ETC/af.cfg"}
    )
    assert settings.config_file == str(cfg)
    assert settings.base_log_folder == "/var/log/af"


def test_reading_the_environment_by_default(monkeypatch, env, home):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AIRFLOW__CORE__DAGS_FOLDER", "/from/os/environ")
    assert read_airflow_settings().dags_folder == "/from/os/environ"


# --- precedence ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("section", "key", "attribute", "values"),
    [
        ("core", "dags_folder", "dags_folder", ("/env/dags", "/cfg/dags")),
        ("logging", "base_log_folder", "base_log_folder", ("/env/logs", "/cfg/logs")),
        (
            "core",
            "execution_api_server_url",
            "execution_api_server_url",
            ("http://env:1/execution/", "http://cfg:2/execution/"),
        ),
    ],
)
def test_a_variable_beats_airflow_cfg_which_beats_the_default(
    env, home, section, key, attribute, values
):
    from_env, from_cfg = values
    write_cfg(home / "airflow.cfg", f"[{section}]\n{key} = {from_cfg}\n")
    assert getattr(read_airflow_settings(env), attribute) == from_cfg
    variable = f"AIRFLOW__{section.upper()}__{key.upper()}"
    assert getattr(read_airflow_settings({**env, variable: from_env}), attribute) == from_env


def test_deprecated_names_are_read_after_the_new_ones_as_airflow_does(env, home):
    write_cfg(
        home / "airflow.cfg",
        "[core]\nexecution_api_server_url = http://cfg-new/execution/\n"
        "[workers]\nexecution_api_server_url = http://cfg-old/execution/\n",
    )
    old = {**env, "AIRFLOW__WORKERS__EXECUTION_API_SERVER_URL": "http://env-old/execution/"}
    # new variable > old variable > new option in airflow.cfg > old option in airflow.cfg
    assert read_airflow_settings(old).execution_api_server_url == "http://env-old/execution/"
    new = {**old, "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": "http://env-new/execution/"}
    assert read_airflow_settings(new).execution_api_server_url == "http://env-new/execution/"
    write_cfg(home / "airflow.cfg", "[workers]\nexecution_api_server_url = http://cfg-old/x/\n")
    assert read_airflow_settings(env).execution_api_server_url == "http://cfg-old/x/"


@pytest.mark.parametrize(
    ("base_url", "expected"),
    [
        ("https://airflow.example.com", "https://airflow.example.com/execution/"),
        ("https://airflow.example.com/", "https://airflow.example.com/execution/"),
        ("http://10.0.0.5:8080/airflow/", "http://10.0.0.5:8080/airflow/execution/"),
        ("/airflow", "http://localhost:8080/airflow/execution/"),
        ("/", "http://localhost:8080/execution/"),
        ("", "http://localhost:8080/execution/"),
    ],
)
def test_without_a_server_url_airflow_makes_one_from_api_base_url(env, base_url, expected):
    settings = read_airflow_settings({**env, "AIRFLOW__API__BASE_URL": base_url})
    assert settings.execution_api_server_url == expected


def test_the_deprecated_webserver_base_url_also_makes_the_server_url(env, home):
    write_cfg(home / "airflow.cfg", "[webserver]\nbase_url = https://old.example\n")
    assert read_airflow_settings(env).execution_api_server_url == "https://old.example/execution/"


# --- how values are read ------------------------------------------------------------------


def test_airflow_cfg_values_are_interpolated_like_configparser_does_for_airflow(env, home):
    write_cfg(
        home / "airflow.cfg",
        "[DEFAULT]\nroot = /srv\n[core]\ndags_folder = %(root)s/dags\n"
        "[logging]\nbase_log_folder = /logs/100%%\n",
    )
    settings = read_airflow_settings(env)
    assert settings.dags_folder == "/srv/dags"
    assert settings.base_log_folder == "/logs/100%"


def test_variables_are_not_interpolated(env):
    settings = read_airflow_settings({**env, "AIRFLOW__LOGGING__BASE_LOG_FOLDER": "/logs/100%%"})
    assert settings.base_log_folder == "/logs/100%%"


def test_a_bad_interpolation_names_the_option_and_the_file(env, home):
    cfg = write_cfg(home / "airflow.cfg", "[core]\ndags_folder = /srv/%(nope)s\n")
    error = error_for(env)
    assert error.field == "[core] dags_folder"
    assert f"in {cfg}" in str(error)


def test_option_names_in_airflow_cfg_keep_their_case_so_upper_case_is_not_read(env, home):
    write_cfg(home / "airflow.cfg", "[core]\nDAGS_FOLDER = /ignored/by/airflow\n")
    assert read_airflow_settings(env).dags_folder == f"{home}/dags"


def test_values_have_variables_and_tilde_expanded_until_nothing_changes(env, home, tmp_path):
    write_cfg(home / "airflow.cfg", "[core]\ndags_folder = $TOP/dags/$UNSET\n")
    settings = read_airflow_settings({**env, "TOP": "${INNER}", "INNER": "~/code"})
    assert settings.dags_folder == f"{tmp_path}/code/dags/$UNSET"


def test_a_value_that_refers_to_itself_is_refused(env):
    error = error_for({**env, "LOOP": "$LOOP-x", "AIRFLOW__CORE__DAGS_FOLDER": "/d/$LOOP"})
    assert error.field == "AIRFLOW__CORE__DAGS_FOLDER"
    assert "still changing after 32 expansions" in str(error)


@pytest.mark.parametrize("where", ["variable", "airflow.cfg"])
def test_an_airflow_home_template_outside_airflows_defaults_is_refused(env, home, where):
    value = "{AIRFLOW_HOME}/dags"
    if where == "variable":
        env = {**env, "AIRFLOW__CORE__DAGS_FOLDER": value}
    else:
        write_cfg(home / "airflow.cfg", f"[core]\ndags_folder = {value}\n")
    error = error_for(env)
    assert error.field in ("AIRFLOW__CORE__DAGS_FOLDER", "[core] dags_folder")
    assert "Airflow fills in {AIRFLOW_HOME} in its own defaults only" in str(error)
    assert "expected the path written out, or $AIRFLOW_HOME" in str(error)


def test_dollar_airflow_home_is_the_way_to_say_it(env, home):
    settings = read_airflow_settings({**env, "AIRFLOW__CORE__DAGS_FOLDER": "$AIRFLOW_HOME/d"})
    assert settings.dags_folder == f"{home}/d"


# --- what Airflow would silently ignore is refused --------------------------------------------


@pytest.mark.parametrize("suffix", ["_CMD", "_SECRET"])
@pytest.mark.parametrize(
    "variable",
    [
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
        "AIRFLOW__WORKERS__EXECUTION_API_SERVER_URL",
        "AIRFLOW__API__BASE_URL",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER",
        "AIRFLOW__CORE__DAGS_FOLDER",
        "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST",
    ],
)
def test_cmd_and_secret_variables_that_airflow_ignores_are_refused(env, variable, suffix):
    error = error_for({**env, variable + suffix: "cat /run/secrets/url"})
    assert error.field == variable + suffix
    assert "for sensitive options only, so its worker would ignore it" in str(error)
    assert f"expected {variable} itself" in str(error)
    assert "/run/secrets" not in str(error)


def test_a_cmd_variable_is_moot_when_the_variable_itself_is_set(env):
    settings = read_airflow_settings(
        {**env, "AIRFLOW__CORE__DAGS_FOLDER": "/d", "AIRFLOW__CORE__DAGS_FOLDER_CMD": "echo"}
    )
    assert settings.dags_folder == "/d"


def test_a_cmd_option_in_airflow_cfg_is_refused(env, home):
    write_cfg(home / "airflow.cfg", "[core]\nexecution_api_server_url_cmd = cat url\n")
    error = error_for(env)
    assert error.field == "[core] execution_api_server_url_cmd"
    assert "expected [core] execution_api_server_url itself" in str(error)


@pytest.mark.parametrize("value", ["True", "t", "1", "TRUE # on"])
def test_unit_test_mode_is_refused(env, value):
    error = error_for({**env, "AIRFLOW__CORE__UNIT_TEST_MODE": value})
    assert error.field == "AIRFLOW__CORE__UNIT_TEST_MODE"
    assert "unit-test configuration" in str(error)


@pytest.mark.parametrize("name", ["AIRFLOW_HOME", "AIRFLOW_CONFIG"])
def test_an_empty_home_or_config_variable_is_refused(env, name):
    error = error_for({**env, name: ""})
    assert error.field == name
    assert "is set but empty" in str(error)


def test_an_airflow_config_that_cannot_be_read_is_refused(env, tmp_path):
    error = error_for({**env, "AIRFLOW_CONFIG": str(tmp_path)})  # a folder
    assert error.field == "AIRFLOW_CONFIG"
    assert f"cannot read {str(tmp_path)!r}" in str(error)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("dags_folder = /x\n", "File contains no section headers"),
        ("[core]\ndags_folder = /x\ndags_folder = /y\n", "option 'dags_folder'"),
        ("[core]\n[core]\n", "section 'core' already exists"),
    ],
)
def test_a_malformed_airflow_cfg_is_refused_naming_the_file(env, home, text, problem):
    cfg = write_cfg(home / "airflow.cfg", text)
    error = error_for(env)
    assert error.field == "AIRFLOW_HOME"
    assert f"{str(cfg)!r} is not a valid airflow.cfg" in str(error)
    assert problem in str(error)


@pytest.mark.parametrize(
    ("variable", "attribute"),
    [("AIRFLOW__CORE__DAGS_FOLDER", "dags"), ("AIRFLOW__LOGGING__BASE_LOG_FOLDER", "logs")],
)
@pytest.mark.parametrize("value", ["", "relative/path", "~unknown-user-xyz/x"])
def test_folders_must_be_absolute(env, variable, attribute, value):
    error = error_for({**env, variable: value})
    assert error.field == variable
    assert "expected an absolute path, as Airflow's documentation requires" in str(error)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("", "got ''"),
        ("localhost:8080/execution/", "expected an http(s) URL with a host"),
        ("ftp://host/execution/", "expected an http(s) URL with a host"),
        ("http://host/execution/?x=1", "expected no query or fragment"),
    ],
)
def test_a_server_url_the_client_cannot_use_is_refused_naming_its_source(env, url, problem):
    error = error_for({**env, "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": url})
    assert error.field == "AIRFLOW__CORE__EXECUTION_API_SERVER_URL"
    assert problem in str(error)


def test_a_bad_server_url_in_airflow_cfg_names_the_file(env, home):
    cfg = write_cfg(home / "airflow.cfg", "[core]\nexecution_api_server_url = nope\n")
    error = error_for(env)
    assert error.field == "[core] execution_api_server_url"
    assert str(error).endswith(f"(in {cfg})")


def test_a_server_url_made_from_a_bad_base_url_names_the_base_url(env):
    error = error_for({**env, "AIRFLOW__API__BASE_URL": "airflow.example.com"})
    assert error.field == "AIRFLOW__API__BASE_URL"
    assert "got 'airflow.example.com/execution/'" in str(error)
    assert "(made from 'airflow.example.com')" in str(error)


def test_a_server_url_with_a_password_is_refused_without_showing_it(env):
    error = error_for(
        {**env, "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": "http://u:hunter2@h/execution/"}
    )
    assert "hunter2" not in str(error)


def test_config_errors_are_activity_errors_so_supervise_exits_2_for_them(env):
    error = error_for({**env, "AIRFLOW_HOME": ""})
    assert isinstance(error, ActivityError)
    assert error.document == "Airflow configuration"


# --- the bundle list -------------------------------------------------------------------------


def bundles_env(env: dict[str, str], bundles: object, **more: str) -> dict[str, str]:
    text = bundles if isinstance(bundles, str) else json.dumps(bundles)
    return {**env, "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST": text, **more}


def test_a_configured_bundle_list_is_read_in_order(env):
    configured = [
        {"name": "local", "classpath": LOCAL_DAG_BUNDLE, "kwargs": {"path": "/srv/local"}},
        {"name": "repo", "classpath": GIT_BUNDLE, "kwargs": {"tracking_ref": "main"}, "extra": 1},
    ]
    settings = read_airflow_settings(bundles_env(env, configured))
    assert settings.bundles == (
        Bundle(name="local", classpath=LOCAL_DAG_BUNDLE, kwargs={"path": "/srv/local"}),
        Bundle(name="repo", classpath=GIT_BUNDLE, kwargs={"tracking_ref": "main"}),
    )


def test_a_multi_line_bundle_list_in_airflow_cfg_is_read(env, home):
    write_cfg(
        home / "airflow.cfg",
        "[dag_processor]\ndag_bundle_config_list = [\n"
        '    {"name": "a", "classpath": "x.Y",\n'
        '     "kwargs": {}}\n  ]\n',
    )
    (bundle,) = read_airflow_settings(env).bundles
    assert bundle == Bundle(name="a", classpath="x.Y", kwargs={})


@pytest.mark.parametrize("text", ["", "[]", "{}", "null", "0", '""'])
def test_an_empty_bundle_list_configures_no_bundle_not_even_the_examples(env, text):
    settings = read_airflow_settings(bundles_env(env, text, AIRFLOW__CORE__LOAD_EXAMPLES="bad"))
    assert settings.bundles == ()
    assert settings.example_bundles is False


@pytest.mark.parametrize(
    ("bundles", "problem"),
    [
        ("[{", "not JSON"),
        ('{"name": "a"}', "expected a JSON list of"),
        (["a"], "item 0: Expected `object`, got `str`"),
        ([{"name": "a", "classpath": "x.Y"}], "item 0: Object missing required field `kwargs`"),
        ([{"name": 1, "classpath": "x.Y", "kwargs": {}}], "Expected `str`, got `int`"),
        (
            [{"name": "example_dags", "classpath": "x.Y", "kwargs": {}}],
            "'example_dags' is Airflow's",
        ),
        (
            [
                {"name": "a", "classpath": "x.Y", "kwargs": {}},
                {"name": "a", "classpath": "z", "kwargs": {}},
            ],
            "item 1: a second bundle named 'a'",
        ),
        (
            [{"name": "a", "classpath": LOCAL_DAG_BUNDLE, "kwargs": {"path": 5}}],
            "kwargs.path got 5; expected a folder's path",
        ),
        (
            [{"name": "a", "classpath": "x.Y", "kwargs": {}, "team_name": "blue"}],
            "team_name 'blue' needs [core] multi_team, which is off",
        ),
    ],
)
def test_a_bad_bundle_list_is_refused_naming_the_item(env, bundles, problem):
    error = error_for(bundles_env(env, bundles))
    assert error.field == "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST"
    assert problem in str(error)


def test_a_team_bundle_is_read_in_multi_team_mode(env):
    team = [{"name": "a", "classpath": "x.Y", "kwargs": {}, "team_name": "blue"}]
    settings = read_airflow_settings(bundles_env(env, team, AIRFLOW__CORE__MULTI_TEAM="True"))
    assert settings.bundles[0].team_name == "blue"


@pytest.mark.parametrize(("value", "expected"), [("False", False), ("0", False), ("T", True)])
def test_load_examples_says_whether_airflow_adds_its_example_bundles(env, value, expected):
    settings = read_airflow_settings({**env, "AIRFLOW__CORE__LOAD_EXAMPLES": value})
    assert settings.example_bundles is expected


def test_a_load_examples_that_is_no_boolean_is_refused(env):
    error = error_for({**env, "AIRFLOW__CORE__LOAD_EXAMPLES": "sometimes"})
    assert error.field == "AIRFLOW__CORE__LOAD_EXAMPLES"
    assert "got 'sometimes'; expected true or false" in str(error)


# --- bundle_path -----------------------------------------------------------------------------


@pytest.fixture
def configured(env) -> AirflowSettings:
    bundles = [
        {"name": "dags-folder", "classpath": LOCAL_DAG_BUNDLE, "kwargs": {}},
        {"name": "explicit", "classpath": LOCAL_DAG_BUNDLE, "kwargs": {"path": "/srv/other"}},
        {"name": "null-path", "classpath": LOCAL_DAG_BUNDLE, "kwargs": {"path": None}},
        {"name": "repo", "classpath": GIT_BUNDLE, "kwargs": {"tracking_ref": "main"}},
    ]
    return read_airflow_settings(bundles_env(env, bundles, AIRFLOW__CORE__DAGS_FOLDER="/srv/dags"))


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("dags-folder", "/srv/dags"),
        ("explicit", "/srv/other"),
        ("null-path", "/srv/dags"),
        ("repo", None),
        ("example_dags", None),
        ("apache-airflow-providers-standard-example-dags", None),
    ],
)
def test_bundle_path_is_a_local_bundles_folder_and_none_for_other_kinds(configured, name, expected):
    assert bundle_path(configured, name) == expected


def test_a_bundle_airflow_does_not_configure_is_an_error_listing_those_it_does(configured):
    with pytest.raises(AirflowConfigError) as info:
        bundle_path(configured, "missing")
    assert info.value.field == "[dag_processor] dag_bundle_config_list"
    assert "has no bundle named 'missing'" in str(info.value)
    assert "configured: 'dags-folder', 'explicit', 'null-path', 'repo'" in str(info.value)


def test_example_bundles_are_not_configured_without_load_examples(env):
    settings = read_airflow_settings({**env, "AIRFLOW__CORE__LOAD_EXAMPLES": "False"})
    with pytest.raises(AirflowConfigError, match="has no bundle named 'example_dags'"):
        bundle_path(settings, "example_dags")


# --- the deprecated [core] airflow_home ------------------------------------------------------


def test_core_airflow_home_moves_home_but_not_the_defaults_as_in_airflow(tmp_path):
    cfg = write_cfg(tmp_path / "airflow.cfg", "[core]\nairflow_home = /elsewhere\n")
    settings = read_airflow_settings({"HOME": str(tmp_path), "AIRFLOW_CONFIG": str(cfg)})
    assert settings.home == "/elsewhere"
    assert settings.dags_folder == f"{tmp_path}/airflow/dags"


def test_core_airflow_home_is_ignored_when_airflow_home_is_set(env, home):
    write_cfg(home / "airflow.cfg", "[core]\nairflow_home = /elsewhere\n")
    assert read_airflow_settings(env).home == str(home)


# --- cost ----------------------------------------------------------------------------------


def test_reading_the_settings_costs_little_next_to_supervise_start_up(env, home):
    write_cfg(home / "airflow.cfg", "[core]\ndags_folder = /srv/dags\n")
    start = time.perf_counter()
    for _ in range(100):
        read_airflow_settings(env)
    assert (time.perf_counter() - start) / 100 < 0.002


def test_importing_the_reader_loads_no_airflow_and_nothing_heavy():
    probe = (
        "import sys, supervisor.airflow_config; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('airflow', 'pydantic', 'yaml', 'sqlalchemy', 'httpx', 'pathlib')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
