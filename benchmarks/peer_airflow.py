"""``--peer airflow``: Airflow 3.3's supervisor against ours, on one Airflow api-server.

Reuses the interop harness (``tests/interop/conftest.py``, owned by the interop tests): its
Airflow virtual environment (``.airflow-venv``, created from PyPI if missing), its environment
for a SQLite ``AIRFLOW_HOME``, its ``airflow_side.py`` helper (which queues task instances and
mints tokens with Airflow's own code) and its health polling. Only the set-up sequence of its
``airflow`` pytest fixture is repeated here (a fixture cannot be called outside pytest), with
this package's DAG instead of the interop DAG.

Two comparisons, each interleaved run by run on fresh queued task instances of
``benchmarks/airflow_dags/taskvisor_bench.py``; every run must exit 0 and leave its task
instance ``success``:

- *trivial task*: ``python -m airflow.sdk.execution_time.execute_workload --json-path W``
  (what containerised executors run per task) against ``supervise`` on an activity file built
  from the same kind of workload (our own runner, ``benchmarks/tasks.py:trivial``);
- *DAG task*: the same ``execute_workload`` against ``supervise W`` on the workload itself,
  both hosting Airflow's own task runner on the DAG's task, both from the Airflow venv and
  with what a worker has (no database URL, no signing secret). Wall and CPU time of the whole
  tree; peak RSS of the supervisor and of the task runner (its child) in separate, polled
  runs; and where the wall time went, from the runner's own log records.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from benchmarks.cases import MB
from benchmarks.harness import (
    REPO,
    SUPERVISE_TIMEOUT,
    TASKS,
    PeakSampler,
    supervise_argv,
    supervised_seconds,
)
from benchmarks.report import Row, row
from benchmarks.stats import Stat

__all__ = ["compare_with_airflow"]

DAG_ID = "taskvisor_bench"
TASK_ID = "trivial"
DAGS = Path(__file__).resolve().parent / "airflow_dags"
#: Runs per side with the supervisor and the runner polled for peak RSS (not timed).
PEAK_RUNS = 3
#: Airflow's supervisor can sit in ``select`` for ``[workers] min_heartbeat_interval`` (5 s)
#: after its runner ended; a run whose exit came this long after the runner's last record
#: waited so.
STALL_SECONDS = 2.5


def _runner_setup(*, collect: bool) -> str:
    """Code timing what Airflow's task runner does before its first record under
    ``supervise``, alone in a fresh interpreter after its start-up: the imports of
    ``taskvisor_airflow.task_child.prepare`` and the first ``get_listener_manager()`` (plugin
    loading: the child registers its timeout listener; under Airflow's supervisor the runner
    makes that call after its first record). Paid on every try by whoever starts the runner
    afresh; without ``collect``, with the cyclic GC off (its full collections over the new
    modules are ~1/5 of the time, and a zygote could skip them)."""
    return (
        f"import gc, time; {'' if collect else 'gc.disable(); '}t = time.perf_counter(); "
        "import airflow.sdk.execution_time.task_runner, airflow.sdk.log; "
        "from airflow.sdk.listener import get_listener_manager; get_listener_manager(); "
        "print(time.perf_counter() - t)"
    )


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
    """Start an Airflow api-server; run the trivial task, then the DAG task, ``runs`` times
    on each side."""
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
            server_url = f"{base_url}/execution/"
            return [
                *_interleaved(side, python, env, home, server_url, runs),
                *_dag_task(side, python, _worker_env(env, home, server_url), home, runs),
            ]
        finally:
            if server is not None:
                h._stop(server)
            side.close()


def _worker_env(env: dict[str, str], home: Path, server_url: str) -> dict[str, str]:
    """What a worker runs a workload with: Airflow's home, server, log folder and DAGs; no
    database URL or signing secret (a worker needs neither, and ``supervise`` would start
    again without them). Bytecode is written and read as in an installed environment: pip
    wrote Airflow's, the warm-up run writes taskvisor's (installed editable) next to its
    sources, and both sides compile the DAG file alike."""
    worker = {k: v for k, v in env.items() if not k.startswith("AIRFLOW")}
    worker.pop("PYTHONDONTWRITEBYTECODE", None)
    worker.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__EXECUTION_API_SERVER_URL=server_url,
        AIRFLOW__LOGGING__BASE_LOG_FOLDER=str(home / "logs"),
        AIRFLOW__CORE__DAGS_FOLDER=str(DAGS),
    )
    return worker


def _queue(side: Any) -> dict[str, Any]:
    run_id = f"bench__{uuid.uuid4().hex[:12]}"
    result = side.call("queue", dag_id=DAG_ID, run_id=run_id, tasks={TASK_ID: {"max_tries": 0}})
    return result["workloads"][TASK_ID]  # type: ignore[no-any-return]


@dataclass(frozen=True)
class _Exit:
    """One process run to its end."""

    #: Wall seconds from spawn to exit.
    seconds: float
    #: User + system CPU seconds of the process and of the children it reaped (the task).
    cpu: float
    #: ``time.time()`` at spawn, to place the task log's timestamps.
    started: float
    #: Peak RSS (VmHWM, KiB) of the process and of its first child, when polled.
    supervisor_hwm_kib: int | None = None
    child_hwm_kib: int | None = None
    #: The largest PSS (KiB) of the two together, when polled.
    pair_pss_kib: int | None = None


def _run(
    argv: Sequence[str], env: dict[str, str] | None, out: Path, *, peak: bool = False
) -> _Exit:
    """Run ``argv`` to the end (killed after ``SUPERVISE_TIMEOUT``); it must exit 0. With
    ``peak``, its memory and its first child's are polled (do not time such a run)."""
    with out.open("wb") as f:
        started = time.time()
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, env=env, stdout=f, stderr=subprocess.STDOUT, cwd=REPO)
        sampler = PeakSampler(proc.pid, pss=True) if peak else None
        if sampler is not None:
            sampler.start()
        watchdog = threading.Timer(SUPERVISE_TIMEOUT, proc.kill)
        watchdog.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            watchdog.cancel()
        seconds = time.perf_counter() - t0
    if sampler is not None:
        sampler.done.set()
        sampler.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        tail = out.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{list(argv)[:3]} exited {proc.returncode}:\n{tail}")
    return _Exit(
        seconds,
        usage.ru_utime + usage.ru_stime,
        started,
        sampler.supervisor if sampler else None,
        sampler.child if sampler else None,
        sampler.pair_pss if sampler else None,
    )


