"""``/variables`` and ``/connections``, including per-team visibility."""

from __future__ import annotations

import uuid

import pytest
from apiserver_fixtures import Api


def test_get_variable(api: Api) -> None:
    api.admin.set_variable("greeting", "hello")
    ti_id = api.admin.create_task_instance()
    response = api.client.get("variables/greeting", headers=api.auth(ti_id))
    assert response.status_code == 200
    assert response.json() == {"key": "greeting", "value": "hello"}


def test_variable_keys_may_contain_slashes(api: Api) -> None:
    api.admin.set_variable("team/path/key", "v")
    ti_id = api.admin.create_task_instance()
    response = api.client.get("variables/team/path/key", headers=api.auth(ti_id))
    assert response.json() == {"key": "team/path/key", "value": "v"}


def test_missing_variable_is_404(api: Api) -> None:
    ti_id = api.admin.create_task_instance()
    response = api.client.get("variables/nope", headers=api.auth(ti_id))
    assert response.status_code == 404
    assert response.json() == {
        "detail": {"reason": "not_found", "message": "Variable with key 'nope' not found"}
    }


def test_put_variable_creates_and_replaces(api: Api) -> None:
    ti_id = api.admin.create_task_instance()
    created = api.client.put(
        "variables/k", json={"val": "one", "description": "first"}, headers=api.auth(ti_id)
    )
    assert created.status_code == 201
    assert created.json() == {"message": "Variable successfully set"}
    assert api.admin.get_variable("k") == "one"
    replaced = api.client.put("variables/k", json={"val": "two"}, headers=api.auth(ti_id))
    assert replaced.status_code == 201
    response = api.client.get("variables/k", headers=api.auth(ti_id))
    assert response.json() == {"key": "k", "value": "two"}


def test_put_variable_without_val_is_422(api: Api) -> None:
    ti_id = api.admin.create_task_instance()
    response = api.client.put("variables/k", json={"value": "x"}, headers=api.auth(ti_id))
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "val"]


def test_delete_variable_is_204_even_when_missing(api: Api) -> None:
    api.admin.set_variable("k", "v")
    ti_id = api.admin.create_task_instance()
    assert api.client.delete("variables/k", headers=api.auth(ti_id)).status_code == 204
    with pytest.raises(KeyError):
        api.admin.get_variable("k")
    assert api.client.delete("variables/k", headers=api.auth(ti_id)).status_code == 204


def test_get_connection(api: Api) -> None:
    api.admin.set_connection(
        "warehouse",
        "postgres",
        host="db.example",
        schema="mydb",
        login="user",
        password="pass",
        port=5432,
        extra={"sslmode": "disable"},
    )
    ti_id = api.admin.create_task_instance()
    response = api.client.get("connections/warehouse", headers=api.auth(ti_id))
    assert response.status_code == 200
    assert response.json() == {
        "conn_id": "warehouse",
        "conn_type": "postgres",
        "host": "db.example",
        "schema": "mydb",
        "login": "user",
        "password": "pass",
        "port": 5432,
        "extra": '{"sslmode": "disable"}',
    }


def test_connection_leaves_out_unset_fields(api: Api) -> None:
    api.admin.set_connection("http_default", "http", host="example.com")
    ti_id = api.admin.create_task_instance()
    response = api.client.get("connections/http_default", headers=api.auth(ti_id))
    assert response.json() == {
        "conn_id": "http_default",
        "conn_type": "http",
        "host": "example.com",
    }


def test_missing_connection_is_404(api: Api) -> None:
    ti_id = api.admin.create_task_instance()
    response = api.client.get("connections/nope", headers=api.auth(ti_id))
    assert response.status_code == 404
    assert response.json() == {
        "detail": {"reason": "not_found", "message": "Connection with ID nope not found"}
    }


# --- teams ---------------------------------------------------------------------------------


@pytest.fixture
def teams(api: Api) -> dict[str, str]:
    """Task instances of team blue, team red and no team, and one variable/connection each."""
    for team in ("blue", "red", None):
        suffix = team or "global"
        api.admin.set_variable(f"var_{suffix}", suffix, team=team)
        api.admin.set_connection(f"conn_{suffix}", "http", host=f"{suffix}.example", team=team)
    return {
        "blue": api.admin.create_task_instance(team="blue"),
        "red": api.admin.create_task_instance(team="red"),
        "none": api.admin.create_task_instance(),
    }


@pytest.mark.parametrize(
    ("who", "name", "status"),
    [
        ("blue", "global", 200),
        ("blue", "blue", 200),
        ("blue", "red", 403),
        ("red", "red", 200),
        ("red", "blue", 403),
        ("none", "global", 200),
        ("none", "blue", 403),
    ],
)
def test_a_token_sees_global_and_its_own_teams_variables_and_connections(
    api: Api, teams: dict[str, str], who: str, name: str, status: int
) -> None:
    headers = api.auth(teams[who])
    variable = api.client.get(f"variables/var_{name}", headers=headers)
    connection = api.client.get(f"connections/conn_{name}", headers=headers)
    assert (variable.status_code, connection.status_code) == (status, status)
    if status == 403:
        assert variable.json() == {"detail": f"Task does not have access to variable var_{name}"}
        assert connection.json() == {
            "detail": f"Task does not have access to connection conn_{name}"
        }
        # The refusal says nothing of the value.
        assert "value" not in variable.json()


def test_a_token_without_a_task_instance_sees_only_global_ones(
    api: Api, teams: dict[str, str]
) -> None:
    headers = api.auth(str(uuid.uuid4()))
    assert api.client.get("variables/var_global", headers=headers).status_code == 200
    assert api.client.get("variables/var_blue", headers=headers).status_code == 403


def test_another_teams_variable_cannot_be_overwritten_or_deleted(
    api: Api, teams: dict[str, str]
) -> None:
    headers = api.auth(teams["red"])
    put = api.client.put("variables/var_blue", json={"val": "stolen"}, headers=headers)
    delete = api.client.delete("variables/var_blue", headers=headers)
    assert (put.status_code, delete.status_code) == (403, 403)
    assert api.admin.get_variable("var_blue") == "blue"


def test_a_new_variable_belongs_to_the_writers_team(api: Api, teams: dict[str, str]) -> None:
    put = api.client.put("variables/fresh", json={"val": "x"}, headers=api.auth(teams["blue"]))
    assert put.status_code == 201
    assert api.client.get("variables/fresh", headers=api.auth(teams["blue"])).status_code == 200
    assert api.client.get("variables/fresh", headers=api.auth(teams["red"])).status_code == 403


def test_updating_a_global_variable_keeps_it_global(api: Api, teams: dict[str, str]) -> None:
    put = api.client.put(
        "variables/var_global", json={"val": "new"}, headers=api.auth(teams["blue"])
    )
    assert put.status_code == 201
    response = api.client.get("variables/var_global", headers=api.auth(teams["red"]))
    assert response.json() == {"key": "var_global", "value": "new"}


def test_run_context_names_the_team(api: Api, teams: dict[str, str]) -> None:
    assert api.run(teams["blue"]).json()["dag_run"]["team_name"] == "blue"
