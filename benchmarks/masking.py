"""Masking throughput with many secrets, and its floor, measured in one fresh process.

``python -m benchmarks.masking throughput <secrets> <lines> <runs>`` registers ``secrets``
random token-like secrets with a :class:`~supervisor.masking.Masker`, then masks the log relay
benchmark's lines (one in ten holds a secret) in 64 KiB chunks, as the supervisor does a
captured stream. The floor is the same chunks through ``str.replace`` of the one secret they
hold. It prints one JSON object: lines/s of each run, both ways, and the cost of building the
matcher (seconds, and the growth of the process's peak RSS).
"""

from __future__ import annotations

import json
import random
import string
import sys
import time
from typing import Any

__all__ = ["throughput"]

SECRET = "bench-s3cret-password"  # the one the lines hold, as in the log relay benchmark
CHUNK = 64 * 1024


def _peak_rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status")


def throughput(secrets: int, lines: int, runs: int) -> dict[str, Any]:
    """Mask ``lines`` lines ``runs`` times with ``secrets`` secrets registered."""
    from supervisor.masking import MASK, Masker

    rng = random.Random(6)
    alphabet = string.ascii_letters + string.digits + "-_"
    values = [SECRET] + [
        "".join(rng.choices(alphabet, k=rng.randint(12, 40))) for _ in range(secrets - 1)
    ]
    masker = Masker()
    peak0 = _peak_rss_kib()
    t0 = time.perf_counter()
    masker.add(values)
    build = time.perf_counter() - t0
    build_kib = _peak_rss_kib() - peak0
    text = "".join(
        f"line {i} of the log relay benchmark password={SECRET if i % 10 == 0 else 'xxxxxxxx'}\n"
        for i in range(lines)
    )
    chunks = [text[i : i + CHUNK] for i in range(0, len(text), CHUNK)]
    del text
    ours, floor = [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        masked = [masker.mask(chunk) for chunk in chunks]
        ours.append(lines / (time.perf_counter() - t0))
        t0 = time.perf_counter()
        replaced = [chunk.replace(SECRET, MASK) for chunk in chunks]
        floor.append(lines / (time.perf_counter() - t0))
        # A chunk boundary may split a secret, which neither way masks: compare, not count.
        if masked != replaced:
            raise RuntimeError(f"masking with {secrets} secrets differs from str.replace")
    return {
        "lines_per_s": ours,
        "floor_lines_per_s": floor,
        "build_seconds": build,
        "build_peak_rss_kib": build_kib,
        "secret_chars": sum(map(len, values)),
    }


if __name__ == "__main__":
    if sys.argv[1] != "throughput":
        raise SystemExit(f"unknown measurement: {sys.argv[1]}")
    print(json.dumps(throughput(*map(int, sys.argv[2:5]))))
