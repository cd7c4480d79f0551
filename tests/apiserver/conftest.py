"""Fixtures of the reference server's tests (helpers live in ``apiserver_fixtures``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from apiserver_fixtures import Api, ApiFactory, open_api


@pytest.fixture
def make_api(tmp_path: Path) -> Iterator[ApiFactory]:
    """Build an app with the given ``create_app`` options (closed after the test)."""
    closers: list[Callable[[], None]] = []

    def factory(**options: Any) -> Api:
        api, close = open_api(tmp_path / f"api{len(closers)}.sqlite", **options)
        closers.append(close)
        return api

    yield factory
    for close in closers:
        close()


@pytest.fixture
def api(make_api: ApiFactory) -> Api:
    """The app with default options."""
    return make_api()
