"""comms.workload and supervisor.airflow_config against Apache Airflow 3.3.2 itself.

* Workloads: what Airflow's scheduler queues (``ExecuteTask.make`` through the session's
  ``airflow`` fixture) and what its models serialize for every field they can carry is parsed
  with each field equal; the ``ti`` passed on is what Airflow's model reads back; our field
  sets are Airflow's; Airflow's other workload kinds are refused; Airflow's own decoder, like
  ours, accepts fields it does not know.
* Configuration: for a table of environments and ``airflow.cfg`` files,
  ``read_airflow_settings`` agrees with what Airflow's worker reads in a fresh interpreter
  (``airflow.configuration.conf``, ``get_execution_api_server_url``, the task SDK's
  ``base_log_folder``, ``settings.DAGS_FOLDER``, ``DagBundlesManager``); where we refuse a
  setting, Airflow is shown to ignore it or to take it literally.

Each Airflow interpreter costs ~2 s; the configuration table runs them two at a time.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import msgspec
import pytest

from comms.activity import ActivityError
from comms.workload import BundleInfo, Workload, WorkloadTI, is_workload, parse_workload
from supervisor.airflow_config import (
    LOCAL_DAG_BUNDLE,
    AirflowConfigError,
    AirflowSettings,
    bundle_path,
    read_airflow_settings,
)

TOKEN = "eyJhbGciOiJIUzUxMiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ0aSJ9.c2lnbmF0dXJlLW5vdC1jaGVja2Vk"


def base_env(tmp: Path) -> dict[str, str]:
    """A clean environment: nothing of the caller's Airflow settings leaks in."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp),
        "PYTHONDONTWRITEBYTECODE": "1",
    }


# --- workloads ------------------------------------------------------------------------------


def assert_parsed_field_for_field(parsed: Workload, raw: dict[str, Any]) -> None:
    """Every field Airflow wrote equals ours, converted back to JSON; nothing is unknown."""
    assert parsed.unknown_fields == ()
    ours = msgspec.to_builtins(parsed)
    for key, value in raw.items():
        if key != "ti":
            assert ours[key] == value, key
    for key, value in raw["ti"].items():
        assert ours["ti"][key] == value, f"ti.{key}"
    assert parsed.ti_document == raw["ti"]


def test_workloads_airflows_scheduler_queues_parse_with_every_field_equal(airflow):
    queued = [*airflow.queue(produce=0, work=2).values(), *airflow.queue_mapped("fan_out", 0, 2)]
    for workload in queued:
        data = json.dumps(workload.raw).encode()
        assert is_workload(data)
        parsed = parse_workload(data)
        assert_parsed_field_for_field(parsed, workload.raw)
        assert parsed.token == workload.token
        assert str(parsed.ti.id) == workload.id
        assert parsed.log_path == workload.log_path
        assert parsed.ti.map_index == workload.map_index


