"""The few Linux process controls Python's stdlib lacks (``prctl``), via libc."""

from __future__ import annotations

import ctypes
import os
import signal

__all__ = ["set_child_subreaper", "set_dumpable", "set_parent_death_signal"]

_PR_SET_PDEATHSIG = 1
_PR_SET_DUMPABLE = 4
_PR_SET_CHILD_SUBREAPER = 36

# The interpreter is linked against libc: its symbols are ours already. (find_library would
# import subprocess and may run ldconfig: tens of milliseconds on every start.)
_libc = ctypes.CDLL(None, use_errno=True)


def _prctl(option: int, value: int) -> None:
    if _libc.prctl(option, ctypes.c_ulong(value), 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"prctl({option}, {value}): {os.strerror(errno)}")


def set_dumpable(dumpable: bool) -> None:
    """Allow or forbid core dumps and same-user ``ptrace``/``/proc/<pid>/mem`` access."""
    _prctl(_PR_SET_DUMPABLE, int(dumpable))


def set_child_subreaper() -> None:
    """Make orphaned descendants re-parent to this process, so none can escape ``wait``."""
    _prctl(_PR_SET_CHILD_SUBREAPER, 1)


def set_parent_death_signal(sig: signal.Signals) -> None:
    """Deliver ``sig`` to this process when the thread that forked it dies."""
    _prctl(_PR_SET_PDEATHSIG, int(sig))
