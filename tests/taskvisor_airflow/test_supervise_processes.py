"""The executor's bookkeeping of its ``supervise`` processes, without Airflow: a fake
``supervise`` (``fake_supervise.py``) records what it got and exits as told."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from supervisor.spawn import is_control_plane_secret as supervise_sheds
from taskvisor_airflow import supervise_processes
from taskvisor_airflow.supervise_processes import (
    SuperviseProcesses,
    WorkloadTooLarge,
    describe_exit,
    is_control_plane_secret,
    worker_environment,
)

FAKE = [sys.executable, str(Path(__file__).with_name("fake_supervise.py")), "-"]


def workload(task_id: str, padding: int = 0) -> bytes:
    """A workload-shaped document the fake understands (``ti.task_id``), and a token."""
    document = {"type": "ExecuteTask", "token": "eyJ.fake.token", "ti": {"task_id": task_id}}
    if padding:
        document["padding"] = "x" * padding
    return json.dumps(document).encode()


class Fakes:
    """Fake ``supervise`` processes started with their records in one folder."""

    def __init__(self, where: Path) -> None:
        self.where = where
        self.processes: SuperviseProcesses[str] = SuperviseProcesses(FAKE)
        self.env = {**os.environ, "FAKE_SUPERVISE_DIR": str(where)}

    def start(self, task_id: str, padding: int = 0) -> int:
        """Start a fake for ``task_id`` (its FIFOs made first)."""
        for fifo in ("ready", "release"):
            os.mkfifo(self.where / f"{task_id}.{fifo}")
        return self.processes.start(task_id, workload(task_id, padding), self.env)

    def ready(self, task_id: str) -> None:
        """Until the fake set its signal handling up (it opens its ``ready`` FIFO)."""
        (self.where / f"{task_id}.ready").read_bytes()

    def record(self, task_id: str) -> dict[str, Any]:
        """What the fake recorded about itself."""
        return json.loads((self.where / f"{task_id}.json").read_text())  # type: ignore[no-any-return]

    def wait_all(self) -> dict[str, int | None]:
        """Wait for every fake to exit: task id -> return code."""
        codes: dict[str, int | None] = {}
        while self.processes:
            codes.update({ended.key: ended.returncode for ended in self.processes.wait(None)})
        return codes


@pytest.fixture
def fakes(tmp_path: Path) -> Any:
    running = Fakes(tmp_path)
    yield running
    running.processes.signal(signal.SIGKILL)
    running.wait_all()


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def test_supervise_gets_the_workload_whole_on_a_pipe_as_stdin_in_a_session_of_its_own(fakes):
    fakes.start("exit_0")
    large = "exit_0-large"
    fakes.start(large, padding=300_000)  # more than a pipe holds by default (64 KiB)

    assert fakes.wait_all() == {"exit_0": 0, large: 0}
    assert (fakes.where / "exit_0.stdin").read_bytes() == workload("exit_0")
    assert (fakes.where / f"{large}.stdin").read_bytes() == workload(large, padding=300_000)
    record = fakes.record("exit_0")
    assert record["stdin_was_a_pipe"]
    assert record["session_leader"]
    assert record["argv"][1:] == ["-"]


def test_reap_never_blocks_and_reports_each_exit_once_with_its_code(fakes):
    fakes.start("held")
    fakes.ready("held")
    assert fakes.processes.reap() == []
    assert "held" in fakes.processes

    for task_id in ("exit_0", "exit_1", "exit_3", "exit_4", "killed"):
        fakes.start(task_id)
    (fakes.where / "held.release").write_text("5\n")

    assert fakes.wait_all() == {
        "held": 5,
        "exit_0": 0,
        "exit_1": 1,
        "exit_3": 3,
        "exit_4": 4,
        "killed": -signal.SIGKILL,
    }
    assert fakes.processes.reap() == []
    assert len(fakes.processes) == 0


def test_signal_reaches_every_running_supervise_and_wait_returns_when_each_exits(fakes):
    for task_id in ("stops_on_term", "ignores_term"):
        fakes.start(task_id)
        fakes.ready(task_id)

    fakes.processes.signal(signal.SIGTERM)
    first = fakes.processes.wait(None)

    assert [(ended.key, ended.returncode) for ended in first] == [("stops_on_term", 1)]
    assert fakes.processes.wait(0) == []  # the one ignoring SIGTERM still runs
    fakes.processes.signal(signal.SIGKILL)
    assert fakes.wait_all() == {"ignores_term": -signal.SIGKILL}


def test_an_exit_status_taken_by_someone_else_is_reported_lost_never_success(fakes):
    pid = fakes.start("exit_0")
    os.waitpid(pid, 0)  # behind the bookkeeping's back

    [ended] = fakes.processes.reap()

    assert (ended.key, ended.pid, ended.returncode, ended.ok) == ("exit_0", pid, None, False)
    assert "lost" in describe_exit(ended.returncode)


def test_every_fd_of_a_try_is_closed_once_its_supervise_is_reaped(fakes):
    before = open_fds()
    fakes.start("exit_0")
    fakes.wait_all()
    assert open_fds() == before


def test_a_supervise_that_cannot_be_started_raises_and_leaves_nothing_behind(tmp_path):
    processes: SuperviseProcesses[str] = SuperviseProcesses([str(tmp_path / "no-supervise")])
    before = open_fds()

    with pytest.raises(FileNotFoundError):
        processes.start("exit_0", workload("exit_0"), {})

    assert len(processes) == 0
    assert open_fds() == before


def test_a_workload_that_does_not_fit_in_a_pipe_is_refused_before_anything_starts(
    fakes, monkeypatch
):
    real_fcntl = fcntl.fcntl

    def refuse_to_grow(fd: int, command: int, *args: Any) -> Any:
        if command == fcntl.F_SETPIPE_SZ:
            raise PermissionError(1, "Operation not permitted")
        return real_fcntl(fd, command, *args)

    monkeypatch.setattr(supervise_processes.fcntl, "fcntl", refuse_to_grow)
    before = open_fds()

    with pytest.raises(WorkloadTooLarge, match="does not fit in a pipe"):
        fakes.start("exit_0", padding=300_000)

    assert len(fakes.processes) == 0
    assert open_fds() == before


def test_a_key_already_running_is_not_started_twice(fakes):
    fakes.start("held")
    with pytest.raises(ValueError, match="already running"):
        fakes.processes.start("held", workload("held"), fakes.env)
    fakes.ready("held")
    (fakes.where / "held.release").write_text("0\n")
    assert fakes.wait_all() == {"held": 0}


# --- the worker's environment ----------------------------------------------------------------

SCHEDULER_ENV = {
    "AIRFLOW_HOME": "/srv/airflow",
    "AIRFLOW__CORE__DAGS_FOLDER": "/srv/dags",
    "AIRFLOW__API_AUTH__JWT_SECRET": "signing-secret",
    "AIRFLOW__API_AUTH__JWT_SECRET_CMD": "cat /run/secrets/jwt",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "postgresql://airflow:pw@db/airflow",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_SECRET": "db/conn",
    "AIRFLOW__CORE__FERNET_KEY": "fernet",
    "AIRFLOW__API__SECRET_KEY": "session-key",
    "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": "http://wrong.example/execution/",
    "AIRFLOW_CONN_WAREHOUSE": "postgres://task:pw@warehouse/db",
    "PATH": "/usr/bin",
}


def test_the_worker_environment_has_no_control_plane_secret_and_names_the_execution_api():
    env = worker_environment(SCHEDULER_ENV, "http://127.0.0.1:8080/execution/")

    assert env == {
        "AIRFLOW_HOME": "/srv/airflow",
        "AIRFLOW__CORE__DAGS_FOLDER": "/srv/dags",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": "http://127.0.0.1:8080/execution/",
        # A connection in the environment is the task's to use, not the control plane's.
        "AIRFLOW_CONN_WAREHOUSE": "postgres://task:pw@warehouse/db",
        "PATH": "/usr/bin",
    }


@pytest.mark.parametrize("name", [*SCHEDULER_ENV, "jwt_private_key", "MY_FERNET_KEYS", "X"])
def test_the_executor_drops_exactly_the_variables_supervise_sheds(name):
    assert is_control_plane_secret(name) == supervise_sheds(name)


def test_each_exit_of_supervise_is_described_for_airflows_log():
    assert describe_exit(0).startswith("supervise exited 0: the try ended")
    assert "refused" in describe_exit(3)
    assert "state.json" in describe_exit(4)
    assert "stop" in describe_exit(5)
    assert "not an exit code of supervise" in describe_exit(42)
    assert "killed by SIGKILL" in describe_exit(-9)
    assert "killed by signal 200" in describe_exit(-200)
