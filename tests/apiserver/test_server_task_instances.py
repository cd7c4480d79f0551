"""``/task-instances/{id}/run``, ``/state`` and ``/heartbeat`` as Airflow 3 answers them."""

from __future__ import annotations

import json
import uuid

import pytest
from apiserver_fixtures import RUN_BODY, Api

from comms.api import API_VERSION

BEAT = {"hostname": "worker-1", "pid": 4242}
SUCCESS = {"state": "success", "end_date": "2026-11-22T03:20:00+00:00"}


def _state(api: Api, ti_id: str, body: object) -> object:
    return api.client.patch(f"task-instances/{ti_id}/state", json=body, headers=api.auth(ti_id))


def _beat(api: Api, ti_id: str, **body: object) -> object:
    return api.client.put(
        f"task-instances/{ti_id}/heartbeat", json={**BEAT, **body}, headers=api.auth(ti_id)
    )


# --- /run ----------------------------------------------------------------------------------


def test_run_moves_a_queued_ti_to_running_and_returns_its_context(api: Api) -> None:
    api.admin.create_dag_run("etl", "manual__1", team="blue", conf={"limit": 5})
    ti_id = api.admin.create_task_instance("etl", "load", "manual__1", max_tries=2)

    response = api.run(ti_id)

    assert response.status_code == 200
    context = response.json()
    assert context["dag_run"]["dag_id"] == "etl"
    assert context["dag_run"]["run_id"] == "manual__1"
    assert context["dag_run"]["conf"] == {"limit": 5}
    assert context["dag_run"]["team_name"] == "blue"
    assert context["dag_run"]["run_type"] == "manual"
    assert context["max_tries"] == 2
    assert context["should_retry"] is True
    assert context["xcom_keys_to_clear"] == []
    assert context["variables"] == []
    assert context["connections"] == []
    ti = api.admin.get_task_instance(ti_id)
    assert (ti.state, ti.hostname, ti.unixname, ti.pid) == ("running", "worker-1", "airflow", 4242)
    assert ti.start_date is not None
    assert ti.start_date.isoformat().startswith("2026-11-22T03:19:20")
    assert ti.last_heartbeat_at is not None
    assert ti.end_date is None


@pytest.mark.parametrize(
    ("try_number", "max_tries", "should_retry"),
    [(1, 0, False), (1, 1, True), (2, 1, False), (3, 3, True), (4, 3, False)],
)
def test_should_retry_follows_try_number_and_max_tries(
    api: Api, try_number: int, max_tries: int, should_retry: bool
) -> None:
    ti_id = api.admin.create_task_instance(try_number=try_number, max_tries=max_tries)
    assert api.run(ti_id).json()["should_retry"] is should_retry


def test_run_from_restarting_is_allowed_and_retry_eligible(api: Api) -> None:
    ti_id = api.admin.create_task_instance(state="restarting")
    response = api.run(ti_id)
    assert response.status_code == 200
    assert response.json()["should_retry"] is True


def test_run_is_idempotent_for_the_same_host_user_and_pid(api: Api) -> None:
    ti_id = api.running_ti()
    again = api.run(ti_id)
    assert again.status_code == 200
    assert again.json()["dag_run"]["run_id"] == api.admin.get_task_instance(ti_id).run_id


@pytest.mark.parametrize("change", [{"pid": 1}, {"hostname": "worker-2"}, {"unixname": "root"}])
def test_run_from_another_process_while_running_is_409(api: Api, change: dict[str, object]) -> None:
    ti_id = api.running_ti()
    response = api.run(ti_id, **change)
    assert response.status_code == 409
    assert response.json() == {
        "detail": {
            "reason": "invalid_state",
            "message": "TI was not in a state where it could be marked as running",
            "previous_state": "running",
        }
    }
    assert api.admin.get_task_instance(ti_id).pid == 4242