def _check_success(side: Any, workload: dict[str, Any], who: str) -> None:
    ti_id = str(workload["ti"]["id"])
    state = side.call("tis", ids=[ti_id])[ti_id]["state"]
    if state != "success":
        raise RuntimeError(f"{who} left task instance {ti_id} in state {state!r}")


def _interleaved(
    side: Any, python: Path, env: dict[str, str], home: Path, server_url: str, runs: int
) -> list[Row]:
    airflow_s, ours_s, airflow_cpu, ours_cpu, ours_inside = [], [], [], [], []
    airflow_waited = []
    for i in range(runs + 1):  # the first pair warms both sides up and is not counted
        workload = _queue(side)
        path = home / f"workload-{i}.json"
        path.write_text(json.dumps(workload))
        their_run = _run(
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
            airflow_s.append(their_run.seconds)
            airflow_cpu.append(their_run.cpu)
            log = home / "logs" / workload["log_path"]
            airflow_waited.append(_phases(log, their_run).exit >= STALL_SECONDS)
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
        our_run = _run(supervise_argv(path), None, home / f"supervise-{i}.out")
        if i:
            ours_s.append(our_run.seconds)
            ours_cpu.append(our_run.cpu)
            ours_inside.append(supervised_seconds(Path(activity["log_path"])))
        _check_success(side, workload, "supervise")
    ours = Stat.of([s * 1000 for s in ours_s], "ms")
    theirs = Stat.of([s * 1000 for s in airflow_s], "ms")
    ratio_text, speedup = _speedup(airflow_s, airflow_waited, ours)
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
                **speedup,
                "cpu_ms_airflow": Stat.of([c * 1000 for c in airflow_cpu], "ms").as_dict(),
                "cpu_ms_taskvisor": Stat.of([c * 1000 for c in ours_cpu], "ms").as_dict(),
                # From "Starting task" to "Task finished" in our log: the Execution API calls
                # (/run, XCom, state: Airflow's server time) and the task child.
                "supervised_ms_taskvisor": Stat.of([s * 1000 for s in ours_inside], "ms").as_dict(),
                "airflow_python": str(python),
            },
            ratio_text=ratio_text,
        )
    ]


