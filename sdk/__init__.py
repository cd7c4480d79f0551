"""What task code imports to talk to its supervisor.

::

    from sdk import Variable, Connection, XCom, get_context, log, metrics

    def main(context):
        table = Variable.get("target_table")
        conn = Connection.get("warehouse")
        rows = XCom.pull(task_id="extract")
        log.info("loading", table=table, rows=len(rows))
        return len(rows)          # pushed as XCom "return_value"

Every call is relayed by the supervisor that started this task; outside one, calls raise
:class:`NotInSupervisorError` (unit tests use :mod:`sdk.testing`). Raise :class:`Skip`,
:class:`Fail`, :class:`Defer` or :class:`Reschedule` to end a try early.
"""

from sdk._connections import Connection
from sdk._log import log
from sdk._metrics import metrics
from sdk._secrets import mask_secret
from sdk._variables import Variable
from sdk._xcoms import XCom
from sdk.context import Context, get_context
from sdk.errors import (
    ChannelClosedError,
    ConnectionNotFound,
    NotInSupervisorError,
    RequestFailed,
    SdkError,
    VariableNotFound,
    XComNotFound,
)
from sdk.outcomes import Defer, Fail, Reschedule, Skip, TaskOutcome

__all__ = [
    "ChannelClosedError",
    "Connection",
    "ConnectionNotFound",
    "Context",
    "Defer",
    "Fail",
    "NotInSupervisorError",
    "RequestFailed",
    "Reschedule",
    "SdkError",
    "Skip",
    "TaskOutcome",
    "Variable",
    "VariableNotFound",
    "XCom",
    "XComNotFound",
    "get_context",
    "log",
    "mask_secret",
    "metrics",
]
