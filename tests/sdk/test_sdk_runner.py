"""The task runner end to end: ``sdk.runner.main`` in a forked child on real pipes.

The test process plays the supervisor (``sdk_peer``); the child is set up the way the
supervisor's zygote leaves it (channel on fds 0/1, stderr pipe on fd 2, a stdout pipe).
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import msgspec
import pytest
from sdk_peer import TaskRun, raw, run_forked_task, startup_details

from comms.messages import (
    DeferTask,
    ErrorCode,
    ErrorResponse,
    GetVariable,
    Log,
    OKResponse,
    RescheduleTask,
    RetryTask,
    SetXCom,
    SucceedTask,
    TaskState,
    VariableResult,
)
from sdk.runner import RUNNER_BROKE


def write_task(directory: Path, source: str, name: str = "task.py") -> None:
    (directory / name).write_text(textwrap.dedent(source))


def run_task_source(tmp_path: Path, source: str, **kwargs: object) -> TaskRun:
    write_task(tmp_path, source)
    return run_forked_task("task.py:main", cwd=str(tmp_path), **kwargs)  # type: ignore[arg-type]


def error_logs(run: TaskRun) -> list[Log]:
    return [log for log in run.logs if log.level == "error"]


def test_success_pushes_the_return_value_then_sends_succeed_task_and_exits_0(
    tmp_path: Path,
) -> None:
    run = run_task_source(
        tmp_path,
        """
        def main(context):
            return {"task": context.task_id, "try": context.try_number, "dag": context.dag_id}
        """,
    )
    assert run.messages[0] == SetXCom(
        id=1, key="return_value", value=raw({"task": "task", "try": 2, "dag": "dag"})
    )
    assert isinstance(run.terminal, SucceedTask)
    assert run.terminal.end_date is not None
    assert run.exit_status == 0
    assert run.eof_after_exit


def test_sys_argv_names_the_entrypoint_not_the_supervisors_command_line(tmp_path: Path) -> None:
    run = run_task_source(tmp_path, "import sys\ndef main():\n    return sys.argv\n")
    assert run.messages[0] == SetXCom(id=1, key="return_value", value=raw(["task.py:main"]))


def test_a_callable_without_parameters_is_called_without_the_context(tmp_path: Path) -> None:
    run = run_task_source(tmp_path, "def main():\n    return None\n")
    assert run.messages == [run.terminal]
    assert isinstance(run.terminal, SucceedTask)


def test_module_entrypoint_is_imported_from_sys_path(tmp_path: Path) -> None:
    package = tmp_path / "mytasks"
    package.mkdir()
    (package / "__init__.py").write_text("")
    write_task(
        package, "class Jobs:\n    @staticmethod\n    def run():\n        return 42\n", "jobs.py"
    )
    run = run_forked_task("mytasks.jobs:Jobs.run", cwd=str(tmp_path))
    assert run.messages[0] == SetXCom(id=1, key="return_value", value=raw(42))
    assert isinstance(run.terminal, SucceedTask)


def test_sdk_calls_are_relayed_and_answered(tmp_path: Path) -> None:
    def answer(request: object) -> object:
        if isinstance(request, GetVariable):
            return VariableResult(id=request.id, key=request.key, value="from supervisor")
        return OKResponse(id=request.id)  # type: ignore[attr-defined]

    run = run_task_source(
        tmp_path,
        """
        import sdk

        def main():
            sdk.log.info("got", value=sdk.Variable.get("k"))
        """,
        answer=answer,
    )
    assert run.requests[0] == GetVariable(id=1, key="k")
    assert run.logs[0].fields == {"value": "from supervisor"}
    assert isinstance(run.terminal, SucceedTask)


def test_print_os_write_and_subprocess_output_land_on_the_stdout_pipe(tmp_path: Path) -> None:
    run = run_task_source(
        tmp_path,
        """
        import os, subprocess, sys

        def main():
            print("from print")
            os.write(1, b"from os.write\\n")
            subprocess.run(["echo", "from subprocess"], check=True)
            print("to stderr", file=sys.stderr)
            os.write(2, b"raw stderr\\n")
        """,
    )
    assert run.stdout == b"from print\nfrom os.write\nfrom subprocess\n"
    assert run.stderr == b"to stderr\nraw stderr\n"
    assert isinstance(run.terminal, SucceedTask)


def test_without_a_stdout_pipe_stdout_goes_to_stderr(tmp_path: Path) -> None:
    run = run_task_source(
        tmp_path,
        "import os\ndef main():\n    print('hi')\n    os.write(1, b'raw\\n')\n",
        with_stdout_pipe=False,
    )
    assert run.stderr == b"hi\nraw\n"
    assert isinstance(run.terminal, SucceedTask)


def test_reading_stdin_gives_end_of_file(tmp_path: Path) -> None:
    run = run_task_source(
        tmp_path,
        """
        import os, subprocess, sys

        def main():
            return [sys.stdin.read(), os.read(0, 10).decode(),
                    subprocess.run(["cat"], capture_output=True).stdout.decode()]
        """,
    )
    assert run.messages[0] == SetXCom(id=1, key="return_value", value=raw(["", "", ""]))


def test_closing_stdio_and_builtin_exit_cannot_break_the_channel(tmp_path: Path) -> None:
    run = run_task_source(
        tmp_path,
        """
        import os, sys
        import sdk

        def main():
            sys.stdout.close()
            sys.stdin.close()
            os.close(0)
            os.close(1)
            sdk.XCom.push("still", "works")
            exit()
        """,
    )
    assert run.messages[0] == SetXCom(id=1, key="still", value=raw("works"))
    assert isinstance(run.terminal, SucceedTask)
    assert run.exit_status == 0


def test_stdio_replaced_by_task_code_cannot_break_the_ending(tmp_path: Path) -> None:
    run = run_task_source(
        tmp_path,
        """
        import sys

        def main():
            sys.stdout = object()
            sys.stderr = None
        """,
    )
    assert isinstance(run.terminal, SucceedTask)
    assert run.exit_status == 0


def test_a_process_forked_by_the_task_neither_uses_the_channel_nor_reports(
    tmp_path: Path,
) -> None:
    run = run_task_source(
        tmp_path,
        """
        import os
        import sdk

        def main():
            pid = os.fork()
            if pid == 0:
                try:
                    sdk.Variable.get("k")
                except sdk.ChannelClosedError as exc:
                    print("forked child:", exc)
                return "from the forked child"
            os.waitpid(pid, 0)
            return "from the task"
        """,
    )
    assert run.requests == [
        SetXCom(id=1, key="return_value", value=raw("from the task")),
        run.terminal,
    ]
    assert isinstance(run.terminal, SucceedTask)
    assert b"forked child: the SDK cannot be used from a process forked by the task" in run.stdout


def test_the_channel_is_not_inherited_by_subprocesses(tmp_path: Path) -> None:
    run = run_task_source(
        tmp_path,
        """
        import subprocess

        def main():
            out = subprocess.run(["ls", "/proc/self/fd"], capture_output=True, text=True).stdout
            return sorted(int(fd) for fd in out.split())
        """,
    )
    inherited = msgspec.json.decode(run.messages[0].value)
    assert inherited[:3] == [0, 1, 2]
    assert all(fd < 100 for fd in inherited)


def test_atexit_handlers_do_not_run(tmp_path: Path) -> None:
    run = run_task_source(
        tmp_path,
        """
        import atexit

        def main():
            atexit.register(print, "atexit ran")
        """,
    )
    assert b"atexit ran" not in run.stdout
    assert run.exit_status == 0


def test_stdlib_logging_reaches_the_log_at_info_and_above(tmp_path: Path) -> None:
    run = run_task_source(
        tmp_path,
        """
        import logging

        def main():
            logging.getLogger("my.task").info("step %d", 1)
            logging.getLogger("my.task").debug("not shown by default")
        """,
    )
    assert [(log.logger, log.level, log.event) for log in run.logs] == [
        ("my.task", "info", "step 1")
    ]


def test_warnings_reach_the_log_and_inherited_logging_handlers_are_dropped(
    tmp_path: Path,
) -> None:
    run = run_task_source(
        tmp_path,
        """
        import logging, warnings

        def main():
            warnings.simplefilter("always")  # this test process turns warnings into errors
            warnings.warn("old api", UserWarning, stacklevel=1)
            return [type(h).__name__ for h in logging.getLogger().handlers]
        """,
    )
    assert run.logs[0].logger == "py.warnings"
    assert run.logs[0].level == "warning"
    assert "UserWarning: old api" in run.logs[0].event
    assert run.requests[0] == SetXCom(id=1, key="return_value", value=raw(["LogHandler"]))


def test_threads_of_a_task_share_the_channel(tmp_path: Path) -> None:
    def answer(request: object) -> object:
        assert isinstance(request, GetVariable)
        return VariableResult(id=request.id, key=request.key, value=request.key.upper())

    run = run_task_source(
        tmp_path,
        """
        from concurrent.futures import ThreadPoolExecutor
        import sdk

        def main():
            with ThreadPoolExecutor(8) as pool:
                values = list(pool.map(sdk.Variable.get, [f"k{i}" for i in range(40)]))
            assert values == [f"K{i}" for i in range(40)], values
        """,
        answer=answer,
    )
    assert isinstance(run.terminal, SucceedTask), run.logs


# --- outcomes ---------------------------------------------------------------------------

FAILING = """
def main():
    raise ValueError("bad input")
