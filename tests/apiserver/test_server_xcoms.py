"""``/xcoms/{dag_id}/{run_id}/{task_id}/{key}``: GET, POST, DELETE and HEAD."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from apiserver_fixtures import Api

from apiserver.admin import TaskInstanceRecord
from apiserver.blobs import INLINE_LIMIT


@pytest.fixture
def ti(api: Api) -> TaskInstanceRecord:
    ti_id = api.running_ti(dag_id="etl", task_id="extract", run_id="manual__1")
    return api.admin.get_task_instance(ti_id)


def _url(ti: TaskInstanceRecord, key: str, task_id: str | None = None) -> str:
    return f"xcoms/{ti.dag_id}/{ti.run_id}/{task_id or ti.task_id}/{key}"


@pytest.mark.parametrize(
    "value", [42, "text", None, True, 1.5, [1, "a", None], {"a": {"b": [1, 2]}}]
)
def test_post_then_get_round_trips_any_json_value(
    api: Api, ti: TaskInstanceRecord, value: object
) -> None:
    posted = api.client.post(_url(ti, "k"), content=json.dumps(value), headers=api.auth(ti.id))
    assert posted.status_code == 201
    assert posted.json() == {"message": "XCom successfully set"}
    got = api.client.get(_url(ti, "k"), headers=api.auth(ti.id))
    assert got.status_code == 200
    assert got.json() == {"key": "k", "value": value}
    assert api.admin.get_xcom(ti.dag_id, ti.run_id, ti.task_id, "k") == value


def test_post_replaces_the_previous_value(api: Api, ti: TaskInstanceRecord) -> None:
    api.client.post(_url(ti, "k"), content=b"1", headers=api.auth(ti.id))
    api.client.post(_url(ti, "k"), content=b"2", headers=api.auth(ti.id))
    assert api.client.get(_url(ti, "k"), headers=api.auth(ti.id)).json()["value"] == 2


def test_keys_may_contain_slashes(api: Api, ti: TaskInstanceRecord) -> None:
    api.client.post(_url(ti, "a/b/c"), content=b'"deep"', headers=api.auth(ti.id))
    response = api.client.get(_url(ti, "a/b/c"), headers=api.auth(ti.id))
    assert response.json() == {"key": "a/b/c", "value": "deep"}


def test_missing_xcom_is_404(api: Api, ti: TaskInstanceRecord) -> None:
    response = api.client.get(_url(ti, "nope"), headers=api.auth(ti.id))
    assert response.status_code == 404
    assert response.json()["detail"]["reason"] == "not_found"


def test_map_index_selects_the_mapped_value(api: Api) -> None:
    ti_id = api.running_ti(dag_id="etl", task_id="mapped", run_id="r", map_index=3)
    ti = api.admin.get_task_instance(ti_id)
    posted = api.client.post(
        _url(ti, "k"), params={"map_index": 3}, content=b'"three"', headers=api.auth(ti_id)
    )
    assert posted.status_code == 201
    got = api.client.get(_url(ti, "k"), params={"map_index": 3}, headers=api.auth(ti_id))
    assert got.json() == {"key": "k", "value": "three"}
    unmapped = api.client.get(_url(ti, "k"), headers=api.auth(ti_id))
    assert unmapped.status_code == 404


def test_bad_map_index_is_422(api: Api, ti: TaskInstanceRecord) -> None:
    response = api.client.get(_url(ti, "k"), params={"map_index": "x"}, headers=api.auth(ti.id))
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", "map_index"]


def test_reading_another_tasks_xcom_of_the_run_is_allowed(api: Api, ti: TaskInstanceRecord) -> None:
    api.admin.set_xcom(ti.dag_id, ti.run_id, "upstream", key="return_value", value=[1, 2])
    response = api.client.get(_url(ti, "return_value", "upstream"), headers=api.auth(ti.id))
    assert response.json() == {"key": "return_value", "value": [1, 2]}


def test_writing_or_deleting_another_tasks_xcom_is_403(api: Api, ti: TaskInstanceRecord) -> None:
    api.admin.set_xcom(ti.dag_id, ti.run_id, "upstream", key="k", value=1)
    url = _url(ti, "k", "upstream")
    posted = api.client.post(url, content=b"2", headers=api.auth(ti.id))
    deleted = api.client.delete(url, headers=api.auth(ti.id))
    assert (posted.status_code, deleted.status_code) == (403, 403)
    assert api.admin.get_xcom(ti.dag_id, ti.run_id, "upstream", "k") == 1


def test_writing_with_another_map_index_is_403(api: Api, ti: TaskInstanceRecord) -> None:
    response = api.client.post(
        _url(ti, "k"), params={"map_index": 0}, content=b"1", headers=api.auth(ti.id)
    )
    assert response.status_code == 403


def test_post_with_invalid_json_is_400(api: Api, ti: TaskInstanceRecord) -> None:
    for body in (b"{not json", b"", b"1 2"):
        response = api.client.post(_url(ti, "k"), content=body, headers=api.auth(ti.id))
        assert response.status_code == 400
        assert response.json()["detail"]["reason"] == "invalid_format"


def test_post_without_a_json_content_type_is_422(api: Api, ti: TaskInstanceRecord) -> None:
    headers = {**api.auth(ti.id), "Content-Type": "application/octet-stream"}
    response = api.client.post(_url(ti, "k"), content=b"1", headers=headers)
    assert response.status_code == 422
    assert api.client.get(_url(ti, "k"), headers=api.auth(ti.id)).status_code == 404


def test_post_with_a_too_long_mapped_length_is_400(api: Api, ti: TaskInstanceRecord) -> None:
    response = api.client.post(
        _url(ti, "k"), params={"mapped_length": 5000}, content=b"[]", headers=api.auth(ti.id)
    )
    assert response.status_code == 400
    assert response.json()["detail"]["reason"] == "unmappable_return_value_length"


def test_empty_key_is_400(api: Api, ti: TaskInstanceRecord) -> None:
    response = api.client.post(_url(ti, ""), content=b"1", headers=api.auth(ti.id))
    assert response.status_code == 400


def test_delete_removes_the_value(api: Api, ti: TaskInstanceRecord) -> None:
    api.client.post(_url(ti, "k"), content=b"1", headers=api.auth(ti.id))
    response = api.client.delete(_url(ti, "k"), headers=api.auth(ti.id))
    assert response.status_code == 200
    assert response.json() == {"message": "XCom with key: k successfully deleted."}
    assert api.client.get(_url(ti, "k"), headers=api.auth(ti.id)).status_code == 404


def test_head_counts_mapped_values(api: Api, ti: TaskInstanceRecord) -> None:
    for index in range(3):
        api.admin.set_xcom(ti.dag_id, ti.run_id, "mapped", key="k", value=index, map_index=index)
    response = api.client.head(_url(ti, "k", "mapped"), headers=api.auth(ti.id))
    assert response.status_code == 200
    assert response.headers["Content-Range"] == "map_indexes 3"
    none = api.client.head(_url(ti, "other", "mapped"), headers=api.auth(ti.id))
    assert none.headers["Content-Range"] == "map_indexes 0"


def test_head_with_map_index_is_400(api: Api, ti: TaskInstanceRecord) -> None:
    response = api.client.head(_url(ti, "k"), params={"map_index": 0}, headers=api.auth(ti.id))
    assert response.status_code == 400


def test_include_prior_dates_finds_an_earlier_runs_value(api: Api) -> None:
    import datetime as dt

    day = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    api.admin.create_dag_run("etl", "day1", logical_date=day)
    api.admin.create_dag_run("etl", "day2", logical_date=day + dt.timedelta(days=1))
    api.admin.set_xcom("etl", "day1", "extract", key="cursor", value=100)
    ti_id = api.running_ti(dag_id="etl", task_id="extract", run_id="day2")
    ti = api.admin.get_task_instance(ti_id)
    url = _url(ti, "cursor")
    assert api.client.get(url, headers=api.auth(ti_id)).status_code == 404
    prior = api.client.get(url, params={"include_prior_dates": "true"}, headers=api.auth(ti_id))
    assert prior.json() == {"key": "cursor", "value": 100}


def test_large_value_is_stored_and_served_verbatim(api: Api, ti: TaskInstanceRecord) -> None:
    value = "x" * (8 * 1024 * 1024)
    body = json.dumps({"blob": value}).encode()
    assert (
        api.client.post(_url(ti, "big"), content=body, headers=api.auth(ti.id)).status_code == 201
    )
    response = api.client.get(_url(ti, "big"), headers=api.auth(ti.id))
    assert response.content == b'{"key":"big","value":' + body + b"}"


def test_percent_encoded_path_segments_are_decoded(api: Api) -> None:
    # What a client quoting every segment sends: run ids carry ':' and '+'.
    run_id = "manual__2026-11-22T03:19:20+00:00"
    ti_id = api.running_ti(dag_id="etl", task_id="t", run_id=run_id)
    url = "xcoms/etl/manual__2026-11-22T03%3A19%3A20%2B00%3A00/t/a%2Fb"
    assert api.client.post(url, content=b"7", headers=api.auth(ti_id)).status_code == 201
    assert api.admin.get_xcom("etl", run_id, "t", "a/b") == 7
    assert api.client.get(url, headers=api.auth(ti_id)).json() == {"key": "a/b", "value": 7}


def _blob_files(api: Api) -> list[str]:
    root = Path(f"{api.db_path}.blobs")
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def test_large_values_live_in_files_that_follow_replace_and_delete(
    api: Api, ti: TaskInstanceRecord
) -> None:
    big = json.dumps(["y" * INLINE_LIMIT]).encode()
    api.client.post(_url(ti, "k"), content=big, headers=api.auth(ti.id))
    (first,) = _blob_files(api)
    assert api.admin.get_xcom(ti.dag_id, ti.run_id, ti.task_id, "k") == ["y" * INLINE_LIMIT]
    assert api.admin.xcoms_of(ti.id) == {"k": ["y" * INLINE_LIMIT]}

    api.client.post(_url(ti, "k"), content=big, headers=api.auth(ti.id))
    (second,) = _blob_files(api)
    assert second != first

    api.client.post(_url(ti, "k"), content=b"1", headers=api.auth(ti.id))
    assert _blob_files(api) == []
    assert api.client.get(_url(ti, "k"), headers=api.auth(ti.id)).json()["value"] == 1

    api.client.post(_url(ti, "k"), content=big, headers=api.auth(ti.id))
    assert api.client.delete(_url(ti, "k"), headers=api.auth(ti.id)).status_code == 200
    assert _blob_files(api) == []


def test_admin_set_xcom_replaces_a_large_value_and_its_file(
    api: Api, ti: TaskInstanceRecord
) -> None:
    big = json.dumps("z" * (INLINE_LIMIT + 1)).encode()
    api.client.post(_url(ti, "k"), content=big, headers=api.auth(ti.id))
    api.admin.set_xcom(ti.dag_id, ti.run_id, ti.task_id, key="k", value="small")
    assert _blob_files(api) == []
    assert api.client.get(_url(ti, "k"), headers=api.auth(ti.id)).json()["value"] == "small"


def test_invalid_large_body_is_400_and_leaves_no_file(api: Api, ti: TaskInstanceRecord) -> None:
    body = b'["' + b"x" * INLINE_LIMIT
    response = api.client.post(_url(ti, "k"), content=body, headers=api.auth(ti.id))
    assert response.status_code == 400
    assert _blob_files(api) == []