AIRFLOW_MAKES = """
import json, sys, uuid
from pathlib import Path
out, sys.stdout = sys.stdout, sys.stderr
from airflow.executors.workloads import (
    BundleInfo, ExecuteCallback, ExecuteTask, RunTrigger, TaskInstanceDTO, TestConnection,
)
from airflow.executors.workloads.callback import CallbackDTO, CallbackFetchMethod

token = sys.argv[1]

def ti(**fields):
    made = dict(
        id=uuid.uuid4(), task_id="load", dag_id="etl", run_id="manual__2025-06-01T12:30:15+00:00",
        try_number=1, dag_version_id=uuid.uuid4(), pool_slots=1, priority_weight=1,
    )
    made.update(fields)
    return TaskInstanceDTO(**made)

log = "dag_id=etl/run_id=manual__1/task_id=load/attempt=1.log"
tasks = [
    ExecuteTask(ti=ti(), dag_rel_path=Path("etl.py"), token=token, log_path=log,
                bundle_info=BundleInfo(name="dags-folder")),
    ExecuteTask(
        ti=ti(map_index=7, try_number=3, hostname="worker-1.example", queue="gpu", pool_slots=4,
              priority_weight=-5, context_carrier={"traceparent": "00-0af7-b7ad-01"},
              external_executor_id="celery-1", executor_config={"pod": {"cpu": 1}}),
        dag_rel_path=Path("team/sub/etl.py"), token=token, log_path=None,
        bundle_info=BundleInfo(name="repo", version="3f2a9c1"),
        sentry_integration="company.observability:init_sentry",
    ),
    ExecuteTask(ti=ti(), dag_rel_path=Path(""), token=token, log_path=log,
                bundle_info=BundleInfo(name="dags-folder", version=None)),
]
others = [
    ExecuteCallback(
        callback=CallbackDTO(id=str(uuid.uuid4()), fetch_method=CallbackFetchMethod.IMPORT_PATH,
                             data={"path": "m.f"}),
        dag_rel_path=Path("etl.py"), token=token, log_path="executor_callbacks/x",
        bundle_info=BundleInfo(name="dags-folder"),
    ),
    TestConnection(connection_test_id=uuid.uuid4(), connection_id="c", timeout=10, token=token),
    RunTrigger(id=1, classpath="m.T", encrypted_kwargs="e"),
]
out.write(json.dumps({
    "tasks": [task.model_dump_json() for task in tasks],
    "others": {type(other).__name__: other.model_dump_json() for other in others},
    "fields": {
        "$": sorted(ExecuteTask.model_fields),
        "$.ti": sorted(TaskInstanceDTO.model_fields),
        "$.bundle_info": sorted(BundleInfo.model_fields),
    },
}) + "\\n")
"""

AIRFLOW_READS = """
import json, sys
out, sys.stdout = sys.stdout, sys.stderr
from pydantic import TypeAdapter
from airflow.executors import workloads
from airflow.executors.workloads import ExecuteTask, TaskInstanceDTO

given = json.load(sys.stdin)
same_ti = [
    TaskInstanceDTO.model_validate(ti_document) == ExecuteTask.model_validate_json(original).ti
    for original, ti_document in given["pairs"]
]
read = TypeAdapter(workloads.All).validate_json(given["with_unknown"])
out.write(json.dumps({"same_ti": same_ti, "read_with_unknown": type(read).__name__}) + "\\n")
"""


@pytest.fixture(scope="module")
def made_by_airflow(run_airflow_script, tmp_path_factory: pytest.TempPathFactory):
    home = tmp_path_factory.mktemp("workload_models")
    env = {**base_env(home), "AIRFLOW_HOME": str(home)}
    return run_airflow_script(AIRFLOW_MAKES.replace("sys.argv[1]", repr(TOKEN)), env=env, cwd=home)


def test_every_field_airflows_models_can_carry_is_parsed_equal(made_by_airflow):
    for text in made_by_airflow["tasks"]:
        assert_parsed_field_for_field(parse_workload(text.encode()), json.loads(text))


def test_our_field_sets_are_airflows(made_by_airflow):
    ours = {
        "$": sorted({*Workload.__struct_fields__} - {"ti_document", "unknown_fields"}),
        "$.ti": sorted(WorkloadTI.__struct_fields__),
        "$.bundle_info": sorted(BundleInfo.__struct_fields__),
    }
    assert ours == made_by_airflow["fields"]


def test_airflows_other_workload_kinds_are_workloads_we_refuse(made_by_airflow):
    for kind, text in made_by_airflow["others"].items():
        assert is_workload(text.encode())
        with pytest.raises(ActivityError) as info:
            parse_workload(text.encode())
        assert info.value.field == "$.type"
        assert f"got {kind!r}; expected 'ExecuteTask'" in str(info.value)


