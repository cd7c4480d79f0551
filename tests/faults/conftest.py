"""Fixtures of the fault suite: reference servers and task tries (helpers: ``faultkit``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from faultkit import TryFactory

from apiserver.testing import ReferenceServer


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReferenceServer]:
    """A reference server shared by the tests of a module that leave it running."""
    with ReferenceServer(workdir=tmp_path_factory.mktemp("server")) as srv:
        yield srv


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[ReferenceServer]:
    """A reference server of this test alone (it may stop, kill and restart it)."""
    with ReferenceServer(workdir=tmp_path / "server") as srv:
        yield srv


@pytest.fixture
def new_try(server: ReferenceServer, tmp_path: Path) -> Iterator[TryFactory]:
    """Make task tries on the shared server; whatever a failed test left running is killed."""
    factory = TryFactory(server, tmp_path)
    yield factory
    factory.cleanup()


@pytest.fixture
def own_try(own_server: ReferenceServer, tmp_path: Path) -> Iterator[TryFactory]:
    """Make task tries on this test's own server."""
    factory = TryFactory(own_server, tmp_path)
    yield factory
    factory.cleanup()
