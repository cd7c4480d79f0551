"""Reading processes' memory from ``/proc``: peak RSS (VmHWM), PSS, children."""

from __future__ import annotations

import os

__all__ = ["children_of", "cpu_seconds", "pss_kib", "status_kib"]


def status_kib(pid: int, field: str) -> int | None:
    """A ``kB`` field of ``/proc/<pid>/status`` (``VmHWM``, ``VmRSS``), or None if gone."""
    key = field.encode() + b":"
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def pss_kib(pid: int) -> int | None:
    """Proportional set size of ``pid`` from ``/proc/<pid>/smaps_rollup``, or None if gone."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            for line in f:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def children_of(pid: int) -> list[int]:
    """Direct children of ``pid`` (``/proc/<pid>/task/<pid>/children``)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except (OSError, ValueError):
        return []


def cpu_seconds(pid: int) -> float:
    """CPU time of every thread of ``pid`` so far, in seconds, at nanosecond resolution
    (``/proc/<pid>/task/*/schedstat``; clock-tick counters are too coarse for idle work).

    Threads that already ended are not counted: measure across a window in which the
    process keeps its threads.
    """
    total = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0.0
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            continue
    return total / 1e9