def test_what_we_pass_on_and_what_we_ignore_airflow_reads_the_same(
    made_by_airflow, run_airflow_script, tmp_path
):
    originals = made_by_airflow["tasks"]
    pairs = [[text, parse_workload(text.encode()).ti_document] for text in originals]
    with_unknown = json.loads(originals[0])
    with_unknown["added_later"] = {"x": 1}
    with_unknown["ti"]["added_later"] = 1
    with_unknown["bundle_info"]["added_later"] = None
    text = json.dumps(with_unknown)
    assert parse_workload(text.encode()).unknown_fields == (
        "$.added_later",
        "$.ti.added_later",
        "$.bundle_info.added_later",
    )
    env = {**base_env(tmp_path), "AIRFLOW_HOME": str(tmp_path)}
    stdin = json.dumps({"pairs": pairs, "with_unknown": text})
    read = run_airflow_script(AIRFLOW_READS, env=env, cwd=tmp_path, stdin=stdin)
    assert read["same_ti"] == [True] * len(originals)
    assert read["read_with_unknown"] == "ExecuteTask"  # Airflow ignores them too


# --- configuration --------------------------------------------------------------------------

AIRFLOW_CONFIG_READ = """
import json, os, sys
out, sys.stdout = sys.stdout, sys.stderr
from airflow import configuration, settings
from airflow.configuration import conf
from airflow.dag_processing.bundles.local import LocalDagBundle
from airflow.dag_processing.bundles.manager import DagBundlesManager
from airflow.executors.base_executor import get_execution_api_server_url
from airflow.sdk.configuration import conf as sdk_conf

manager = DagBundlesManager()
bundles = {}
for name in manager.get_all_bundle_names():
    bundle = manager.get_bundle(name)
    bundles[name] = {"local": type(bundle) is LocalDagBundle, "path": str(bundle.path)}
out.write(json.dumps({
    "home": configuration.AIRFLOW_HOME,
    "config_file": configuration.AIRFLOW_CONFIG,
    "execution_api_server_url": get_execution_api_server_url(),
    "base_log_folder": sdk_conf.get("logging", "base_log_folder"),
    "core_base_log_folder": conf.get("logging", "base_log_folder"),
    "dags_folder": settings.DAGS_FOLDER,
    "bundle_config": conf.getjson("dag_processor", "dag_bundle_config_list"),
    "bundles": bundles,
}) + "\\n")
"""

# A bundle class of another kind than LocalDagBundle, importable by Airflow in each case.
SHELF_BUNDLE = (
    "from airflow.dag_processing.bundles.local import LocalDagBundle\n\n"
    "class ShelfBundle(LocalDagBundle):\n    pass\n"
)

BUNDLES = [
    {"name": "dags-folder", "classpath": LOCAL_DAG_BUNDLE, "kwargs": {}},
    {"name": "pinned", "classpath": LOCAL_DAG_BUNDLE, "kwargs": {"path": "/srv/pinned"}},
    {"name": "none-path", "classpath": LOCAL_DAG_BUNDLE, "kwargs": {"path": None}},
    {"name": "shelf", "classpath": "interop_bundles.ShelfBundle", "kwargs": {"path": "/srv/s"}},
]
BUNDLES_CFG = (
    "[dag_processor]\ndag_bundle_config_list = [\n"
    + "".join(f"    {json.dumps(item)},\n" for item in BUNDLES[:-1])
    + f"    {json.dumps(BUNDLES[-1])}\n  ]\n"
)

