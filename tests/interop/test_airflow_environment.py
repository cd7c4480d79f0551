"""taskvisor inside Apache Airflow 3.3's environment, at the low end of its dependency ranges.

A user installs taskvisor into the worker's environment under Airflow's constraints file. The
Airflow venv of this suite is built that way (see ``conftest.ensure_airflow_venv``); these
tests check the pins held and that taskvisor's own suites pass at those versions. The high
end of every range is what CI's fresh install picks, and runs the whole suite.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from conftest import CONSTRAINTS, REPO, ensure_airflow_venv

#: The suites that need no Airflow api-server: run again with Airflow's pinned versions.
UNIT_SUITES = ("tests/comms", "tests/sdk", "tests/supervisor", "tests/apiserver")


@pytest.fixture(scope="module")
def airflow_python() -> Path:
    return ensure_airflow_venv()


def _pins() -> dict[str, str]:
    pins = {}
    for line in CONSTRAINTS.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[name] = version
    return pins


def test_airflow_and_taskvisor_share_one_environment_at_airflows_pinned_versions(
    airflow_python: Path,
) -> None:
    pins = _pins()
    probe = subprocess.run(
        [
            airflow_python,
            "-c",
            "import importlib.metadata as m, json, sys; "
            "print(json.dumps({n: m.version(n) for n in sys.argv[1:]}))",
            *pins,
            "taskvisor",
            "apache-airflow",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    installed = json.loads(probe.stdout)

    assert {name: installed[name] for name in pins} == pins
    assert installed["apache-airflow"] == "3.3.2"
    consistent = subprocess.run(
        [airflow_python, "-m", "pip", "check"], capture_output=True, text=True, check=False
    )
    assert consistent.returncode == 0, consistent.stdout + consistent.stderr
    supervise = subprocess.run(
        [airflow_python.with_name("supervise"), "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert supervise.returncode == 0, supervise.stderr
    assert "usage: supervise" in supervise.stdout


def test_taskvisor_unit_suites_pass_at_airflows_pinned_versions(airflow_python: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PYTEST"))}
    run = subprocess.run(
        [airflow_python, "-m", "pytest", "-q", "-p", "no:cacheprovider", *UNIT_SUITES],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=1200,
    )

    assert run.returncode == 0, (run.stdout + run.stderr)[-6000:]
    assert " passed" in run.stdout.splitlines()[-1]
