"""A server out of memory under the store's writes (``online_write_batch``, which ``push`` and
``write_to_online_store`` call), in both layouts.

With ``noeviction`` the write stops with one ``DragonflyServerFullError`` naming the server and
its limit, never the password; what was written before reads back whole; once the limit is
raised, the same writes again give exactly the source rows. With an evicting policy (Redis /
Valkey ``allkeys-lru``, Dragonfly's cache mode) an evicted entity reads as not found, never as a
partial or wrong row: a Feast-layout hash is evicted whole, a compact record is one string per
entity and view. How the servers differ: ``tests/full_server_kit.py``.
"""

from __future__ import annotations

import asyncio

import pytest
from full_server_kit import (
    CARS,
    TRIPS,
    capped,
    expected,
    is_dragonfly,
    limit_named,
    read,
    rows,
    small_server,
)
from store_kit import repo_config

from feast_dragonfly.errors import DragonflyServerFullError

pytestmark = [pytest.mark.server, pytest.mark.valkey]

#: Entities written: several times what a capped server takes.
N = 4_000
BATCH = 1_000
#: Entities written before the cap: they must read back whole after the refusal.
BEFORE = 300


@pytest.fixture(scope="module")
def evicting(server_binary):
    server = small_server(server_binary, evicting=True)
    yield server
    server.stop()


def write_all(store, config, view, ids=range(N)) -> None:
    for start in range(ids.start, ids.stop, BATCH):
        store.online_write_batch(
            config, view, rows(view, range(start, min(start + BATCH, ids.stop))), None
        )


@pytest.mark.parametrize("layout", ["feast", "compact"])
def test_a_full_server_stops_the_write_with_one_error_then_a_rerun_completes(
    small, small_client, stores, tmp_path, layout
):
    config = repo_config(tmp_path, small.connection_string, layout=layout)
    store = stores()
    write_all(store, config, CARS, range(BEFORE))
    with capped(small_client):
        with pytest.raises(DragonflyServerFullError) as caught:
            write_all(store, config, CARS, range(BEFORE, N))
        message = str(caught.value)
        assert limit_named(message, small), message
        assert "raise its maxmemory" in message
        assert caught.value.__suppress_context__  # one error: no redis-py exception chained

        # Reads still work on a full server: what was written reads back whole, the rest as
        # not found, nothing in between.
        found = read(store, config, CARS, range(N))
        assert found[:BEFORE] == [expected(CARS, i) for i in range(BEFORE)]
        wrong = [i for i, got in enumerate(found) if got is not None and got != expected(CARS, i)]
        assert wrong == [], found[wrong[0]] if wrong else None
        assert None in found

    write_all(store, config, CARS)  # the same writes again, the limit raised
    assert read(store, config, CARS, range(N)) == [expected(CARS, i) for i in range(N)]


def test_the_async_write_names_the_limit_too(small, small_client, stores, tmp_path):
    config = repo_config(tmp_path, small.connection_string)
    store = stores()

    async def write() -> None:
        for start in range(0, N, BATCH):
            batch = rows(CARS, range(start, start + BATCH))
            await store.online_write_batch_async(config, CARS, batch, None)

    with capped(small_client):
        with pytest.raises(DragonflyServerFullError) as caught:
            asyncio.run(write())
    assert limit_named(str(caught.value), small), caught.value
    asyncio.run(write())
    assert read(store, config, CARS, range(N)) == [expected(CARS, i) for i in range(N)]


@pytest.mark.parametrize("layout", ["feast", "compact"])
def test_evicted_entities_read_as_not_found_never_as_partial_rows(
    evicting, stores, tmp_path, layout
):
    client = evicting.client()
    client.flushall()
    config = repo_config(tmp_path, evicting.connection_string, layout=layout)
    store = stores()
    dragonfly = is_dragonfly(client)
    refused = 0
    with capped(client, policy="allkeys-lru", headroom=8 * 2**20):
        for start in range(0, N, BATCH):
            for view in (CARS, TRIPS):  # Feast's layout: both views in one hash per entity
                try:
                    write_all(store, config, view, range(start, start + BATCH))
                except DragonflyServerFullError:
                    refused += 1  # Dragonfly may refuse some while it evicts
        assert int(client.info("stats")["evicted_keys"]) > 0
        assert refused == 0 or dragonfly
        for view in (CARS, TRIPS):
            found = read(store, config, view, range(N))
            wrong = [
                i for i, got in enumerate(found) if got is not None and got != expected(view, i)
            ]
            assert wrong == [], (view.name, wrong[:5])
            assert None in found
            assert any(got is not None for got in found), view.name
    client.close()