#: name -> (environment, airflow.cfg or None). "{tmp}" is the case's folder; the environment
#: gets HOME={tmp} and AIRFLOW_HOME={tmp}/airflow unless it names AIRFLOW_HOME as None.
AGREEING: dict[str, tuple[dict[str, str | None], str | None]] = {
    "defaults": ({}, None),
    "home-unset": ({"AIRFLOW_HOME": None}, None),
    "home-with-variables": ({"AIRFLOW_HOME": "~/$SUB/af", "SUB": "nested"}, None),
    "env-only": (
        {
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": "http://10.1.2.3:9091/execution/",
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": "$LOGS_ROOT/task-logs",
            "AIRFLOW__CORE__DAGS_FOLDER": "~/dags-from-env",
            "LOGS_ROOT": "{tmp}/var",
        },
        None,
    ),
    "cfg-only": (
        {},
        "[DEFAULT]\nroot = {tmp}/srv\n"
        "[core]\nexecution_api_server_url = https://airflow.example:8443/execution/\n"
        "dags_folder = %(root)s/dags\n"
        "[logging]\nbase_log_folder = $HOME/logs/100%%\n",
    ),
    "env-over-cfg": (
        {
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": "http://env:1/execution/",
            "AIRFLOW__CORE__DAGS_FOLDER": "/env/dags",
        },
        "[core]\nexecution_api_server_url = http://cfg:2/execution/\ndags_folder = /cfg/dags\n"
        "[logging]\nbase_log_folder = /cfg/logs\n",
    ),
    "deprecated-variable-over-new-cfg": (
        {"AIRFLOW__WORKERS__EXECUTION_API_SERVER_URL": "http://old-env:3/execution/"},
        "[core]\nexecution_api_server_url = http://new-cfg:4/execution/\n",
    ),
    "deprecated-cfg": ({}, "[workers]\nexecution_api_server_url = http://old-cfg:5/x/\n"),
    "base-url-cfg": ({}, "[api]\nbase_url = https://airflow.example/\n"),
    "webserver-base-url": ({}, "[webserver]\nbase_url = http://legacy.example:8080\n"),
    "base-url-path": ({"AIRFLOW__API__BASE_URL": "/airflow"}, None),
    "base-url-empty": ({"AIRFLOW__API__BASE_URL": ""}, None),
    "config-elsewhere": (
        {"AIRFLOW_CONFIG": "$ETC/custom.cfg", "ETC": "{tmp}/etc"},
        "[core]\ndags_folder = /etc-cfg/dags\n",
    ),
    "upper-case-option-ignored": ({}, "[core]\nDAGS_FOLDER = /not/read\n"),
    "bundles-env-no-examples": (
        {
            "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST": json.dumps(BUNDLES),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": "/srv/dags",
        },
        None,
    ),
    "bundles-cfg-with-examples": ({}, BUNDLES_CFG),
    "bundles-empty": ({"AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST": "[]"}, None),
    "core-airflow-home": ({"AIRFLOW_HOME": None}, "[core]\nairflow_home = /elsewhere\n"),
}

#: Settings we refuse, with what Airflow does with them instead: name -> (environment,
#: airflow.cfg, the field of our error, Airflow's reading, its value there).
REFUSED: dict[str, tuple[dict[str, str | None], str | None, str, str, str]] = {
    "cmd-variable-ignored": (
        {"AIRFLOW__CORE__EXECUTION_API_SERVER_URL_CMD": "echo http://cmd:6/execution/"},
        None,
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL_CMD",
        "execution_api_server_url",
        "http://localhost:8080/execution/",
    ),
    "secret-variable-ignored": (
        {"AIRFLOW__CORE__DAGS_FOLDER_SECRET": "dags/path"},
        None,
        "AIRFLOW__CORE__DAGS_FOLDER_SECRET",
        "dags_folder",
        "{tmp}/airflow/dags",
    ),
    "cmd-option-ignored": (
        {},
        "[core]\ndags_folder_cmd = echo /from/cmd\n",
        "[core] dags_folder_cmd",
        "dags_folder",
        "{tmp}/airflow/dags",
    ),
    "template-taken-literally": (
        {},
        "[logging]\nbase_log_folder = {AIRFLOW_HOME}/logs\n",
        "[logging] base_log_folder",
        "base_log_folder",
        "{AIRFLOW_HOME}/logs",
    ),
}


def case_env(tmp: Path, changes: dict[str, str | None]) -> dict[str, str]:
    env = {**base_env(tmp), "AIRFLOW_HOME": str(tmp / "airflow"), "PYTHONPATH": str(tmp)}
    for name, value in changes.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value.replace("{tmp}", str(tmp))
    return env


def prepare(tmp: Path, changes: dict[str, str | None], cfg: str | None) -> dict[str, str]:
    """The case's folder and environment; its airflow.cfg where the environment looks."""
    (tmp / "interop_bundles.py").write_text(SHELF_BUNDLE)
    env = case_env(tmp, changes)
    if cfg is not None:
        home = Path(env.get("AIRFLOW_HOME", f"{tmp}/airflow"))  # unset: ~/airflow
        where = tmp / "etc" / "custom.cfg" if "AIRFLOW_CONFIG" in changes else home / "airflow.cfg"
        where.parent.mkdir(parents=True, exist_ok=True)
        where.write_text(cfg.replace("{tmp}", str(tmp)))
    return env


