"""``TaskvisorExecutor`` as Airflow's scheduler drives it, with a fake ``supervise``.

Each test runs a script in the Airflow venv (a fresh home, no server) that builds the executor
as Airflow's ``ExecutorLoader`` does, queues ``ExecuteTask`` workloads with Airflow's own
``queue_workload`` and calls ``heartbeat``, ``end`` and ``terminate`` as the scheduler does.
The ``supervise`` it spawns is ``tests/taskvisor_airflow/fake_supervise.py``: it records its
stdin, environment and argv and exits as its workload's task id says. The script reports the
executor's bookkeeping (running, queued) and the events Airflow's scheduler would read.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
FAKE_SUPERVISE = HERE.parent / "taskvisor_airflow" / "fake_supervise.py"
SCHEDULER_SECRET = "scheduler-signing-secret-" + "5" * 48

#: Loaded into every script: the executor and a way to make workloads and read its state.
PRELUDE = """
import json, os, signal, sys, threading, uuid
from pathlib import Path

given = json.loads(sys.stdin.read())
os.environ.update(given["env"])
where = Path(given["dir"])

from airflow.executors.executor_loader import ExecutorLoader
from airflow.executors.workloads import ExecuteTask

def make_executor(parallelism, command=None):
    executor = ExecutorLoader.load_executor(None)  # [core] executor, as the scheduler loads it
    executor.parallelism = parallelism
    executor.processes.command = command or given["fake"]
    executor.start()
    return executor

def workload(task_id, priority=1):
    for fifo in ("ready", "release"):
        os.mkfifo(where / f"{task_id}.{fifo}")
    return ExecuteTask.model_validate({
        "token": "eyJhbGciOiJIUzUxMiJ9.eyJzdWIiOiJ0aSJ9.not-a-real-signature",
        "ti": {
            "id": str(uuid.uuid4()), "dag_id": "d", "task_id": task_id, "run_id": "r",
            "try_number": 1, "map_index": -1, "dag_version_id": str(uuid.uuid4()),
            "pool_slots": 1, "priority_weight": priority, "queue": "default",
        },
        "dag_rel_path": "d.py",
        "bundle_info": {"name": "dags-folder"},
        "log_path": f"dag_id=d/run_id=r/task_id={task_id}/attempt=1.log",
    })

def queue(executor, *workloads):
    for item in workloads:
        executor.queue_workload(item, session=None)

def ready(task_id):
    (where / f"{task_id}.ready").read_bytes()

def record(task_id):
    return json.loads((where / f"{task_id}.json").read_text())

def release(task_id, code):
    ready(task_id)
    (where / f"{task_id}.release").write_text(f"{code}\\n")
    os.waitid(os.P_PID, record(task_id)["pid"], os.WEXITED | os.WNOWAIT)  # exited, not reaped

def state(executor):
    return {
        "running": sorted(key.task_id for key in executor.running),
        "queued": sorted(key.task_id for key in executor.queued_tasks),
        "events": {
            key.task_id: [str(state), info]
            for key, (state, info) in executor.get_event_buffer().items()
        },
    }
"""


@pytest.fixture
def run_executor(
    run_in_airflow: Callable[[str, str], Any], tmp_path: Path
) -> Callable[[str], dict[str, Any]]:
    """Run a script body after :data:`PRELUDE`; it prints one JSON document last."""

    def run(body: str) -> dict[str, Any]:
        given = {
            "dir": str(tmp_path),
            "fake": [sys.executable, str(FAKE_SUPERVISE), "-"],
            "env": {
                "AIRFLOW__CORE__EXECUTOR": "taskvisor_airflow.TaskvisorExecutor",
                "FAKE_SUPERVISE_DIR": str(tmp_path),
                "AIRFLOW__API_AUTH__JWT_SECRET": SCHEDULER_SECRET,
                "AIRFLOW__CORE__FERNET_KEY": "scheduler-fernet-key",
                "AIRFLOW__API__BASE_URL": "http://127.0.0.1:28080",
            },
        }
        return run_in_airflow(PRELUDE + body, json.dumps(given))  # type: ignore[no-any-return]

    return run


def test_at_most_parallelism_tries_run_and_the_next_starts_when_one_ends(run_executor):
    seen = run_executor(
        """
