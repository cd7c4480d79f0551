"""Token checks of the reference server: Airflow's status codes and messages."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from types import SimpleNamespace
from typing import Any

import jwt
import pytest
from apiserver_fixtures import RUN_BODY, Api, ApiFactory

from comms.api import TOKEN_AUDIENCE


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(ti_id: str, **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {
        "jti": uuid.uuid4().hex,
        "aud": TOKEN_AUDIENCE,
        "sub": ti_id,
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "scope": "execution",
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def _hand_signed(header: dict[str, Any], claims: dict[str, Any], key: bytes, digest: Any) -> str:
    """A JWT built by hand, for algorithms PyJWT refuses to produce with our key."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    signature = hmac.new(key, signing_input.encode(), digest).digest() if digest else b""
    return f"{signing_input}.{_b64(signature)}"


def _get_variable(api: Api, token: str) -> Any:
    return api.client.get("variables/v", headers={"Authorization": f"Bearer {token}"})


@pytest.fixture
def ti_id(api: Api) -> str:
    api.admin.set_variable("v", "value")
    return api.admin.create_task_instance()


def test_valid_execution_token_is_accepted(api: Api, ti_id: str) -> None:
    response = _get_variable(api, api.token(ti_id))
    assert response.status_code == 200
    assert response.json() == {"key": "v", "value": "value"}


def test_health_needs_no_token(api: Api) -> None:
    response = api.client.get("health")
    assert response.status_code == 200
    assert response.json() == {"status": "healthy"}


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer ", "Basic abc", "Token x"])
def test_missing_bearer_token_is_401(api: Api, ti_id: str, header: str | None) -> None:
    headers = {} if header is None else {"Authorization": header}
    response = api.client.get("variables/v", headers=headers)
    assert response.status_code == 401
    assert response.json() == {"detail": "Missing auth token"}


def _bad_tokens(api: Api, ti_id: str) -> dict[str, str]:
    secret = api.secret
    key = secret.encode()
    good = api.token(ti_id)
    head, body, signature = good.split(".")
    tampered_claims = _b64(json.dumps(_claims(str(uuid.uuid4()))).encode())
    return {
        "expired": jwt.encode(
            _claims(ti_id, iat=int(time.time()) - 700, exp=int(time.time()) - 60),
            secret,
            algorithm="HS512",
        ),
        "not yet valid": jwt.encode(
            _claims(ti_id, nbf=int(time.time()) + 300), secret, algorithm="HS512"
        ),
        "wrong audience": jwt.encode(
            _claims(ti_id, aud="urn:example:other"), secret, algorithm="HS512"
        ),
        "no audience": jwt.encode(_claims(ti_id, aud=None), secret, algorithm="HS512"),
        "no exp": jwt.encode(_claims(ti_id, exp=None), secret, algorithm="HS512"),
        "no nbf": jwt.encode(_claims(ti_id, nbf=None), secret, algorithm="HS512"),
        "no sub": jwt.encode(_claims(ti_id, sub=None), secret, algorithm="HS512"),
        "sub not a uuid": jwt.encode(_claims("not-a-uuid"), secret, algorithm="HS512"),
        "unknown scope": jwt.encode(_claims(ti_id, scope="admin"), secret, algorithm="HS512"),
        "other secret": jwt.encode(_claims(ti_id), "x" * 64, algorithm="HS512"),
        "alg none": _hand_signed({"alg": "none", "typ": "JWT"}, _claims(ti_id), key, None),
        "HS256 with the right secret": _hand_signed(
            {"alg": "HS256", "typ": "JWT"}, _claims(ti_id), key, hashlib.sha256
        ),
        # RS/HS confusion: an RS512 header over an HMAC made with the shared secret.
        "RS512 header": _hand_signed(
            {"alg": "RS512", "typ": "JWT"}, _claims(ti_id), key, hashlib.sha512
        ),
        "tampered claims": f"{head}.{tampered_claims}.{signature}",
        "tampered signature": f"{head}.{body}.{signature[:-4]}AAAA",
        "garbage": "not.a.jwt",
    }


