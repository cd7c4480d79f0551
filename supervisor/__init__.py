"""The trusted side of taskvisor: ``supervise`` runs one task try and is its only link to
the Execution API server. See ``docs/`` and DESIGN.md for the contracts."""

from supervisor.outcome import ExitCode

__all__ = ["ExitCode"]
