"""Unmodified Airflow DAGs, run task by task under a supervisor, as Airflow sees them.

Every task instance of ``dags/airflow_operators.py`` is queued by Airflow's own scheduler logic
(``conftest.Airflow.schedule``), and its ``ExecuteTask`` workload, exactly as
``ExecuteTask.make(ti).model_dump_json()`` makes it, is handed to a supervisor with nothing but
a worker's environment. The assertions are Airflow's own view: states, XComs and rendered
fields through its REST API, the task log through its log reader, asset events, Variables a
callback set.

The tests run under each supervisor in :data:`SUPERVISORS`: ``"airflow"`` is Airflow's own
(``python -m airflow.sdk.execution_time.execute_workload``), the reference these tests were
written against; ``"taskvisor"`` is ``supervise`` hosting Airflow's task runner.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:  # test modules take the harness from the `airflow` fixture, never import it
    from conftest import Airflow, DagRun, Workload

#: The supervisors these tests run every task instance under.
SUPERVISORS = ("airflow", "taskvisor")

DAG_ID = "taskvisor_airflow_dags"
VENV_BIN = Path(__file__).resolve().parents[2] / ".airflow-venv" / "bin"
#: Per task instance: Airflow's imports, DAG parsing and the task itself (~3 s idle).
RUN_TIMEOUT = 180
#: Airflow's triggerer runs the trigger and Airflow schedules the task instance again.
TRIGGER_TIMEOUT = 120
#: What the run's conf sets over the DAG's default param (``hello``).
GREETING = "hi from the run's conf"

#: ``supervise``'s exit code for the state a try ended in (docs/design.md, "Exit codes").
SUPERVISE_EXIT_CODE = {
    "success": 0,
    "skipped": 0,
    "deferred": 0,
    "up_for_reschedule": 0,
    "failed": 1,
    "up_for_retry": 1,
}


def supervisor_command(supervisor: str, workload_path: Path) -> list[str]:
    """How a worker hands the workload file to this supervisor."""
    if supervisor == "airflow":
        module = "airflow.sdk.execution_time.execute_workload"
        return [str(VENV_BIN / "python"), "-m", module, "--json-path", str(workload_path)]
    if supervisor == "taskvisor":
        return [str(VENV_BIN / "supervise"), str(workload_path)]
    raise ValueError(f"unknown supervisor {supervisor!r}")


@dataclass(repr=False)
class Ran:
    """How one try ran: the supervisor's exit code and output, the state Airflow recorded."""

    returncode: int
    output: str
    state: str

    def __repr__(self) -> str:
        return f"exit {self.returncode}, Airflow state {self.state}:\n{self.output[-6000:]}"


