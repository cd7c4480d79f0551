"""Fixtures of the supervisor's end-to-end tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from apiserver.testing import ReferenceServer


@pytest.fixture(scope="module")
def server() -> Iterator[ReferenceServer]:
    """One reference server per test module, on a free loopback port."""
    with ReferenceServer() as srv:
        yield srv
