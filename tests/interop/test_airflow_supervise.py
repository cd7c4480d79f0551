"""``supervise`` runs real Airflow 3.3.2 task instances (issue 7, items 2 and 3).

Each test queues task instances through Airflow's own code, writes the activity file an
executor would, runs taskvisor's ``supervise`` on it, and then asks Airflow (its REST API, its
database, its log reader) what happened.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jwt
import psutil
import pytest

if TYPE_CHECKING:  # test modules take the harness from the `airflow` fixture, never import it
    from conftest import Airflow, Workload

HERE = Path(__file__).resolve().parent
TASKS = HERE / "tasks.py"
COMMAND_TASK = HERE / "command_task.sh"
SUPERVISE_TIMEOUT = 120

#: Exit codes of ``supervise`` (docs/design.md).
SUCCESS_OR_SKIPPED, FAILED_OR_RETRY, SERVER_REFUSED, SERVER_SAID_STOP = 0, 1, 3, 5

#: What ``tasks.py:returns_value`` returns: Airflow must show it as XCom ``return_value``.
RETURNED = {"answer": 42, "items": [1, 2, 3], "nested": {"ok": True}}


def activity_for(
    airflow: Airflow,
    workload: Workload,
    *,
    entrypoint: str | None = None,
    command: list[str] | None = None,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The activity file an executor would write for this workload."""
    activity: dict[str, Any] = {
        "kind": "ExecuteTask",
        "token": workload.token,
        "server": airflow.execution_url,
        "ti": workload.ti,
        # Where Airflow's log reader looks for this try's log.
        "log_path": str(airflow.log_folder / workload.log_path),
        "env": {
            "INTEROP_VARIABLE": airflow.variable[0],
            "INTEROP_CONNECTION": airflow.connection_id,
            "INTEROP_RETURN": json.dumps(RETURNED),
            **(env or {}),
        },
    }
    if entrypoint is not None:
        activity["entrypoint"] = f"{TASKS}:{entrypoint}"
    if command is not None:
        activity["command"] = command
    return activity


def supervise_command(activity_path: Path) -> list[str]:
    """What an executor runs: the ``supervise`` console script installed with taskvisor."""
    return [str(Path(sys.executable).with_name("supervise")), str(activity_path)]


def write_activity(tmp_path: Path, activity: dict[str, Any]) -> Path:
    path = tmp_path / f"activity-{activity['ti']['task_id']}.json"
    path.write_text(json.dumps(activity))
    return path