def run_workload(supervisor: str, workload: Workload, airflow: Airflow, workdir: Path) -> Ran:
    """Run ``workload`` under ``supervisor`` with a worker's environment; return how it ended.

    The workload is Airflow's JSON as is. Airflow's own supervisor exits 0 whatever the try's
    state (``execute_workload`` ignores its supervisor's result); ``supervise`` must exit with
    the code its contract gives that state.
    """
    ti = workload.raw["ti"]
    path = workdir / f"workload-{ti['task_id']}-{ti['map_index']}-{ti['try_number']}.json"
    path.write_text(json.dumps(workload.raw))
    process = subprocess.Popen(
        supervisor_command(supervisor, path),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=airflow.worker_env,
        cwd=workdir,
        start_new_session=True,  # a timed-out try is killed with everything it started
    )
    try:
        output, _ = process.communicate(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(f"{supervisor} still running after {RUN_TIMEOUT} s:\n{output[-6000:]}")
    ran = Ran(process.returncode, output, airflow.rest_ti(workload)["state"])
    expected = SUPERVISE_EXIT_CODE[ran.state] if supervisor == "taskvisor" else 0
    assert ran.returncode == expected, ran
    return ran


@dataclass(frozen=True)
class Shared:
    """One dag run of the DAG, shared by this module's tests under one supervisor.

    Each test runs its own sub-graph of the DAG, so sharing the run keeps them independent.
    """

    supervisor: str
    run: DagRun


@pytest.fixture(scope="module", params=SUPERVISORS)
def shared(request: pytest.FixtureRequest, airflow: Airflow) -> Shared:
    """A dag run with a logical date (for ``ds``) and a conf that overrides a param."""
    logical_date = dt.datetime.now(dt.UTC).replace(microsecond=0)
    run = airflow.trigger(DAG_ID, logical_date=logical_date, conf={"greeting": GREETING})
    return Shared(request.param, run)


def run_task(shared: Shared, airflow: Airflow, workdir: Path, key: str) -> tuple[Workload, Ran]:
    """Queue ``key`` once Airflow's scheduler logic makes it ready, and run it."""
    workload = airflow.schedule(shared.run, key)[key]
    return workload, run_workload(shared.supervisor, workload, airflow, workdir)


def xcom(airflow: Airflow, workload: Workload, key: str = "return_value") -> Any:
    """An XCom value as Airflow's REST API serves it."""
    response = airflow.rest_xcom(workload, key)
    assert response.status_code == 200, response.text
    return response.json()["value"]


def rest_task(airflow: Airflow, run: DagRun, task_id: str) -> dict[str, Any]:
    """A task instance of ``run`` through Airflow's REST API, by task id (and sub-path)."""
    path = f"/api/v2/dags/{run.dag_id}/dagRuns/{run.run_id}/taskInstances/{task_id}"
    response = airflow.rest.get(path)
    response.raise_for_status()
    return response.json()  # type: ignore[no-any-return]


def logged(airflow: Airflow, workload: Workload, try_number: int = 1) -> str:
    """The try's log as Airflow's log reader serves it, one event per line."""
    return "\n".join(str(line["event"]) for line in airflow.rest_log(workload, try_number))


def run_scoped(what: str, run: DagRun) -> str:
    """The Variable key a task of ``run`` uses for ``what`` (see the DAG's ``run_scoped``)."""
    return f"taskvisor_{what}__{run.run_id}"


# --- templates, operators, XComArgs ----------------------------------------------------------


def test_python_operator_gets_its_arguments_rendered_from_context_params_and_variables(
    airflow: Airflow, shared: Shared, tmp_path: Path
) -> None:
    workload, ran = run_task(shared, airflow, tmp_path, "templated_python")

    assert ran.state == "success", ran
    assert shared.run.logical_date is not None
    expected = {
        "ds": shared.run.logical_date[:10],
        "run_id": shared.run.run_id,
        "greeting": GREETING,
        "variable": airflow.variable[1],
    }
    assert xcom(airflow, workload) == expected
    assert airflow.rest_ti(workload)["rendered_fields"]["op_kwargs"] == expected


def test_bash_operator_output_is_in_its_log_and_its_last_line_is_its_xcom(
    airflow: Airflow, shared: Shared, tmp_path: Path
) -> None:
    workload, ran = run_task(shared, airflow, tmp_path, "bash_echo")

    assert ran.state == "success", ran
    assert shared.run.logical_date is not None
    said = f"bash says {GREETING} on {shared.run.logical_date[:10]}"
    assert xcom(airflow, workload) == f"run={shared.run.run_id} task=bash_echo"
    assert said in airflow.rest_ti(workload)["rendered_fields"]["bash_command"]
    assert said in logged(airflow, workload)


def test_taskflow_chain_passes_xcomargs_from_one_task_to_the_next(
    airflow: Airflow, shared: Shared, tmp_path: Path
) -> None:
    extracted, first = run_task(shared, airflow, tmp_path, "extract")
    assert first.state == "success", first

    summarized, ran = run_task(shared, airflow, tmp_path, "summarize")

    assert ran.state == "success", ran
    assert xcom(airflow, extracted, "numbers") == [3, 4, 5]
    assert xcom(airflow, extracted, "unit") == "kg"
    assert xcom(airflow, summarized) == "12 kg"


def test_mapped_task_expands_over_the_upstream_list_and_the_reducer_gets_every_result(
    airflow: Airflow, shared: Shared, tmp_path: Path
) -> None:
    _, made = run_task(shared, airflow, tmp_path, "make_batches")
    assert made.state == "success", made

    # Airflow's scheduler expands ``square`` over the pushed list: one TI per element.
    mapped = airflow.schedule(shared.run, "square[0]", "square[1]")
    for workload in mapped.values():
        square = run_workload(shared.supervisor, workload, airflow, tmp_path)
        assert square.state == "success", square
    total, ran = run_task(shared, airflow, tmp_path, "total")

    assert ran.state == "success", ran
    expanded = rest_task(airflow, shared.run, "square/listMapped")
    assert [ti["map_index"] for ti in expanded["task_instances"]] == [0, 1]
    assert [xcom(airflow, mapped[f"square[{i}]"]) for i in (0, 1)] == [4, 9]
    assert xcom(airflow, total) == 13


# --- how a try ends ----------------------------------------------------------------------------


def test_sensor_in_reschedule_mode_gives_its_slot_back_until_it_pokes_true(
    airflow: Airflow, shared: Shared, tmp_path: Path
) -> None:
    first, poked_false = run_task(shared, airflow, tmp_path, "wait_for_gate")
    assert poked_false.state == "up_for_reschedule", poked_false
    gate = run_scoped("gate", shared.run)
    airflow.rest.post("/api/v2/variables", json={"key": gate, "value": "open"}).raise_for_status()

    # Queued again by Airflow once its reschedule date passed: the same try, poked again.
    second, ran = run_task(shared, airflow, tmp_path, "wait_for_gate")

    assert ran.state == "success", ran
    assert (second.id, second.raw["ti"]["try_number"]) == (first.id, 1)
    assert airflow.rest_ti(second)["try_number"] == 1
    pokes = logged(airflow, second)
    run_id = shared.run.run_id
    assert f"gate for {run_id} is None" in pokes
    assert f"gate for {run_id} is 'open'" in pokes


@pytest.mark.usefixtures("triggerer")
def test_deferred_sensor_is_resumed_after_airflows_triggerer_sees_its_file_land(
    airflow: Airflow, shared: Shared, tmp_path: Path
) -> None:
    deferring, deferred = run_task(shared, airflow, tmp_path, "wait_for_file")
    assert deferred.state == "deferred", deferred
    landed = airflow.landing_folder / f"{shared.run.run_id}.ready"
    landed.touch()

    # Airflow's triggerer sees the file, and the task instance is scheduled again.
    key = "wait_for_file"
    resumed = airflow.schedule(shared.run, key, timeout=TRIGGER_TIMEOUT)[key]
    ran = run_workload(shared.supervisor, resumed, airflow, tmp_path)

    assert ran.state == "success", ran
    assert (resumed.id, resumed.raw["ti"]["try_number"]) == (deferring.id, 1)
    assert airflow.rest_ti(resumed)["try_number"] == 1
    # Resumed in execute_complete with the trigger's event, not from the start.
    assert f"wait_for_file completed successfully as {landed.name} found." in logged(
        airflow, resumed
    )


def test_on_failure_callback_runs_and_the_task_is_failed(
    airflow: Airflow, shared: Shared, tmp_path: Path
) -> None:
    workload, ran = run_task(shared, airflow, tmp_path, "fails_with_callback")

    assert ran.state == "failed", ran
    recorded = airflow.rest.get(f"/api/v2/variables/{run_scoped('failure', shared.run)}")
    assert recorded.status_code == 200, recorded.text
    assert json.loads(recorded.json()["value"]) == {
        "task_id": "fails_with_callback",
        "try_number": 1,
        "error": "taskvisor interop: this task fails on purpose",
    }
    assert "taskvisor interop: this task fails on purpose" in logged(airflow, workload)


def test_task_failing_its_first_try_is_retried_by_airflow_and_succeeds_on_the_second(
    airflow: Airflow, shared: Shared, tmp_path: Path
) -> None:
    first, failed = run_task(shared, airflow, tmp_path, "flaky")
    assert failed.state == "up_for_retry", failed

    second, ran = run_task(shared, airflow, tmp_path, "flaky")

    assert ran.state == "success", ran
    assert second.raw["ti"]["try_number"] == 2
    assert second.id != first.id  # each try its own task instance id
    assert airflow.rest_ti(second)["try_number"] == 2
    assert xcom(airflow, second) == 2
    assert "try 1 fails on purpose" in logged(airflow, second, try_number=1)
    assert "try 1 fails on purpose" not in logged(airflow, second, try_number=2)


def test_skip_exception_skips_the_task_and_airflow_skips_its_downstream(
    airflow: Airflow, shared: Shared, tmp_path: Path
) -> None:
    _, ran = run_task(shared, airflow, tmp_path, "skips")

    assert ran.state == "skipped", ran
    airflow.schedule(shared.run)  # a scheduler pass applies the downstream's trigger rule
    assert rest_task(airflow, shared.run, "after_skip")["state"] == "skipped"


def test_branch_skips_the_branch_not_taken_and_airflow_queues_the_one_taken(
    airflow: Airflow, shared: Shared, tmp_path: Path
) -> None:
    chose, ran = run_task(shared, airflow, tmp_path, "choose")
    assert ran.state == "success", ran
    assert rest_task(airflow, shared.run, "branch_not_taken")["state"] == "skipped"

    taken, followed = run_task(shared, airflow, tmp_path, "branch_taken")

    assert followed.state == "success", followed
    # Airflow's record of the choice (a branch pushes no return_value).
    assert xcom(airflow, chose, "skipmixin_key") == {"followed": ["branch_taken"]}
    assert xcom(airflow, taken) == "taken"
    assert rest_task(airflow, shared.run, "branch_not_taken")["state"] == "skipped"


def test_variable_and_connection_are_read_through_the_sdk_and_the_password_is_masked(
    airflow: Airflow, shared: Shared, tmp_path: Path
) -> None:
    workload, ran = run_task(shared, airflow, tmp_path, "reads_variable_and_connection")

    assert ran.state == "success", ran
    assert xcom(airflow, workload) == {
        "greeting": airflow.variable[1],
        "host": "db.example",
        "port": 5432,
        "login": "interop_user",
        "schema": "interop",
        "same_password": True,
    }
    log = logged(airflow, workload)
    assert "connecting to db.example as interop_user with password ***" in log
    assert airflow.connection_password not in log


def test_asset_outlet_event_is_recorded_by_airflow_with_its_extra(
    airflow: Airflow, shared: Shared, tmp_path: Path
) -> None:
    _, ran = run_task(shared, airflow, tmp_path, "produces_asset")

    assert ran.state == "success", ran
    response = airflow.rest.get(
        "/api/v2/assets/events",
        params={
            "source_dag_id": DAG_ID,
            "source_run_id": shared.run.run_id,
            "source_task_id": "produces_asset",
        },
    )
    response.raise_for_status()
    events = response.json()["asset_events"]
    assert [(e["name"], e["uri"], e["extra"]) for e in events] == [
        ("taskvisor_interop_asset", "file:///tmp/taskvisor-interop/asset.csv", {"rows": 3})
    ]


def test_task_running_past_its_execution_timeout_is_stopped_and_failed(
    airflow: Airflow, shared: Shared, tmp_path: Path
) -> None:
    workload, ran = run_task(shared, airflow, tmp_path, "overruns")

    assert ran.state == "failed", ran
    ti = airflow.rest_ti(workload)
    ran_for = dt.datetime.fromisoformat(ti["end_date"]) - dt.datetime.fromisoformat(
        ti["start_date"]
    )
    assert ran_for < dt.timedelta(seconds=60)  # not the two minutes it meant to sleep
    log = airflow.rest_log(workload)
    errors = [detail["exc_type"] for line in log for detail in line.get("error_detail", [])]
    assert "AirflowTaskTimeout" in errors  # Airflow's runner stopped it
    events = [line["event"] for line in log]
    assert "sleeping past my execution_timeout" in events
    assert "woke up: the timeout did not fire" not in events


# --- what a task can reach ---------------------------------------------------------------------


def test_under_airflows_supervisor_a_dag_task_finds_the_workload_token(
    airflow: Airflow, tmp_path: Path
) -> None:
    run = airflow.trigger(DAG_ID)
    workload = airflow.schedule(run, "finds_workload_token")["finds_workload_token"]

    ran = run_workload("airflow", workload, airflow, tmp_path)

    assert ran.state == "success", ran
    found = xcom(airflow, workload)["jwts"]
    # Airflow's supervisor forks the task runner from its own process, which holds the
    # workload (and its token): the task's memory starts as a copy of the supervisor's.
    digest = hashlib.sha256(workload.token.encode()).hexdigest()
    assert {"sha256": digest, "sub": workload.id, "scope": "workload"} in found


def test_under_supervise_a_dag_task_never_finds_the_workload_token(
    airflow: Airflow, tmp_path: Path
) -> None:
    run = airflow.trigger(DAG_ID)
    workload = airflow.schedule(run, "finds_workload_token")["finds_workload_token"]

    ran = run_workload("taskvisor", workload, airflow, tmp_path)

    assert ran.state == "success", ran
    found = xcom(airflow, workload)["jwts"]
    # The task child was forked before supervise read the workload, and never received it.
    digest = hashlib.sha256(workload.token.encode()).hexdigest()
    assert not any(j["sha256"] == digest or j["sub"] == workload.id for j in found), found
