"""Airflow's scheduler stopping while ``TaskvisorExecutor`` runs a try, as LocalExecutor does:
the first SIGTERM lets the running try finish, a second one stops it, and the try is reported.

Each test starts its own ``airflow scheduler`` (the executor set by its one configuration
line) on the session's Airflow home and triggers ``taskvisor_executor_gated`` through Airflow's
REST API: its one task runs until the test opens its gate (a Variable). The task's log is read
through Airflow's REST log endpoint while it runs; states and XComs after, through REST.
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

if TYPE_CHECKING:  # test modules take the harness from the `airflow` fixture, never import it
    from conftest import Airflow, Scheduler, StartScheduler

DAG_ID = "taskvisor_executor_gated"
TASK_ID = "gated"
EXECUTOR = "taskvisor_airflow.TaskvisorExecutor"
#: Scheduler start-up (~10 s), then the try's start (~2 s), on 2 cores.
TIMEOUT = 180
POLL = 0.2
#: What the executor logs when the scheduler ends it with tries running.
WAITING = "waiting for its running tries (1) to finish"


def wait_for(what: str, seen: Callable[[], bool], scheduler: Scheduler) -> None:
    """Poll ``seen`` until it is true, failing after :data:`TIMEOUT` seconds."""
    deadline = time.monotonic() + TIMEOUT
    while not seen():
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} after {TIMEOUT} s:\n{scheduler.output()[-6000:]}")
        time.sleep(POLL)


def log_events(airflow: Airflow, run_id: str, try_number: int = 1) -> list[str]:
    """The try's log events as Airflow's REST log endpoint serves them (none yet: [])."""
    try:
        records = airflow.rest_task_log(DAG_ID, run_id, TASK_ID, try_number)
    except httpx.HTTPStatusError:  # no task instance or try yet
        return []
    return [str(record.get("event")) for record in records]


def task_instance(airflow: Airflow, run_id: str) -> dict[str, Any]:
    """The gated task instance through Airflow's REST API."""
    path = f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{TASK_ID}"
    return airflow.rest_json(path)  # type: ignore[no-any-return]


def running_at_the_gate(airflow: Airflow, scheduler: Scheduler) -> tuple[str, int]:
    """Trigger the DAG; return the run id and the try's ``supervise`` pid once the task runs
    and its log, read through REST while it runs, shows it waiting at its gate."""
    run_id = airflow.rest_trigger(DAG_ID)
    wait_for(
        "line of the running task in its log",
        lambda: (
            True if any("waits at its gate" in e for e in log_events(airflow, run_id)) else None
        ),
        scheduler,
    )
    assert task_instance(airflow, run_id)["state"] == "running"
    started = re.search(
        r"Started supervise \(pid (\d+)\) for TaskInstanceKey\(dag_id='"
        + re.escape(DAG_ID)
        + r"', task_id='gated', run_id='"
        + re.escape(run_id),
        scheduler.output(),
    )
    assert started, scheduler.output()[-6000:]
    return run_id, int(started.group(1))


def terminate_and_wait_for_the_executor(scheduler: Scheduler) -> None:
    """SIGTERM the scheduler; return once its executor says it waits for the running try."""
    os.kill(scheduler.process.pid, signal.SIGTERM)
    wait_for(
        "executor waiting for its running try",
        lambda: WAITING in scheduler.output(),
        scheduler,
    )
    assert scheduler.process.poll() is None


def test_a_stopping_scheduler_lets_the_running_try_finish_then_exits(
    airflow: Airflow, start_scheduler: StartScheduler
) -> None:
    with start_scheduler(EXECUTOR, PARALLELISM="2") as scheduler:
        run_id, supervise_pid = running_at_the_gate(airflow, scheduler)
        terminate_and_wait_for_the_executor(scheduler)

        airflow.rest.post(
            "/api/v2/variables", json={"key": f"taskvisor_gate__{run_id}", "value": "open"}
        ).raise_for_status()
        returncode = scheduler.process.wait(timeout=TIMEOUT)

    assert returncode == 0, scheduler.output()[-6000:]
    assert task_instance(airflow, run_id)["state"] == "success"
    assert "the gate is open" in log_events(airflow, run_id)
    assert not Path(f"/proc/{supervise_pid}").exists()  # waited for, before the scheduler left


def test_a_second_signal_stops_the_running_try_and_it_is_reported_for_retry(
    airflow: Airflow, start_scheduler: StartScheduler
) -> None:
    with start_scheduler(EXECUTOR, PARALLELISM="2") as scheduler:
        run_id, supervise_pid = running_at_the_gate(airflow, scheduler)
        terminate_and_wait_for_the_executor(scheduler)

        os.kill(scheduler.process.pid, signal.SIGTERM)
        returncode = scheduler.process.wait(timeout=TIMEOUT)

    output = scheduler.output()
    assert returncode == 0, output[-6000:]
    # supervise stopped its task and reported the try to Airflow's api-server itself.
    assert task_instance(airflow, run_id)["state"] == "up_for_retry"
    assert "Received SIGTERM; stopping the task" in log_events(airflow, run_id)
    assert re.search(
        r"gated', run_id='[^']+', try_number=1, map_index=-1\): supervise exited 1", output
    )
    assert not Path(f"/proc/{supervise_pid}").exists()
