"""One example of every message of the task channel, for round-trip and schema tests."""

from __future__ import annotations

import datetime as dt
import typing
import uuid

import msgspec

from comms import messages as m
from comms.api import DagRun, TaskInstance, TIRunContext

WHEN = dt.datetime(2026, 1, 2, 3, 4, 5, 600000, tzinfo=dt.UTC)
TI = TaskInstance(
    id=uuid.UUID("3fa85f64-5717-4562-b3fc-2c963f66afa6"),
    dag_id="dag",
    task_id="task",
    run_id="manual__2026",
    try_number=2,
    map_index=3,
)

SAMPLES: dict[type[msgspec.Struct], msgspec.Struct] = {
    m.Hello: m.Hello(protocol_version=m.PROTOCOL_VERSION, sdk="python/1"),
    m.Log: m.Log(
        event="hello\nworld",
        level="warning",
        logger="task.x",
        timestamp=WHEN,
        fields={"n": 1, "nested": {"a": [1, 2]}},
    ),
    m.Metric: m.Metric(kind="gauge", name="rows", value=3.5, tags={"t": "v"}),
    m.GetVariable: m.GetVariable(id=1, key="k"),
    m.PutVariable: m.PutVariable(id=2, key="k", value="v", description="d"),
    m.DeleteVariable: m.DeleteVariable(id=3, key="k"),
    m.GetConnection: m.GetConnection(id=4, conn_id="db"),
    m.GetXCom: m.GetXCom(id=5, key="k", task_id="up", dag_id="d", run_id="r", map_index=2),
    m.SetXCom: m.SetXCom(id=6, key="k", value=msgspec.Raw(b'{"a":[1,null,"x"]}')),
    m.DeleteXCom: m.DeleteXCom(id=7, key="k"),
    m.MaskSecret: m.MaskSecret(id=8, value="hunter22", name="pw"),
    m.SucceedTask: m.SucceedTask(id=9, end_date=WHEN),
    m.RetryTask: m.RetryTask(id=10, end_date=WHEN, reason="flaky"),
    m.TaskState: m.TaskState(id=11, state="skipped", end_date=WHEN, reason="nothing to do"),
    m.DeferTask: m.DeferTask(
        id=12,
        classpath="a.b.Trigger",
        trigger_kwargs={"s": 1},
        trigger_timeout=30.0,
        next_method="resume",
        next_kwargs={"x": 1},
    ),
    m.RescheduleTask: m.RescheduleTask(id=13, reschedule_date=WHEN, end_date=WHEN),
    m.StartupDetails: m.StartupDetails(
        protocol_version=m.PROTOCOL_VERSION,
        ti=TI,
        ti_context=TIRunContext(
            dag_run=DagRun(dag_id="dag", run_id="manual__2026"), max_tries=3, should_retry=True
        ),
        start_date=WHEN,
        entrypoint="pkg.mod:run",
    ),
    m.Cancel: m.Cancel(reason="timeout"),
    m.OKResponse: m.OKResponse(id=14),
    m.VariableResult: m.VariableResult(id=15, key="k", value=None),
    m.ConnectionResult: m.ConnectionResult(
        id=16,
        conn_id="db",
        conn_type="postgres",
        host="h",
        schema="s",
        login="u",
        password="p",
        port=5432,
        extra='{"a": 1}',
    ),
    m.XComResult: m.XComResult(id=17, key="k", value=msgspec.Raw(b'[1,2.5,"three",null,true]')),
    m.ErrorResponse: m.ErrorResponse(
        id=18, error=m.ErrorCode.VARIABLE_NOT_FOUND, detail={"key": "k"}
    ),
}


def union_members(union: object) -> set[type]:
    """The classes of a ``A | B | ...`` union (flattening nested unions)."""
    return set(typing.get_args(union))


TASK_TYPES = union_members(m.TaskMessage)
SUPERVISOR_TYPES = union_members(m.ToTask)
ALL_TYPES = TASK_TYPES | SUPERVISOR_TYPES
