"""``python -m benchmarks``: measure taskvisor against its floors (and Airflow), print a table.

Options: ``--quick`` (fewer and smaller runs), ``--peer airflow`` (also run the trivial task,
and the same DAG task under Airflow's own task runner, through Airflow 3.3's own supervisor
and ours against one Airflow api-server: ``benchmarks/peer_airflow.py``), ``--only``
(some benchmarks), ``--out`` (the JSON file; default ``benchmarks/results/latest.json``).
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.cases import CASES, Floors, Plan
from benchmarks.harness import BENCH_DIR, Bench
from benchmarks.machine import describe_machine
from benchmarks.report import Row, render, write_json


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    p.add_argument("--quick", action="store_true", help="fewer, smaller runs (about 1 minute)")
    p.add_argument("--peer", choices=["airflow"], help="also measure Airflow 3.3's supervisor")
    p.add_argument("--peer-runs", type=int, default=None, help="runs per side with --peer")
    p.add_argument(
        "--runs",
        type=int,
        default=None,
        metavar="N",
        help="repeat each benchmark N times instead of the plan's count (1: a smoke test)",
    )
    p.add_argument(
        "--only",
        type=lambda s: [name for name in s.split(",") if name],
        default=None,
        metavar="NAME[,NAME]",
        help=f"run only these benchmarks: {', '.join(CASES)} (and their floors)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=BENCH_DIR / "results" / "latest.json",
        help="where to write the JSON results",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks; print the table; write the JSON. Exit 0 even if a target is unmet."""
    args = _parser().parse_args(argv)
    names = list(CASES) if args.only is None else args.only
    unknown = set(names) - set(CASES)
    if unknown:
        _parser().error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    plan = Plan.quick() if args.quick else Plan.full()
    if args.runs is not None:
        plan = plan.repeated(args.runs)
    command = shlex.join(
        ["python", "-m", "benchmarks", *(argv if argv is not None else sys.argv[1:])]
    )
    machine = describe_machine()
    started = time.monotonic()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="taskvisor-bench-") as tmp:
        _cache_bytecode(Path(tempfile.gettempdir()) / "taskvisor-bench-pycache")
        with Bench(Path(tmp)) as bench:
            fl = Floors(bench, plan)
            for name in names:
                _progress(name)
                rows += CASES[name](bench, plan, fl)
        if args.peer == "airflow":
            from benchmarks.peer_airflow import compare_with_airflow

            _progress("peer: airflow")
            runs = args.peer_runs or (2 if args.quick else 9)
            rows += compare_with_airflow(runs)
    machine["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    table = render(machine, rows, command)
    print(table)
    write_json(
        args.out,
        {
            "command": command,
            "machine": machine,
            "seconds": round(time.monotonic() - started, 1),
            "floors": {k: v.as_dict() for k, v in fl.measured.items()},
            "rows": [r.as_dict() for r in rows],
            "table": table,
        },
    )
    _progress(f"done in {time.monotonic() - started:.0f} s; JSON in {args.out}")
    return 0


def _cache_bytecode(prefix: Path) -> None:
    """Let every Python this run starts read and write compiled bytecode under ``prefix``.

    An installed package has its ``.pyc`` files; a shell with ``PYTHONDONTWRITEBYTECODE=1``
    (as some CI sandboxes set) would make every ``supervise`` recompile taskvisor's modules
    from source, a cost no deployment pays. The first (warm-up) runs fill the cache.
    """
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ["PYTHONPYCACHEPREFIX"] = str(prefix)
    subprocess.run(
        [sys.executable, "-c", "import supervisor.cli, supervisor.supervise, sdk.runner"],
        check=True,
    )


def _progress(text: str) -> None:
    print(f"[benchmarks] {text}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
