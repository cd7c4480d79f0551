"""The table and the JSON file: one row per benchmark, our number beside its floor and target."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.stats import Stat

__all__ = ["Row", "render", "write_json"]


@dataclass
class Row:
    """One benchmark's result.

    ``ours`` and ``floor`` share a unit; ``times_floor`` is our cost as a multiple of the
    floor's (for rates: floor rate / our rate). ``met`` is None for rows without a target.
    """

    key: str
    title: str
    ours: Stat
    target: str
    met: bool | None
    floor: Stat | None = None
    floor_name: str = ""
    times_floor: float | None = None
    details: dict[str, Any] = field(default_factory=dict)
    #: Shown instead of ``times_floor`` (e.g. a speed-up over a peer).
    ratio_text: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "key": self.key,
            "title": self.title,
            "ours": self.ours.as_dict(),
            "floor": self.floor.as_dict() if self.floor else None,
            "floor_name": self.floor_name,
            "times_floor": self.times_floor,
            "target": self.target,
            "met": self.met,
            "details": self.details,
            "ratio_text": self.ratio_text,
        }


def row(
    key: str,
    title: str,
    ours: Stat,
    target: str,
    check: Callable[[float], bool] | None,
    *,
    floor: Stat | None = None,
    floor_name: str = "",
    rate: bool = False,
    details: dict[str, Any] | None = None,
    ratio_text: str | None = None,
) -> Row:
    """A row whose target is met when ``check(ours.median)`` holds."""
    times = None
    if floor is not None and floor.median and ours.median:
        times = floor.median / ours.median if rate else ours.median / floor.median
    return Row(
        key,
        title,
        ours,
        target,
        None if check is None else check(ours.median),
        floor,
        floor_name,
        times,
        details or {},
        ratio_text,
    )


def _num(value: float) -> str:
    if value >= 10_000:
        return f"{value:,.0f}"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def _stat(s: Stat) -> str:
    return f"{_num(s.median)} {s.unit} ({_num(s.min)}-{_num(s.max)}, n={s.n})"


def render(machine: dict[str, Any], rows: list[Row], command: str) -> str:
    """The table as Markdown, with the machine it ran on."""
    lines = [
        f"Machine: {machine['cpu']}, {machine['cores']} cores, {machine['ram_gib']} GiB RAM, "
        f"{machine['kernel']}, {machine['python']}; load average at start "
        f"{' '.join(str(x) for x in machine['load_average_at_start'])}, at end "
        f"{' '.join(str(x) for x in machine.get('load_average_at_end', []))} "
        "(a shared machine: compare medians and ratios)",
        "",
        f"Command: `{command}`. Medians (min-max, n = runs or samples).",
        "",
        "| benchmark | taskvisor | floor | x floor | target | met |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        floor = f"{_stat(r.floor)}<br>{r.floor_name}" if r.floor else r.floor_name or "—"
        times = r.ratio_text or (f"{r.times_floor:.1f}x" if r.times_floor is not None else "—")
        met = {True: "met", False: "**not met**", None: "—"}[r.met]
        lines.append(f"| {r.title} | {_stat(r.ours)} | {floor} | {times} | {r.target} | {met} |")
    return "\n".join(lines)


def write_json(path: Path, document: dict[str, Any]) -> None:
    """Write ``document`` to ``path`` atomically (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(document, indent=2) + "\n")
    os.replace(tmp, path)
