"""comms.errors: the root of the error tree and the protocol branch."""

from __future__ import annotations

import pytest

from comms.errors import (
    ProtocolError,
    SupervisorProtocolError,
    TaskProtocolError,
    TaskvisorError,
)


def test_protocol_error_is_abstract_and_says_which_subclass_to_raise():
    with pytest.raises(TypeError, match="TaskProtocolError or SupervisorProtocolError"):
        ProtocolError("who broke it?")


@pytest.mark.parametrize("cls", [TaskProtocolError, SupervisorProtocolError])
def test_protocol_error_subclasses_name_who_broke_the_contract(cls):
    error = cls("bad line")
    assert isinstance(error, ProtocolError)
    assert isinstance(error, TaskvisorError)
    assert isinstance(error, Exception)
    assert str(error) == "bad line"


@pytest.mark.parametrize("cls", [TaskProtocolError, SupervisorProtocolError])
def test_protocol_errors_carry_the_error_response_code(cls):
    assert cls("x").code == "PROTOCOL_ERROR"


def test_task_and_supervisor_protocol_errors_are_distinct_branches():
    assert not issubclass(TaskProtocolError, SupervisorProtocolError)
    assert not issubclass(SupervisorProtocolError, TaskProtocolError)


def test_the_supervisor_errors_hang_from_the_same_root():
    from supervisor.errors import ActivityError, ApiError

    assert issubclass(ActivityError, TaskvisorError)
    assert issubclass(ApiError, TaskvisorError)


@pytest.mark.parametrize("package", ["comms", "sdk", "supervisor"])
def test_every_public_exception_hangs_from_the_drawn_tree(package):
    # apiserver is left out: the reference server's errors become HTTP answers, never reach
    # a supervisor or a task as exceptions.
    import importlib
    import pkgutil

    from sdk.outcomes import TaskOutcome

    root = importlib.import_module(package)
    strays = []
    for info in pkgutil.walk_packages(root.__path__, f"{package}."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for name in getattr(module, "__all__", ()):
            obj = getattr(module, name)
            is_error = isinstance(obj, type) and issubclass(obj, BaseException)
            if is_error and not issubclass(obj, TaskvisorError | TaskOutcome):
                strays.append(f"{info.name}.{name}")
    assert not strays, f"exceptions outside comms.errors' tree: {strays}"
