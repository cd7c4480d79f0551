"""Airflow's own scheduler runs a DAG under ``TaskvisorExecutor``: one machine, end to end.

A real ``airflow scheduler`` (Airflow 3.3.2), with the one line of configuration a user sets
(``AIRFLOW__CORE__EXECUTOR=taskvisor_airflow.TaskvisorExecutor``) and ``[core] parallelism``
of :data:`PARALLELISM`, runs on the session's Airflow home beside its api-server (SQLite,
loopback, the scheduler's environment holding the JWT signing secret, the database URL, ...).
The test unpauses ``dags/taskvisor_executor.py`` and triggers it through Airflow's REST API as
a user would, and polls that API until the dag run ends. Nothing queues a task by hand:
Airflow's scheduler decides, the executor starts one ``supervise -`` per try, and everything
asserted is Airflow's view through its REST API (states, tries, XComs, logs), plus the
scheduler's own log of the executor's events.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:  # test modules take the harness from the `airflow` fixture, never import it
    from conftest import Airflow, Scheduler, StartScheduler

DAG_ID = "taskvisor_executor"
VENV_BIN = Path(__file__).resolve().parents[2] / ".airflow-venv" / "bin"
EXECUTOR = "taskvisor_airflow.TaskvisorExecutor"
PARALLELISM = 3
#: Scheduler start-up (~10 s), then ten tries of ~2-3 s each, three at a time, on 2 cores.
RUN_TIMEOUT = 300
POLL = 0.5

#: Every try of the dag run: task id, map index, try number.
TRIES = [
    ("make_batches", -1, 1),
    ("square", 0, 1),
    ("square", 1, 1),
    ("square", 2, 1),
    ("total", -1, 1),
    ("bash_echo", -1, 1),
    ("python_greets", -1, 1),
    ("flaky", -1, 1),
    ("flaky", -1, 2),
    ("probe", -1, 1),
]
#: Variables of the control plane a worker must not get (supervise sheds the same).
SECRET_NAME_WORDS = ("JWT", "SQL_ALCHEMY_CONN", "FERNET_KEY", "__SECRET_KEY")


@pytest.fixture(scope="module")
def scheduler(start_scheduler: StartScheduler) -> Iterator[Scheduler]:
    """Airflow's scheduler on the session's home, running every try with TaskvisorExecutor."""
    with start_scheduler(EXECUTOR, PARALLELISM=str(PARALLELISM)) as running:
        yield running


@dataclass(frozen=True)
class Run:
    """The dag run the scheduler ran, as Airflow's REST API reports it at its end."""

    run_id: str
    state: str
    task_instances: dict[tuple[str, int], dict[str, Any]]


@pytest.fixture(scope="module")
def run(airflow: Airflow, scheduler: Scheduler) -> Run:
    """Unpause and trigger the DAG through REST; poll until the scheduler ended the run."""
    run_id = airflow.rest_trigger(DAG_ID)
    path = f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}"
    deadline = time.monotonic() + RUN_TIMEOUT
    while (state := airflow.rest_json(path)["state"]) not in ("success", "failed"):
        if scheduler.process.poll() is not None:
            pytest.fail(
                f"the scheduler exited ({scheduler.process.returncode}):\n"
                f"{scheduler.output()[-6000:]}"
            )
        if time.monotonic() > deadline:
            pytest.fail(
                f"dag run still {state} after {RUN_TIMEOUT} s:\n{scheduler.output()[-6000:]}"
            )
        time.sleep(POLL)
    listed = airflow.rest_json(f"{path}/taskInstances")["task_instances"]
    return Run(run_id, state, {(ti["task_id"], ti["map_index"]): ti for ti in listed})


def ti_path(run: Run, task_id: str) -> str:
    """The REST path of a task of the run."""
    return f"/api/v2/dags/{DAG_ID}/dagRuns/{run.run_id}/taskInstances/{task_id}"


def xcom(airflow: Airflow, run: Run, task_id: str, map_index: int = -1) -> Any:
    """A task instance's ``return_value`` as Airflow's REST API serves it."""
    entry = airflow.rest_json(
        f"{ti_path(run, task_id)}/xcomEntries/return_value", map_index=map_index
    )
    return entry["value"]


def logged(airflow: Airflow, run: Run, task_id: str, map_index: int, try_number: int) -> str:
    """A try's log as Airflow's log reader serves it, one event per line."""
    records = airflow.rest_task_log(DAG_ID, run.run_id, task_id, try_number, map_index)
    return "\n".join(str(record.get("event")) for record in records)


def tries(airflow: Airflow, run: Run, task_id: str, map_index: int = -1) -> list[dict[str, Any]]:
    """Every try of a task instance, from Airflow's task-instance history."""
    suffix = "" if map_index == -1 else f"/{map_index}"
    listed = airflow.rest_json(f"{ti_path(run, task_id)}{suffix}/tries")["task_instances"]
    return sorted(listed, key=lambda ti: ti["try_number"])


def key_pattern(run: Run, task_id: str, map_index: int, try_number: int) -> str:
    """How Airflow prints a ``TaskInstanceKey`` in the scheduler's log, as a regex."""
    return re.escape(
        f"TaskInstanceKey(dag_id='{DAG_ID}', task_id='{task_id}', run_id='{run.run_id}', "
        f"try_number={try_number}, map_index={map_index})"
    )


# --- the run, as Airflow sees it --------------------------------------------------------------


