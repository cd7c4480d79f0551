"""The interop harness itself: without Airflow the suite fails, it never skips."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest


def test_unreachable_pypi_fails_the_suite_instead_of_skipping(
    airflow_installer: Callable[[Path], Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Nothing listens on the discard port of loopback: pip cannot reach any index.
    monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_NO_CACHE_DIR", "1")
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "2")
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
    monkeypatch.delenv("PIP_EXTRA_INDEX_URL", raising=False)

    with pytest.raises(pytest.fail.Exception, match="is PyPI reachable"):
        airflow_installer(tmp_path / "venv")