Reading = tuple[AirflowSettings | AirflowConfigError, dict[str, Any], Path]


@pytest.fixture(scope="module")
def readings(
    run_airflow_script: Callable[..., Any], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Reading]:
    """Each case read by us, then by Airflow in its own interpreter (two at a time)."""
    cases = {name: (env, cfg) for name, (env, cfg) in AGREEING.items()}
    cases.update({name: (env, cfg) for name, (env, cfg, *_) in REFUSED.items()})
    prepared = {}
    for name, (changes, cfg) in cases.items():
        tmp = tmp_path_factory.mktemp(name)
        env = prepare(tmp, changes, cfg)
        try:
            ours: AirflowSettings | AirflowConfigError = read_airflow_settings(env)
        except AirflowConfigError as exc:
            ours = exc
        prepared[name] = (ours, env, tmp)

    def by_airflow(name: str) -> dict[str, Any]:
        _, env, tmp = prepared[name]
        return run_airflow_script(AIRFLOW_CONFIG_READ, env=env, cwd=tmp)

    with ThreadPoolExecutor(max_workers=2) as pool:
        theirs = dict(zip(prepared, pool.map(by_airflow, prepared), strict=True))
    return {name: (ours, theirs[name], tmp) for name, (ours, _, tmp) in prepared.items()}


@pytest.mark.parametrize("case", list(AGREEING))
def test_our_reading_agrees_with_airflows_worker(readings, case):
    ours, theirs, _ = readings[case]
    assert isinstance(ours, AirflowSettings), str(ours)
    assert ours.home == theirs["home"]
    expected_file = theirs["config_file"] if os.path.isfile(theirs["config_file"]) else None
    assert ours.config_file == expected_file
    assert ours.execution_api_server_url == theirs["execution_api_server_url"]
    assert ours.base_log_folder == theirs["base_log_folder"] == theirs["core_base_log_folder"]
    assert ours.dags_folder == theirs["dags_folder"]
    assert [msgspec.to_builtins(bundle) for bundle in ours.bundles] == [
        {"team_name": None, **item} for item in theirs["bundle_config"] or []
    ]
    assert_same_bundle_paths(ours, theirs["bundles"])


def assert_same_bundle_paths(ours: AirflowSettings, theirs: dict[str, dict[str, Any]]) -> None:
    """Each bundle Airflow's worker can get: ours has its folder, or knows it has another kind
    or is one of Airflow's examples; and we know of no bundle Airflow does not."""
    configured = {bundle.name for bundle in ours.bundles}
    assert configured <= set(theirs)
    for name, bundle in theirs.items():
        path = bundle_path(ours, name)
        if name in configured and bundle["local"]:
            assert path is not None
            assert Path(path) == Path(bundle["path"])
        else:
            assert path is None
            assert name in configured or ours.example_bundles


def test_the_table_covers_examples_other_kinds_and_no_bundles(readings):
    seen = {
        name: readings[name][1]["bundles"]
        for name in ("bundles-env-no-examples", "bundles-cfg-with-examples", "bundles-empty")
    }
    assert set(seen["bundles-env-no-examples"]) == {b["name"] for b in BUNDLES}
    assert seen["bundles-env-no-examples"]["shelf"]["local"] is False
    assert "example_dags" in seen["bundles-cfg-with-examples"]
    assert seen["bundles-empty"] == {}


@pytest.mark.parametrize("case", list(REFUSED))
def test_what_we_refuse_airflow_ignores_or_takes_literally(readings, case):
    ours, theirs, tmp = readings[case]
    _, _, field, setting, airflow_value = REFUSED[case]
    assert isinstance(ours, AirflowConfigError)
    assert ours.field == field
    assert theirs[setting] == airflow_value.replace("{tmp}", str(tmp))