def _speedup(
    airflow_s: Sequence[float], waited: Sequence[bool], ours: Stat
) -> tuple[str, dict[str, Any]]:
    """Airflow's median over ours, also without the runs in which Airflow's supervisor sat
    5 s in ``select`` after its runner ended (a race in its loop: the runner's sockets closed
    before it could reap the runner, so nothing wakes it before the heartbeat timeout);
    as the table's text and as JSON details."""
    theirs = _ms(airflow_s)
    unstalled = [s for s, w in zip(airflow_s, waited, strict=True) if not w]
    apart = _ms(unstalled).median / ours.median if unstalled else None
    note = (
        f"{apart:.1f}x vs its {len(unstalled)} runs without the 5 s wait"
        if apart is not None
        else "every Airflow run waited 5 s before its exit"
    )
    return f"{theirs.median / ours.median:.1f}x faster ({note})", {
        "speedup": theirs.median / ours.median,
        "airflow_runs_waiting_5s": len(airflow_s) - len(unstalled),
        "speedup_over_airflow_runs_without_the_wait": apart,
    }


# --- the DAG task: Airflow's own task runner under each supervisor ----------------------------


@dataclass(frozen=True)
class _Phases:
    """Where one DAG task run's wall time went, placed by the runner's own log records (both
    supervisors file them with the runner's timestamps)."""

    #: Spawn → the runner's first record (``::group::Pre Execute``): interpreters, imports
    #: (the runner's included), the supervisor's own set-up.
    startup: float
    #: The runner's first record → its last (``::endgroup::`` of Post Execute): startup
    #: details, DAG parse, execute, XCom push, state, each request answered by its supervisor.
    runner: float
    #: The runner's last record → the supervisor's exit.
    exit: float
    #: The runner's own measure of parsing the DAG file (``dag_file_parse_ms``).
    dag_parse: float


def _phases(log_path: Path, run: _Exit) -> _Phases:
    records: list[dict[str, Any]] = [
        json.loads(line) for line in log_path.read_text().splitlines() if line.strip()
    ]

    def first(event: str) -> dict[str, Any]:
        for record in records:
            if record.get("event") == event:
                return record
        raise RuntimeError(f"no {event!r} record in {log_path}")

    def at(record: dict[str, Any]) -> float:
        return dt.datetime.fromisoformat(record["timestamp"]).timestamp()

    start = at(first("::group::Pre Execute"))
    ends = [r for r in records if r.get("event") == "::endgroup::"]
    if not ends:
        raise RuntimeError(f"no '::endgroup::' record in {log_path}")
    end = at(ends[-1])
    return _Phases(
        startup=start - run.started,
        runner=end - start,
        exit=run.started + run.seconds - end,
        dag_parse=first("Worker startup parse complete")["dag_file_parse_ms"] / 1000,
    )


def _dag_run(
    side: Any,
    argv: Callable[[Path], list[str]],
    env: dict[str, str],
    home: Path,
    name: str,
    *,
    peak: bool = False,
) -> tuple[_Exit, Path]:
    """One fresh queued try of the DAG task, its workload run by ``argv(path)``; the run and
    its task log."""
    workload = _queue(side)
    path = home / f"{name}.json"
    path.write_text(json.dumps(workload))
    run = _run(argv(path), env, home / f"{name}.out", peak=peak)
    _check_success(side, workload, name)
    return run, home / "logs" / workload["log_path"]


