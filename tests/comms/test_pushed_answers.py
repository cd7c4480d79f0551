"""``comms.pushed``: the rules both the supervisor and the Python SDK answer pushed values by."""

from __future__ import annotations

from comms.messages import (
    ConnectionResult,
    DeleteVariable,
    ErrorCode,
    ErrorResponse,
    GetConnection,
    GetVariable,
    GetXCom,
    OKResponse,
    PushedConnection,
    PushedValues,
    PutVariable,
    VariableResult,
)
from comms.pushed import PushedAnswers

PUSHED = PushedValues(
    variables={"region": "eu"},
    connections=[PushedConnection(conn_id="db", conn_type="postgres", host="h", port=5432)],
)


def test_pushed_variables_and_connections_are_answered_with_the_requests_id() -> None:
    answers = PushedAnswers(PUSHED)
    assert answers.answer(GetVariable(id=7, key="region")) == VariableResult(
        id=7, key="region", value="eu"
    )
    assert answers.answer(GetConnection(id=8, conn_id="db")) == ConnectionResult(
        id=8, conn_id="db", conn_type="postgres", host="h", port=5432
    )


def test_anything_not_pushed_is_left_to_the_server() -> None:
    answers = PushedAnswers(PUSHED)
    assert answers.answer(GetVariable(id=1, key="other")) is None
    assert answers.answer(GetConnection(id=2, conn_id="other")) is None
    assert answers.answer(GetXCom(id=3, task_id="t")) is None
    assert PushedAnswers(None).answer(GetVariable(id=4, key="region")) is None


def test_an_accepted_put_replaces_a_pushed_value_and_a_refused_one_does_not() -> None:
    answers = PushedAnswers(PUSHED)
    refused = ErrorResponse(id=1, error=ErrorCode.PERMISSION_DENIED, detail={})
    answers.learn(PutVariable(id=1, key="region", value="us"), refused)
    assert answers.answer(GetVariable(id=2, key="region")) == VariableResult(
        id=2, key="region", value="eu"
    )
    answers.learn(PutVariable(id=3, key="region", value="us"), OKResponse(id=3))
    assert answers.answer(GetVariable(id=4, key="region")) == VariableResult(
        id=4, key="region", value="us"
    )


def test_a_put_of_a_key_that_was_not_pushed_still_reads_from_the_server() -> None:
    answers = PushedAnswers(PUSHED)
    answers.learn(PutVariable(id=1, key="new", value="v"), OKResponse(id=1))
    assert answers.answer(GetVariable(id=2, key="new")) is None


def test_an_accepted_delete_hands_the_key_back_to_the_server() -> None:
    answers = PushedAnswers(PUSHED)
    answers.learn(DeleteVariable(id=1, key="region"), OKResponse(id=1))
    assert answers.answer(GetVariable(id=2, key="region")) is None


def test_the_pushed_values_given_are_not_changed() -> None:
    pushed = PushedValues(variables={"region": "eu"})
    PushedAnswers(pushed).learn(DeleteVariable(id=1, key="region"), OKResponse(id=1))
    assert pushed.variables == {"region": "eu"}
