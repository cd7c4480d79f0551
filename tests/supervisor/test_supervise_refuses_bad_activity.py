"""``supervise`` refuses an invalid activity before anything starts.

The rules are docs/design.md's "Activity file".

Each case runs the real ``supervise`` and checks the whole promise: exit 2, one stderr line
naming the field, no task log (neither the one asked for nor the default under ``./logs/``),
and no connection to the server, which is a listening socket the test owns.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from comms.activity import MAX_ACTIVITY_BYTES, MAX_EXEC_STRING_BYTES


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """Where the activity's ``server`` points: any connection to it is a test failure."""
    with socket.create_server(("127.0.0.1", 0)) as sock:
        sock.setblocking(False)
        yield sock


def valid(listener: socket.socket, tmp_path: Path) -> dict[str, Any]:
    return {
        "kind": "ExecuteTask",
        "token": "eyJhbGciOiJIUzUxMiJ9.eyJzdWIiOiJ4In0.c2ln",
        "server": f"http://127.0.0.1:{listener.getsockname()[1]}/execution/",
        "ti": {
            "id": "3fa85f64-5717-4562-b3fc-2c963f66afa6",
            "dag_id": "dag",
            "task_id": "task",
            "run_id": "manual__1",
            "try_number": 1,
        },
        "command": [sys.executable, "-c", "pass"],
        "log_path": str(tmp_path / "task.log"),
    }


def run_supervise(tmp_path: Path, source: str, *, stdin: bytes = b"") -> tuple[int, str]:
    """Exit code and stderr of ``supervise source``. cwd is the test's directory: a default
    task log would appear under it as ``./logs/``."""
    proc = subprocess.run(
        [sys.executable, "-m", "supervisor", source],
        input=stdin,
        cwd=tmp_path,
        env={**os.environ, "TASKVISOR_API_RETRY_BUDGET": "1"},
        capture_output=True,
        timeout=60,
        check=False,
    )
    return proc.returncode, proc.stderr.decode(errors="replace")


def assert_refused_before_anything(
    result: tuple[int, str], field: str, listener: socket.socket, tmp_path: Path
) -> str:
    """Exit 2, one stderr line naming ``field``, no task log, no connection; the line."""
    code, stderr = result
    assert code == 2, stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f"supervise: activity {field}: "), lines[0]
    assert not (tmp_path / "task.log").exists()
    assert not (tmp_path / "logs").exists()
    with pytest.raises(BlockingIOError):
        listener.accept()
    return lines[0]


def _server_port_99999(doc: dict[str, Any]) -> None:
    doc["server"] = "http://127.0.0.1:99999/execution/"


CASES = {
    "empty-run_as": ("$.run_as", lambda d: d.update(run_as="")),
    "server-port-99999": ("$.server", _server_port_99999),
    "token-not-a-jwt": ("$.token", lambda d: d.update(token="hello world")),
    "try_number-10e30": ("$.ti.try_number", lambda d: d["ti"].update(try_number=10**30)),
    "timeout-1e308": ("$.timeout", lambda d: d.update(timeout=1e308)),
    "empty-dag_id": ("$.ti.dag_id", lambda d: d["ti"].update(dag_id="")),
    "empty-task_id": ("$.ti.task_id", lambda d: d["ti"].update(task_id="")),
    "empty-run_id": ("$.ti.run_id", lambda d: d["ti"].update(run_id="")),
    "empty-log_path": ("$.log_path", lambda d: d.update(log_path="")),
    "huge-env-value": (
        "$.env.BIG",
        lambda d: d.update(env={"BIG": "v" * (2 * MAX_EXEC_STRING_BYTES)}),
    ),
    "non-string-env-value": ("$.env.A", lambda d: d.update(env={"A": 1})),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_invalid_activity_exits_2_naming_the_field_with_no_log_and_no_connection(
    case: str, listener: socket.socket, tmp_path: Path
) -> None:
    field, change = CASES[case]
    doc = valid(listener, tmp_path)
    change(doc)
    path = tmp_path / "activity.json"
    path.write_text(json.dumps(doc))

    line = assert_refused_before_anything(
        run_supervise(tmp_path, str(path)), field, listener, tmp_path
    )

    assert "hello world" not in line
    assert len(line) < 400  # a huge value is never echoed whole


def test_a_duplicate_kind_is_refused_not_last_one_wins(
    listener: socket.socket, tmp_path: Path
) -> None:
    text = json.dumps(valid(listener, tmp_path))
    path = tmp_path / "activity.json"
    path.write_text('{"kind": "ExecuteCallback", ' + text[1:])

    line = assert_refused_before_anything(
        run_supervise(tmp_path, str(path)), "$.kind", listener, tmp_path
    )

    assert "appears twice" in line


def test_an_empty_activity_file_says_it_is_empty(listener: socket.socket, tmp_path: Path) -> None:
    path = tmp_path / "activity.json"
    path.write_bytes(b"")

    line = assert_refused_before_anything(
        run_supervise(tmp_path, str(path)), "$", listener, tmp_path
    )

    assert "the document is empty" in line


def test_a_huge_activity_on_stdin_is_refused_naming_the_cap(
    listener: socket.socket, tmp_path: Path
) -> None:
    huge = b" " * (MAX_ACTIVITY_BYTES + 1024) + b"{}"

    line = assert_refused_before_anything(
        run_supervise(tmp_path, "-", stdin=huge), "$", listener, tmp_path
    )

    assert "larger than 16 MiB" in line


def test_a_huge_activity_file_is_refused_without_being_read_whole(tmp_path: Path) -> None:
    # Sparse: 256 MiB that take no disk. Read whole, it would cost supervise 256 MB of memory.
    path = tmp_path / "activity.json"
    with path.open("wb") as f:
        f.truncate(256 * 1024 * 1024)
    # A fresh interpreter runs supervise, so the peak memory of its children is supervise's
    # (and its zygote's), not that of an earlier test's subprocess.
    probe = (
        "import resource, subprocess, sys\n"
        "proc = subprocess.run([sys.executable, '-m', 'supervisor', sys.argv[1]],"
        " capture_output=True, text=True)\n"
        "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
        "print(proc.returncode, peak, proc.stderr.strip())\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe, str(path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    code, peak_kib, stderr = result.stdout.split(" ", 2)

    assert int(code) == 2
    assert stderr.startswith("supervise: activity $: larger than 16 MiB")
    assert int(peak_kib) < 128 * 1024, f"supervise peaked at {int(peak_kib) // 1024} MiB"
