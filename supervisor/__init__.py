"""The trusted side of taskvisor: ``supervise`` runs one task try and is its only link to
the Execution API server. See docs/design.md for the contracts.

This package's ``__init__`` imports nothing: ``supervise`` forks the task child before it
loads its HTTP client and helpers, so the child starts small.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from supervisor.outcome import ExitCode

__all__ = ["ExitCode"]


def __getattr__(name: str) -> Any:
    if name == "ExitCode":
        from supervisor.outcome import ExitCode

        return ExitCode
    raise AttributeError(f"module 'supervisor' has no attribute {name!r}")
