"""Trigger arguments in the form Airflow's triggerer reads them.

The triggerer builds the trigger from ``trigger_kwargs`` after decoding them with Airflow's
``serde``: plain JSON passes through, and a ``timedelta``, ``datetime`` or ``date`` must
arrive as a tagged object ``{"__classname__": ..., "__version__": 2, "__data__": ...}``.
:func:`encode_trigger_kwargs` writes those three types so; it leaves everything else as it
is (the caller then checks that the rest is plain JSON).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

__all__ = ["encode_trigger_kwargs"]

_SERDE_VERSION = 2


def encode_trigger_kwargs(value: Any) -> Any:
    """``value`` with every ``timedelta``, ``datetime`` and ``date`` in serde's tagged form.

    A ``datetime`` must be timezone-aware (it is sent as its POSIX timestamp and arrives as
    UTC); a naive one raises ``ValueError``.
    """
    if isinstance(value, dict):
        return {key: encode_trigger_kwargs(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [encode_trigger_kwargs(item) for item in value]
    if isinstance(value, dt.timedelta):
        return _tagged("datetime.timedelta", value.total_seconds())
    if isinstance(value, dt.datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"trigger arguments need timezone-aware datetimes, got {value!r}")
        return _tagged("datetime.datetime", value.timestamp())
    if isinstance(value, dt.date):
        return _tagged("datetime.date", value.isoformat())
    return value


def _tagged(classname: str, data: Any) -> dict[str, Any]:
    return {"__classname__": classname, "__version__": _SERDE_VERSION, "__data__": data}
