"""``python -m benchmarks`` runs: its quickest mode, one benchmark, a table and the JSON.

Benchmarks are not part of the test suite (they need a quiet machine and minutes); this only
proves the harness itself works end to end against the reference server.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_quick_trivial_benchmark_prints_a_table_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "latest.json"
    result = subprocess.run(
        [
            sys.executable,
            *("-m", "benchmarks", "--quick", "--runs", "1", "--only", "trivial"),
            *("--out", str(out)),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "trivial task, `supervise` start to exit" in result.stdout
    document = json.loads(out.read_text())
    rows = {row["key"]: row for row in document["rows"]}
    assert set(rows) == {"trivial", "trivial_cpu"}
    row = rows["trivial"]
    assert row["ours"]["n"] >= 1
    assert row["ours"]["median"] > 0
    assert row["floor"]["unit"] == "ms"
    assert row["met"] in (True, False)
    assert document["machine"]["cores"] >= 1