def _dag_task(side: Any, python: Path, env: dict[str, str], home: Path, runs: int) -> list[Row]:
    """The same DAG task from the same kind of workload: Airflow's ``execute_workload``
    against ``supervise workload.json``, Airflow's task runner on both sides."""
    sides: dict[str, Callable[[Path], list[str]]] = {
        "airflow": lambda path: [
            *(str(python), "-m", "airflow.sdk.execution_time.execute_workload"),
            *("--json-path", str(path)),
        ],
        "taskvisor": lambda path: [str(python.with_name("supervise")), str(path)],
    }
    timed: dict[str, list[tuple[_Exit, _Phases]]] = {name: [] for name in sides}
    ours_inside: list[float] = []
    setups: dict[bool, list[float]] = {True: [], False: []}
    # The first round warms up (page cache, the server, taskvisor's bytecode) and is not
    # counted. Who goes first alternates, so neither side always runs in the other's wake.
    for i in range(runs + 1):
        for name in sorted(sides, reverse=i % 2 == 1):
            run, log = _dag_run(side, sides[name], env, home, f"dag-{name}-{i}")
            if i:
                timed[name].append((run, _phases(log, run)))
                if name == "taskvisor":
                    ours_inside.append(supervised_seconds(log))
        for collect in (True, False):
            out = home / f"runner-setup-{i}-{'gc' if collect else 'nogc'}.out"
            _run([str(python), "-c", _runner_setup(collect=collect)], env, out)
            if i:
                setups[collect].append(float(out.read_text().split()[-1]))
    peaks: dict[str, list[_Exit]] = {name: [] for name in sides}
    for k in range(min(PEAK_RUNS, max(1, runs))):
        for name, argv in sides.items():
            run, _ = _dag_run(side, argv, env, home, f"peak-{name}-{k}", peak=True)
            peaks[name].append(run)
    return _dag_rows(timed, peaks, ours_inside, setups)


def _ms(seconds: Sequence[float]) -> Stat:
    return Stat.of([s * 1000 for s in seconds], "ms")


def _mb(kib: Sequence[int | None]) -> Stat:
    return Stat.of([(k or 0) * 1024 / MB for k in kib], "MB")


def _versus(
    key: str,
    title: str,
    ours: Stat,
    theirs: Stat,
    theirs_name: str,
    *,
    target: str = "—",
    check: Callable[[float], bool] | None = None,
    better: str = "faster",
    note: str = "",
    ratio_text: str | None = None,
    details: dict[str, Any] | None = None,
) -> Row:
    """A row of ours beside Airflow's (in the floor column: the peer, not a floor); the
    ratio column says how many times ``better`` ours is, then ``note``."""
    return row(
        key,
        title,
        ours,
        target,
        check,
        floor=theirs,
        floor_name=theirs_name,
        details=details,
        ratio_text=ratio_text or f"{theirs.median / ours.median:.1f}x {better}{note}",
    )


