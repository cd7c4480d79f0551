"""A task try end to end: real supervise, real task process, real reference server."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
from supervise_helpers import FAST, entrypoint, supervise

from apiserver.testing import ReferenceServer

EXAMPLES = Path(__file__).parents[2] / "examples"


def test_success_relays_variable_connection_and_xcom_round_trips(server: ReferenceServer) -> None:
    server.admin.set_variable("greeting", "hello")
    server.admin.set_connection(
        "warehouse", conn_type="postgres", host="db.local", login="ann", password="s3cr3t-pw"
    )
    ti_id, activity = server.create_task(entrypoint("round_trips"))

    run = supervise(activity)

    assert run.exit_code == 0, run.stderr
    assert server.admin.get_task_instance(ti_id).state == "success"
    assert server.admin.xcoms_of(ti_id)["return_value"] == {
        "greeting": "hello",
        "login": "ann",
        "pulled": [1, 2, 3],
        "try": 1,
    }
    assert server.admin.get_variable("written_by_task") == "hello back"
    assert "round trips done" in run.events("task")


def test_pushed_context_is_served_without_the_server(server: ReferenceServer) -> None:
    context = {
        "variables": {"pushed_var": "from-activity"},
        "connections": [{"conn_id": "pushed_conn", "conn_type": "http", "host": "pushed.example"}],
    }
    ti_id, activity = server.create_task(entrypoint("from_push_context"), context=context)

    run = supervise(activity)

    assert run.exit_code == 0, run.stderr
    assert server.admin.xcoms_of(ti_id)["return_value"] == "from-activity:pushed.example"


def test_print_stderr_and_fd1_are_captured_in_order_per_stream(server: ReferenceServer) -> None:
    _, activity = server.create_task(entrypoint("writes_all_streams"))

    run = supervise(activity)

    assert run.exit_code == 0, run.stderr
    stdout = run.events("task.stdout")
    assert stdout[:6] == ["print 0", "fd1 0", "print 1", "fd1 1", "print 2", "fd1 2"]
    assert "from a subprocess" in stdout
    assert "stdin says ''" in stdout
    assert run.events("task.stderr") == ["stderr 0", "stderr 1", "stderr 2"]
    assert all(r["level"] == "error" for r in run.records() if r["logger"] == "task.stderr")


def test_task_exception_fails_with_traceback_in_log(server: ReferenceServer) -> None:
    ti_id, activity = server.create_task(entrypoint("raises"), max_tries=0)

    run = supervise(activity)

    assert run.exit_code == 1
    assert server.admin.get_task_instance(ti_id).state == "failed"
    assert "the warehouse is on fire" in run.log_path.read_text()
    assert "Traceback" in run.log_path.read_text()


def test_task_exception_with_retries_left_is_up_for_retry(server: ReferenceServer) -> None:
    ti_id, activity = server.create_task(entrypoint("raises"), max_tries=2)

    run = supervise(activity)

    assert run.exit_code == 1
    assert server.admin.get_task_instance(ti_id).state == "up_for_retry"


def test_skip_is_reported_skipped_and_exits_0(server: ReferenceServer) -> None:
    ti_id, activity = server.create_task(entrypoint("skips"))

    run = supervise(activity)

    assert run.exit_code == 0, run.stderr
    assert server.admin.get_task_instance(ti_id).state == "skipped"


def test_non_json_return_value_fails_with_a_clear_message(server: ReferenceServer) -> None:
    ti_id, activity = server.create_task(entrypoint("returns_unserialisable"))

    run = supervise(activity)

    assert run.exit_code == 1
    assert server.admin.get_task_instance(ti_id).state == "failed"
    assert "set" in run.log_path.read_text()
    assert "JSON" in run.log_path.read_text()


def test_import_error_in_entrypoint_fails_with_the_error_in_the_log(
    server: ReferenceServer, tmp_path: Path
) -> None:
    broken = tmp_path / "broken_task.py"
    broken.write_text("import module_that_does_not_exist_anywhere\n\ndef main():\n    pass\n")
    ti_id, activity = server.create_task(f"{broken}:main")

    run = supervise(activity)

    assert run.exit_code == 1
    assert server.admin.get_task_instance(ti_id).state == "failed"
    assert "module_that_does_not_exist_anywhere" in run.log_path.read_text()


def test_run_refused_with_409_exits_3_and_task_code_never_runs(
    server: ReferenceServer, tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    ti_id, activity = server.create_task(entrypoint("writes_marker"), env={"MARKER": str(marker)})
    server.admin.set_state(ti_id, "success")  # no longer queued

    run = supervise(activity)

    assert run.exit_code == 3
    assert not marker.exists()
    assert "refused" in run.stderr


def test_heartbeat_409_kills_task_group_and_exits_5(
    server: ReferenceServer, tmp_path: Path
) -> None:
    pids_file = tmp_path / "pids"
    ti_id, activity = server.create_task(
        entrypoint("sleeps_with_child"), env={"PIDS": str(pids_file)}
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "supervisor", str(activity)],
        env={**os.environ, **FAST, "TASKVISOR_HEARTBEAT_INTERVAL": "0.2"},
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for(lambda: pids_file.exists() and pids_file.read_text().endswith("\n"))
        task_pid, grandchild_pid = map(int, pids_file.read_text().split())
        server.admin.set_state(ti_id, "failed")  # e.g. marked failed in the UI

        proc.communicate(timeout=30)
        assert proc.returncode == 5
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not psutil.pid_exists(task_pid)
    assert not psutil.pid_exists(grandchild_pid)
    assert server.admin.get_task_instance(ti_id).state == "failed"  # nothing overwrote it
    doc = json.loads(Path(activity).read_text())
    assert "must stop" in Path(doc["log_path"]).read_text()


def test_a_task_without_the_sdk_gets_pushed_values_at_start_and_on_request(
    server: ReferenceServer,
) -> None:
    script = """
