"""Summaries of repeated measurements: median, min, max and count."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["Stat", "percentile"]


@dataclass(frozen=True)
class Stat:
    """The median, min and max of ``n`` measurements of one quantity, in ``unit``."""

    median: float
    min: float
    max: float
    n: int
    unit: str

    @classmethod
    def of(cls, values: Sequence[float], unit: str) -> Stat:
        """Summarise ``values`` (at least one)."""
        if not values:
            raise ValueError("no measurements")
        return cls(statistics.median(values), min(values), max(values), len(values), unit)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values`` by nearest rank."""
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]
