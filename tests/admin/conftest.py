"""Fixtures of the admin tools' tests: a second server, the migration target.

Each module provides ``target_server`` (module scope: how it starts the server it copies to);
``target`` empties it before each test, ``target_client`` talks to it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from feast_dragonfly.testing.local_server import LocalServer


@pytest.fixture
def target(target_server: LocalServer) -> LocalServer:
    client = target_server.client()
    client.flushall()
    client.close()
    return target_server


@pytest.fixture
def target_client(target: LocalServer) -> Iterator[redis.Redis]:
    client = target.client()
    yield client
    client.close()
