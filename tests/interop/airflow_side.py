"""Airflow's side of the interop tests: runs INSIDE the Airflow virtual environment.

It does what an Airflow scheduler and executor would do for a task, with Airflow's own code,
so the tests never re-implement Airflow:

* ``cli``    run Airflow CLI commands (``dags reserialize``, ``variables set``, ...) through
             Airflow's own CLI parser, all in this one interpreter (each ``airflow`` process
             costs seconds of imports);
* ``queue``  create a dag run, schedule some of its task instances (``DagRun.schedule_tis``)
             and queue them, then build each one's ``ExecuteTask`` workload (token minted by
             Airflow's ``JWTGenerator``, configured exactly like an executor's);
* ``trigger`` create a running dag run (with a logical date and conf) and nothing else;
* ``schedule`` one scheduler pass over a dag run (``DagRun.update_state``: trigger rules, map
             expansion, retry and reschedule delays; then ``schedule_tis``), queueing the
             wanted task instances once Airflow's own decisions made them ready;
* ``resume`` run a deferred task instance's trigger to its first event as the triggerer
             does, submit the event, and queue the task instance again (the scheduler's part);
* ``retry``  schedule and queue the next try of an up_for_retry task instance;
* ``mint``   sign a token for a task instance with a chosen scope and lifetime;
* ``tis``    read task instances back from Airflow's database (state, heartbeat, pid, ...).

Usage: ``python airflow_side.py <command> '<json args>'`` prints one JSON result, or
``python airflow_side.py serve`` answers one JSON request per stdin line
(``{"cmd": ..., "args": {...}}``) with one JSON line ``{"ok": true, "result": ...}`` or
``{"ok": false, "error": "<traceback>"}``, so a test session pays for the imports once.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import io
import json
import sys
import traceback
import uuid
from collections.abc import Callable
from typing import Any, TextIO


def cli(args: dict[str, Any]) -> dict[str, Any]:
    """Run each argv list in ``args["commands"]`` through Airflow's CLI, in order."""
    from airflow.cli import cli_parser

    parser = cli_parser.get_parser()
    outputs = []
    for argv in args["commands"]:
        parsed = parser.parse_args(argv)
        out = io.StringIO()
        # CLI commands print their results; keep stdout for our own JSON answer.
        with contextlib.redirect_stdout(out):
            parsed.func(parsed)
        outputs.append(out.getvalue())
    return {"outputs": outputs}


def _jwt_generator() -> Any:
    """The token generator an Airflow executor uses (``BaseExecutor.jwt_generator``)."""
    from airflow.executors.local_executor import LocalExecutor

    return LocalExecutor().jwt_generator


def _schedule_and_queue(dag_run: Any, tis: list[Any], session: Any) -> None:
    """What the scheduler does before handing task instances to an executor.

    ``DagRun.schedule_tis`` (Airflow's own: state scheduled, ``try_number`` + 1 unless
    resuming a reschedule), then the queueing step of ``_executable_task_instances_to_queued``.
    """
    from airflow.models.serialized_dag import SerializedDagModel

    dag = SerializedDagModel.get_dag(dag_run.dag_id, session=session)
    # Setting ``task`` resets max_tries to the task's ``retries``; the tests' choice stands in.
    max_tries = {ti.id: ti.max_tries for ti in tis}
    for ti in tis:
        ti.task = dag.get_task(ti.task_id)
    dag_run.schedule_tis(tis, session=session)
    for ti in tis:
        session.refresh(ti)
        ti.max_tries = max_tries[ti.id]
        _queue_ti(ti)


def _queue_ti(ti: Any) -> None:
    """The scheduler's queueing step for one scheduled task instance."""
    from airflow.utils.state import TaskInstanceState

    if ti.state != TaskInstanceState.SCHEDULED:
        raise RuntimeError(f"{ti.task_id} is {ti.state}, not scheduled: cannot queue it")
    ti.state = TaskInstanceState.QUEUED
    ti.queued_dttm = dt.datetime.now(dt.UTC)


def _workload(ti: Any) -> dict[str, Any]:
    """The ``ExecuteTask`` workload an executor would get for ``ti``, as JSON."""
    from airflow.executors.workloads import ExecuteTask

    return json.loads(ExecuteTask.make(ti, generator=_jwt_generator()).model_dump_json())


def queue(args: dict[str, Any]) -> dict[str, Any]:
    """Create dag run ``run_id`` of ``dag_id`` and queue the given tasks, as a scheduler would.

    ``args["tasks"]`` maps ``task_id`` (or ``task_id[map_index]`` for a mapped task) to
    ``{"max_tries": n}``. Returns, under the same keys, the ``ExecuteTask`` workloads Airflow
    would hand an executor (JSON, token included).
    """
    from airflow.utils.session import create_session

    with create_session() as session:
        dag_run = _create_dagrun(args, session)
        created = dag_run.get_task_instances(session=session)
        by_key = {_key(ti.task_id, ti.map_index): ti for ti in created}
        chosen = {key: by_key[key] for key in args["tasks"]}
        for key, spec in args["tasks"].items():
            chosen[key].max_tries = spec.get("max_tries", 0)
        _schedule_and_queue(dag_run, list(chosen.values()), session)
        session.flush()
        return {"workloads": {key: _workload(ti) for key, ti in chosen.items()}}


