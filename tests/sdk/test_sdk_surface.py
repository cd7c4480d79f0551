"""The public surface of ``sdk``, what it refuses to import, and behaviour outside a supervisor."""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

import sdk
from comms.errors import TaskvisorError
from sdk._version import __version__


def test_all_is_exactly_the_documented_surface() -> None:
    assert sorted(sdk.__all__) == sorted(
        [
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
    )
    for name in sdk.__all__:
        assert getattr(sdk, name).__doc__, f"sdk.{name} has no docstring"


def test_errors_and_outcomes_form_the_drawn_tree() -> None:
    assert issubclass(sdk.SdkError, TaskvisorError)
    for error in (sdk.NotInSupervisorError, sdk.ChannelClosedError, sdk.RequestFailed):
        assert issubclass(error, sdk.SdkError)
    for error in (sdk.VariableNotFound, sdk.ConnectionNotFound, sdk.XComNotFound):
        assert issubclass(error, sdk.RequestFailed)
    assert issubclass(sdk.TaskOutcome, BaseException)
    assert not issubclass(sdk.TaskOutcome, Exception)
    for outcome in (sdk.Skip, sdk.Fail, sdk.Defer, sdk.Reschedule):
        assert issubclass(outcome, sdk.TaskOutcome)


def test_hello_states_the_installed_package_version() -> None:
    assert __version__ == importlib.metadata.version("taskvisor")


def test_sdk_and_its_runner_import_no_network_token_logging_or_supervisor_code() -> None:
    forbidden = ["httpx", "jwt", "structlog", "supervisor", "apiserver", "psutil", "starlette"]
    code = (
        "import sys, sdk, sdk.runner, sdk.testing\n"
        f"print([m for m in {forbidden!r} if any(k == m or k.startswith(m + '.') "
        "for k in sys.modules)])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_fresh_interpreter_with_the_sdk_and_runner_stays_small() -> None:
    # VmRSS, not ru_maxrss: a child's ru_maxrss starts from its parent's (pytest's) peak.
    code = (
        "import sdk, sdk.runner\n"
        "print([l.split()[1] for l in open('/proc/self/status') if l.startswith('VmRSS:')][0])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert int(out.stdout) < 30 * 1024  # KiB


SDK_CALLS: list[tuple[str, Callable[[], Any]]] = [
    ("Variable.get()", lambda: sdk.Variable.get("k")),
    ("Variable.get()", lambda: sdk.Variable.get("k", default="d")),
    ("Variable.set()", lambda: sdk.Variable.set("k", "v")),
    ("Variable.delete()", lambda: sdk.Variable.delete("k")),
    ("Connection.get()", lambda: sdk.Connection.get("c")),
    ("XCom.push()", lambda: sdk.XCom.push("k", 1)),
    ("XCom.pull()", lambda: sdk.XCom.pull(task_id="t", default=None)),
    ("get_context()", sdk.get_context),
    ("log.info()", lambda: sdk.log.info("event")),
    ("log.error()", lambda: sdk.log.exception("event")),
    ("metrics.incr()", lambda: sdk.metrics.incr("m")),
    ("metrics.gauge()", lambda: sdk.metrics.gauge("m", 1)),
    ("metrics.timing()", lambda: sdk.metrics.timing("m", 1)),
    ("mask_secret()", lambda: sdk.mask_secret("s")),
]


@pytest.mark.parametrize(("name", "call"), SDK_CALLS, ids=[n for n, _ in SDK_CALLS])
def test_every_sdk_call_outside_a_supervisor_raises_not_in_supervisor(
    name: str, call: Callable[[], Any]
) -> None:
    with pytest.raises(sdk.NotInSupervisorError, match="outside a supervised task") as caught:
        call()
    assert name in str(caught.value)
    assert "sdk.testing.fake_supervisor" in str(caught.value)


def test_reschedule_refuses_a_naive_datetime() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        sdk.Reschedule(dt.datetime(2030, 1, 1))


@pytest.mark.parametrize(
    ("timeout", "seconds"), [(None, None), (30, 30.0), (dt.timedelta(minutes=2), 120.0)]
)
def test_defer_timeout_is_given_as_seconds_or_timedelta(
    timeout: dt.timedelta | float | None, seconds: float | None
) -> None:
    assert sdk.Defer("a.Trigger", timeout=timeout).timeout_seconds == seconds