"""


def test_an_exception_fails_the_task_with_the_traceback_in_the_log(tmp_path: Path) -> None:
    run = run_task_source(tmp_path, FAILING)
    assert run.terminal.state == "failed"
    assert isinstance(run.terminal, TaskState)
    assert run.terminal.reason == "ValueError: bad input"
    (record,) = error_logs(run)
    assert "Traceback" in record.fields["exception"]
    assert 'raise ValueError("bad input")' in record.fields["exception"]
    assert run.exit_status == 0


def test_an_exception_asks_for_retry_when_the_context_says_should_retry(tmp_path: Path) -> None:
    run = run_task_source(tmp_path, FAILING, should_retry=True)
    assert isinstance(run.terminal, RetryTask)
    assert run.terminal.reason == "ValueError: bad input"
    assert error_logs(run)


@pytest.mark.parametrize("should_retry", [True, False])
def test_skip_ends_the_task_skipped_even_when_retry_is_possible(
    tmp_path: Path, should_retry: bool
) -> None:
    run = run_task_source(
        tmp_path,
        """
        import sdk

        def main():
            try:
                raise sdk.Skip("nothing to do")
            except Exception:
                raise AssertionError("a broad except must not catch an outcome")
        """,
        should_retry=should_retry,
    )
    assert run.terminal == TaskState(
        id=1, state="skipped", reason="nothing to do", end_date=run.terminal.end_date
    )


def test_fail_ends_the_task_failed_without_retry(tmp_path: Path) -> None:
    run = run_task_source(
        tmp_path,
        "import sdk\ndef main():\n    raise sdk.Fail('data is corrupt')\n",
        should_retry=True,
    )
    assert isinstance(run.terminal, TaskState)
    assert (run.terminal.state, run.terminal.reason) == ("failed", "data is corrupt")


def test_defer_sends_defer_task(tmp_path: Path) -> None:
    run = run_task_source(
        tmp_path,
        """
        import datetime as dt
        import sdk

        def main():
            raise sdk.Defer("triggers.Wait", trigger_kwargs={"s": 5}, method_name="resume",
                            kwargs={"n": 1}, timeout=dt.timedelta(minutes=1))
        """,
    )
    assert run.terminal == DeferTask(
        id=1,
        classpath="triggers.Wait",
        trigger_kwargs={"s": 5},
        trigger_timeout=60.0,
        next_method="resume",
        next_kwargs={"n": 1},
    )


def test_dates_and_durations_in_trigger_kwargs_are_sent_as_airflow_serde_objects(
    tmp_path: Path,
) -> None:
    run = run_task_source(
        tmp_path,
        """
        import datetime as dt
        import sdk

        def main():
            raise sdk.Defer("triggers.Wait", trigger_kwargs={
                "delta": dt.timedelta(minutes=1),
                "moments": [dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc), dt.date(2030, 1, 2)],
                "plain": {"n": 1},
            })
        """,
    )
    assert isinstance(run.terminal, DeferTask)
    assert run.terminal.trigger_kwargs == {
        "delta": {"__classname__": "datetime.timedelta", "__version__": 2, "__data__": 60.0},
        "moments": [
            {"__classname__": "datetime.datetime", "__version__": 2, "__data__": 1893456000.0},
            {"__classname__": "datetime.date", "__version__": 2, "__data__": "2030-01-02"},
        ],
        "plain": {"n": 1},
    }


def test_a_naive_datetime_in_trigger_kwargs_fails_the_task_saying_why(tmp_path: Path) -> None:
    run = run_task_source(
        tmp_path,
        """
        import datetime as dt
        import sdk

        def main():
            raise sdk.Defer("triggers.Wait", trigger_kwargs={"at": dt.datetime(2030, 1, 1)})
        """,
    )
    assert isinstance(run.terminal, TaskState)
    assert run.terminal.state == "failed"
    assert "timezone-aware" in (run.terminal.reason or "")


RESUMABLE = """
import sdk

