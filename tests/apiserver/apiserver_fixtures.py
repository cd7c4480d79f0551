"""Helpers for the reference server's tests: the app in-process behind starlette's TestClient.

``conftest.py`` turns them into fixtures; test modules import the types from here (a unique
module name: ``import conftest`` would be ambiguous across test directories).
"""

from __future__ import annotations

import secrets
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from starlette.exceptions import StarletteDeprecationWarning

from apiserver import Admin, create_app, mint_token

with warnings.catch_warnings():
    # starlette 1.x asks for httpx2; httpx is what this project depends on.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

RUN_BODY = {
    "state": "running",
    "hostname": "worker-1",
    "unixname": "airflow",
    "pid": 4242,
    "start_date": "2026-11-22T03:19:20.037640+00:00",
}


@dataclass
class Api:
    """The app under test, its database through Admin, and token helpers."""

    client: TestClient
    admin: Admin
    secret: str
    db_path: Path

    def token(self, ti_id: str, *, scope: str = "execution", lifetime: float = 600) -> str:
        return mint_token(self.secret, ti_id, scope=scope, lifetime=lifetime)  # type: ignore[arg-type]

    def auth(self, ti_id: str, **kwargs: Any) -> dict[str, str]:
        """The headers a supervisor sends: its token, and bodies as JSON."""
        return {
            "Authorization": f"Bearer {self.token(ti_id, **kwargs)}",
            "Content-Type": "application/json",
        }

    def run(self, ti_id: str, **body: Any) -> httpx.Response:
        return self.client.patch(
            f"task-instances/{ti_id}/run", json={**RUN_BODY, **body}, headers=self.auth(ti_id)
        )

    def running_ti(self, **kwargs: Any) -> str:
        """A task instance that went through ``/run`` (state running on worker-1, pid 4242)."""
        ti_id = self.admin.create_task_instance(**kwargs)
        assert self.run(ti_id).status_code == 200
        return ti_id


ApiFactory = Callable[..., Api]


def open_api(db_path: Path, **options: Any) -> tuple[Api, Callable[[], None]]:
    """An app on ``db_path`` with ``create_app`` options, and the function that closes it."""
    secret = secrets.token_urlsafe(64)
    client = TestClient(
        create_app(db_path, secret, **options), base_url="http://127.0.0.1/execution/"
    )
    admin = Admin(db_path)

    def close() -> None:
        client.close()
        admin.close()

    return Api(client=client, admin=admin, secret=secret, db_path=db_path), close
