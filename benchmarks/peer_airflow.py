"""``--peer airflow``: the trivial task through Airflow 3.3's supervisor and through ours.

Reuses the interop harness (``tests/interop/conftest.py``, owned by the interop tests): its
Airflow virtual environment (``.airflow-venv``, created from PyPI if missing), its environment
for a SQLite ``AIRFLOW_HOME``, its ``airflow_side.py`` helper (which queues task instances and
mints tokens with Airflow's own code) and its health polling. Only the set-up sequence of its
``airflow`` pytest fixture is repeated here (a fixture cannot be called outside pytest), with
this package's DAG instead of the interop DAG.

Both sides run against the same api-server, interleaved run by run, each on a fresh queued
task instance: ``python -m airflow.sdk.execution_time.execute_workload --json-path W`` (what
containerised executors run per task) and ``supervise`` on the activity built from the same
workload. Timed from spawn to exit; both must exit 0.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

from benchmarks.harness import REPO, TASKS, supervise_argv, supervised_seconds
from benchmarks.report import Row, row
from benchmarks.stats import Stat

__all__ = ["compare_with_airflow"]

DAG_ID = "taskvisor_bench"
TASK_ID = "trivial"
DAGS = Path(__file__).resolve().parent / "airflow_dags"


def _interop_harness() -> ModuleType:
    path = REPO / "tests" / "interop" / "conftest.py"
    spec = importlib.util.spec_from_file_location("taskvisor_interop_harness", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it executes
    spec.loader.exec_module(module)
    return module


class _HarnessFailed(RuntimeError):
    """The interop harness called ``pytest.fail`` (outside pytest, an exception)."""


def compare_with_airflow(runs: int) -> list[Row]:
    """Start an Airflow api-server, run the trivial task ``runs`` times on each side."""
    try:
        return _compare(_interop_harness(), runs)
    except BaseException as exc:
        # pytest.fail raises an OutcomeException (a BaseException): make it an ordinary error.
        if type(exc).__name__ == "Failed":
            raise _HarnessFailed(str(exc)) from None
        raise


def _compare(h: ModuleType, runs: int) -> list[Row]:
    python = h.ensure_airflow_venv()
    with tempfile.TemporaryDirectory(prefix="taskvisor-bench-airflow-") as tmp:
        home = Path(tmp)
        port = h.free_port()
        base_url = f"http://127.0.0.1:{port}"
        env = h._airflow_env(home, port)
        env["AIRFLOW__CORE__DAGS_FOLDER"] = str(DAGS)
        # Airflow reads the .pyc files pip wrote next to its sources; a cache prefix (set for
        # our side, see __main__) would make it recompile ~1,500 modules on every run.
        env.pop("PYTHONPYCACHEPREFIX", None)
        side = h.AirflowSide(python, env, home / "airflow_side.stderr")
        server = None
        try:
            side.call("cli", commands=[["db", "migrate"]])
            with (home / "api-server.log").open("wb") as out:
                server = subprocess.Popen(
                    [python.with_name("airflow"), "api-server", "-H", "127.0.0.1", "-p", str(port)],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,
                )
            side.send("cli", commands=[["dags", "reserialize"]])
            h._wait_healthy(server, base_url, home / "api-server.log")
            side.receive()
            return _interleaved(side, python, env, home, f"{base_url}/execution/", runs)
        finally:
            if server is not None:
                h._stop(server)
            side.close()


def _queue(side: Any) -> dict[str, Any]:
    run_id = f"bench__{uuid.uuid4().hex[:12]}"
    result = side.call("queue", dag_id=DAG_ID, run_id=run_id, tasks={TASK_ID: {"max_tries": 0}})
    return result["workloads"][TASK_ID]  # type: ignore[no-any-return]


def _timed(argv: list[str], env: dict[str, str] | None, out: Path) -> tuple[float, float]:
    """Run ``argv`` to the end: wall seconds from spawn to exit, and its CPU seconds
    (with the children it reaped: the task process)."""
    with out.open("wb") as f:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, env=env, stdout=f, stderr=subprocess.STDOUT, cwd=REPO)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        tail = out.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{argv[:3]} exited {proc.returncode}:\n{tail}")
    return seconds, usage.ru_utime + usage.ru_stime


def _check_success(side: Any, workload: dict[str, Any], who: str) -> None:
    ti_id = str(workload["ti"]["id"])
    state = side.call("tis", ids=[ti_id])[ti_id]["state"]
    if state != "success":
        raise RuntimeError(f"{who} left task instance {ti_id} in state {state!r}")


def _interleaved(
    side: Any, python: Path, env: dict[str, str], home: Path, server_url: str, runs: int
) -> list[Row]:
    airflow_s, ours_s, airflow_cpu, ours_cpu, ours_inside = [], [], [], [], []
    for i in range(runs + 1):  # the first pair warms both sides up and is not counted
        workload = _queue(side)
        path = home / f"workload-{i}.json"
        path.write_text(json.dumps(workload))
        seconds, cpu = _timed(
            [
                str(python),
                "-m",
                "airflow.sdk.execution_time.execute_workload",
                "--json-path",
                str(path),
            ],
            env,
            home / f"airflow-{i}.out",
        )
        if i:
            airflow_s.append(seconds)
            airflow_cpu.append(cpu)
        _check_success(side, workload, "execute_workload")

        workload = _queue(side)
        ti = workload["ti"]
        activity = {
            "kind": "ExecuteTask",
            "token": workload["token"],
            "server": server_url,
            "ti": {
                k: ti[k] for k in ("id", "dag_id", "task_id", "run_id", "try_number", "map_index")
            },
            "entrypoint": f"{TASKS}:trivial",
            "log_path": str(home / "logs" / workload["log_path"]),
        }
        path = home / f"activity-{i}.json"
        path.write_text(json.dumps(activity))
        seconds, cpu = _timed(supervise_argv(path), None, home / f"supervise-{i}.out")
        if i:
            ours_s.append(seconds)
            ours_cpu.append(cpu)
            ours_inside.append(supervised_seconds(Path(activity["log_path"])))
        _check_success(side, workload, "supervise")
    ours = Stat.of([s * 1000 for s in ours_s], "ms")
    theirs = Stat.of([s * 1000 for s in airflow_s], "ms")
    # Airflow's supervisor sometimes waits ~5 s between the task's end and its own exit (its
    # log shows "Workload finished" 5 s after the task's last line): report it apart too.
    unstalled = [s for s in airflow_s if s < min(airflow_s) + 2.5]
    return [
        row(
            "airflow_peer",
            "trivial task against Airflow 3.3.2's api-server: Airflow's supervisor "
            "(`execute_workload`) / our `supervise`",
            ours,
            "≥ 15x faster",
            lambda v: theirs.median / v >= 15,
            floor=theirs,
            floor_name="Airflow 3.3.2 `execute_workload` (the peer, not a floor)",
            details={
                "speedup": theirs.median / ours.median,
                "airflow_runs_stalled": len(airflow_s) - len(unstalled),
                "speedup_over_unstalled_airflow_runs": Stat.of(unstalled, "s").median
                / (ours.median / 1000),
                "cpu_ms_airflow": Stat.of([c * 1000 for c in airflow_cpu], "ms").as_dict(),
                "cpu_ms_taskvisor": Stat.of([c * 1000 for c in ours_cpu], "ms").as_dict(),
                # From "Starting task" to "Task finished" in our log: the Execution API calls
                # (/run, XCom, state: Airflow's server time) and the task child.
                "supervised_ms_taskvisor": Stat.of([s * 1000 for s in ours_inside], "ms").as_dict(),
                "airflow_python": str(python),
            },
            ratio_text=f"{theirs.median / ours.median:.1f}x faster "
            f"({Stat.of(unstalled, 's').median * 1000 / ours.median:.1f}x vs its "
            f"{len(unstalled)} runs without a 5 s stall)",
        )
    ]