def trigger(args: dict[str, Any]) -> dict[str, Any]:
    """Create running dag run ``run_id`` of ``dag_id``, queueing nothing.

    ``args`` may add ``logical_date`` (ISO-8601; without it the run has none, as a manual run
    may in Airflow 3, and templates get no ``ds``) and ``conf``. Returns the run's logical date
    and data interval as Airflow stored them.
    """
    from airflow.utils.session import create_session

    with create_session() as session:
        dag_run = _create_dagrun(args, session)
        session.flush()
        return {
            "logical_date": _iso(dag_run.logical_date),
            "data_interval_start": _iso(dag_run.data_interval_start),
            "data_interval_end": _iso(dag_run.data_interval_end),
        }


def _create_dagrun(args: dict[str, Any], session: Any) -> Any:
    """A manual dag run in state running, as ``airflow dags trigger`` makes, less the wait."""
    from airflow.models.serialized_dag import SerializedDagModel
    from airflow.utils.state import DagRunState
    from airflow.utils.types import DagRunTriggeredByType, DagRunType

    now = dt.datetime.now(dt.UTC)
    dag = SerializedDagModel.get_dag(args["dag_id"], session=session)
    if dag is None:
        raise LookupError(f"dag {args['dag_id']!r} is not serialized")
    logical_date = args.get("logical_date")
    data_interval = None
    if logical_date is not None:
        logical_date = dt.datetime.fromisoformat(logical_date)
        # What Airflow's REST API does for a manual run given a logical date.
        data_interval = dag.timetable.infer_manual_data_interval(run_after=logical_date)
    return dag.create_dagrun(
        run_id=args["run_id"],
        logical_date=logical_date,
        data_interval=data_interval,
        run_after=now,
        conf=args.get("conf"),
        run_type=DagRunType.MANUAL,
        triggered_by=DagRunTriggeredByType.TEST,
        state=DagRunState.RUNNING,
        start_date=now,
        session=session,
    )


def schedule(args: dict[str, Any]) -> dict[str, Any]:
    """One scheduler pass over dag run ``run_id`` of ``dag_id``; queue ``args["tasks"]`` if ready.

    What ``SchedulerJobRunner._schedule_dag_run`` does: ``DagRun.update_state`` (Airflow's
    dependency checks: trigger rules and skips, map expansion once an upstream pushed its list,
    retry and reschedule delays), then ``schedule_tis`` for the wanted task instances among the
    schedulable ones (``args["tasks"]``: ``task_id`` or ``task_id[map_index]``). Then the
    executor-queueing step for every wanted task instance in state scheduled, which also
    picks up a deferred one whose trigger fired.

    Returns ``{"workloads": {key: ExecuteTask JSON}}`` once every wanted task instance was
    queued, else ``{"waiting": {key: state}}`` and queues none: call again.
    """
    from airflow.models.dagbag import DBDagBag
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from airflow.utils.state import TaskInstanceState
    from sqlalchemy import select

    wanted = list(args.get("tasks", []))
    with create_session() as session:
        dag_run = session.scalars(
            select(DagRun).filter_by(dag_id=args["dag_id"], run_id=args["run_id"])
        ).one()
        dag_run.dag = DBDagBag().get_dag_for_run(dag_run=dag_run, session=session)
        schedulable, _ = dag_run.update_state(session=session, execute_callbacks=False)
        ready = [ti for ti in schedulable if _key(ti.task_id, ti.map_index) in wanted]
        dag_run.schedule_tis(ready, session=session)
        session.flush()
        session.expire_all()  # schedule_tis updated rows in bulk, behind the ORM's back
        by_key = {
            _key(ti.task_id, ti.map_index): ti for ti in dag_run.get_task_instances(session=session)
        }
        states = {key: by_key[key].state if key in by_key else None for key in wanted}
        if any(state != TaskInstanceState.SCHEDULED for state in states.values()):
            return {"waiting": states}
        for key in wanted:
            _queue_ti(by_key[key])
        session.flush()
        return {"workloads": {key: _workload(by_key[key]) for key in wanted}}


def _iso(value: dt.datetime | None) -> str | None:
    """A datetime from Airflow's database as ISO-8601, or None."""
    return value.isoformat() if value else None


def _key(task_id: str, map_index: int) -> str:
    """How Airflow names a task instance of a run: ``task_id``, or ``task_id[map_index]``."""
    return task_id if map_index == -1 else f"{task_id}[{map_index}]"