@pytest.mark.parametrize(
    "case",
    [
        "expired",
        "not yet valid",
        "wrong audience",
        "no audience",
        "no exp",
        "no nbf",
        "no sub",
        "sub not a uuid",
        "unknown scope",
        "other secret",
        "alg none",
        "HS256 with the right secret",
        "RS512 header",
        "tampered claims",
        "tampered signature",
        "garbage",
    ],
)
def test_invalid_token_is_403(api: Api, ti_id: str, case: str) -> None:
    response = _get_variable(api, _bad_tokens(api, ti_id)[case])
    assert response.status_code == 403
    assert response.json()["detail"].startswith("Invalid auth token: ")
    assert "Refreshed-API-Token" not in response.headers


def test_invalid_token_is_refused_on_every_route(api: Api, ti_id: str) -> None:
    token = _bad_tokens(api, ti_id)["alg none"]
    headers = {"Authorization": f"Bearer {token}"}
    ti = api.admin.get_task_instance(ti_id)
    xcom = f"xcoms/{ti.dag_id}/{ti.run_id}/{ti.task_id}/k"
    responses = [
        api.client.patch(f"task-instances/{ti_id}/run", json=RUN_BODY, headers=headers),
        api.client.patch(f"task-instances/{ti_id}/state", json={}, headers=headers),
        api.client.put(f"task-instances/{ti_id}/heartbeat", json={}, headers=headers),
        api.client.get("connections/c", headers=headers),
        api.client.put("variables/v", json={"val": "x"}, headers=headers),
        api.client.delete("variables/v", headers=headers),
        api.client.get(xcom, headers=headers),
        api.client.post(xcom, content=b"1", headers=headers),
        api.client.delete(xcom, headers=headers),
        api.client.head(xcom, headers=headers),
    ]
    assert [r.status_code for r in responses] == [403] * len(responses)
    assert api.admin.get_variable("v") == "value"


def test_workload_token_is_refused_outside_run(api: Api, ti_id: str) -> None:
    response = _get_variable(api, api.token(ti_id, scope="workload"))
    assert response.status_code == 403
    assert response.json() == {"detail": "Token type 'workload' not allowed for this endpoint"}
    heartbeat = api.client.put(
        f"task-instances/{ti_id}/heartbeat",
        json={"hostname": "h", "pid": 1},
        headers=api.auth(ti_id, scope="workload"),
    )
    assert heartbeat.status_code == 403


def test_workload_token_on_run_is_exchanged_for_an_execution_token(api: Api, ti_id: str) -> None:
    response = api.client.patch(
        f"task-instances/{ti_id}/run", json=RUN_BODY, headers=api.auth(ti_id, scope="workload")
    )
    assert response.status_code == 200
    fresh = response.headers["Refreshed-API-Token"]
    claims = jwt.decode(fresh, api.secret, algorithms=["HS512"], audience=TOKEN_AUDIENCE)
    assert claims["scope"] == "execution"
    assert claims["sub"] == ti_id
    assert claims["exp"] - claims["iat"] == 600
    assert _get_variable(api, fresh).status_code == 200


def test_token_without_scope_counts_as_execution(api: Api, ti_id: str) -> None:
    token = jwt.encode(_claims(ti_id, scope=None), api.secret, algorithm="HS512")
    assert _get_variable(api, token).status_code == 200


def test_expired_within_leeway_is_still_accepted(api: Api, ti_id: str) -> None:
    now = int(time.time())
    token = jwt.encode(_claims(ti_id, exp=now - 3), api.secret, algorithm="HS512")
    response = _get_variable(api, token)
    assert response.status_code == 200
    # ... and it is near (past) expiry, so it is replaced.
    assert "Refreshed-API-Token" in response.headers


def test_task_instance_routes_need_sub_to_match_the_path(api: Api) -> None:
    mine = api.admin.create_task_instance()
    other = api.admin.create_task_instance()
    response = api.client.patch(
        f"task-instances/{other}/run", json=RUN_BODY, headers=api.auth(mine)
    )
    assert response.status_code == 403
    assert response.json() == {"detail": "Token subject does not match task instance ID"}
    assert api.admin.get_task_instance(other).state == "queued"
    for method, route, body in [
        ("PATCH", "state", {"state": "success", "end_date": "2026-11-22T03:20:00Z"}),
        ("PUT", "heartbeat", {"hostname": "worker-1", "pid": 4242}),
    ]:
        response = api.client.request(
            method, f"task-instances/{other}/{route}", json=body, headers=api.auth(mine)
        )
        assert response.status_code == 403