executor = make_executor(parallelism=2)
queue(executor, workload("held-low", 1), workload("held-high", 9), workload("held-mid", 5))
executor.heartbeat()
first = state(executor)
release("held-high", 0)
executor.heartbeat()  # Airflow triggers before it syncs: the slot opens for the next one
second = state(executor)
executor.heartbeat()
third = state(executor)
release("held-mid", 0)
release("held-low", 0)
executor.end()
print(json.dumps({"first": first, "second": second, "third": third, "end": state(executor)}))
"""
    )
    # Highest priority_weight first, as Airflow orders queued tasks.
    assert seen["first"] == {
        "running": ["held-high", "held-mid"],
        "queued": ["held-low"],
        "events": {"held-high": ["running", None], "held-mid": ["running", None]},
    }
    assert seen["second"] == {
        "running": ["held-mid"],
        "queued": ["held-low"],
        "events": {"held-high": ["success", None]},
    }
    assert seen["third"] == {
        "running": ["held-low", "held-mid"],
        "queued": [],
        "events": {"held-low": ["running", None]},
    }
    assert seen["end"] == {
        "running": [],
        "queued": [],
        "events": {"held-low": ["success", None], "held-mid": ["success", None]},
    }


def test_each_exit_of_supervise_becomes_success_or_a_failed_event_saying_why(run_executor):
    seen = run_executor(
        """
executor = make_executor(parallelism=8)
queue(executor, *(workload(t) for t in
    ("exit_0", "exit_1", "exit_2", "exit_3", "exit_4", "exit_5", "killed")))
executor.heartbeat()
executor.end()  # waits for every try
print(json.dumps(state(executor)))
"""
    )
    events = seen["events"]
    assert seen["running"] == seen["queued"] == []
    assert events.pop("exit_0") == ["success", None]
    assert {task: state for task, (state, _) in events.items()} == dict.fromkeys(events, "failed")
    infos = {task: info for task, (_, info) in events.items()}
    assert infos["exit_1"].startswith("supervise exited 1: the try ended and was reported failed")
    assert "nothing contacted" in infos["exit_2"]
    assert "refused" in infos["exit_3"]
    assert "could not be reported" in infos["exit_4"]
    assert "told the supervisor to stop" in infos["exit_5"]
    assert "killed by SIGKILL" in infos["killed"]


def test_supervise_gets_airflows_workload_on_stdin_and_a_workers_environment(run_executor):
    seen = run_executor(
        """
executor = make_executor(parallelism=1)
sent = workload("exit_0")
queue(executor, sent)
executor.heartbeat()
executor.end()
got = record("exit_0")
print(json.dumps({
    "same_workload": (where / "exit_0.stdin").read_bytes() == sent.model_dump_json().encode(),
    "token_in_stdin": sent.token in (where / "exit_0.stdin").read_text(),
    "record": got,
    "files_with_token": sorted(
        p.name for p in where.iterdir()
        if p.is_file() and p.suffix != ".stdin" and sent.token in p.read_text(errors="replace")
    ),
    "events": state(executor)["events"],
}))
"""
    )
    record = seen["record"]
    assert seen["same_workload"]
    assert seen["token_in_stdin"]
    assert seen["files_with_token"] == []  # nothing but the fake's own copy of its stdin
    assert record["argv"][1:] == ["-"]
    assert record["stdin_was_a_pipe"]
    assert record["session_leader"]
    env = record["env"]
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:28080/execution/"
    assert env["FAKE_SUPERVISE_DIR"]  # the scheduler's environment, passed on
    leaked = [n for n in env if any(w in n.upper() for w in ("JWT", "FERNET", "SQL_ALCHEMY"))]
    assert leaked == []
    assert SCHEDULER_SECRET not in json.dumps(env)
    assert seen["events"] == {"exit_0": ["success", None]}


def test_a_supervise_that_cannot_start_is_reported_failed_never_lost(run_executor, tmp_path):
    missing = str(tmp_path / "no-such-supervise")
    seen = run_executor(
        f"""