def resume(args: dict[str, Any]) -> dict[str, Any]:
    """Run the trigger deferred TI ``args["id"]`` waits on, as Airflow's triggerer; re-queue it.

    The trigger is built from its stored row as ``TriggerRunner.create_triggers`` does
    (classpath + decrypted, decoded kwargs), its first event is submitted with
    ``Trigger.submit_event``, and the now scheduled TI is queued again (same try), as the
    scheduler would. Returns the trigger's repr and the new workload.
    """
    from airflow._shared.module_loading import import_string
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.trigger import Trigger
    from airflow.serialization.decoders import smart_decode_trigger_kwargs
    from airflow.utils.session import create_session

    with create_session() as session:
        ti = session.get(TaskInstance, uuid.UUID(args["id"]))
        if ti is None or ti.trigger_id is None:
            raise LookupError(f"task instance {args['id']} is not waiting on a trigger")
        row = session.get(Trigger, ti.trigger_id)
        # What TriggerRunner.create_triggers does with a trigger row.
        stored = Trigger._decrypt_kwargs(row.encrypted_kwargs)
        kwargs = {key: smart_decode_trigger_kwargs(value) for key, value in stored.items()}
        trigger = import_string(row.classpath)(**kwargs)
        event = asyncio.run(asyncio.wait_for(anext(aiter(trigger.run())), timeout=30))
        Trigger.submit_event(row.id, event, session=session)
        session.refresh(ti)
        _queue_ti(ti)  # resuming keeps the try: the scheduler only queues it
        session.flush()
        return {"trigger": repr(trigger), "workload": _workload(ti)}


def retry(args: dict[str, Any]) -> dict[str, Any]:
    """Schedule and queue the next try of an up_for_retry task instance, as the scheduler.

    ``args`` names it by ``dag_id``, ``run_id``, ``task_id`` (and ``map_index``): when a try
    ends up_for_retry Airflow moves it to the history and gives the task instance a new id.
    Returns the new try's workload.
    """
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        ti = session.scalars(
            select(TaskInstance).filter_by(
                dag_id=args["dag_id"],
                run_id=args["run_id"],
                task_id=args["task_id"],
                map_index=args.get("map_index", -1),
            )
        ).one()
        if ti.state != "up_for_retry":
            raise LookupError(f"{ti} is {ti.state}, not up_for_retry")
        _schedule_and_queue(ti.get_dagrun(session=session), [ti], session)
        session.flush()
        return {"workload": _workload(ti)}


def mint(args: dict[str, Any]) -> dict[str, Any]:
    """A token for TI ``args["id"]`` with ``scope`` and ``valid_for`` seconds, as Airflow signs."""
    extras = {"sub": args["id"], "scope": args["scope"]}
    return {"token": _jwt_generator().generate(extras=extras, valid_for=args["valid_for"])}


def tis(args: dict[str, Any]) -> dict[str, Any]:
    """Read the task instances with ids ``args["ids"]`` from Airflow's database."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        ids = [uuid.UUID(ti_id) for ti_id in args["ids"]]
        rows = session.scalars(select(TaskInstance).where(TaskInstance.id.in_(ids)))
        return {
            str(ti.id): {
                "state": ti.state,
                "try_number": ti.try_number,
                "max_tries": ti.max_tries,
                "hostname": ti.hostname,
                "pid": ti.pid,
                "start_date": _iso(ti.start_date),
                "end_date": _iso(ti.end_date),
                "last_heartbeat_at": _iso(ti.last_heartbeat_at),
            }
            for ti in rows
        }


COMMANDS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "cli": cli,
    "queue": queue,
    "trigger": trigger,
    "schedule": schedule,
    "resume": resume,
    "retry": retry,
    "mint": mint,
    "tis": tis,
}


def serve(answers: TextIO) -> None:
    """Answer one JSON request per stdin line until EOF."""
    for line in sys.stdin:
        request = json.loads(line)
        try:
            answer = {"ok": True, "result": COMMANDS[request["cmd"]](request.get("args", {}))}
        except Exception:
            answer = {"ok": False, "error": traceback.format_exc()}
        answers.write(json.dumps(answer) + "\n")
        answers.flush()


def main(argv: list[str]) -> int:
    """Entry point: ``serve``, or one command with its JSON arguments."""
    # Airflow logs to stdout in places; our JSON answers must own the real stdout.
    answers, sys.stdout = sys.stdout, sys.stderr
    if argv[:1] == ["serve"]:
        serve(answers)
        return 0
    if len(argv) not in (1, 2) or argv[0] not in COMMANDS:
        print(f"usage: airflow_side.py serve | {{{','.join(COMMANDS)}}} [JSON]", file=sys.stderr)
        return 2
    result = COMMANDS[argv[0]](json.loads(argv[1]) if len(argv) == 2 else {})
    answers.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
