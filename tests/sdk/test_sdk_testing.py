"""``sdk.testing``: the in-process fake supervisor task authors use in their unit tests."""

from __future__ import annotations

import datetime as dt
import logging
import threading
from pathlib import Path

import pytest

import sdk
from comms.messages import GetVariable, RetryTask, SucceedTask, TaskState
from sdk.testing import FakeSupervisor, fake_supervisor, make_context


def test_sdk_calls_are_answered_from_the_given_data() -> None:
    with fake_supervisor(
        variables={"table": "sales"},
        connections={
            "db": {"conn_type": "postgres", "host": "h", "password": "pw", "extra": {"a": 1}},
            "api": sdk.Connection(conn_id="api", conn_type="http", host="example.invalid"),
        },
        xcoms={("extract", "return_value"): [1, 2]},
    ):
        assert sdk.Variable.get("table") == "sales"
        db = sdk.Connection.get("db")
        assert (db.conn_type, db.host, db.password, db.extra_dejson) == (
            "postgres",
            "h",
            "pw",
            {"a": 1},
        )
        assert sdk.Connection.get("api").host == "example.invalid"
        assert sdk.XCom.pull(task_id="extract") == [1, 2]


def test_missing_data_raises_the_same_errors_as_a_real_supervisor() -> None:
    with fake_supervisor():
        with pytest.raises(sdk.VariableNotFound):
            sdk.Variable.get("nope")
        with pytest.raises(sdk.ConnectionNotFound):
            sdk.Connection.get("nope")
        with pytest.raises(sdk.XComNotFound):
            sdk.XCom.pull(task_id="nope")
        assert sdk.Variable.get("nope", "default") == "default"


def test_writes_are_recorded_and_visible_to_later_reads() -> None:
    with fake_supervisor(context=make_context(task_id="load")) as fake:
        sdk.Variable.set("k", "v")
        assert sdk.Variable.get("k") == "v"
        sdk.Variable.delete("k")
        sdk.XCom.push("rows", 3)
        sdk.mask_secret("hunter2")
        sdk.log.info("loaded", rows=3)
        sdk.metrics.incr("rows", 3)
    assert fake.variables == {}
    assert fake.xcoms == {("load", "rows"): 3}
    assert fake.masked == ["hunter2"]
    assert [(log.event, log.fields) for log in fake.logs] == [("loaded", {"rows": 3})]
    assert [(m.kind, m.name, m.value) for m in fake.metrics] == [("incr", "rows", 3.0)]
    assert [type(r).__name__ for r in fake.requests] == [
        "PutVariable",
        "GetVariable",
        "DeleteVariable",
        "SetXCom",
        "MaskSecret",
    ]
    assert fake.requests[1] == GetVariable(id=2, key="k")
    with pytest.raises(sdk.NotInSupervisorError):
        sdk.Variable.get("k")


def test_mapped_task_and_other_dag_run_xcoms_have_their_own_keys() -> None:
    with fake_supervisor(
        context=make_context(task_id="t", map_index=2),
        xcoms={
            ("up", "k", 4): "mapped",
            ("other_dag", "other_run", "up", "k", -1): "elsewhere",
        },
    ) as fake:
        assert sdk.XCom.pull("up", "k", map_index=4) == "mapped"
        assert sdk.XCom.pull("up", "k", dag_id="other_dag", run_id="other_run") == "elsewhere"
        sdk.XCom.push("out", 1)
    assert fake.xcoms[("t", "out", 2)] == 1


def test_values_come_back_as_they_would_over_the_wire() -> None:
    with fake_supervisor(xcoms={("up", "return_value"): (1, 2)}):
        assert sdk.XCom.pull("up") == [1, 2]


def test_get_context_returns_the_given_context() -> None:
    context = make_context(dag_id="d", task_id="t", params={"limit": 5}, try_number=3)
    with fake_supervisor(context=context):
        got = sdk.get_context()
    assert got is context
    assert (got.dag_id, got.task_id, got.try_number, got.params) == ("d", "t", 3, {"limit": 5})
    assert got.dag_run.conf == {"limit": 5}