read -r startup; echo "startup: $startup" >&2
echo '{"type":"Hello","protocol_version":1,"sdk":"sh"}'
echo '{"type":"GetVariable","id":1,"key":"pushed_var"}'
read -r answer; echo "answer: $answer" >&2
echo '{"type":"SucceedTask","id":2}'; read -r answer
"""
    context = {"variables": {"pushed_var": "from-activity"}}
    ti_id, activity = server.create_task(command=["sh", "-c", script], context=context)

    run = supervise(activity)

    assert run.exit_code == 0, run.stderr
    assert server.admin.get_task_instance(ti_id).state == "success"
    startup, answer = run.events("task.stderr")
    pushed = json.loads(startup.removeprefix("startup: "))["pushed"]
    assert pushed == {"variables": {"pushed_var": "from-activity"}, "connections": []}
    assert json.loads(answer.removeprefix("answer: ")) == {
        "type": "VariableResult",
        "id": 1,
        "key": "pushed_var",
        "value": "from-activity",
    }


@pytest.mark.parametrize("state", ["failed", "skipped"])
def test_the_end_date_the_task_reports_with_its_state_is_the_one_the_server_gets(
    server: ReferenceServer, state: str
) -> None:
    script = f"""
read -r startup
echo '{{"type":"Hello","protocol_version":1,"sdk":"sh"}}'
echo '{{"type":"TaskState","id":1,"state":"{state}","end_date":"2026-03-04T05:06:07Z"}}'
read -r answer
"""
    ti_id, activity = server.create_task(command=["sh", "-c", script])

    run = supervise(activity)

    ti = server.admin.get_task_instance(ti_id)
    assert ti.state == state, run.stderr
    assert ti.end_date == dt.datetime(2026, 3, 4, 5, 6, 7, tzinfo=dt.UTC)


def test_a_misspelt_setting_in_the_environment_is_named_on_stderr(
    server: ReferenceServer,
) -> None:
    _, activity = server.create_task(entrypoint("skips"))

    run = supervise(activity, env={"TASKVISOR_HEARTBEAT_INTERVL": "1"})

    assert run.exit_code == 0, run.stderr
    assert "warning: ignored TASKVISOR_HEARTBEAT_INTERVL: not a supervise setting" in run.stderr


def test_command_task_speaks_the_protocol_in_plain_shell(server: ReferenceServer) -> None:
    server.admin.set_variable("greeting", "hi from the server")
    ti_id, activity = server.create_task(command=["sh", str(EXAMPLES / "command_task.sh")])

    run = supervise(activity)

    assert run.exit_code == 0, run.stderr
    assert server.admin.get_task_instance(ti_id).state == "success"
    assert server.admin.xcoms_of(ti_id)["return_value"] == "done in sh"
    stderr = "\n".join(run.events("task.stderr"))
    assert "hi from the server" in stderr
    assert "shell task did its work" in run.events("task")


def test_invalid_activity_exits_2_and_contacts_nothing(
    server: ReferenceServer, tmp_path: Path
) -> None:
    ti_id, activity = server.create_task(entrypoint("writes_marker"), extra_activity={"tiemout": 5})

    proc = subprocess.run(
        [sys.executable, "-m", "supervisor", str(activity)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )

    assert proc.returncode == 2
    assert "$.tiemout" in proc.stderr
    assert server.admin.get_task_instance(ti_id).state == "queued"


def test_supervise_never_leaves_its_zygote_behind_on_invalid_activity(tmp_path: Path) -> None:
    activity = tmp_path / "a.json"
    activity.write_text("{}")
    proc = subprocess.run(
        [sys.executable, "-m", "supervisor", str(activity)],
        capture_output=True,
        timeout=30,
        check=False,
    )

    assert proc.returncode == 2
    # The forked task child shares supervise's command line; none may outlive it.
    leftovers = [
        p for p in psutil.process_iter(["cmdline"]) if str(activity) in (p.info["cmdline"] or [])
    ]
    assert leftovers == []


def _wait_for(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    """Poll a condition the test cannot be notified of (a file another process writes)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


def test_defer_is_reported_deferred_with_trigger_and_resume_method(server: ReferenceServer) -> None:
    ti_id, activity = server.create_task(entrypoint("defers"))

    run = supervise(activity)

    assert run.exit_code == 0, run.stderr
    ti = server.admin.get_task_instance(ti_id)
    assert ti.state == "deferred"
    assert ti.state_payload is not None
    assert ti.state_payload["classpath"] == "triggers.TimeDeltaTrigger"
    assert ti.state_payload["trigger_kwargs"] == {"seconds": 30}
    assert ti.state_payload["next_method"] == "resume"
    assert ti.state_payload["next_kwargs"] == {"cursor": 7}


def test_reschedule_is_reported_up_for_reschedule_with_its_date(server: ReferenceServer) -> None:
    ti_id, activity = server.create_task(entrypoint("reschedules"))

    run = supervise(activity)

    assert run.exit_code == 0, run.stderr
    ti = server.admin.get_task_instance(ti_id)
    assert ti.state == "up_for_reschedule"
    assert ti.state_payload is not None
    assert ti.state_payload["reschedule_date"].startswith("2030-01-02T03:04:05")
