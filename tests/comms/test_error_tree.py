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
