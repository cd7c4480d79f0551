"""Task entrypoints the benchmarks run under ``supervise`` (named as ``<this file>:<name>``).

Each measuring task takes its parameters from the activity's ``env`` (``BENCH_*``) and writes
what it measured, as JSON, to ``BENCH_OUT``: timings taken inside the task are the only ones
that exclude process start-up. Only the SDK is imported here, as a real task would.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from sdk import Variable, XCom, log, mask_secret

#: The pre-injected variable (served from the activity's context) and the server-side one.
LOCAL_KEY = "bench_local"
REMOTE_KEY = "bench_remote"


def _write_result(result: dict[str, Any]) -> None:
    with open(os.environ["BENCH_OUT"], "w") as f:
        json.dump(result, f)


def trivial() -> int:
    """The trivial task: return a value (pushed as XCom ``return_value``)."""
    return 42


def _time_calls(call: Callable[[str], object], arg: str) -> None:
    n = int(os.environ["BENCH_N"])
    clock = time.perf_counter_ns
    for _ in range(min(50, n)):  # warm-up: first-call imports, connection set-up
        call(arg)
    samples = []
    for _ in range(n):
        t0 = clock()
        call(arg)
        samples.append(clock() - t0)
    _write_result({"ns": samples})


def sdk_local() -> None:
    """Time ``Variable.get`` of a variable the activity pushed (answered in this process)."""
    _time_calls(Variable.get, LOCAL_KEY)


def sdk_supervisor() -> None:
    """Time ``mask_secret``: a request the supervisor answers itself, without the network
    (as it answers a pushed variable to a task that does not use this SDK)."""
    _time_calls(mask_secret, "bench-mask-secret-value")


def sdk_relayed() -> None:
    """Time ``Variable.get`` of a variable only the server has (relayed by the supervisor)."""
    _time_calls(Variable.get, REMOTE_KEY)


def print_lines() -> None:
    """Write ``BENCH_N`` lines to stdout in large writes; every 10th holds ``BENCH_SECRET``.

    The lines are built before the clock starts, so only writing and relaying is timed.
    """
    n = int(os.environ["BENCH_N"])
    secret = os.environ["BENCH_SECRET"]
    batch = 2000
    chunks = []
    for start in range(0, n, batch):
        lines = []
        for i in range(start, min(n, start + batch)):
            extra = f" password={secret}" if i % 10 == 0 else ""
            lines.append(f"line {i} of the log relay benchmark{extra}\n")
        chunks.append("".join(lines))
    out = sys.stdout
    t0 = time.time()
    for chunk in chunks:
        out.write(chunk)
    out.flush()
    _write_result({"t0": t0, "t_written": time.time()})


def print_calls() -> None:
    """Call ``print()`` ``BENCH_N`` times, as task code does (one write per line)."""
    n = int(os.environ["BENCH_N"])
    t0 = time.time()
    for i in range(n):
        print("line", i, "of the print benchmark")
    _write_result({"t0": t0, "t_written": time.time()})


def notify() -> None:
    """Send ``BENCH_N`` ``Log`` notifications, then one request to know they were all read.

    The supervisor answers requests in order after the lines before them, so when the final
    ``Variable.get`` returns, every notification has been decoded and written.
    """
    n = int(os.environ["BENCH_N"])
    info = log.info
    Variable.get(LOCAL_KEY)
    t0 = time.perf_counter()
    for _ in range(n):
        info("notification")
    Variable.get(LOCAL_KEY)
    _write_result({"seconds": time.perf_counter() - t0})


def sleeper() -> str:
    """Signal readiness (a file named after this pid in ``BENCH_READY_DIR``), then sleep
    until ``BENCH_RELEASE`` exists."""
    ready = os.path.join(os.environ["BENCH_READY_DIR"], str(os.getpid()))
    with open(ready, "w"):
        pass
    release = os.environ["BENCH_RELEASE"]
    deadline = time.monotonic() + 600
    while not os.path.exists(release) and time.monotonic() < deadline:
        time.sleep(0.5)
    return "released"


def big_xcom() -> None:
    """Push one XCom of ``BENCH_BYTES`` bytes of JSON (a string)."""
    value = "x" * (int(os.environ["BENCH_BYTES"]) - 2)
    t0 = time.time()
    XCom.push("big", value)
    _write_result({"t0": t0, "t1": time.time()})
