"""supervisor.airflow_channel.JsonLogStream: the runner's JSON log lines become masked records."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from supervisor.airflow_channel import JsonLogStream
from supervisor.masking import Masker
from supervisor.tasklog import MAX_PENDING_LINE, TaskLog

SECRET = "hunter2-very-secret"


def records_of(tmp_path: Path, *chunks: bytes) -> list[dict[str, Any]]:
    masker = Masker()
    masker.add(SECRET)
    log = TaskLog(str(tmp_path / "task.log"), masker, echo=None)
    stream = JsonLogStream(log)
    for chunk in chunks:
        stream.feed(chunk)
    stream.close()
    log.close()
    return [json.loads(line) for line in (tmp_path / "task.log").read_text().splitlines()]


def line(**record: Any) -> bytes:
    return json.dumps(record).encode() + b"\n"


def test_a_record_keeps_airflows_shape_and_its_fields(tmp_path: Path) -> None:
    [record] = records_of(
        tmp_path,
        line(
            timestamp="2026-01-01T00:00:00.5Z",
            level="warning",
            event="Done",
            logger="airflow.task",
            ti_id="x",
        ),
    )

    assert record == {
        "timestamp": "2026-01-01T00:00:00.5Z",
        "level": "warning",
        "event": "Done",
        "logger": "airflow.task",
        "ti_id": "x",
    }


def test_an_exception_becomes_error_detail_as_airflows_ui_expects(tmp_path: Path) -> None:
    [record] = records_of(tmp_path, line(event="Task failed", exception=[{"exc_type": "E"}]))

    assert record["error_detail"] == [{"exc_type": "E"}]
    assert "exception" not in record


def test_every_string_is_masked_names_included(tmp_path: Path) -> None:
    [record] = records_of(
        tmp_path, line(event=f"pw {SECRET}", logger=SECRET, **{SECRET: [f"x{SECRET}"]})
    )

    assert SECRET not in json.dumps(record)
    assert record["event"] == "pw ***"


def test_a_record_split_across_reads_is_written_once_whole(tmp_path: Path) -> None:
    data = line(event=f"pw {SECRET}", level="info")
    cut = data.index(SECRET.encode()) + 3

    [record] = records_of(tmp_path, data[:cut], data[cut:])

    assert record["event"] == "pw ***"


def test_a_runner_record_cannot_pass_for_the_supervisors(tmp_path: Path) -> None:
    [record] = records_of(tmp_path, line(event="Task finished", logger="supervisor"))

    assert record["logger"] == "task.supervisor"


def test_a_line_that_is_not_a_json_object_is_kept_as_text(tmp_path: Path) -> None:
    records = records_of(tmp_path, b"not json " + SECRET.encode() + b"\n", b"[1, 2]\n", b"tail")

    assert [(r["logger"], r["event"]) for r in records] == [
        ("task", "not json ***"),
        ("task", "[1, 2]"),
        ("task", "tail"),
    ]


def test_a_line_longer_than_any_record_is_not_held_without_bound(tmp_path: Path) -> None:
    records = records_of(tmp_path, b"x" * (MAX_PENDING_LINE + 1), b"y\n")

    assert [len(r["event"]) for r in records] == [MAX_PENDING_LINE + 1, 1]