def _dag_rows(
    timed: dict[str, list[tuple[_Exit, _Phases]]],
    peaks: dict[str, list[_Exit]],
    ours_inside: list[float],
    setups: dict[bool, list[float]],
) -> list[Row]:
    ours_runs, theirs_runs = timed["taskvisor"], timed["airflow"]
    ours, theirs = _ms([r.seconds for r, _ in ours_runs]), _ms([r.seconds for r, _ in theirs_runs])
    ratio_text, speedup = _speedup(
        [r.seconds for r, _ in theirs_runs],
        [p.exit >= STALL_SECONDS for _, p in theirs_runs],
        ours,
    )
    peer = "Airflow 3.3.2 `execute_workload` (the peer, not a floor)"

    def phase(attr: str, runs: list[tuple[_Exit, _Phases]]) -> Stat:
        return _ms([getattr(p, attr) for _, p in runs])

    setup, setup_without_gc = _ms(setups[True]), _ms(setups[False])
    # What taskvisor cannot shave: the runner's set-up without the GC (timed alone in a fresh
    # interpreter, paired run by run) and the runner's own work, its first record to its last.
    share = _ms([s + p.runner for s, (_, p) in zip(setups[False], ours_runs, strict=True)])
    their_child = _mb([r.child_hwm_kib for r in peaks["airflow"]])
    what = "trivial DAG task, the same workload, Airflow's own task runner on both sides"
    return [
        _versus(
            "airflow_dag",
            f"{what}: Airflow's supervisor (`execute_workload`) / `supervise workload.json`, "
            "start to exit",
            ours,
            theirs,
            peer,
            target="≥ 2x faster",
            check=lambda v: theirs.median / v >= 2,
            ratio_text=ratio_text,
            details={
                **speedup,
                # "Starting task" → "Task finished" in our log: /run, the launch, the
                # runner's whole life, the state report.
                "supervised_ms_taskvisor": _ms(ours_inside).as_dict(),
            },
        ),
        _versus(
            "airflow_dag_cpu",
            "CPU time of that run, whole process tree (user + sys, supervisor + runner)",
            _ms([r.cpu for r, _ in ours_runs]),
            _ms([r.cpu for r, _ in theirs_runs]),
            peer,
            better="less",
        ),
        _versus(
            "airflow_dag_rss_supervisor",
            "peak RSS, supervisor process (`supervise` / Airflow's `execute_workload`), DAG task",
            _mb([r.supervisor_hwm_kib for r in peaks["taskvisor"]]),
            _mb([r.supervisor_hwm_kib for r in peaks["airflow"]]),
            "Airflow's supervisor (`execute_workload`)",
            target="≤ 40 MB",
            check=lambda v: v <= 40,
            better="less",
        ),
        _versus(
            "airflow_dag_rss_child",
            "peak RSS, task child (Airflow's task runner; Airflow forks it from its supervisor "
            "after importing, so its RSS counts pages it shares with it; ours imports Airflow "
            "itself)",
            _mb([r.child_hwm_kib for r in peaks["taskvisor"]]),
            their_child,
            "Airflow's task runner under Airflow's supervisor",
            target="≤ Airflow's",
            check=lambda v: v <= their_child.median,
            better="less",
        ),
        _versus(
            "airflow_dag_pss_pair",
            "peak memory of supervisor + task child together (PSS: shared pages counted once)",
            _mb([r.pair_pss_kib for r in peaks["taskvisor"]]),
            _mb([r.pair_pss_kib for r in peaks["airflow"]]),
            "Airflow's supervisor + its task runner",
            better="less",
        ),
        _versus(
            "airflow_dag_startup",
            "of the DAG task's wall time: spawn → the runner's first record (interpreters, "
            "imports, the runner's included, supervisor set-up; ours: `/run` and plugin "
            "loading too)",
            phase("startup", ours_runs),
            phase("startup", theirs_runs),
            peer,
            note=f"; the runner's imports + plugins alone: {setup.median:.0f} ms, "
            f"{setup_without_gc.median:.0f} ms without the GC",
            details={
                "runner_setup_ms": setup.as_dict(),
                "runner_setup_ms_without_gc": setup_without_gc.as_dict(),
            },
        ),
        _versus(
            "airflow_dag_runner",
            "… the runner's first → last record (startup details, DAG parse, execute, "
            "XCom push, state; its requests answered by its supervisor; Airflow's: plugin "
            "loading too, and a full GC of the heap it inherited)",
            phase("runner", ours_runs),
            phase("runner", theirs_runs),
            peer,
            details={
                "dag_parse_ms_taskvisor": phase("dag_parse", ours_runs).as_dict(),
                "dag_parse_ms_airflow": phase("dag_parse", theirs_runs).as_dict(),
            },
        ),
        _versus(
            "airflow_dag_exit",
            "… the runner's last record → the supervisor's exit (runner exit, reporting; "
            "Airflow's supervisor may wait 5 s in `select`)",
            phase("exit", ours_runs),
            phase("exit", theirs_runs),
            peer,
        ),
        row(
            "airflow_dag_runner_share",
            "the runner's own share under `supervise`: its imports and plugin loading "
            "(`import airflow.sdk.execution_time.task_runner` + `get_listener_manager()`, "
            "timed alone in a fresh interpreter after its start-up, GC off) + its first → "
            "last record",
            share,
            "—",
            None,
            floor_name="— (Airflow's own work, what taskvisor cannot shave)",
            ratio_text=f"{share.median / ours.median:.0%} of `supervise`'s wall time",
        ),
    ]