@pytest.mark.parametrize("state", [None, "scheduled", "success", "failed", "up_for_retry"])
def test_run_from_a_non_runnable_state_is_409(api: Api, state: str | None) -> None:
    ti_id = api.admin.create_task_instance(state=state)
    response = api.run(ti_id)
    assert response.status_code == 409
    assert response.json()["detail"]["previous_state"] == state
    assert api.admin.get_task_instance(ti_id).state == state


def test_run_of_an_unknown_ti_is_404(api: Api) -> None:
    ti_id = str(uuid.uuid4())
    response = api.run(ti_id)
    assert response.status_code == 404
    assert response.json() == {
        "detail": {"reason": "not_found", "message": "Task Instance not found"}
    }


def test_run_lists_existing_xcoms_to_clear(api: Api) -> None:
    ti_id = api.admin.create_task_instance("etl", "load", "r1", try_number=2, max_tries=1)
    api.admin.set_xcom("etl", "r1", "load", key="return_value", value=1)
    api.admin.set_xcom("etl", "r1", "load", key="rows", value=[1])
    api.admin.set_xcom("etl", "r1", "other", key="x", value=2)
    assert api.run(ti_id).json()["xcom_keys_to_clear"] == ["return_value", "rows"]


@pytest.mark.parametrize(
    ("body", "loc", "type_"),
    [
        ({k: v for k, v in RUN_BODY.items() if k != "pid"}, ["body", "pid"], "missing"),
        ({**RUN_BODY, "pid": "abc"}, ["body", "pid"], "value_error"),
        ({**RUN_BODY, "state": "queued"}, ["body", "state"], "value_error"),
        ({**RUN_BODY, "start_date": "yesterday"}, ["body", "start_date"], "value_error"),
    ],
)
def test_run_with_an_invalid_body_is_422_naming_the_field(
    api: Api, body: dict[str, object], loc: list[str], type_: str
) -> None:
    ti_id = api.admin.create_task_instance()
    response = api.client.patch(f"task-instances/{ti_id}/run", json=body, headers=api.auth(ti_id))
    assert response.status_code == 422
    (error,) = response.json()["detail"]
    assert error["loc"] == loc
    assert error["type"] == type_
    assert error["msg"]
    assert api.admin.get_task_instance(ti_id).state == "queued"


def test_run_with_malformed_json_is_422(api: Api) -> None:
    ti_id = api.admin.create_task_instance()
    response = api.client.patch(
        f"task-instances/{ti_id}/run", content=b"{not json", headers=api.auth(ti_id)
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] == "json_invalid"


def test_a_body_sent_without_a_json_content_type_is_422(api: Api) -> None:
    ti_id = api.admin.create_task_instance()
    headers = {"Authorization": api.auth(ti_id)["Authorization"]}
    for content_type in (None, "text/plain"):
        if content_type:
            headers["Content-Type"] = content_type
        response = api.client.patch(
            f"task-instances/{ti_id}/run", content=json.dumps(RUN_BODY), headers=headers
        )
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"] == ["body"]
    assert api.admin.get_task_instance(ti_id).state == "queued"
    headers["Content-Type"] = "application/json; charset=utf-8"
    response = api.client.patch(
        f"task-instances/{ti_id}/run", content=json.dumps(RUN_BODY), headers=headers
    )
    assert response.status_code == 200


