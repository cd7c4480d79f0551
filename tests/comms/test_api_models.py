"""comms.api: Airflow 3's Execution API shapes, encoded and decoded as Airflow does."""

from __future__ import annotations

import datetime as dt
import json

import msgspec
import pytest

from comms import api

WHEN = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)
WHEN_TEXT = "2026-01-01T12:00:00Z"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            {"state": "success", "end_date": WHEN_TEXT},
            api.TISuccessStatePayload(end_date=WHEN),
        ),
        (
            {"state": "failed", "end_date": WHEN_TEXT},
            api.TITerminalStatePayload(state="failed", end_date=WHEN),
        ),
        (
            {"state": "skipped", "end_date": WHEN_TEXT},
            api.TITerminalStatePayload(state="skipped", end_date=WHEN),
        ),
        (
            {"state": "up_for_retry", "end_date": WHEN_TEXT},
            api.TIRetryStatePayload(end_date=WHEN),
        ),
        (
            {"state": "deferred", "classpath": "t.T", "trigger_timeout": "PT30S"},
            api.TIDeferredStatePayload(classpath="t.T", trigger_timeout=dt.timedelta(seconds=30)),
        ),
        (
            {"state": "up_for_reschedule", "reschedule_date": WHEN_TEXT, "end_date": WHEN_TEXT},
            api.TIRescheduleStatePayload(reschedule_date=WHEN, end_date=WHEN),
        ),
    ],
    ids=lambda v: v["state"] if isinstance(v, dict) else "",
)
def test_state_update_body_decodes_into_its_payload_type(body, expected):
    decoded = api.state_update_decoder(json.dumps(body).encode())
    assert decoded == expected


@pytest.mark.parametrize(
    "payload",
    [
        api.TISuccessStatePayload(end_date=WHEN),
        api.TITerminalStatePayload(state="failed", end_date=WHEN),
        api.TIRetryStatePayload(end_date=WHEN),
        api.TIDeferredStatePayload(classpath="t.T", next_kwargs={"a": 1}),
        api.TIRescheduleStatePayload(reschedule_date=WHEN, end_date=WHEN),
    ],
    ids=lambda p: type(p).__name__,
)
def test_every_state_payload_round_trips_and_carries_its_state(payload):
    body = msgspec.json.encode(payload)
    assert "state" in json.loads(body)
    assert api.state_update_decoder(body) == payload


@pytest.mark.parametrize(
    "body",
    [
        b'{"state": "running", "end_date": "2026-01-01T00:00:00Z"}',
        b'{"end_date": "2026-01-01T00:00:00Z"}',
        b'{"state": "failed"}',
        b"not json",
    ],
    ids=["unknown-state", "no-state", "missing-end-date", "not-json"],
)
def test_bad_state_update_body_is_refused(body):
    with pytest.raises((msgspec.ValidationError, msgspec.DecodeError)):
        api.state_update_decoder(body)


def test_variable_put_body_names_the_value_val_and_omits_a_missing_description():
    assert json.loads(msgspec.json.encode(api.VariablePostBody(val="v"))) == {"val": "v"}
    body = api.VariablePostBody(val="v", description="d")
    assert json.loads(msgspec.json.encode(body)) == {"val": "v", "description": "d"}


def test_responses_from_a_newer_server_with_unknown_fields_still_decode():
    conn = msgspec.json.decode(
        b'{"conn_id": "c", "conn_type": "http", "brand_new": 1}', type=api.ConnectionResponse
    )
    assert conn.conn_id == "c"
    context = msgspec.json.decode(
        b'{"dag_run": {"dag_id": "d", "run_id": "r", "new": true}, "max_tries": 1, "x": 2}',
        type=api.TIRunContext,
    )
    assert context.dag_run.dag_id == "d"
    assert context.should_retry is False


def test_run_payload_says_running():
    payload = api.TIEnterRunningPayload(hostname="h", unixname="u", pid=1, start_date=WHEN)
    assert json.loads(msgspec.json.encode(payload))["state"] == "running"


def test_api_version_is_a_date():
    assert dt.date.fromisoformat(api.API_VERSION)