def test_variables_accept_a_token_whose_sub_matches_no_task_instance(api: Api) -> None:
    # As observed on Airflow 3.3: only the signature and claims matter outside /task-instances.
    api.admin.set_variable("v", "value")
    response = _get_variable(api, api.token(str(uuid.uuid4())))
    assert response.status_code == 200


def test_no_refresh_header_for_a_fresh_token(api: Api, ti_id: str) -> None:
    response = _get_variable(api, api.token(ti_id, lifetime=600))
    assert "Refreshed-API-Token" not in response.headers


def test_token_with_less_than_20_percent_left_is_reissued(api: Api, ti_id: str) -> None:
    response = _get_variable(api, api.token(ti_id, lifetime=100))
    fresh = response.headers["Refreshed-API-Token"]
    claims = jwt.decode(fresh, api.secret, algorithms=["HS512"], audience=TOKEN_AUDIENCE)
    assert claims["sub"] == ti_id
    assert claims["scope"] == "execution"
    assert claims["exp"] >= int(time.time()) + 590
    assert _get_variable(api, fresh).status_code == 200


def test_reissue_also_happens_on_error_answers(api: Api, ti_id: str) -> None:
    response = api.client.get("variables/missing", headers=api.auth(ti_id, lifetime=60))
    assert response.status_code == 404
    assert "Refreshed-API-Token" in response.headers


def test_reissue_window_follows_the_configured_lifetime(make_api: ApiFactory) -> None:
    # 10 s tokens with no floor: 20% is 2 s.
    api = make_api(token_lifetime=10, refresh_floor=0)
    api.admin.set_variable("v", "value")
    ti_id = api.admin.create_task_instance()
    assert "Refreshed-API-Token" not in _get_variable(api, api.token(ti_id, lifetime=10)).headers
    response = _get_variable(api, api.token(ti_id, lifetime=1))
    claims = jwt.decode(
        response.headers["Refreshed-API-Token"],
        api.secret,
        algorithms=["HS512"],
        audience=TOKEN_AUDIENCE,
    )
    assert claims["exp"] - claims["iat"] == 10


def test_airflow_floor_reissues_short_tokens_on_every_answer(make_api: ApiFactory) -> None:
    api = make_api(token_lifetime=10)
    api.admin.set_variable("v", "value")
    ti_id = api.admin.create_task_instance()
    assert "Refreshed-API-Token" in _get_variable(api, api.token(ti_id, lifetime=10)).headers


def test_workload_token_is_not_reissued_elsewhere_than_run(make_api: ApiFactory) -> None:
    api = make_api(token_lifetime=10)
    ti_id = api.admin.create_task_instance()
    response = _get_variable(api, api.token(ti_id, scope="workload", lifetime=5))
    assert response.status_code == 403
    assert "Refreshed-API-Token" not in response.headers


def test_short_secret_is_refused(tmp_path: Any) -> None:
    from apiserver import create_app

    with pytest.raises(ValueError, match="at least 64 bytes"):
        create_app(tmp_path / "db.sqlite", "short")


def test_a_token_that_verified_before_is_refused_once_it_expired(
    api: Api, ti_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = api.token(ti_id, lifetime=60)
    assert _get_variable(api, token).status_code == 200
    later = time.time() + 60 + 11  # past exp and the 10 s leeway
    monkeypatch.setattr("apiserver.security.time", SimpleNamespace(time=lambda: later))
    response = _get_variable(api, token)
    assert response.status_code == 403
    assert response.json() == {"detail": "Invalid auth token: Signature has expired"}
    # Not served from the cache afterwards either.
    assert _get_variable(api, token).status_code == 403


def test_a_repeated_token_keeps_working(api: Api, ti_id: str) -> None:
    token = api.token(ti_id)
    assert [_get_variable(api, token).status_code for _ in range(3)] == [200, 200, 200]
