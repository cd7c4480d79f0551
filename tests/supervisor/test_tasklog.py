"""supervisor.tasklog: Airflow-shaped JSON lines, masked, lines reassembled across reads."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest

from supervisor.masking import Masker
from supervisor.tasklog import MAX_PENDING_LINE, StreamReassembler, TaskLog, utc_timestamp

ISO_UTC_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


def read_records(log: TaskLog) -> list[dict]:
    log.flush()
    return [json.loads(line) for line in Path(log.path).read_text("utf-8").splitlines()]


@pytest.fixture
def masker() -> Masker:
    masker = Masker()
    masker.add("hunter22")
    return masker


@pytest.fixture
def log(tmp_path, masker):
    log = TaskLog(str(tmp_path / "nested" / "dir" / "attempt=1.log"), masker, echo=None)
    yield log
    log.close()


def test_utc_timestamp_is_iso8601_with_z():
    assert ISO_UTC_Z.match(utc_timestamp())


def test_log_file_and_its_directories_are_created_private(log):
    path = Path(log.path)
    assert path.exists()
    assert path.stat().st_mode & 0o777 == 0o600


def test_record_has_timestamp_level_event_logger_and_masked_fields(log):
    log.record(
        "task", "info", "connecting with hunter22", {"attempt": 2, "conn": {"pw": "hunter22"}}
    )
    (record,) = read_records(log)
    assert ISO_UTC_Z.match(record["timestamp"])
    assert record["level"] == "info"
    assert record["event"] == "connecting with ***"
    assert record["logger"] == "task"
    assert record["attempt"] == 2
    assert record["conn"] == {"pw": "***"}


def test_record_keeps_a_timestamp_given_by_the_task(log):
    log.record("task", "warning", "e", timestamp="2026-01-01T00:00:00.000000Z")
    assert read_records(log)[0]["timestamp"] == "2026-01-01T00:00:00.000000Z"


def test_fields_cannot_forge_the_standard_keys(log):
    forged = {"timestamp": "1970", "level": "critical", "event": "forged", "logger": "supervisor"}
    log.record("task", "info", "real event", {**forged, "extra": "kept"})
    (record,) = read_records(log)
    assert ISO_UTC_Z.match(record["timestamp"])
    assert (record["level"], record["event"], record["logger"]) == ("info", "real event", "task")
    assert record["extra"] == "kept"


def test_nothing_the_task_supplies_reaches_the_file_unmasked(log):
    # A task's Log message controls the logger name and the field names too.
    log.record("hunter22.logger", "info", "e", {"key hunter22": {"hunter22": "hunter22"}})
    log.flush()
    assert "hunter22" not in Path(log.path).read_text("utf-8")


def test_captured_lines_are_records_with_the_stream_logger(log):
    log.lines("task.stdout", "info", ["one", "two"])
    records = read_records(log)
    assert [(r["logger"], r["event"], r["level"]) for r in records] == [
        ("task.stdout", "one", "info"),
        ("task.stdout", "two", "info"),
    ]
    assert all(ISO_UTC_Z.match(r["timestamp"]) for r in records)


def test_supervisor_records_are_logged_and_echoed_masked(tmp_path, masker):
    echo = io.StringIO()
    log = TaskLog(str(tmp_path / "a.log"), masker, echo=echo)
    log.supervisor("warning", "token hunter22 rejected", detail="hunter22")
    log.close()
    (record,) = [json.loads(x) for x in Path(log.path).read_text().splitlines()]
    assert record["logger"] == "supervisor"
    assert record["event"] == "token *** rejected"
    assert "hunter22" not in echo.getvalue()
    assert echo.getvalue().startswith("supervise: warning: token *** rejected")


def test_log_file_is_appended_to_not_truncated(tmp_path, masker):
    path = str(tmp_path / "a.log")
    for event in ("first segment", "second segment"):
        log = TaskLog(path, masker, echo=None)
        log.record("task", "info", event)
        log.close()
    events = [json.loads(x)["event"] for x in Path(path).read_text().splitlines()]
    assert events == ["first segment", "second segment"]


def events_of(log: TaskLog) -> list[str]:
    return [r["event"] for r in read_records(log)]


def test_reassembler_joins_a_line_split_across_chunks(log):
    stream = StreamReassembler(log, "task.stdout", "info")
    stream.feed(b"hel")
    stream.feed(b"lo wor")
    assert events_of(log) == []
    stream.feed(b"ld\nsecond\nthi")
    assert events_of(log) == ["hello world", "second"]
    stream.close()
    assert events_of(log) == ["hello world", "second", "thi"]


def test_reassembler_masks_a_secret_split_across_two_writes(log):
    stream = StreamReassembler(log, "task.stderr", "error")
    stream.feed(b"password is hunt")
    stream.feed(b"er22 ok\n")
    (record,) = read_records(log)
    assert record["event"] == "password is *** ok"
    assert record["logger"] == "task.stderr"
    assert record["level"] == "error"


def test_reassembler_flushes_a_trailing_partial_line_at_close_masked(log):
    stream = StreamReassembler(log, "task.stdout", "info")
    stream.feed(b"no newline hunter22")
    assert events_of(log) == []
    stream.close()
    assert events_of(log) == ["no newline ***"]
    stream.close()  # idempotent
    assert events_of(log) == ["no newline ***"]


def test_reassembler_keeps_empty_lines_and_replaces_invalid_utf8(log):
    stream = StreamReassembler(log, "task.stdout", "info")
    stream.feed(b"a\n\nb\xff\n")
    assert events_of(log) == ["a", "", "b\ufffd"]


def test_huge_line_without_newline_is_written_in_pieces_not_held(log):
    stream = StreamReassembler(log, "task.stdout", "info")
    chunk = b"x" * 65536
    total = 3 * MAX_PENDING_LINE + 12345
    fed = 0
    while fed < total:
        piece = chunk[: total - fed]
        stream.feed(piece)
        fed += len(piece)
        written = sum(len(e) for e in events_of(log))
        assert fed - written <= MAX_PENDING_LINE + len(chunk)  # what is held stays bounded
    stream.close()
    assert sum(len(e) for e in events_of(log)) == total


def test_huge_non_ascii_line_written_in_pieces_loses_no_character(log):
    text = "é" * (MAX_PENDING_LINE + 1000)  # 2 bytes each: the line is ~2 MiB
    data = text.encode()
    stream = StreamReassembler(log, "task.stdout", "info")
    stream.feed(data[:1])  # from here on, reads end in the middle of a character
    for start in range(1, len(data), 65536):
        stream.feed(data[start : start + 65536])
    stream.close()
    joined = "".join(events_of(log))
    assert joined.count("\ufffd") == 0, "characters split between pieces were replaced"
    assert joined == text
