"""``taskvisor demo`` end to end: the server, ``supervise`` and the SDK together."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from apiserver.demo import DEMO_PASSWORD


def test_demo_runs_the_example_task_and_passes_every_check(tmp_path: Path) -> None:
    taskvisor = Path(sys.executable).parent / "taskvisor"
    result = subprocess.run(
        [str(taskvisor), "demo", "--workdir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "final state (read back from the server): success" in output
    assert "returned XCom: {'greeting': 'Hello from taskvisor', 'total': 10" in output
    assert "[FAILED]" not in output
    assert result.stdout.rstrip().endswith(f"(database, activity and log kept in {tmp_path})")

    (log_path,) = (tmp_path / "logs").glob("*.log")
    assert f"task log (JSON lines): {log_path}" in output
    lines = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert {"timestamp", "level", "event", "logger"} <= set(lines[0])
    text = log_path.read_text()
    assert DEMO_PASSWORD not in text
    assert "***" in text
    # The task printed and logged: both reached the log.
    assert any(line["logger"] == "task.stdout" for line in lines)
    assert any(line["event"] == "connection fetched" for line in lines)
    # Nothing the demo or supervise printed shows the password either.
    assert DEMO_PASSWORD not in output
