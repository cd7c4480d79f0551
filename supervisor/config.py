"""Supervisor settings: how often, how long, how patient. Not part of the activity.

Each setting has a default, a ``supervise`` flag and an environment variable
(``TASKVISOR_<NAME>``, e.g. ``TASKVISOR_HEARTBEAT_INTERVAL=2``); the flag wins.
"""

from __future__ import annotations

import functools
import math
import os
import typing
from collections.abc import Mapping
from typing import Annotated, Any, NamedTuple

import msgspec
from msgspec import Meta

from comms.framing import DEFAULT_MAX_LINE

__all__ = ["Setting", "SupervisorConfig", "parse_setting", "settings"]


class SupervisorConfig(msgspec.Struct, frozen=True):
    """Timings and limits of one supervision. All durations in seconds.

    Each field is declared here once, with its help text: ``supervise``'s flags and the
    ``TASKVISOR_*`` environment variables are made from these declarations (:func:`settings`).

    Like the supervisor's other small value types, a frozen msgspec Struct, not a frozen
    dataclass: defining a dataclass generates its methods with ``exec`` (~0.5 ms each, and
    ``supervise`` defines five on every start).
    """

    heartbeat_interval: Annotated[float, Meta(description="seconds between heartbeats")] = 5.0
    # Airflow's server declares a task a zombie after 300 s without a heartbeat.
    heartbeat_tolerance: Annotated[
        float,
        Meta(
            description="stop the task when no heartbeat succeeded for this many seconds "
            "(transient failures are tolerated until then)"
        ),
    ] = 300.0
    kill_grace: Annotated[
        float, Meta(description="seconds between SIGTERM and SIGKILL when the task is stopped")
    ] = 5.0
    overtime: Annotated[
        float, Meta(description="seconds a task may keep running after reporting its state")
    ] = 20.0
    api_retry_budget: Annotated[
        float,
        Meta(
            description="seconds spent retrying one Execution API call "
            "(connection errors, timeouts, 5xx)"
        ),
    ] = 60.0
    state_retry_budget: Annotated[
        float,
        Meta(
            description="seconds spent retrying the final state report before keeping it on "
            "disk (exit 4)"
        ),
    ] = 120.0
    api_timeout: Annotated[float, Meta(description="timeout of one HTTP request, seconds")] = 30.0
    drain_timeout: Annotated[
        float, Meta(description="seconds to keep draining the task's pipes after it is gone")
    ] = 2.0
    max_line: Annotated[
        int, Meta(description="longest protocol line accepted from the task, in bytes")
    ] = DEFAULT_MAX_LINE

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> SupervisorConfig:
        """Defaults overridden by ``TASKVISOR_*`` variables; raises ValueError naming a bad one."""
        env = os.environ if environ is None else environ
        changes: dict[str, Any] = {}
        for setting in settings():
            if setting.env in env:
                changes[setting.name] = parse_setting(setting, env[setting.env], source=setting.env)
        return msgspec.structs.replace(cls(), **changes)

    @classmethod
    def unknown_env_names(cls, environ: Mapping[str, str] | None = None) -> list[str]:
        """``TASKVISOR_*`` variables that name no setting (a typo is otherwise silent)."""
        env = os.environ if environ is None else environ
        known = {setting.env for setting in settings()}
        return sorted(n for n in env if n.startswith("TASKVISOR_") and n not in known)

    def with_overrides(self, **values: Any) -> SupervisorConfig:
        """A copy with the given non-None settings changed (from command-line flags)."""
        return msgspec.structs.replace(self, **{k: v for k, v in values.items() if v is not None})


class Setting(NamedTuple):
    """One field of :class:`SupervisorConfig`, as the command line and environment see it."""

    name: str  # the field, e.g. ``kill_grace``
    flag: str  # ``--kill-grace``
    env: str  # ``TASKVISOR_KILL_GRACE``
    help: str
    integer: bool
    default: float | int


@functools.cache
def settings() -> tuple[Setting, ...]:
    """Every setting, in declaration order, from :class:`SupervisorConfig`'s fields."""
    hints = typing.get_type_hints(SupervisorConfig, include_extras=True)
    defaults = SupervisorConfig()
    found = []
    for name in SupervisorConfig.__struct_fields__:
        hint = hints[name]
        found.append(
            Setting(
                name=name,
                flag="--" + name.replace("_", "-"),
                env=f"TASKVISOR_{name.upper()}",
                help=hint.__metadata__[0].description,
                integer=hint.__origin__ is int,
                default=getattr(defaults, name),
            )
        )
    return tuple(found)


def parse_setting(setting: Setting, text: str, *, source: str) -> float | int:
    """``text`` as a value of ``setting``; raises ValueError naming ``source`` and the value."""
    try:
        value: float | int = int(text) if setting.integer else float(text)
    except ValueError:
        kind = "an integer" if setting.integer else "a number of seconds"
        raise ValueError(f"{source}={text!r}: expected {kind}") from None
    if not (math.isfinite(value) and value > 0):  # refuses NaN and infinity too
        raise ValueError(f"{source}={text!r}: expected a value > 0")
    return value