def test_a_path_id_that_is_not_a_uuid_is_422(api: Api) -> None:
    ti_id = api.admin.create_task_instance()
    response = api.client.patch(
        "task-instances/not-a-uuid/run", json=RUN_BODY, headers=api.auth(ti_id)
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["path", "task_instance_id"]


# --- /state --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        SUCCESS,
        {**SUCCESS, "task_outlets": [{"name": "a", "uri": "s3://a"}], "outlet_events": []},
        {"state": "failed", "end_date": "2026-11-22T03:20:00+00:00"},
        {"state": "skipped", "end_date": "2026-11-22T03:20:00+00:00"},
        {"state": "removed", "end_date": "2026-11-22T03:20:00+00:00"},
        {"state": "up_for_retry", "end_date": "2026-11-22T03:20:00+00:00"},
        {
            "state": "up_for_reschedule",
            "reschedule_date": "2026-11-22T04:00:00+00:00",
            "end_date": "2026-11-22T03:20:00+00:00",
        },
        {
            "state": "deferred",
            "classpath": "pkg.triggers.Wait",
            "trigger_kwargs": {"seconds": 30},
            "trigger_timeout": "PT1H",
            "next_method": "resume",
            "next_kwargs": {"cursor": 7},
        },
    ],
    ids=lambda body: body["state"],
)
def test_state_update_from_running_is_204_and_stored_as_given(
    api: Api, body: dict[str, object]
) -> None:
    ti_id = api.running_ti()
    response = _state(api, ti_id, body)
    assert response.status_code == 204
    ti = api.admin.get_task_instance(ti_id)
    assert ti.state == body["state"]
    assert ti.state_payload == body
    if "end_date" in body:
        assert ti.end_date is not None


def test_repeating_the_same_state_is_200(api: Api) -> None:
    ti_id = api.running_ti()
    assert _state(api, ti_id, SUCCESS).status_code == 204
    repeat = _state(api, ti_id, SUCCESS)
    assert repeat.status_code == 200


def test_state_update_when_not_running_is_409(api: Api) -> None:
    ti_id = api.running_ti()
    assert _state(api, ti_id, SUCCESS).status_code == 204
    response = _state(api, ti_id, {"state": "failed", "end_date": "2026-11-22T03:20:00Z"})
    assert response.status_code == 409
    assert response.json() == {
        "detail": {
            "reason": "invalid_state",
            "message": "TI was not in the running state so it cannot be updated",
            "previous_state": "success",
        }
    }
    assert api.admin.get_task_instance(ti_id).state == "success"


def test_state_update_of_a_queued_ti_is_409(api: Api) -> None:
    ti_id = api.admin.create_task_instance()
    assert _state(api, ti_id, SUCCESS).status_code == 409


def test_state_update_of_an_unknown_ti_is_404(api: Api) -> None:
    ti_id = str(uuid.uuid4())
    assert _state(api, ti_id, SUCCESS).status_code == 404


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"state": "success"}, ["body", "end_date"]),
        ({"state": "bogus", "end_date": "2026-11-22T03:20:00Z"}, ["body", "state"]),
        ({"state": "deferred", "next_method": "x"}, ["body", "classpath"]),
        ({"end_date": "2026-11-22T03:20:00Z"}, ["body", "state"]),
    ],
)
def test_invalid_state_body_is_422(api: Api, body: dict[str, object], loc: list[str]) -> None:
    ti_id = api.running_ti()
    response = _state(api, ti_id, body)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == loc
    assert api.admin.get_task_instance(ti_id).state == "running"


def test_deferred_then_run_again_resumes_with_next_method(api: Api) -> None:
    ti_id = api.running_ti()
    deferred = {
        "state": "deferred",
        "classpath": "pkg.triggers.Wait",
        "next_method": "resume",
        "next_kwargs": {"cursor": 7},
    }
    assert _state(api, ti_id, deferred).status_code == 204
    api.admin.set_state(ti_id, "queued")  # the triggerer fired; the scheduler requeued it
    context = api.run(ti_id, pid=5000).json()
    assert context["next_method"] == "resume"
    assert context["next_kwargs"] == {"cursor": 7}
    assert context["xcom_keys_to_clear"] == []


# --- /heartbeat ----------------------------------------------------------------------------