executor = make_executor(parallelism=2, command=[{missing!r}, "-"])
queue(executor, workload("exit_0"))
executor.heartbeat()
print(json.dumps(state(executor)))
"""
    )
    [(state, info)] = seen["events"].values()
    assert (seen["running"], seen["queued"], state) == ([], [], "failed")
    assert info.startswith("supervise could not be started: [Errno 2]")


def test_terminate_sigterms_each_supervise_then_kills_what_outlives_the_grace(run_executor):
    seen = run_executor(
        """
executor = make_executor(parallelism=2)
executor.stop_grace = 1.0
queue(executor, workload("stops_on_term"), workload("ignores_term"))
executor.heartbeat()
ready("stops_on_term")
ready("ignores_term")
executor.terminate()
print(json.dumps(state(executor)))
"""
    )
    events = seen["events"]
    assert seen["running"] == []
    assert events["stops_on_term"][0] == "failed"
    assert events["stops_on_term"][1].startswith("supervise exited 1")
    assert events["ignores_term"][0] == "failed"
    assert "killed by SIGKILL" in events["ignores_term"][1]


def test_end_waits_for_running_tries_and_a_second_signal_stops_them(run_executor):
    seen = run_executor(
        """
executor = make_executor(parallelism=2)
queue(executor, workload("held"))
executor.heartbeat()
threading.Thread(target=release, args=("held", 0)).start()
executor.end()  # returns once the try ended by itself
waited = state(executor)

# The scheduler's handler of a second SIGTERM raises SystemExit wherever the loop is.
signal.signal(signal.SIGUSR1, lambda *_: sys.exit(3))
queue(executor, workload("stops_on_term"))
executor.heartbeat()
def second_signal():
    ready("stops_on_term")
    os.kill(os.getpid(), signal.SIGUSR1)
threading.Thread(target=second_signal).start()
try:
    executor.end()
    interrupted = None
except SystemExit as exc:
    interrupted = exc.code
print(json.dumps({"waited": waited, "interrupted": interrupted, "stopped": state(executor)}))
"""
    )
    assert seen["waited"]["events"] == {"held": ["success", None]}
    assert seen["interrupted"] == 3
    stopped = seen["stopped"]
    assert stopped["running"] == []
    assert stopped["events"]["stops_on_term"][0] == "failed"
    assert stopped["events"]["stops_on_term"][1].startswith("supervise exited 1")


def test_airflow_loads_the_executor_by_its_config_name_and_it_runs_this_installs_supervise(
    run_in_airflow,
):
    seen = run_in_airflow(
        """
import json, os, sys
os.environ["AIRFLOW__CORE__EXECUTOR"] = "taskvisor_airflow.TaskvisorExecutor"
import taskvisor_airflow
lazy = "taskvisor_airflow.executor" not in sys.modules and "airflow.executors" not in sys.modules
from airflow.executors.executor_loader import ExecutorLoader
executor = ExecutorLoader.load_executor(None)  # [core] executor, as the scheduler loads it
print(json.dumps({
    "lazy": lazy,
    "class": type(executor).__module__ + "." + type(executor).__qualname__,
    "same": executor.__class__ is taskvisor_airflow.TaskvisorExecutor,
    "command": executor.processes.command,
    "parallelism": executor.parallelism,
    "flags": [executor.is_local, executor.serve_logs, executor.supports_callbacks],
}))
"""
    )
    venv_bin = HERE.parents[1] / ".airflow-venv" / "bin"
    assert seen["lazy"]
    assert seen["class"] == "taskvisor_airflow.executor.TaskvisorExecutor"
    assert seen["same"]
    assert seen["command"] == [str(venv_bin / "supervise"), "-"]
    assert seen["parallelism"] == 32  # Airflow's [core] parallelism default
    assert seen["flags"] == [True, False, False]


def test_the_task_child_prepared_for_airflows_runner_never_loads_the_executor(run_in_airflow):
    # Airflow's own runner loads parts of Airflow's scheduler side itself (its executor loader,
    # models); what taskvisor adds must not: neither the executor nor Airflow's BaseExecutor.
    seen = run_in_airflow(
        """
import json, sys
import taskvisor_airflow.task_child
taskvisor_airflow.task_child.prepare()
print(json.dumps(sorted(sys.modules)))
"""
    )
    assert "airflow.sdk.execution_time.task_runner" in seen
    assert "taskvisor_airflow.executor" not in seen
    assert "airflow.executors.base_executor" not in seen
