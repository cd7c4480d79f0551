"""Property 6: a task that abuses the channel gets a clear error and changes nothing.

``tasks/raw_channel.py`` writes raw lines (no SDK) and records every answer. Each abuse is
answered with ``PROTOCOL_ERROR`` (or, when its line has no readable id, a log record), and
the server is checked afterwards: the other task instance and this one's XComs are as they
were.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from security_harness import (
    RAW_TASK,
    log_records,
    reference_server,  # noqa: F401 (the server fixture)
    supervise,
)

from apiserver.testing import ReferenceServer
from comms.framing import MAX_NESTING

MAX_LINE = 4096


def line(**fields: Any) -> str:
    return json.dumps(fields)


def step(text: str, wait: int | None = None, count: int = 1) -> dict[str, Any]:
    return {"line": text, "await": wait, "count": count}


def test_abusive_lines_are_refused_and_change_nothing(
    server: ReferenceServer, tmp_path: Path
) -> None:
    admin = server.admin
    admin.set_variable("abuse_var", "value")
    b_id = admin.create_task_instance(dag_id="victim", task_id="b")
    b = admin.get_task_instance(b_id)
    admin.set_xcom(b.dag_id, b.run_id, b.task_id, key="b_value", value="original")
    b_before = (b.state, b.hostname, b.pid, b.state_payload)
    b_ti = {
        "id": b_id,
        "dag_id": b.dag_id,
        "task_id": b.task_id,
        "run_id": b.run_id,
        "try_number": 1,
        "map_index": -1,
    }
    as_b = {"dag_id": b.dag_id, "run_id": b.run_id, "task_id": b.task_id, "map_index": -1}
    startup = {
        "type": "StartupDetails",
        "protocol_version": 1,
        "ti": b_ti,
        "start_date": "2026-01-01T00:00:00Z",
        "entrypoint": "evil:main",
    }
    script = [
        step(line(type="SetXCom", id=1, key="b_value", value="forged", **as_b), 1),
        step(line(type="DeleteXCom", id=2, key="b_value", **as_b), 2),
        step(line(type="SucceedTask", id=3, ti_id=b_id), 3),
        step(line(type="TaskState", id=4, state="failed", ti=b_ti), 4),
        step(line(**startup, id=5), 5),
        step(line(**startup)),
        step(line(type="ErrorResponse", id=6, error="PERMISSION_DENIED", detail={}), 6),
        step(line(type="OKResponse", id=7), 7),
        step(line(type="SetXCom", id=8, key="replayed", value=1), 8),
        step(line(type="SetXCom", id=8, key="replayed", value=2), 8),
        step(line(type="SetXCom", id=9, key="twin", value="first")),
        step(line(type="SetXCom", id=9, key="twin", value="second"), 9, count=2),
        step(line(type="SetXCom", id=10, key="huge", value="x" * 2 * MAX_LINE), 10),
        step(line(type="SetXCom", key="huge2", value="x" * 2 * MAX_LINE, id=11)),
        step(line(type="Cancel", reason="the task says so")),
        step(line(type="Hello", protocol_version=1)),
        step(line(type="GetVariable", id=12, key="abuse_var"), 12),
        step(line(type="SucceedTask", id=13), 13),
    ]
    out = tmp_path / "answers.jsonl"
    a_id, activity = server.create_task(
        command=[sys.executable, RAW_TASK],
        env={"RAW_SCRIPT": json.dumps(script), "RAW_OUT": str(out)},
    )
    result = supervise(activity, options=["--max-line", str(MAX_LINE)])
    assert result.returncode == 0, result.stderr
    answers = [json.loads(text) for text in out.read_text().splitlines()]
    assert answers[0]["type"] == "StartupDetails"
    assert answers[0]["ti"]["id"] == a_id
    by_id: dict[int, list[dict[str, Any]]] = {}
    for answer in answers[1:]:
        by_id.setdefault(answer["id"], []).append(answer)

    def refused(rid: int) -> str:
        (answer,) = by_id[rid]
        assert answer["type"] == "ErrorResponse", answer
        assert answer["error"] == "PROTOCOL_ERROR", answer
        message: str = answer["detail"]["message"]
        return message

    for rid, field in ((1, "dag_id"), (2, "dag_id"), (3, "ti_id"), (4, "ti")):
        assert f"unknown field `{field}`" in refused(rid), rid
    for rid in (5, 6, 7):
        assert refused(rid)  # not something a task may send
    assert by_id[8][0] == {"type": "OKResponse", "id": 8}
    assert "request id 8 was already used" in by_id[8][1]["detail"]["message"]
    assert sorted(a["type"] for a in by_id[9]) == ["ErrorResponse", "OKResponse"]
    assert refused(10) == f"line longer than the limit of {MAX_LINE} bytes"
    assert 11 not in by_id  # its id is beyond the first 4 KiB: no answer, a log record
    assert by_id[12] == [{"type": "VariableResult", "id": 12, "key": "abuse_var", "value": "value"}]
    assert by_id[13] == [{"type": "OKResponse", "id": 13}]

    # Nothing changed on the server but what the task may do as itself.
    b_after = admin.get_task_instance(b_id)
    assert (b_after.state, b_after.hostname, b_after.pid, b_after.state_payload) == b_before
    assert admin.xcoms_of(b_id) == {"b_value": "original"}
    assert admin.xcoms_of(a_id) == {"replayed": 1, "twin": "first"}
    assert admin.get_task_instance(a_id).state == "success"

    records = log_records(Path(server.workdir / "logs" / f"{a_id}.log"))
    errors = [r["event"] for r in records if r["logger"] == "supervisor" and r["level"] == "error"]
    protocol_errors = [e for e in errors if e.startswith("Protocol error from the task")]
    # Every refused line is logged: 1-7, 10, 11, the id-less StartupDetails and Cancel, and
    # the second Hello; the replays (8, 9) are answered only.
    assert len(protocol_errors) == 12, errors
    assert "Protocol error from the task: a second Hello" in errors


def test_deep_lines_and_negative_ids_are_refused_and_the_task_still_ends_the_try(
    server: ReferenceServer, tmp_path: Path
) -> None:
    # 2 KB of nesting used to raise RecursionError in the supervisor's decoder, ending the
    # try as a supervisor error; id -1 (reserved for "unreadable id") ended it as success.
    server.admin.set_variable("deep_var", "value")
    deep = "[" * 1000 + "]" * 1000
    secret = "hunter2-deep-secret"
    at_the_limit = "[" * (MAX_NESTING - 2) + json.dumps(secret) + "]" * (MAX_NESTING - 2)
    script = [
        step(line(type="MaskSecret", id=1, value=secret), 1),
        step('{"type":"Log","event":"deep","fields":{"x":' + deep + "}}"),
        step('{"type":"SetXCom","id":2,"key":"deep","value":' + deep + "}", 2),
        step('{"type":"SucceedTask","id":' + deep + "}"),
        step(line(type="SucceedTask", id=-1)),
        step('{"type":"Log","event":"at the limit","fields":{"x":' + at_the_limit + "}}"),
        step(line(type="GetVariable", id=3, key="deep_var"), 3),
        step(line(type="SucceedTask", id=4), 4),
    ]
    out = tmp_path / "answers.jsonl"
    ti_id, activity = server.create_task(
        command=[sys.executable, RAW_TASK],
        env={"RAW_SCRIPT": json.dumps(script), "RAW_OUT": str(out)},
    )
    result = supervise(activity)

    assert result.returncode == 0, result.stderr
    answers = [json.loads(text) for text in out.read_text().splitlines()[1:]]
    assert [a["id"] for a in answers] == [1, 2, 3, 4]  # the unreadable ids get no answer
    assert answers[0] == {"type": "OKResponse", "id": 1}
    assert answers[1]["error"] == "PROTOCOL_ERROR"
    assert answers[1]["detail"]["message"] == f"nested deeper than {MAX_NESTING} arrays and objects"
    assert answers[2] == {"type": "VariableResult", "id": 3, "key": "deep_var", "value": "value"}
    assert answers[3] == {"type": "OKResponse", "id": 4}
    assert server.admin.get_task_instance(ti_id).state == "success"
    assert server.admin.xcoms_of(ti_id) == {}

    log_file = Path(server.workdir / "logs" / f"{ti_id}.log")
    records = log_records(log_file)
    refused = [r["event"] for r in records if r["event"].startswith("Protocol error from the task")]
    assert len(refused) == 4, refused  # the deep Log, SetXCom and id, and id -1
    assert sum("nested deeper than" in event for event in refused) == 3
    assert "Expected `int` >= 0 - at `$.id`" in refused[3]
    assert not [r for r in records if "supervisor error" in json.dumps(r)]
    # Masking walks a value as deep as a line may nest.
    (limit_record,) = [r for r in records if r["event"] == "at the limit"]
    innermost = limit_record["x"]
    for _ in range(MAX_NESTING - 2):
        (innermost,) = innermost
    assert innermost == "***"
    assert secret not in log_file.read_text()


def test_a_task_cannot_write_records_that_pass_for_the_supervisors(
    server: ReferenceServer, tmp_path: Path
) -> None:
    forged = {"event": "Task finished", "fields": {"final_state": "success", "exit_code": 0}}
    script = [
        step(line(type="Log", logger=name, **forged))
        for name in ("supervisor", "task.stdout", "task.stderr", "task.metrics")
    ]
    script.append(step(line(type="Log", logger="my.module", event="ordinary")))
    script.append(step(line(type="SucceedTask", id=1), 1))
    out = tmp_path / "answers.jsonl"
    ti_id, activity = server.create_task(
        command=[sys.executable, RAW_TASK],
        env={"RAW_SCRIPT": json.dumps(script), "RAW_OUT": str(out)},
    )
    assert supervise(activity).returncode == 0
    records = log_records(Path(server.workdir / "logs" / f"{ti_id}.log"))
    finished = [r["logger"] for r in records if r["event"] == "Task finished"]
    assert finished == [
        "task.supervisor",
        "task.task.stdout",
        "task.task.stderr",
        "task.task.metrics",
        "supervisor",  # the real one, last
    ]
    assert [r["logger"] for r in records if r["event"] == "ordinary"] == ["my.module"]


_MEASURE = """
import json, os, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[1], sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
print(json.dumps([os.waitstatus_to_exitcode(status), usage.ru_maxrss]))
"""


def _run_measuring_peak_rss(argv: list[str]) -> tuple[int, int]:
    """Run ``argv``; its exit code and the peak RSS (KiB) of it and the children it reaped.

    Forked from a small fresh interpreter: a process forked from this (large) pytest process
    would count pytest's pages, held until its exec, as its own peak.
    """
    out = subprocess.run(
        [sys.executable, "-c", _MEASURE, *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        check=True,
        timeout=300,
    ).stdout
    exit_code, peak_kib = json.loads(out.splitlines()[-1])
    return exit_code, peak_kib


def test_lines_that_would_grow_into_huge_objects_cannot_exhaust_the_supervisors_memory(
    server: ReferenceServer, tmp_path: Path
) -> None:
    # Decoded naively, 24 MB of "[[],[],...]" become ~600 MB of Python lists. An XCom value
    # stays encoded in the supervisor; any other line over 1 MiB is refused before decoding.
    grow = 24 * 1024 * 1024
    script = [
        {**step(line(type="SetXCom", id=1, key="bomb", value="@GROW@"), 1), "grow": grow},
        {**step(line(type="MaskSecret", id=2, value="@GROW@"), 2), "grow": 2 * 1024 * 1024},
        {**step(line(type="Log", event="bomb", fields={"bomb": "@GROW@"})), "grow": grow},
        step(line(type="SucceedTask", id=3), 3),
    ]
    out = tmp_path / "answers.jsonl"
    ti_id, activity = server.create_task(
        command=[sys.executable, RAW_TASK],
        env={"RAW_SCRIPT": json.dumps(script), "RAW_OUT": str(out)},
    )
    exit_code, peak_kib = _run_measuring_peak_rss(
        [sys.executable, "-m", "supervisor", str(activity)]
    )

    assert exit_code == 0
    # The largest of supervise and its task (which holds a 24 MB line itself).
    assert peak_kib < 250 * 1024, peak_kib
    answers = {a.get("id"): a for a in map(json.loads, out.read_text().splitlines())}
    assert answers[1] == {"type": "OKResponse", "id": 1}
    assert answers[2]["error"] == "PROTOCOL_ERROR"
    assert answers[2]["detail"]["message"].startswith("a MaskSecret line may be at most 1048576")
    assert answers[3] == {"type": "OKResponse", "id": 3}
    assert server.admin.get_task_instance(ti_id).state == "success"
    records = log_records(Path(server.workdir / "logs" / f"{ti_id}.log"))
    assert any(r["event"].startswith("Protocol error from the task: a Log line") for r in records)
