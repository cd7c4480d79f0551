"""The benchmarks of issue 6, each measured with its floor in the same run.

Every function takes the :class:`~benchmarks.harness.Bench`, the :class:`Plan` (how many
runs, how big) and the floors measured so far, and returns table rows.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from benchmarks import floors
from benchmarks.harness import Bench, recorded_server, supervised_seconds
from benchmarks.procfs import children_of, cpu_seconds, pss_kib
from benchmarks.report import Row, row
from benchmarks.stats import Stat, percentile
from benchmarks.tasks import LOCAL_KEY, REMOTE_KEY

__all__ = ["CASES", "Floors", "Plan"]

MB = 1e6  # targets are in MB; KiB are converted with 1024 / 1e6 (stricter than MiB)
SECRET = "bench-s3cret-password"  # masked in the log relay benchmark


@dataclass(frozen=True)
class Plan:
    """How much to measure. :meth:`quick` is for a short run, :meth:`full` for the table."""

    trivial_runs: int
    rss_runs: int
    sleepers: int
    idle_window: float
    sdk_runs: int
    local_calls: int
    relayed_calls: int
    log_lines: int
    print_lines: int
    notifications: int
    xcom_runs: int
    xcom_bytes: int
    floor_runs: int

    @classmethod
    def full(cls) -> Plan:
        return cls(
            trivial_runs=20,
            rss_runs=8,
            sleepers=100,
            idle_window=10.0,
            sdk_runs=5,
            local_calls=5000,
            relayed_calls=500,
            log_lines=1_000_000,
            print_lines=200_000,
            notifications=300_000,
            xcom_runs=3,
            xcom_bytes=100_000_000,
            floor_runs=20,
        )

    def repeated(self, runs: int) -> Plan:
        """This plan with every benchmark repeated ``runs`` times."""
        return dataclasses.replace(
            self,
            trivial_runs=runs,
            rss_runs=runs,
            sdk_runs=runs,
            xcom_runs=runs,
            floor_runs=runs,
        )

    @classmethod
    def quick(cls) -> Plan:
        return cls(
            trivial_runs=5,
            rss_runs=3,
            sleepers=10,
            idle_window=5.5,
            sdk_runs=2,
            local_calls=1000,
            relayed_calls=100,
            log_lines=200_000,
            print_lines=0,
            notifications=50_000,
            xcom_runs=1,
            xcom_bytes=100_000_000,
            floor_runs=5,
        )


def _us(samples_ns: list[int]) -> float:
    return percentile(samples_ns, 0.5) / 1000


class Floors:
    """The floors, each measured the first time a benchmark asks for it (so ``--only``
    measures only what its rows show), on the same machine state as the rows."""

    def __init__(self, bench: Bench, plan: Plan) -> None:
        self._bench = bench
        self._plan = plan
        self.measured: dict[str, Stat] = {}

    def __getitem__(self, name: str) -> Stat:
        if name not in self.measured:
            self.measured.update(getattr(self, f"_{name}")())
        return self.measured[name]

    def _python_pass(self) -> dict[str, Stat]:
        runs = [floors.python_pass() for _ in range(self._plan.floor_runs + 1)][1:]
        return {"python_pass": Stat.of([s * 1000 for s in runs], "ms")}

    def _python_pass_rss(self) -> dict[str, Stat]:
        rss = [floors.python_pass_rss() for _ in range(3)]
        return {"python_pass_rss": Stat.of([kib * 1024 / MB for kib in rss], "MB")}

    def _fork(self) -> dict[str, Stat]:
        fork = floors.in_fresh_process("fork", self._plan.floor_runs * 5)
        return {"fork": Stat.of([ns / 1e6 for ns in fork["ns"]], "ms")}

    def _pipe_rtt(self) -> dict[str, Stat]:
        rtt = [floors.in_fresh_process("pipe_rtt", 5000) for _ in range(3)]
        return {"pipe_rtt": Stat.of([_us(r["ns"]) for r in rtt], "µs")}

    def _python_call(self) -> dict[str, Stat]:
        calls = [floors.in_fresh_process("python_call", 5000) for _ in range(3)]
        return {"python_call": Stat.of([_us(r["ns"]) for r in calls], "µs")}

    def _pipe_notify(self) -> dict[str, Stat]:
        n = self._plan.notifications
        notify = [floors.in_fresh_process("pipe_notify", n) for _ in range(3)]
        return {"pipe_notify": Stat.of([r["count"] / r["seconds"] for r in notify], "msg/s")}

    def _pipe_copy(self) -> dict[str, Stat]:
        copy = [floors.in_fresh_process("pipe_copy", self._plan.log_lines) for _ in range(3)]
        return {"pipe_copy": Stat.of([r["count"] / r["seconds"] for r in copy], "lines/s")}

    def _http(self) -> dict[str, Stat]:
        server = self._bench.server
        ti_id, _ = server.create_task(entrypoint="unused:unused")
        server.admin.set_variable(REMOTE_KEY, "value")
        path = f"/execution/variables/{REMOTE_KEY}"
        http = [
            floors.http_keepalive(server.port, path, server.mint_token(ti_id), 300)
            for _ in range(3)
        ]
        return {
            "http": Stat.of([_us(r["ns"]) / 1000 for r in http], "ms"),
            # The least an idle supervisor must do: one HTTP request per 5 s heartbeat.
            "idle_cpu": Stat.of([r["cpu_per_request"] / 5.0 * 100 for r in http], "%"),
        }

    _idle_cpu = _http


def trivial(bench: Bench, plan: Plan, fl: Floors) -> list[Row]:
    """``supervise`` start to exit of a task that returns 42, against the reference server."""
    for _ in range(2):  # warm-up: bytecode cache, page cache, the server's first requests
        bench.run(bench.activity("trivial"))
    # Each run is paired with its floor, so both see the same load on a shared machine.
    floor_ms, runs = [], []
    for _ in range(plan.trivial_runs):
        floor_ms.append(floors.python_pass() * 1000)
        runs.append(bench.run(bench.activity("trivial")))
    seconds = [r.seconds for r in runs]
    cpu = Stat.of([r.cpu_seconds * 1000 for r in runs], "ms")
    fl.measured["python_pass"] = Stat.of(floor_ms, "ms")
    return [
        row(
            "trivial",
            "trivial task, `supervise` start to exit (reference server)",
            Stat.of([s * 1000 for s in seconds], "ms"),
            "≤ 250 ms",
            lambda v: v <= 250,
            floor=fl["python_pass"],
            floor_name="`python -c pass`",
            details={
                "cpu_ms_supervisor_and_child": cpu.as_dict(),
                "supervised_ms": Stat.of(
                    [supervised_seconds(r.log_path) * 1000 for r in runs], "ms"
                ).as_dict(),
            },
        ),
        row(
            "trivial_cpu",
            "CPU time of that run, supervisor + task child (less load-sensitive than wall)",
            cpu,
            "—",
            None,
        ),
    ]


def peak_rss(bench: Bench, plan: Plan, fl: Floors) -> list[Row]:
    """VmHWM of the supervisor and of its task child, trivial task (separate, polled runs)."""
    runs = [bench.run(bench.activity("trivial"), peak=True) for _ in range(plan.rss_runs)]
    sup = Stat.of([(r.supervisor_hwm_kib or 0) * 1024 / MB for r in runs], "MB")
    child = Stat.of([(r.child_hwm_kib or 0) * 1024 / MB for r in runs], "MB")
    floor = fl["python_pass_rss"]
    return [
        row(
            "rss_supervisor",
            "peak RSS, supervisor (trivial task)",
            sup,
            "≤ 35 MB",
            lambda v: v <= 35,
            floor=floor,
            floor_name="`python -c pass`",
        ),
        row(
            "rss_child",
            "peak RSS, task child (trivial task)",
            child,
            "≤ 30 MB",
            lambda v: v <= 30,
            floor=floor,
            floor_name="`python -c pass`",
        ),
    ]


def sleeping_tasks(bench: Bench, plan: Plan, fl: Floors) -> list[Row]:
    """N sleeping tasks at once: PSS of supervisor + child per task, then the supervisors'
    CPU over an idle window (default heartbeat interval, 5 s)."""
    k = plan.sleepers
    ready = bench.workdir / "sleepers-ready"
    ready.mkdir(exist_ok=True)
    release = bench.workdir / "sleepers-release"
    env = {"BENCH_READY_DIR": str(ready), "BENCH_RELEASE": str(release)}
    activities = [bench.activity("sleeper", env=env) for _ in range(k)]
    procs = [bench.start(a) for a in activities]
    try:
        deadline = time.monotonic() + 60 + k
        while len(os.listdir(ready)) < k:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {len(os.listdir(ready))} of {k} sleepers started")
            if any(p.poll() is not None for p in procs):
                raise RuntimeError("a sleeping task's supervise exited early")
            time.sleep(0.1)
        time.sleep(1.0)  # let the last starters finish their start-up work
        pss = []
        for p in procs:
            pids = [p.pid, *children_of(p.pid)]
            pss.append(sum(pss_kib(pid) or 0 for pid in pids) * 1024 / MB)
        cpu0 = [cpu_seconds(p.pid) for p in procs]
        t0 = time.monotonic()
        time.sleep(plan.idle_window)
        cpu1 = [cpu_seconds(p.pid) for p in procs]
        window = time.monotonic() - t0
    finally:
        release.touch()
        codes = [p.wait(120) for p in procs]
    if any(codes):
        raise RuntimeError(f"sleeping tasks' supervise exit codes: {sorted(set(codes))}")
    idle = [(b - a) / window * 100 for a, b in zip(cpu0, cpu1, strict=True)]
    pair_floor = Stat.of([kib * 1024 / MB for kib in floors.idle_pair_pss(min(k, 20))], "MB")
    return [
        row(
            "pss_per_task",
            f"memory per task, {k} sleeping tasks at once (PSS, supervisor + child)",
            Stat.of(pss, "MB"),
            "≤ 25 MB",
            lambda v: v <= 25,
            floor=pair_floor,
            floor_name="sleeping `python` + a forked child",
            details={"mean_mb": sum(pss) / k, "total_mb": sum(pss)},
        ),
        row(
            "idle_cpu",
            f"idle CPU of a supervisor whose task sleeps (heartbeat every 5 s, "
            f"{window:.0f} s window, {k} supervisors)",
            Stat.of(idle, "% of a core"),
            "≤ 0.2%",
            lambda v: v <= 0.2,
            floor=fl["idle_cpu"],
            floor_name="CPU of one kept-alive HTTP request per 5 s",
        ),
    ]


def _call_timings(bench: Bench, plan: Plan, task: str, n: int) -> tuple[Stat, dict[str, Any]]:
    p50s, p99s = [], []
    context = {"variables": {LOCAL_KEY: "value"}}
    for _ in range(plan.sdk_runs):
        run = bench.run(bench.activity(task, env={"BENCH_N": str(n)}, context=context))
        samples = run.result()["ns"]
        p50s.append(_us(samples))
        p99s.append(percentile(samples, 0.99) / 1000)
    return Stat.of(p50s, "µs"), {"p99_us_median": sorted(p99s)[len(p99s) // 2], "calls": n}


def sdk_local(bench: Bench, plan: Plan, fl: Floors) -> list[Row]:
    """``Variable.get`` of a pushed variable, timed inside the task (p50 per run)."""
    stat, details = _call_timings(bench, plan, "sdk_local", plan.local_calls)
    return [
        row(
            "sdk_local",
            "SDK call served from pre-injected context (`Variable.get` of a pushed variable, "
            "answered in the task's process; p50 in the task)",
            stat,
            "≤ 50 µs p50",
            lambda v: v <= 50,
            floor=fl["python_call"],
            floor_name="one Python call returning a dict value, timed the same way",
            details=details,
        )
    ]


def sdk_supervisor(bench: Bench, plan: Plan, fl: Floors) -> list[Row]:
    """``mask_secret``, a request the supervisor answers without the network (p50 per run)."""
    stat, details = _call_timings(bench, plan, "sdk_supervisor", plan.local_calls)
    return [
        row(
            "sdk_supervisor",
            "SDK request answered by the supervisor itself (`mask_secret`; what a task that "
            "does not use this SDK pays for a pushed variable; p50 in the task)",
            stat,
            "—",
            None,
            floor=fl["pipe_rtt"],
            floor_name="one pipe round trip with msgspec",
            details=details,
        )
    ]


def sdk_relayed(bench: Bench, plan: Plan, fl: Floors) -> list[Row]:
    """``Variable.get`` relayed to the reference server, timed inside the task (p50 per run)."""
    bench.server.admin.set_variable(REMOTE_KEY, "value")
    stat, details = _call_timings(bench, plan, "sdk_relayed", plan.relayed_calls)
    ms = Stat(stat.median / 1000, stat.min / 1000, stat.max / 1000, stat.n, "ms")
    return [
        row(
            "sdk_relayed",
            "SDK call relayed to the reference server (`Variable.get`, p50 in the task)",
            ms,
            "≤ 2 ms p50",
            lambda v: v <= 2,
            floor=fl["http"],
            floor_name="one kept-alive HTTP GET to the reference server (http.client)",
            details=details,
        )
    ]


_records = msgspec.json.Decoder(dict[str, Any])


def _epoch(timestamp: str) -> float:
    return (
        dt.datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC).timestamp()
    )


def _stdout_records(log_path: Path) -> list[dict[str, Any]]:
    with log_path.open("rb") as f:
        return [r for r in map(_records.decode, f) if r.get("logger") == "task.stdout"]


def log_relay(bench: Bench, plan: Plan, fl: Floors) -> list[Row]:
    """Lines/s from the task's stdout to the log file, a secret registered and masked, every
    line counted. Clock: the task's first write to the supervisor's timestamp on the last."""
    n = plan.log_lines
    context = {
        "connections": [
            {"conn_id": "bench_db", "conn_type": "postgres", "host": "db", "password": SECRET}
        ]
    }
    rates = []
    for _ in range(plan.sdk_runs):
        run = bench.run(
            bench.activity(
                "print_lines", env={"BENCH_N": str(n), "BENCH_SECRET": SECRET}, context=context
            )
        )
        records = _stdout_records(run.log_path)
        masked = sum(1 for r in records if "password=***" in r["event"])
        leaked = sum(1 for r in records if SECRET in r["event"])
        if len(records) != n or masked != (n + 9) // 10 or leaked:
            raise RuntimeError(
                f"log relay lost or leaked lines: {len(records)} of {n} arrived, "
                f"{masked} masked, {leaked} with the secret"
            )
        rates.append(n / (_epoch(records[-1]["timestamp"]) - run.result()["t0"]))
    rows = [
        row(
            "log_relay",
            f"log relay, task stdout → log file, masking on, none lost ({n:,} lines)",
            Stat.of(rates, "lines/s"),
            "≥ 300,000 lines/s",
            lambda v: v >= 300_000,
            floor=fl["pipe_copy"],
            floor_name="the same bytes copied pipe → file, no processing",
            rate=True,
        )
    ]
    if plan.print_lines:
        m = plan.print_lines
        run = bench.run(bench.activity("print_calls", env={"BENCH_N": str(m)}, context=context))
        records = _stdout_records(run.log_path)
        if len(records) != m:
            raise RuntimeError(f"print relay lost lines: {len(records)} of {m}")
        rate = m / (_epoch(records[-1]["timestamp"]) - run.result()["t0"])
        rows.append(
            row(
                "print_relay",
                f"{m:,} `print()` calls → log file (Airflow 3.3: ~7,400 lines/s)",
                Stat.of([rate], "lines/s"),
                "—",
                None,
            )
        )
    return rows


#: How many secrets the masking rows register.
MASKING_SECRETS = (10, 1_000, 100_000)


def masking(bench: Bench, plan: Plan, fl: Floors) -> list[Row]:
    """Lines/s through ``Masker.mask`` with 10, 1,000 and 100,000 secrets registered, each
    beside ``str.replace`` of the one secret over the same text, in the same fresh process."""
    rows = []
    lines = plan.log_lines // 5  # ~12 MB of text in the full plan: enough to time, not to swap
    for count in MASKING_SECRETS:
        result = floors.in_fresh_process(
            "throughput", count, lines, plan.sdk_runs, module="benchmarks.masking"
        )
        floor = Stat.of(result["floor_lines_per_s"], "lines/s")
        fl.measured[f"str_replace_{count}"] = floor
        rows.append(
            row(
                f"masking_{count}",
                f"masking, {count:,} secrets registered (log lines through `Masker.mask` in "
                f"64 KiB chunks, {lines:,} lines)",
                Stat.of(result["lines_per_s"], "lines/s"),
                "≥ 1,000,000 lines/s",
                lambda v: v >= 1_000_000,
                floor=floor,
                floor_name="the same chunks through `str.replace` of the one secret they hold",
                rate=True,
                details={
                    "build_ms": result["build_seconds"] * 1000,
                    "build_peak_rss_mb": result["build_peak_rss_kib"] * 1024 / MB,
                    "secret_chars": result["secret_chars"],
                },
            )
        )
    return rows


def notifications(bench: Bench, plan: Plan, fl: Floors) -> list[Row]:
    """``log.info`` notifications/s task → supervisor, until the supervisor has read them all."""
    n = plan.notifications
    context = {"variables": {LOCAL_KEY: "value"}}
    rates = []
    for _ in range(plan.sdk_runs):
        run = bench.run(bench.activity("notify", env={"BENCH_N": str(n)}, context=context))
        rates.append(n / run.result()["seconds"])
        with run.log_path.open("rb") as f:
            got = sum(1 for line in f if b'"event":"notification"' in line)
        if got != n:
            raise RuntimeError(f"notifications lost: {got} of {n} in the log")
    return [
        row(
            "notifications",
            "protocol notifications task → supervisor (`log.info`, none lost)",
            Stat.of(rates, "msg/s"),
            "≥ 100,000 msg/s",
            lambda v: v >= 100_000,
            floor=fl["pipe_notify"],
            floor_name="`Log` messages through a pipe, msgspec, one write each",
            rate=True,
        )
    ]


def xcom_heartbeat(bench: Bench, plan: Plan, fl: Floors) -> list[Row]:
    """Heartbeats (every 0.5 s, for several samples per push) while the task pushes a big
    XCom: the longest gap between two heartbeats the supervisor sent (seen by a relay in
    front of the server), less the interval."""
    size = plan.xcom_bytes
    interval = 0.5
    flags = ("--heartbeat-interval", str(interval), "--max-line", str(2 * size))
    delays, pushes, beats_during = [], [], []
    for _ in range(plan.xcom_runs):
        activity = bench.activity("big_xcom", env={"BENCH_BYTES": str(size)})
        with recorded_server(bench, activity) as recorder:
            run = bench.run(activity, flags)
        result = run.result()
        t0, t1 = result["t0"], result["t1"]
        beats = sorted(recorder.heartbeats)
        marks = [t0] + [b for b in beats if t0 < b < t1] + [t1]
        after = [b for b in beats if b >= t1]
        if after:
            marks.append(after[0])
        gaps = [b - a for a, b in itertools.pairwise(marks)]
        delays.append(max(0.0, max(gaps) - interval))
        beats_during.append(len(marks) - 2 - len(after[:1]))
        pushes.append(t1 - t0)
    return [
        row(
            "heartbeat_delay",
            f"heartbeat delay during a {size / MB:.0f} MB XCom push (interval {interval} s)",
            Stat.of(delays, "s"),
            "≤ 1 s over the interval",
            lambda v: v <= 1.0,
            floor_name="0 s (heartbeats on time)",
            details={"push_seconds": pushes, "heartbeats_during_push": beats_during},
        )
    ]


#: Every benchmark, in table order.
CASES = {
    "trivial": trivial,
    "rss": peak_rss,
    "sleepers": sleeping_tasks,
    "sdk_local": sdk_local,
    "sdk_supervisor": sdk_supervisor,
    "sdk_relayed": sdk_relayed,
    "log_relay": log_relay,
    "masking": masking,
    "notifications": notifications,
    "xcom_heartbeat": xcom_heartbeat,
}