def test_the_dag_run_succeeds_and_every_task_instance_with_it(run: Run) -> None:
    assert run.state == "success"
    assert {key: ti["state"] for key, ti in run.task_instances.items()} == {
        (task_id, map_index): "success" for task_id, map_index, _ in TRIES
    }


def test_every_try_was_started_by_the_executor_in_a_supervise_of_its_own(
    run: Run, scheduler: Scheduler
) -> None:
    output = scheduler.output()
    assert re.search(r"Loaded executor: \S*" + re.escape(EXECUTOR), output)
    pids = []
    for task_id, map_index, try_number in TRIES:
        started = re.findall(
            r"Started supervise \(pid (\d+)\) for "
            + key_pattern(run, task_id, map_index, try_number),
            output,
        )
        assert len(started) == 1, (task_id, map_index, try_number, output[-6000:])
        pids.append(started[0])
    assert len(set(pids)) == len(TRIES)  # a fresh supervise for every try


def test_the_scheduler_got_a_running_then_a_final_event_for_every_try(
    run: Run, scheduler: Scheduler
) -> None:
    output = scheduler.output()
    for task_id, map_index, try_number in TRIES:
        key = key_pattern(run, task_id, map_index, try_number)
        events = re.findall(
            r"Received executor event with state (\w+) for task instance " + key, output
        )
        final = "failed" if (task_id, try_number) == ("flaky", 1) else "success"
        # Events of one heartbeat are read together: the last one of a key wins.
        assert events in (["running", final], [final]), (task_id, map_index, events)
    assert re.search(r"Received executor event with state running", output)


def test_mapped_tasks_their_reducer_and_the_operators_xcoms_reach_airflow(
    airflow: Airflow, run: Run
) -> None:
    assert xcom(airflow, run, "make_batches") == [2, 3, 4]
    assert [xcom(airflow, run, "square", index) for index in range(3)] == [4, 9, 16]
    assert xcom(airflow, run, "total") == 29
    assert xcom(airflow, run, "bash_echo") == "bash done"
    assert xcom(airflow, run, "python_greets") == "hello taskvisor"


def test_a_failing_try_is_retried_by_the_scheduler_and_its_retry_succeeds(
    airflow: Airflow, run: Run
) -> None:
    history = tries(airflow, run, "flaky")

    # Try 1 ended up_for_retry; Airflow files a try that did not finish as failed in its
    # history when it schedules the next (TaskInstanceHistory.record_ti).
    assert [(ti["try_number"], ti["state"]) for ti in history] == [(1, "failed"), (2, "success")]
    assert xcom(airflow, run, "flaky") == "recovered on try 2"
    [failure] = [
        record
        for record in airflow.rest_task_log(DAG_ID, run.run_id, "flaky", 1)
        if record.get("event") == "Task failed with exception"
    ]
    assert failure["error_detail"][0]["exc_value"] == "flaky fails its first try on purpose"
    assert "Task reported up_for_retry" in logged(airflow, run, "flaky", -1, 1)
    assert "flaky recovered on try 2" in logged(airflow, run, "flaky", -1, 2)


@pytest.mark.parametrize(
    ("task_id", "map_index", "line"),
    [
        ("make_batches", -1, "Done. Returned value was: [2, 3, 4]"),
        ("square", 0, "squaring 2"),
        ("square", 2, "squaring 4"),
        ("total", -1, "adding up [4, 9, 16]"),
        ("bash_echo", -1, "bash runs as try 1"),
        ("python_greets", -1, "python says hello to taskvisor"),
    ],
)
def test_each_tasks_log_is_served_by_airflows_rest_log_endpoint(
    airflow: Airflow, run: Run, task_id: str, map_index: int, line: str
) -> None:
    assert line in logged(airflow, run, task_id, map_index, 1)


def test_no_more_than_parallelism_tries_ran_at_once(airflow: Airflow, run: Run) -> None:
    spans = []
    for task_id, map_index in {(task_id, index) for task_id, index, _ in TRIES}:
        for ti in tries(airflow, run, task_id, map_index):
            start, end = (dt.datetime.fromisoformat(ti[k]) for k in ("start_date", "end_date"))
            spans.append((start, end))
    assert len(spans) == len(TRIES)
    most = max(sum(1 for start, end in spans if start <= at < end) for at, _ in spans)
    assert 1 <= most <= PARALLELISM


def test_a_task_the_scheduler_ran_holds_no_signing_secret_nor_does_its_supervisor(
    airflow: Airflow, run: Run
) -> None:
    report = xcom(airflow, run, "probe")
    secret = hashlib.sha256(airflow.env["AIRFLOW__API_AUTH__JWT_SECRET"].encode()).hexdigest()
    database = hashlib.sha256(
        airflow.env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].encode()
    ).hexdigest()

    # The task's parent is the supervise the executor started for it.
    assert report["parent_cmdline"][-2:] == [str(VENV_BIN / "supervise"), "-"]
    environments = {"own": report["own"], "own_at_start": report["own_at_start"]}
    if report["parent"] is not None:  # readable: supervise is not dumpable, root reads it
        environments["parent"] = report["parent"]
    for where, environment in environments.items():
        named = [n for n in environment["names"] if any(w in n for w in SECRET_NAME_WORDS)]
        assert named == [], where
        assert secret not in environment["digests"], where
        assert database not in environment["digests"], where
        assert "AIRFLOW__CORE__EXECUTION_API_SERVER_URL" in environment["names"], where