def supervisor_env(settings: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    env.update({f"TASKVISOR_{name.upper()}": value for name, value in settings.items()})
    return env


@contextlib.contextmanager
def supervising(
    tmp_path: Path, activity: dict[str, Any], *, on_stdin: bool = False, **settings: str
) -> Iterator[subprocess.Popen[str]]:
    """Start ``supervise`` (``settings`` become ``TASKVISOR_<NAME>`` variables).

    The activity is a file, or with ``on_stdin`` piped to ``supervise -``. Whatever happens
    in the test, the supervisor and every process under it end with it.
    """
    source = Path("-") if on_stdin else write_activity(tmp_path, activity)
    proc = subprocess.Popen(
        supervise_command(source),
        stdin=subprocess.PIPE if on_stdin else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=supervisor_env(settings),
        cwd=tmp_path,
    )
    if on_stdin:
        assert proc.stdin is not None
        proc.stdin.write(json.dumps(activity))
        proc.stdin.close()
        proc.stdin = None  # done with it: communicate() must not flush a closed pipe
    try:
        yield proc
    finally:
        if proc.poll() is None:
            kill_tree(proc)
        proc.communicate()


def kill_tree(proc: subprocess.Popen[str]) -> None:
    """SIGKILL the supervisor and its descendants (found before it dies and they re-parent)."""
    with contextlib.suppress(psutil.NoSuchProcess):
        family = psutil.Process(proc.pid).children(recursive=True)
        proc.kill()
        for member in family:
            with contextlib.suppress(psutil.NoSuchProcess):
                member.kill()


def finish(proc: subprocess.Popen[str]) -> Finished:
    """Wait for ``supervise`` to exit on its own; fail the test if it does not in time."""
    try:
        output, _ = proc.communicate(timeout=SUPERVISE_TIMEOUT)
    except subprocess.TimeoutExpired:
        kill_tree(proc)
        output, _ = proc.communicate()
        pytest.fail(f"supervise still running after {SUPERVISE_TIMEOUT} s:\n{output}")
    return Finished(proc.returncode, output)


@dataclass
class Finished:
    """How ``supervise`` ended: exit code and its stdout + stderr."""

    returncode: int
    output: str

    def __str__(self) -> str:
        return f"supervise exited {self.returncode}:\n{self.output}"


def supervise(tmp_path: Path, activity: dict[str, Any], **settings: str) -> Finished:
    """Run ``supervise`` on ``activity`` to the end."""
    with supervising(tmp_path, activity, **settings) as proc:
        return finish(proc)


def wait_until(condition: Callable[[], Any], what: str, timeout: float = 60) -> Any:
    """Poll ``condition`` until it returns something truthy; fail naming ``what`` if never."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.1)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


def task_pid(pid_file: Path) -> int:
    """The pid ``tasks.py:waits_for_release`` leaves once it runs (waits for it)."""
    wait_until(pid_file.exists, "the task to start")
    return int(pid_file.read_text())


def task_log(airflow: Airflow, workload: Workload) -> list[dict[str, Any]]:
    """Our log file for this try, one JSON object per line."""
    lines = (airflow.log_folder / workload.log_path).read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


# --- item 2: outcomes Airflow reports afterwards ------------------------------------------


def test_returned_value_is_airflow_return_value_xcom_and_task_succeeds(
    airflow: Airflow, tmp_path: Path
) -> None:
    workload = airflow.queue(produce=0)["produce"]

    result = supervise(tmp_path, activity_for(airflow, workload, entrypoint="returns_value"))

    assert result.returncode == SUCCESS_OR_SKIPPED, result
    ti = airflow.rest_ti(workload)
    assert (ti["state"], ti["try_number"]) == ("success", 1)
    assert ti["end_date"] is not None
    xcom = airflow.rest_xcom(workload)
    assert xcom.status_code == 200, xcom.text
    assert xcom.json()["value"] == RETURNED


def test_workload_piped_to_supervise_stdin_runs_without_an_activity_file(
    airflow: Airflow, tmp_path: Path
) -> None:
    workload = airflow.queue(check=0)["check"]

    with supervising(
        tmp_path, activity_for(airflow, workload, entrypoint="returns_value"), on_stdin=True
    ) as proc:
        result = finish(proc)

    assert result.returncode == SUCCESS_OR_SKIPPED, result
    assert airflow.rest_ti(workload)["state"] == "success"
    assert list(tmp_path.iterdir()) == []  # the token never touched the disk


def test_task_reads_airflow_variable_and_connection_and_exchanges_xcoms(
    airflow: Airflow, tmp_path: Path
) -> None:
    queued = airflow.queue(produce=0, consume=0)
    produce, consume = queued["produce"], queued["consume"]
    first = supervise(tmp_path, activity_for(airflow, produce, entrypoint="returns_value"))
    assert first.returncode == SUCCESS_OR_SKIPPED, first

    result = supervise(
        tmp_path,
        activity_for(
            airflow,
            consume,
            entrypoint="uses_airflow_state",
            env={"INTEROP_PULL_FROM": produce.task_id},
        ),
    )

    assert result.returncode == SUCCESS_OR_SKIPPED, result
    assert airflow.rest_ti(consume)["state"] == "success"
    greeting = airflow.variable[1]
    pushed = airflow.rest_xcom(consume, key="summary")
    assert pushed.status_code == 200, pushed.text
    assert pushed.json()["value"] == {"greeting": greeting, "host": "db.example", "port": 5432}
    returned = airflow.rest_xcom(consume).json()["value"]
    assert returned == {"greeting": greeting, "login": "interop_user", "pulled": RETURNED}
    written = (airflow.log_folder / consume.log_path).read_text()
    assert "connecting to db.example with password ***" in written
    assert airflow.connection_password not in written


def test_mapped_task_instances_push_and_pull_by_map_index(airflow: Airflow, tmp_path: Path) -> None:
    first, third = airflow.queue_mapped("fan_out", 0, 2)
    one = supervise(tmp_path, activity_for(airflow, first, entrypoint="reports_map_index"))
    assert one.returncode == SUCCESS_OR_SKIPPED, one

    result = supervise(
        tmp_path,
        activity_for(airflow, third, entrypoint="reports_map_index", env={"INTEROP_SIBLING": "0"}),
    )

    assert result.returncode == SUCCESS_OR_SKIPPED, result
    for workload in (first, third):
        ti = airflow.rest_ti(workload)
        assert (ti["state"], ti["map_index"]) == ("success", workload.map_index)
    assert airflow.rest_xcom(first).json()["value"] == {"map_index": 0, "sibling": None}
    assert airflow.rest_xcom(third).json()["value"] == {
        "map_index": 2,
        "sibling": {"map_index": 0, "sibling": None},
    }


def test_failure_without_tries_left_is_failed(airflow: Airflow, tmp_path: Path) -> None:
    workload = airflow.queue(work=0)["work"]

    result = supervise(tmp_path, activity_for(airflow, workload, entrypoint="raises"))

    assert result.returncode == FAILED_OR_RETRY, result
    assert airflow.rest_ti(workload)["state"] == "failed"


def test_failure_with_tries_left_is_up_for_retry(airflow: Airflow, tmp_path: Path) -> None:
    workload = airflow.queue(work=2)["work"]

    result = supervise(tmp_path, activity_for(airflow, workload, entrypoint="raises"))

    assert result.returncode == FAILED_OR_RETRY, result
    ti = airflow.rest_ti(workload)
    assert (ti["state"], ti["max_tries"]) == ("up_for_retry", 2)


def test_next_try_after_up_for_retry_starts_clean_and_succeeds(
    airflow: Airflow, tmp_path: Path
) -> None:
    first_try = airflow.queue(work=1)["work"]
    first = supervise(tmp_path, activity_for(airflow, first_try, entrypoint="fails_on_first_try"))
    assert first.returncode == FAILED_OR_RETRY, first
    assert airflow.rest_ti(first_try)["state"] == "up_for_retry"

    second_try = airflow.retry(first_try)
    result = supervise(tmp_path, activity_for(airflow, second_try, entrypoint="fails_on_first_try"))

    assert result.returncode == SUCCESS_OR_SKIPPED, result
    assert second_try.id != first_try.id  # Airflow gives each try its own TI id (and token)
    ti = airflow.rest_ti(second_try)
    assert (ti["state"], ti["try_number"], ti["id"]) == ("success", 2, second_try.id)
    # /run listed try 1's XComs in xcom_keys_to_clear; the supervisor cleared them first.
    assert airflow.rest_xcom(second_try).json()["value"] == {"try": 2, "left_behind": None}
    assert airflow.rest_xcom(second_try, key="partial").json()["value"] == {"try": 2}
    # Both tries' logs stay readable in Airflow, each under its own attempt.
    for try_number, marker in ((1, "Task reported up_for_retry"), (2, "Task reported success")):
        events = " ".join(str(m["event"]) for m in airflow.rest_log(second_try, try_number))
        assert marker in events, (try_number, events)


def test_skip_is_skipped(airflow: Airflow, tmp_path: Path) -> None:
    workload = airflow.queue(work=1)["work"]

    result = supervise(tmp_path, activity_for(airflow, workload, entrypoint="skips"))

    assert result.returncode == SUCCESS_OR_SKIPPED, result
    assert airflow.rest_ti(workload)["state"] == "skipped"


def test_fail_is_failed_even_with_tries_left(airflow: Airflow, tmp_path: Path) -> None:
    workload = airflow.queue(work=2)["work"]

    result = supervise(tmp_path, activity_for(airflow, workload, entrypoint="fails_for_good"))

    assert result.returncode == FAILED_OR_RETRY, result
    assert airflow.rest_ti(workload)["state"] == "failed"


def test_reschedule_is_up_for_reschedule(airflow: Airflow, tmp_path: Path) -> None:
    workload = airflow.queue(work=0)["work"]

    result = supervise(tmp_path, activity_for(airflow, workload, entrypoint="reschedules"))

    assert result.returncode == SUCCESS_OR_SKIPPED, result
    assert airflow.rest_ti(workload)["state"] == "up_for_reschedule"


def test_task_killed_from_outside_is_up_for_retry_in_airflow(
    airflow: Airflow, tmp_path: Path
) -> None:
    workload = airflow.queue(work=1)["work"]
    pid_file = tmp_path / "pid"
    env = {"INTEROP_PID_FILE": str(pid_file), "INTEROP_RELEASE": str(tmp_path / "never")}
    activity = activity_for(airflow, workload, entrypoint="waits_for_release", env=env)

    with supervising(tmp_path, activity) as proc:
        os.kill(task_pid(pid_file), signal.SIGKILL)  # as the OOM killer would
        result = finish(proc)

    assert result.returncode == FAILED_OR_RETRY, result
    assert airflow.rest_ti(workload)["state"] == "up_for_retry"


@pytest.mark.parametrize(
    "entrypoint",
    # A timedelta and a datetime in trigger_kwargs, each sent in serde's tagged form.
    ["defers_then_resumes", "defers_until_a_moment"],
)
def test_deferred_task_resumes_after_airflow_runs_its_trigger(
    airflow: Airflow, tmp_path: Path, entrypoint: str
) -> None:
    deferred = airflow.queue(work=0)["work"]
    first = supervise(tmp_path, activity_for(airflow, deferred, entrypoint=entrypoint))
    assert first.returncode == SUCCESS_OR_SKIPPED, first
    assert airflow.rest_ti(deferred)["state"] == "deferred"

    resumed = airflow.resume(deferred)  # Airflow builds and runs the trigger we asked for
    result = supervise(tmp_path, activity_for(airflow, resumed, entrypoint=entrypoint))

    assert result.returncode == SUCCESS_OR_SKIPPED, result
    ti = airflow.rest_ti(resumed)
    assert (ti["state"], ti["try_number"]) == ("success", 1)
    # The runner called after_wait(context, **next_kwargs), not the entrypoint again.
    returned = airflow.rest_xcom(resumed).json()["value"]
    assert returned["next_method"] == "after_wait"
    assert returned["started"]
    # The trigger's event (a pendulum DateTime) arrives in Airflow's serde encoding.
    assert returned["event"]["__classname__"] == "pendulum.datetime.DateTime"


def test_timeout_kills_the_task_and_airflow_records_failure(
    airflow: Airflow, tmp_path: Path
) -> None:
    workload = airflow.queue(work=0)["work"]
    pid_file = tmp_path / "pid"
    env = {"INTEROP_PID_FILE": str(pid_file), "INTEROP_RELEASE": str(tmp_path / "never")}
    activity = activity_for(airflow, workload, entrypoint="waits_for_release", env=env)
    activity["timeout"] = 5  # long enough for the task to start even on a loaded machine

    with supervising(tmp_path, activity, kill_grace="1") as proc:
        task = psutil.Process(task_pid(pid_file))
        result = finish(proc)

    assert result.returncode == FAILED_OR_RETRY, result
    assert not task.is_running()
    assert airflow.rest_ti(workload)["state"] == "failed"


def test_try_that_already_ran_is_refused_and_task_code_never_runs(
    airflow: Airflow, tmp_path: Path
) -> None:
    workload = airflow.queue(work=0)["work"]
    first = supervise(tmp_path, activity_for(airflow, workload, entrypoint="returns_value"))
    assert first.returncode == SUCCESS_OR_SKIPPED, first
    pid_file = tmp_path / "pid"
    env = {"INTEROP_PID_FILE": str(pid_file), "INTEROP_RELEASE": str(tmp_path / "never")}

    again = supervise(
        tmp_path, activity_for(airflow, workload, entrypoint="waits_for_release", env=env)
    )

    assert again.returncode == SERVER_REFUSED, again
    assert not pid_file.exists()
    assert airflow.rest_ti(workload)["state"] == "success"


def test_token_not_signed_by_airflow_is_refused(airflow: Airflow, tmp_path: Path) -> None:
    workload = airflow.queue(work=0)["work"]
    forged = jwt.encode(
        {**jwt.decode(workload.token, options={"verify_signature": False}), "scope": "workload"},
        "not-airflows-secret-" * 4,
        algorithm="HS512",
    )
    activity = activity_for(airflow, workload, entrypoint="returns_value")
    activity["token"] = forged

    result = supervise(tmp_path, activity)

    assert result.returncode == SERVER_REFUSED, result
    assert airflow.rest_ti(workload)["state"] == "queued"


def test_command_task_speaking_the_line_protocol_succeeds(airflow: Airflow, tmp_path: Path) -> None:
    workload = airflow.queue(work=0)["work"]

    result = supervise(tmp_path, activity_for(airflow, workload, command=["sh", str(COMMAND_TASK)]))

    assert result.returncode == SUCCESS_OR_SKIPPED, result
    assert airflow.rest_ti(workload)["state"] == "success"
    pushed = airflow.rest_xcom(workload, key="variable_answer")
    assert pushed.status_code == 200, pushed.text
    answer = pushed.json()["value"]
    assert (answer["type"], answer["key"], answer["value"]) == (
        "VariableResult",
        *airflow.variable,
    )
    events = [line["event"] for line in task_log(airflow, workload)]
    assert "command task pushing its XCom" in events
    assert any("variable answer:" in event for event in events)


def test_heartbeats_advance_last_heartbeat_at_with_the_exchanged_token(
    airflow: Airflow, tmp_path: Path
) -> None:
    workload = airflow.queue(work=0)["work"]
    release = tmp_path / "release"
    env = {"INTEROP_PID_FILE": str(tmp_path / "pid"), "INTEROP_RELEASE": str(release)}
    activity = activity_for(airflow, workload, entrypoint="waits_for_release", env=env)

    with supervising(tmp_path, activity, heartbeat_interval="0.5") as proc:
        seen: list[str] = []

        def two_heartbeats_later() -> bool:
            row = airflow.ti_row(workload)
            if row["state"] == "queued":  # supervise has not called /run yet
                return False
            assert row["state"] == "running", row
            beat = row["last_heartbeat_at"]
            if beat and (not seen or beat > seen[-1]):
                seen.append(beat)
            return len(seen) >= 3

        wait_until(two_heartbeats_later, "last_heartbeat_at to advance twice")
        release.touch()
        result = finish(proc)

    assert result.returncode == SUCCESS_OR_SKIPPED, result
    assert airflow.rest_ti(workload)["state"] == "success"
    # The workload token is refused everywhere but /run (test_airflow_wire), so heartbeats
    # and the state report above prove the supervisor adopted the execution token it got.
    assert seen == sorted(seen)


def test_task_outlives_its_first_execution_token_by_adopting_reissued_ones(
    airflow: Airflow, tmp_path: Path
) -> None:
    workload = airflow.queue(work=0)["work"]
    release = tmp_path / "release"
    env = {"INTEROP_PID_FILE": str(tmp_path / "pid"), "INTEROP_RELEASE": str(release)}
    activity = activity_for(airflow, workload, entrypoint="waits_for_release", env=env)
    lifetime = dt.timedelta(seconds=airflow.execution_token_lifetime)

    with supervising(tmp_path, activity, heartbeat_interval="0.5") as proc:

        def heartbeat_accepted_after_first_token_expired() -> bool:
            row = airflow.ti_row(workload)
            if row["state"] != "running" or not row["last_heartbeat_at"]:
                return False
            last_beat = dt.datetime.fromisoformat(row["last_heartbeat_at"])
            started = dt.datetime.fromisoformat(row["start_date"])
            return last_beat - started > lifetime + dt.timedelta(seconds=1)

        wait_until(
            heartbeat_accepted_after_first_token_expired,
            "a heartbeat accepted after the /run token expired",
            timeout=lifetime.total_seconds() + 60,
        )
        release.touch()
        result = finish(proc)

    assert result.returncode == SUCCESS_OR_SKIPPED, result
    assert airflow.rest_ti(workload)["state"] == "success"


@pytest.mark.parametrize("action", ["mark_failed", "clear"])
def test_user_action_in_airflow_mid_run_stops_task_and_exits_5(
    airflow: Airflow, tmp_path: Path, action: str
) -> None:
    workload = airflow.queue(work=0)["work"]
    pid_file = tmp_path / "pid"
    env = {"INTEROP_PID_FILE": str(pid_file), "INTEROP_RELEASE": str(tmp_path / "never")}
    activity = activity_for(airflow, workload, entrypoint="waits_for_release", env=env)

    with supervising(tmp_path, activity, heartbeat_interval="0.5", kill_grace="2") as proc:
        task = psutil.Process(task_pid(pid_file))
        # What a user does in Airflow's UI while the task runs.
        if action == "mark_failed":
            airflow.rest_set_state(workload, "failed")
        else:
            airflow.rest_clear(workload)
        after_action = airflow.rest_ti(workload)["state"]
        result = finish(proc)

    assert result.returncode == SERVER_SAID_STOP, result
    assert not task.is_running()
    # Airflow's decision stands: the supervisor reports no state of its own over it.
    assert airflow.rest_ti(workload)["state"] == after_action


# --- item 3: the task log is Airflow's format and Airflow's reader serves it ------------------


def test_task_log_has_airflow_format_and_airflow_log_reader_serves_it(
    airflow: Airflow, tmp_path: Path
) -> None:
    workload = airflow.queue(report=0)["report"]

    result = supervise(tmp_path, activity_for(airflow, workload, entrypoint="writes_logs"))

    assert result.returncode == SUCCESS_OR_SKIPPED, result
    ours = task_log(airflow, workload)
    for line in ours:
        assert {"timestamp", "level", "event", "logger"} <= line.keys(), line
        assert line["timestamp"].endswith(("Z", "+00:00")), line
    by_event = {line["event"]: line for line in ours}
    assert by_event["plain line on stdout"]["logger"] == "task.stdout"
    assert by_event["plain line on stderr"]["logger"] == "task.stderr"
    assert by_event["structured event"]["level"] == "info"
    assert by_event["structured warning"]["level"] == "warning"

    served = airflow.rest_log(workload)
    sources = [m["event"] for m in served]
    assert any(workload.log_path in source for source in sources), sources
    shown = {m["event"]: m for m in served}
    for event in ("structured event", "structured warning", "plain line on stdout"):
        assert event in shown, sources
    assert shown["structured warning"]["level"] == "warning"
    assert shown["plain line on stdout"]["logger"] == "task.stdout"
    assert shown["structured event"]["rows"] == 3
