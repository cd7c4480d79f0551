"""``XCom``: values passed between tasks, stored by the orchestrator via the supervisor."""

from __future__ import annotations

from typing import Any

import msgspec

from comms.messages import GetXCom, OKResponse, SetXCom, XComResult
from sdk import _session
from sdk._json_values import ensure_json
from sdk._missing import MISSING
from sdk.errors import XComNotFound

__all__ = ["XCom"]

_encoder = msgspec.json.Encoder()


class XCom:
    """Push this task's XComs and pull those of other tasks."""

    @staticmethod
    def push(key: str, value: Any) -> None:
        """Store ``value`` (plain JSON) under ``key`` for this task instance.

        Raises ``TypeError`` naming the offending type if ``value`` is not plain JSON.
        """
        ensure_json(value, f"XCom {key!r}")
        encoded = msgspec.Raw(_encoder.encode(value))
        _session.call("XCom.push()", SetXCom(id=0, key=key, value=encoded), OKResponse)

    @staticmethod
    def pull(
        task_id: str,
        key: str = "return_value",
        *,
        dag_id: str | None = None,
        run_id: str | None = None,
        map_index: int = -1,
        default: Any = MISSING,
    ) -> Any:
        """Return the XCom ``key`` of ``task_id``; ``dag_id``/``run_id`` default to this run's.

        A missing XCom returns ``default`` if given, else raises
        :class:`~sdk.errors.XComNotFound`.
        """
        request = GetXCom(
            id=0, task_id=task_id, key=key, dag_id=dag_id, run_id=run_id, map_index=map_index
        )
        try:
            result = _session.call("XCom.pull()", request, XComResult)
        except XComNotFound:
            if default is MISSING:
                raise
            return default
        return msgspec.json.decode(result.value)