def test_heartbeat_of_the_running_process_is_204_and_counted(api: Api) -> None:
    ti_id = api.running_ti()
    before = api.admin.get_task_instance(ti_id).last_heartbeat_at
    assert _beat(api, ti_id).status_code == 204
    assert _beat(api, ti_id).status_code == 204
    ti = api.admin.get_task_instance(ti_id)
    assert ti.heartbeat_count == 2
    assert ti.last_heartbeat_at is not None
    assert before is not None
    assert ti.last_heartbeat_at >= before


@pytest.mark.parametrize("change", [{"pid": 1}, {"hostname": "worker-2"}])
def test_heartbeat_from_another_process_is_409_running_elsewhere(
    api: Api, change: dict[str, object]
) -> None:
    ti_id = api.running_ti()
    response = _beat(api, ti_id, **change)
    assert response.status_code == 409
    assert response.json() == {
        "detail": {
            "reason": "running_elsewhere",
            "message": "TI is already running elsewhere",
            "current_hostname": "worker-1",
            "current_pid": 4242,
        }
    }
    assert api.admin.get_task_instance(ti_id).heartbeat_count == 0


def test_heartbeat_after_the_ui_marked_the_ti_failed_is_409_not_running(api: Api) -> None:
    ti_id = api.running_ti()
    api.admin.set_state(ti_id, "failed")
    response = _beat(api, ti_id)
    assert response.status_code == 409
    assert response.json()["detail"]["reason"] == "not_running"
    assert response.json()["detail"]["current_state"] == "failed"


def test_heartbeat_after_the_ti_was_cleared_is_410(api: Api) -> None:
    ti_id = api.running_ti(max_tries=1)
    new_id = api.admin.clear(ti_id)
    response = _beat(api, ti_id)
    assert response.status_code == 410
    assert api.admin.get_task_instance(ti_id).cleared
    new = api.admin.get_task_instance(new_id)
    assert (new.state, new.try_number, new.cleared) == (None, 2, False)
    # The cleared try is gone for every other route too.
    assert _state(api, ti_id, SUCCESS).status_code == 404


def test_cleared_and_requeued_ti_can_run_as_the_next_try(api: Api) -> None:
    ti_id = api.running_ti()
    new_id = api.admin.clear(ti_id, requeue=True)
    response = api.run(new_id)
    assert response.status_code == 200
    assert api.admin.get_task_instance(new_id).try_number == 2


def test_heartbeat_of_an_unknown_ti_is_404(api: Api) -> None:
    response = _beat(api, str(uuid.uuid4()))
    assert response.status_code == 404
    assert response.json()["detail"]["reason"] == "not_found"


def test_heartbeat_with_a_bad_body_is_422(api: Api) -> None:
    ti_id = api.running_ti()
    response = api.client.put(
        f"task-instances/{ti_id}/heartbeat", json={"hostname": "h"}, headers=api.auth(ti_id)
    )
    assert response.status_code == 422
    assert response.json()["detail"] == [
        {"loc": ["body", "pid"], "msg": "Field required", "type": "missing"}
    ]


def test_unknown_route_and_method_answer_in_json(api: Api) -> None:
    ti_id = api.running_ti()
    missing = api.client.get("nothing-here")
    assert missing.status_code == 404
    assert missing.json() == {"detail": "Not Found"}
    wrong = api.client.get(f"task-instances/{ti_id}/heartbeat", headers=api.auth(ti_id))
    assert wrong.status_code == 405
    assert wrong.json() == {"detail": "Method Not Allowed"}


def test_correlation_id_and_api_version_are_echoed(api: Api) -> None:
    response = api.client.get(
        "health", headers={"correlation-id": "abc-123", "Airflow-API-Version": "2026-06-30"}
    )
    assert response.headers["correlation-id"] == "abc-123"
    assert response.headers["airflow-api-version"] == "2026-06-30"
    plain = api.client.get("health")
    assert "correlation-id" not in plain.headers
    # Without a version asked for, the answer names the one served.
    assert plain.headers["airflow-api-version"] == API_VERSION
