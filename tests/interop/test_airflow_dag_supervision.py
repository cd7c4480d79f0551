"""What ``supervise`` adds to Airflow's own task runner, on real DAG tasks (issue 13).

Each test queues a task of ``dags/airflow_supervision.py`` with Airflow's own code, runs its
``ExecuteTask`` workload with ``supervise -`` (the workload on stdin, as an executor would
pipe it) in a worker's environment, and asks Airflow what happened.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

if TYPE_CHECKING:  # test modules take the harness from the `airflow` fixture, never import it
    from conftest import Airflow

HERE = Path(__file__).resolve().parent
SUPERVISE = HERE.parents[1] / ".airflow-venv" / "bin" / "supervise"
DAG_ID = "taskvisor_dag_supervision"
TIMEOUT = 90  # seconds any one supervise may take here; its tasks would sleep 120 s

#: Exit codes of ``supervise`` (docs/design.md).
FAILED, SERVER_SAID_STOP = 1, 5


def queue(airflow: Airflow, task_id: str) -> dict[str, Any]:
    """Queue ``task_id`` in a new dag run; return its ``ExecuteTask`` workload (JSON)."""
    run_id = f"supervision__{uuid.uuid4().hex[:8]}"
    tasks = {task_id: {"max_tries": 0}}
    result = airflow.side.call("queue", dag_id=DAG_ID, run_id=run_id, tasks=tasks)
    return result["workloads"][task_id]  # type: ignore[no-any-return]


def start(airflow: Airflow, workload: dict[str, Any], **settings: str) -> subprocess.Popen[str]:
    """``supervise -`` with the workload on stdin, in a worker's environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "TASKVISOR"))}
    env.update(
        AIRFLOW_HOME=str(airflow.home),
        AIRFLOW__CORE__EXECUTION_API_SERVER_URL=airflow.execution_url,
        AIRFLOW__LOGGING__BASE_LOG_FOLDER=str(airflow.log_folder),
        AIRFLOW__CORE__DAGS_FOLDER=str(HERE / "dags"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        TASKVISOR_KILL_GRACE="1",
        **settings,
    )
    proc = subprocess.Popen(
        [SUPERVISE, "-"],
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    assert proc.stdin is not None
    proc.stdin.write(json.dumps(workload))
    proc.stdin.close()
    return proc


def finish(proc: subprocess.Popen[str]) -> tuple[int, str]:
    """Wait for ``supervise``; its exit code and stderr."""
    assert proc.stderr is not None
    try:
        proc.wait(timeout=TIMEOUT)  # its stderr is a few records: the pipe never fills
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(f"supervise still running after {TIMEOUT} s") from None
    with proc.stderr:
        return proc.returncode, proc.stderr.read()


def log_path(airflow: Airflow, workload: dict[str, Any]) -> Path:
    """Where Airflow's log reader looks for this try's log."""
    return airflow.log_folder / workload["log_path"]


def records(airflow: Airflow, workload: dict[str, Any]) -> list[dict[str, Any]]:
    """The try's log file, record by record."""
    return [json.loads(line) for line in log_path(airflow, workload).read_text().splitlines()]


def wait_for(what: str, check: Callable[[], bool]) -> None:
    """Poll ``check`` until it holds (each poll reads a file or the database)."""
    deadline = time.monotonic() + TIMEOUT
    while not check():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.1)


def state(airflow: Airflow, workload: dict[str, Any]) -> str:
    """The task instance's state in Airflow's database."""
    return str(airflow.side.call("tis", ids=[workload["ti"]["id"]])[workload["ti"]["id"]]["state"])


def test_dag_task_that_blocks_its_timer_is_stopped_at_execution_timeout_by_the_supervisor(
    airflow: Airflow,
) -> None:
    workload = queue(airflow, "ignores_its_timer")

    code, stderr = finish(start(airflow, workload))

    assert code == FAILED, stderr
    assert state(airflow, workload) == "failed"
    events = [r["event"] for r in records(airflow, workload) if r["logger"] == "supervisor"]
    assert any("execution_timeout is enforced" in event for event in events), events
    assert "Task timed out; stopping it" in events
    finished = next(r for r in records(airflow, workload) if r["event"] == "Task finished")
    assert finished["reason"].startswith("timeout")


def test_dag_task_marked_failed_in_airflow_is_killed_and_supervise_exits_5(
    airflow: Airflow,
) -> None:
    workload = queue(airflow, "runs_until_stopped")
    proc = start(airflow, workload, TASKVISOR_HEARTBEAT_INTERVAL="0.5")
    wait_for(
        "the task to start",
        lambda: (
            log_path(airflow, workload).exists()
            and "running until stopped" in log_path(airflow, workload).read_text()
        ),
    )
    task_pid = next(r["pid"] for r in records(airflow, workload) if r["event"] == "Starting task")
    ti = workload["ti"]

    response = airflow.rest.patch(
        f"/api/v2/dags/{DAG_ID}/dagRuns/{ti['run_id']}/taskInstances/{ti['task_id']}",
        json={"new_state": "failed"},
    )
    response.raise_for_status()
    code, stderr = finish(proc)

    assert code == SERVER_SAID_STOP, stderr
    assert not psutil.pid_exists(task_pid)
    assert state(airflow, workload) == "failed"


def test_dag_task_leaking_a_password_on_every_output_path_leaves_only_stars(
    airflow: Airflow,
) -> None:
    workload = queue(airflow, "leaks_a_password")

    code, stderr = finish(start(airflow, workload))

    assert code == FAILED, stderr
    assert state(airflow, workload) == "failed"
    text = log_path(airflow, workload).read_text()
    assert airflow.connection_password not in text
    assert airflow.connection_password not in stderr
    for path in ("stdout: ***", "stderr: ***", "log record: ***", "exception: ***"):
        assert path in text, path


def test_dag_task_writing_on_the_runners_channel_is_stopped_as_a_protocol_error(
    airflow: Airflow,
) -> None:
    workload = queue(airflow, "writes_on_the_channel")

    code, stderr = finish(start(airflow, workload))

    assert code == FAILED, stderr
    assert state(airflow, workload) == "failed"
    finished = next(r for r in records(airflow, workload) if r["event"] == "Task finished")
    assert finished["reason"].startswith("protocol error")
