"""Scenario 19: ``supervise`` itself is SIGKILLed (OOM killer, node drain, a root task).

The task must not run on unsupervised, and the log lines the supervisor had read must already
be on disk: Airflow's log view tails the file while the task runs, and nothing flushes a
killed process's buffers.
"""

from __future__ import annotations

import signal

from faultkit import Try, TryFactory, wait_for

OUTPUT = {  # (logger, event) of what the task wrote
    ("task.stdout", "progress: step 1 of 3"),
    ("task.stderr", "warning: step 1 was slow"),
    ("task", "progress record"),
}


def test_19_log_lines_reach_the_file_while_the_task_runs(new_try: TryFactory) -> None:
    t = new_try("reports_progress_and_waits")
    t.start()
    t.wait_for_file("ready")

    # Still running, nothing ended the try: the lines are in the file all the same.
    wait_for(lambda: _logged(t) >= OUTPUT, timeout=10, what="the task's output in the log")

    assert t.process is not None
    assert t.process.poll() is None
    t.release()
    assert t.wait().returncode == 0


def test_19_sigkill_of_supervise_keeps_what_was_read_and_the_task_dies_with_it(
    new_try: TryFactory,
) -> None:
    t = new_try("reports_progress_and_waits")
    proc = t.start()
    t.wait_for_file("ready")
    wait_for(lambda: _logged(t) >= OUTPUT, timeout=10, what="the task's output in the log")

    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=10) == -signal.SIGKILL

    # The parent-death signal ends the task: it never runs on unsupervised.
    wait_for(lambda: not t.task_processes(), timeout=10, what="the task to die")
    t.assert_no_task_process_left()
    assert _logged(t) >= OUTPUT | {("supervisor", "Starting task")}
    # Airflow's view: the try stays running until its heartbeat timeout (docs/faults.md).
    assert t.state() == "running"


def _logged(t: Try) -> set[tuple[str, str]]:
    return {(r["logger"], r["event"]) for r in t.log()}
