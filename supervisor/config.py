"""Supervisor settings: how often, how long, how patient. Not part of the activity.

Each setting has a default, a ``supervise`` flag and an environment variable
(``TASKVISOR_<NAME>``, e.g. ``TASKVISOR_HEARTBEAT_INTERVAL=2``); the flag wins.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

import msgspec

from comms.framing import DEFAULT_MAX_LINE

__all__ = ["SupervisorConfig"]


class SupervisorConfig(msgspec.Struct, frozen=True):
    """Timings and limits of one supervision. All durations in seconds.

    Like the supervisor's other small value types, a frozen msgspec Struct, not a frozen
    dataclass: defining a dataclass generates its methods with ``exec`` (~0.5 ms each, and
    ``supervise`` defines five on every start).
    """

    #: Seconds between heartbeats.
    heartbeat_interval: float = 5.0
    #: Stop the task when no heartbeat succeeded for this long (transient failures tolerated
    #: until then). Airflow's server declares a task a zombie after 300 s without one.
    heartbeat_tolerance: float = 300.0
    #: Seconds between SIGTERM and SIGKILL when the task is stopped.
    kill_grace: float = 5.0
    #: Seconds a task may keep running after it sent its terminal message.
    overtime: float = 20.0
    #: Seconds spent retrying one Execution API call (connection errors, timeouts, 5xx).
    api_retry_budget: float = 60.0
    #: Seconds spent retrying the final state report before keeping it on disk (exit 4).
    state_retry_budget: float = 120.0
    #: Timeout of one HTTP request.
    api_timeout: float = 30.0
    #: Seconds to keep draining the task's pipes after its process tree is gone.
    drain_timeout: float = 2.0
    #: Longest protocol line accepted from the task, in bytes.
    max_line: int = DEFAULT_MAX_LINE

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> SupervisorConfig:
        """Defaults overridden by ``TASKVISOR_*`` variables; raises ValueError naming a bad one."""
        env = os.environ if environ is None else environ
        changes: dict[str, Any] = {}
        for field in cls.__struct_fields__:
            name = f"TASKVISOR_{field.upper()}"
            if name in env:
                changes[field] = _number(name, env[name], integer=field == "max_line")
        return msgspec.structs.replace(cls(), **changes)

    @classmethod
    def unknown_env_names(cls, environ: Mapping[str, str] | None = None) -> list[str]:
        """``TASKVISOR_*`` variables that name no setting (a typo is otherwise silent)."""
        env = os.environ if environ is None else environ
        known = {f"TASKVISOR_{field.upper()}" for field in cls.__struct_fields__}
        return sorted(n for n in env if n.startswith("TASKVISOR_") and n not in known)

    def with_overrides(self, **values: Any) -> SupervisorConfig:
        """A copy with the given non-None settings changed (from command-line flags)."""
        return msgspec.structs.replace(self, **{k: v for k, v in values.items() if v is not None})


def _number(name: str, text: str, *, integer: bool) -> float | int:
    try:
        value: float | int = int(text) if integer else float(text)
    except ValueError:
        kind = "an integer" if integer else "a number of seconds"
        raise ValueError(f"{name}={text!r}: expected {kind}") from None
    if not (math.isfinite(value) and value > 0):  # refuses NaN and infinity too
        raise ValueError(f"{name}={text!r}: expected a value > 0")
    return value
