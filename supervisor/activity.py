"""The activity file on the supervisor's side: who ``run_as`` names, and what to log.

The document itself (:class:`Activity`) and its one validator (:func:`parse_activity`) live
in :mod:`comms.activity`, shared with the reference server's ``taskvisor activity``; they are
re-exported here for the supervisor's modules.
"""

from __future__ import annotations

import os
import pwd
from typing import Any

import msgspec

from comms.activity import Activity, ActivityError, parse_activity

__all__ = ["Activity", "RunAs", "parse_activity", "resolve_run_as"]


class RunAs(msgspec.Struct, frozen=True):
    """A resolved OS user to run the task as."""

    name: str
    uid: int
    gid: int
    groups: list[int]
    home: str


def resolve_run_as(name: str, *, euid: int) -> RunAs:
    """Look up the user ``run_as`` names; raise :class:`ActivityError` if impossible."""
    if euid != 0:
        raise ActivityError("$.run_as", f"running as {name!r} needs supervise to run as root")
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise ActivityError("$.run_as", f"no such user {name!r} on this machine") from None
    groups = os.getgrouplist(name, entry.pw_gid)
    return RunAs(name, entry.pw_uid, entry.pw_gid, groups, entry.pw_dir)


def describe(activity: Activity) -> dict[str, Any]:
    """The activity for log records: identity only, never the token or the context."""
    return {
        "ti_id": str(activity.ti.id),
        "dag_id": activity.ti.dag_id,
        "task_id": activity.ti.task_id,
        "run_id": activity.ti.run_id,
        "try_number": activity.ti.try_number,
    }
