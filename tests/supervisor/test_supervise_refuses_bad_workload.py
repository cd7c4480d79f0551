"""``supervise`` refuses a bad Airflow workload, or a worker configuration it cannot use,
before anything starts: exit 2, one line naming what is wrong, no connection to the server.

The workload's own rules are tested in tests/comms/test_workload.py and the configuration's
in tests/supervisor/test_airflow_config.py; these check the command's whole promise.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

TOKEN = "eyJhbGciOiJIUzUxMiJ9.eyJzdWIiOiJ4In0.c2ln"


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """The Execution API URL the worker is configured with: a connection fails the test."""
    with socket.create_server(("127.0.0.1", 0)) as sock:
        sock.setblocking(False)
        yield sock


def workload(**changes: Any) -> dict[str, Any]:
    """An ``ExecuteTask`` workload as Airflow 3.3's executors dump it."""
    document = {
        "type": "ExecuteTask",
        "token": TOKEN,
        "ti": {
            "id": "3fa85f64-5717-4562-b3fc-2c963f66afa6",
            "dag_version_id": "3fa85f64-5717-4562-b3fc-2c963f66afa7",
            "task_id": "task",
            "dag_id": "dag",
            "run_id": "manual__1",
            "try_number": 1,
            "map_index": -1,
            "pool_slots": 1,
            "queue": "default",
            "priority_weight": 1,
        },
        "dag_rel_path": "dag.py",
        "bundle_info": {"name": "dags-folder", "version": None},
        "log_path": "dag_id=dag/run_id=manual__1/task_id=task/attempt=1.log",
    }
    document.update(changes)
    return document


def worker_env(tmp_path: Path, listener: socket.socket, **settings: str) -> dict[str, str]:
    """A worker's environment whose Execution API is the ``listener``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "TASKVISOR"))}
    env.update(
        AIRFLOW_HOME=str(tmp_path / "airflow"),
        AIRFLOW__CORE__EXECUTION_API_SERVER_URL=(
            f"http://127.0.0.1:{listener.getsockname()[1]}/execution/"
        ),
        AIRFLOW__LOGGING__BASE_LOG_FOLDER=str(tmp_path / "logs"),
        AIRFLOW__CORE__DAGS_FOLDER=str(tmp_path / "dags"),
        TASKVISOR_API_RETRY_BUDGET="1",
    )
    env.update(settings)
    return env


def run_supervise(
    tmp_path: Path,
    listener: socket.socket,
    document: dict[str, Any],
    *args: str,
    **settings: str,
) -> tuple[int, str]:
    """Exit code and stderr of ``supervise - [args]`` in a worker's environment."""
    proc = subprocess.run(
        [sys.executable, "-m", "supervisor", "-", *args],
        input=json.dumps(document).encode(),
        cwd=tmp_path,
        env=worker_env(tmp_path, listener, **settings),
        capture_output=True,
        timeout=60,
        check=False,
    )
    return proc.returncode, proc.stderr.decode()


#: ``supervise`` as run where Airflow is not installed (the import system finds no package).
WITHOUT_AIRFLOW = (
    "import sys; sys.modules['airflow'] = None; from supervisor.cli import main; main()"
)


def assert_refused(code: int, stderr: str, listener: socket.socket, *words: str) -> None:
    assert code == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    for word in words:
        assert word.lower() in lines[0].lower(), lines[0]
    assert TOKEN not in stderr
    with pytest.raises(BlockingIOError):
        listener.accept()


def test_a_workload_of_another_kind_is_refused_naming_the_kinds_supervise_runs(
    tmp_path: Path, listener: socket.socket
) -> None:
    code, stderr = run_supervise(tmp_path, listener, workload(type="ExecuteCallback"))

    assert_refused(code, stderr, listener, "$.type", "'ExecuteCallback'", "ExecuteTask")


def test_a_workload_with_a_bad_field_is_refused_naming_it(
    tmp_path: Path, listener: socket.socket
) -> None:
    code, stderr = run_supervise(tmp_path, listener, workload(dag_rel_path="../etc/passwd"))

    assert_refused(code, stderr, listener, "$.dag_rel_path")


def test_a_server_url_the_worker_cannot_use_is_refused_naming_the_setting(
    tmp_path: Path, listener: socket.socket
) -> None:
    code, stderr = run_supervise(
        tmp_path,
        listener,
        workload(),
        AIRFLOW__CORE__EXECUTION_API_SERVER_URL="ftp://127.0.0.1/execution/",
    )

    assert_refused(code, stderr, listener, "execution_api_server_url", "ftp://")


def test_a_bad_server_flag_is_refused_naming_it(tmp_path: Path, listener: socket.socket) -> None:
    code, stderr = run_supervise(tmp_path, listener, workload(), "--server", "127.0.0.1:8080")

    assert_refused(code, stderr, listener, "--server")


def test_the_server_flag_is_refused_for_an_activity_which_names_its_own(
    tmp_path: Path, listener: socket.socket
) -> None:
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/execution/"
    activity = {
        "kind": "ExecuteTask",
        "token": TOKEN,
        "server": url,
        "ti": {k: workload()["ti"][k] for k in ("id", "dag_id", "task_id", "run_id")}
        | {"try_number": 1},
        "command": ["true"],
    }
    code, stderr = run_supervise(tmp_path, listener, activity, "--server", url)

    assert_refused(code, stderr, listener, "--server")


def test_a_workload_where_airflow_is_not_installed_is_refused_saying_where_to_install(
    tmp_path: Path, listener: socket.socket
) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", WITHOUT_AIRFLOW, "-"],
        input=json.dumps(workload()).encode(),
        cwd=tmp_path,
        env=worker_env(tmp_path, listener),
        capture_output=True,
        timeout=60,
        check=False,
    )

    stderr = proc.stderr.decode()
    assert_refused(proc.returncode, stderr, listener, "Airflow is not installed", "worker")


def test_a_log_folder_that_cannot_hold_the_task_log_is_refused_naming_the_setting(
    tmp_path: Path, listener: socket.socket
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    installed = tmp_path / "site"  # an `airflow` package to find, wherever the test runs
    (installed / "airflow").mkdir(parents=True)
    (installed / "airflow" / "__init__.py").write_text("")

    code, stderr = run_supervise(
        tmp_path,
        listener,
        workload(),
        AIRFLOW__LOGGING__BASE_LOG_FOLDER=str(blocker),
        PYTHONPATH=str(installed),
    )

    assert_refused(code, stderr, listener, "base_log_folder", "cannot open the task log")


@pytest.mark.parametrize("delete", [False, True], ids=["kept", "deleted"])
def test_a_workload_file_left_on_disk_draws_a_warning_that_the_task_could_read_it(
    tmp_path: Path, listener: socket.socket, delete: bool
) -> None:
    path = tmp_path / "workload.json"
    path.write_text(json.dumps(workload()))
    env = worker_env(tmp_path, listener)
    flags = ["--delete-activity"] if delete else []

    proc = subprocess.run(
        [sys.executable, "-c", WITHOUT_AIRFLOW, str(path), *flags],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert proc.returncode == 2, proc.stderr  # refused later, for want of Airflow here
    warned = "the task can read" in proc.stderr
    assert warned is not delete, proc.stderr
    assert path.exists() is not delete
