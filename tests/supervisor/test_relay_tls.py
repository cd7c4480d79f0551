"""supervisor.relay: a TLS failure during a try reaches the task as API_UNREACHABLE."""

from __future__ import annotations

import uuid

import pytest
from http_doubles import MockTransport

from comms.api import TaskInstance
from comms.messages import ErrorCode, ErrorResponse, GetVariable
from supervisor.client import ExecutionApiClient, RetryPolicy
from supervisor.http import CertificateError, Request, Response, TLSMismatchError
from supervisor.masking import Masker
from supervisor.relay import Relay

TI = TaskInstance(
    id=uuid.UUID("3fa85f64-5717-4562-b3fc-2c963f66afa6"),
    dag_id="dag",
    task_id="me",
    run_id="run",
    try_number=1,
    map_index=-1,
)


@pytest.mark.parametrize(
    "failure",
    [CertificateError("certificate verify failed"), TLSMismatchError("only one side speaks TLS")],
    ids=["certificate", "mismatch"],
)
def test_tls_failure_becomes_api_unreachable_with_its_reason_and_attempts(failure):
    # As before TLSError had its own class: supervise logs API_UNREACHABLE answers (giving up).
    def handler(request: Request) -> Response:
        raise failure

    client = ExecutionApiClient(
        "https://api.test/execution/",
        "tok",
        retry=RetryPolicy(budget=60.0),
        transport=MockTransport(handler),
    )
    answer = Relay(client, TI, None, Masker()).answer_remote(GetVariable(id=7, key="k"))
    assert isinstance(answer, ErrorResponse)
    assert (answer.id, answer.error) == (7, ErrorCode.API_UNREACHABLE)
    assert f"not retried: {type(failure).__name__}: {failure}" in answer.detail["message"]
    assert answer.detail["attempts"] == 1