def test_run_maps_outcomes_like_the_runner() -> None:
    def skip() -> None:
        raise sdk.Skip("no data")

    def fail() -> None:
        raise sdk.Fail("corrupt")

    def crash() -> None:
        raise RuntimeError("boom")

    with fake_supervisor(context=make_context(task_id="t")) as fake:
        success = fake.run(lambda context: {"task": context.task_id})
        skipped = fake.run(skip)
        failed = fake.run(fail)
        crashed = fake.run(crash)
        not_json = fake.run(lambda: dt.datetime(2030, 1, 1))
    assert (success.state, success.return_value) == ("success", {"task": "t"})
    assert isinstance(success.terminal, SucceedTask)
    assert fake.xcoms[("t", "return_value")] == {"task": "t"}
    assert (skipped.state, skipped.reason) == ("skipped", "no data")
    assert (failed.state, failed.reason) == ("failed", "corrupt")
    assert (crashed.state, crashed.reason) == ("failed", "RuntimeError: boom")
    assert isinstance(crashed.terminal, TaskState)
    assert not_json.state == "failed"
    assert "datetime.datetime" in (not_json.reason or "")
    assert "RuntimeError: boom" in fake.logs[-2].fields["exception"]


def test_an_exception_that_cannot_print_itself_still_ends_the_try() -> None:
    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    def crash() -> None:
        raise Unprintable

    with fake_supervisor() as fake:
        outcome = fake.run(crash)
    assert (outcome.state, outcome.reason) == ("failed", "Unprintable: <unprintable Unprintable>")


def test_run_asks_for_retry_when_the_context_allows_it() -> None:
    with fake_supervisor(context=make_context(should_retry=True)) as fake:
        outcome = fake.run(lambda: 1 / 0)
    assert outcome.state == "up_for_retry"
    assert isinstance(outcome.terminal, RetryTask)


def test_run_takes_an_entrypoint_string(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "fake_target_task.py").write_text(
        "import sdk\ndef main():\n    return sdk.Variable.get('x')\n"
    )
    monkeypatch.chdir(tmp_path)
    with fake_supervisor(variables={"x": "42"}) as fake:
        outcome = fake.run("fake_target_task.py:main")
        missing = fake.run("no_such_module_xyz:main")
    assert (outcome.state, outcome.return_value) == ("success", "42")
    assert missing.state == "failed"
    assert "No module named 'no_such_module_xyz'" in (missing.reason or "")


def deferring_task() -> None:
    raise sdk.Defer("triggers.Wait", method_name="resumed_task", kwargs={"n": 2})


def resumed_task(context: sdk.Context, n: int, event: str) -> str:
    return f"{context.next_method}: {n} {event}"


def test_run_resumes_a_deferred_task_at_the_method_it_named() -> None:
    with fake_supervisor() as fake:
        deferred = fake.run(deferring_task)
    assert deferred.state == "deferred"
    resumed_context = make_context(
        next_method="resumed_task", next_kwargs={"n": 2, "event": "fired"}
    )
    with fake_supervisor(context=resumed_context) as fake:
        resumed = fake.run(deferring_task)
    assert (resumed.state, resumed.return_value) == ("success", "resumed_task: 2 fired")


def test_stdlib_logging_is_captured_inside_the_block_only() -> None:
    logger = logging.getLogger("tests.sdk.fake")
    with fake_supervisor() as fake:
        logger.warning("inside")
    logger.warning("outside")
    assert [(log.logger, log.event, log.level) for log in fake.logs] == [
        ("tests.sdk.fake", "inside", "warning")
    ]


def test_the_fake_supervisor_is_a_session_object() -> None:
    fake = FakeSupervisor(variables={"k": "v"})
    assert fake.run(lambda: sdk.Variable.get("k")).return_value == "v"


def test_the_fake_answers_many_threads() -> None:
    results: dict[int, str] = {}

    def read(i: int) -> None:
        results[i] = sdk.Variable.get(f"k{i}")

    with fake_supervisor(variables={f"k{i}": str(i) for i in range(20)}):
        threads = [threading.Thread(target=read, args=(i,)) for i in range(20)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=10)
    assert results == {i: str(i) for i in range(20)}


def test_fake_supervisors_nest_and_restore_the_outer_one() -> None:
    with fake_supervisor(variables={"k": "outer"}):
        with fake_supervisor(variables={"k": "inner"}):
            assert sdk.Variable.get("k") == "inner"
        assert sdk.Variable.get("k") == "outer"