def main():
    raise sdk.Defer("triggers.Wait", method_name="resume", kwargs={"n": 1})

def resume(context, n, event=None):
    return {"method": context.next_method, "n": n, "event": event}

class Sensor:
    def poke(context):
        raise sdk.Defer("triggers.Wait", method_name="done")

    def done(context, event):
        return f"{context.task_id} done after {event}"
"""


def test_a_resumed_task_calls_the_method_it_deferred_to_with_its_kwargs(tmp_path: Path) -> None:
    write_task(tmp_path, RESUMABLE)
    resumed = startup_details(
        "task.py:main", next_method="resume", next_kwargs={"n": 1, "event": "fired"}
    )
    run = run_forked_task("task.py:main", cwd=str(tmp_path), first_line=resumed)
    assert run.messages[0] == SetXCom(
        id=1, key="return_value", value=raw({"method": "resume", "n": 1, "event": "fired"})
    )
    assert isinstance(run.terminal, SucceedTask)


def test_a_method_entrypoint_resumes_at_the_method_of_the_same_class(tmp_path: Path) -> None:
    write_task(tmp_path, RESUMABLE)
    resumed = startup_details("task.py:Sensor.poke", next_method="done", next_kwargs={"event": 3})
    run = run_forked_task("task.py:Sensor.poke", cwd=str(tmp_path), first_line=resumed)
    assert run.messages[0] == SetXCom(id=1, key="return_value", value=raw("task done after 3"))


def test_resuming_at_a_method_that_does_not_exist_fails_naming_it(tmp_path: Path) -> None:
    write_task(tmp_path, RESUMABLE)
    resumed = startup_details("task.py:main", next_method="gone", next_kwargs={})
    run = run_forked_task("task.py:main", cwd=str(tmp_path), first_line=resumed)
    assert isinstance(run.terminal, TaskState)
    assert run.terminal.state == "failed"
    assert "has no attribute 'gone'" in (run.terminal.reason or "")


def test_reschedule_sends_reschedule_task(tmp_path: Path) -> None:
    run = run_task_source(
        tmp_path,
        """
        import datetime as dt
        import sdk

        def main():
            raise sdk.Reschedule(dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc))
        """,
    )
    assert isinstance(run.terminal, RescheduleTask)
    assert run.terminal.reschedule_date.year == 2030


def test_a_return_value_that_is_not_json_fails_the_task_naming_the_type(tmp_path: Path) -> None:
    run = run_task_source(
        tmp_path,
        "import decimal\ndef main():\n    return {'total': decimal.Decimal('1.5')}\n",
        should_retry=True,
    )
    assert not any(isinstance(m, SetXCom) for m in run.messages)
    assert isinstance(run.terminal, TaskState)
    assert run.terminal.state == "failed"
    assert "decimal.Decimal" in (run.terminal.reason or "")
    assert "['total']" in (run.terminal.reason or "")
    (record,) = error_logs(run)
    assert "decimal.Decimal" in record.fields["error"]
    assert "exception" not in record.fields  # the runner's own frames would be noise


@pytest.mark.parametrize(
    ("entrypoint", "files", "expected"),
    [
        ("no_such_module:main", {}, "ModuleNotFoundError: No module named 'no_such_module'"),
        ("missing.py:main", {}, "FileNotFoundError: entrypoint file 'missing.py' does not exist"),
        ("broken.py:main", {"broken.py": "def main(:\n"}, "SyntaxError"),
        ("raises.py:main", {"raises.py": "import nope_xyz\n"}, "ModuleNotFoundError"),
        ("ok.py:absent", {"ok.py": "x = 1\n"}, "has no attribute 'absent'"),
        ("ok.py:x", {"ok.py": "x = 1\n"}, "is a int, not callable"),
        ("no-colon", {}, "entrypoint must be"),
    ],
)
@pytest.mark.parametrize("should_retry", [False, True])
def test_an_entrypoint_that_cannot_be_loaded_is_a_task_error_with_the_error_logged(
    tmp_path: Path, entrypoint: str, files: dict[str, str], expected: str, should_retry: bool
) -> None:
    for name, source in files.items():
        write_task(tmp_path, source, name)
    run = run_forked_task(entrypoint, cwd=str(tmp_path), should_retry=should_retry)
    assert isinstance(run.terminal, RetryTask if should_retry else TaskState)
    assert expected in (run.terminal.reason or "") or expected in run.logs[0].fields["exception"]
    assert error_logs(run)
    assert run.exit_status == 0


@pytest.mark.parametrize("call", ["sys.exit()", "sys.exit(0)", "exit(0)", "raise SystemExit"])
def test_system_exit_0_or_none_is_success(tmp_path: Path, call: str) -> None:
    run = run_task_source(tmp_path, f"import sys\ndef main():\n    {call}\n")
    assert isinstance(run.terminal, SucceedTask)
    assert run.exit_status == 0


@pytest.mark.parametrize(
    ("call", "reason"), [("sys.exit(3)", "SystemExit: 3"), ("exit('bye')", "SystemExit: bye")]
)
def test_other_system_exits_are_task_errors(tmp_path: Path, call: str, reason: str) -> None:
    run = run_task_source(tmp_path, f"import sys\ndef main():\n    {call}\n", should_retry=True)
    assert isinstance(run.terminal, RetryTask)
    assert run.terminal.reason == reason
    assert run.exit_status == 0


def test_a_first_line_other_than_startup_details_exits_non_zero_without_running_the_task(
    tmp_path: Path,
) -> None:
    write_task(tmp_path, "def main():\n    print('ran')\n")
    run = run_forked_task(
        "task.py:main",
        cwd=str(tmp_path),
        first_line=ErrorResponse(id=1, error=ErrorCode.GENERIC_ERROR),
    )
    assert run.terminal is None
    assert run.exit_status == RUNNER_BROKE
    assert run.stdout == b""
    assert b"must be StartupDetails" in run.stderr


def test_the_channel_dying_before_the_terminal_answer_exits_non_zero(tmp_path: Path) -> None:
    run = run_task_source(
        tmp_path,
        "import sdk\ndef main():\n    sdk.Variable.get('k')\n",
        answer=lambda request: None,  # the supervisor goes away instead of answering
    )
    assert run.terminal is None
    assert run.exit_status == RUNNER_BROKE
    assert b"ChannelClosedError" in run.stderr


def test_a_startup_without_entrypoint_exits_non_zero(tmp_path: Path) -> None:
    run = run_forked_task(None, cwd=str(tmp_path))
    assert run.terminal is None
    assert run.exit_status == RUNNER_BROKE
    assert b"no entrypoint" in run.stderr
