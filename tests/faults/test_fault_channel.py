"""Scenarios 11-13: floods of output, garbage on the channel, tasks that abuse their stdio."""

from __future__ import annotations

import json

import pytest
from faultkit import TryFactory, command, rss_sampler

from apiserver.testing import ReferenceServer

MB = 1024 * 1024


@pytest.fixture(autouse=True)
def _variable(server: ReferenceServer) -> None:
    server.admin.set_variable("fault_var", "value")


def test_11_a_million_lines_on_stdout_and_stderr_all_reach_the_log_in_order_memory_bounded(
    new_try: TryFactory,
) -> None:
    lines = 1_000_000
    t = new_try("floods_output", env={"FAULT_LINES": str(lines)})
    proc = t.start()
    samples, stop_sampling = rss_sampler(proc.pid)
    try:
        done = t.wait(timeout=120)
    finally:
        stop_sampling()

    assert done.returncode == 0, done.stderr
    assert t.state() == "success"
    out: list[str] = []
    err: list[str] = []
    with t.log_path.open("rb") as f:
        for raw in f:
            record = json.loads(raw)
            if record["logger"] == "task.stdout":
                out.append(record["event"])
            elif record["logger"] == "task.stderr":
                err.append(record["event"])
    assert out == [f"out {i:07d}" for i in range(lines)]
    assert err == [f"err {i:07d}" for i in range(lines)]
    # About 30 MB of output went through; the supervisor held a bounded amount of it.
    assert samples
    assert max(samples) < 150 * MB, max(samples) / MB
    assert max(samples) - samples[0] < 60 * MB, (samples[0] / MB, max(samples) / MB)
    t.assert_no_task_process_left()


def test_12_garbage_on_a_command_channel_gets_clear_errors_and_the_channel_resynchronises(
    new_try: TryFactory,
) -> None:
    max_line = 4 * MB
    t = new_try(cmd=command("raw_task.py", "garbage"))
    proc = t.start({"TASKVISOR_MAX_LINE": str(max_line)})
    samples, stop_sampling = rss_sampler(proc.pid)
    try:
        done = t.wait(timeout=120)
    finally:
        stop_sampling()

    assert done.returncode == 0, done.stderr
    assert t.state() == "success"
    answers = {
        a["id"]: a
        for a in map(json.loads, t.scratch_file("answers.jsonl").read_text().split("\n")[:-1])
    }
    assert sorted(answers) == [1, 2, 3, 4, 5, 6, 7, 8]
    # Valid requests before and after the garbage were answered.
    for rid in (1, 5, 7):
        assert answers[rid]["type"] == "VariableResult"
        assert answers[rid]["value"] == "value"
    assert answers[8]["type"] == "OKResponse"
    # Broken requests that carried an id got a clear error response.
    for rid, words in [
        (2, "not JSON"),
        (3, "invalid message"),
        (4, "invalid message"),
        (6, f"line longer than the limit of {max_line} bytes"),
    ]:
        assert answers[rid]["type"] == "ErrorResponse"
        assert answers[rid]["error"] == "PROTOCOL_ERROR"
        assert words in answers[rid]["detail"]["message"], answers[rid]
    # Everything broken (with or without an id) is in the log as a protocol error.
    errors = [e for e in t.supervisor_events() if e.startswith("Protocol error from the task")]
    assert len(errors) == 7, errors
    assert sum("not JSON" in e for e in errors) == 3  # text, binary junk, cut-off JSON
    assert sum("line longer than the limit" in e for e in errors) == 1
    assert any("LaunchMissiles" in e for e in errors)
    assert any("bogus" in e for e in errors)
    assert any("`id`" in e for e in errors)  # the request without an id
    # 100 MB arrived without a newline; the supervisor kept at most about one limit of it.
    assert max(samples) - samples[0] < 40 * MB, (samples[0] / MB, max(samples) / MB)
    t.assert_no_task_process_left()


@pytest.mark.parametrize(
    ("entry", "env", "state", "code"),
    [
        ("calls_exit", {}, "success", 0),
        ("calls_exit", {"FAULT_EXIT": "0"}, "success", 0),
        ("calls_exit", {"FAULT_EXIT": "3"}, "failed", 1),
        ("closes_stdio", {}, "success", 0),
        ("reads_stdin", {}, "success", 0),
        ("writes_junk", {}, "success", 0),
    ],
)
def test_13_exit_closed_stdio_stdin_reads_and_junk_on_fd1_leave_the_channel_intact(
    new_try: TryFactory, entry: str, env: dict[str, str], state: str, code: int
) -> None:
    t = new_try(entry, env=env)
    done = t.run()

    assert done.returncode == code, done.stderr
    assert t.state() == state
    xcoms = t.server.admin.xcoms_of(t.ti_id)
    assert not any(e.startswith("Protocol error") for e in t.supervisor_events())
    if entry == "calls_exit":
        assert xcoms["before_exit"] == "value"
        assert t.finished_record()["final_state"] == state
    elif entry == "closes_stdio":
        assert xcoms["return_value"] == "value"
    elif entry == "reads_stdin":
        assert xcoms["return_value"] == {"text": "", "raw": "", "var": "value"}
    else:
        assert xcoms["return_value"] == "value"
        stdout = [r["event"] for r in t.log() if r["logger"] == "task.stdout"]
        # The look-alike message went to the log as text, not to the channel.
        assert '{"type":"SucceedTask","id":99}' in stdout
        assert any("not utf-8" in line for line in stdout)
    t.assert_no_task_process_left()
