"""``_store.online_store``: initialize() / close() and event-loop handling, as `feast serve`
drives them.

Connections are counted on the server (CLIENT LIST, by a client name unique to each test),
so "closed" means the server saw the sockets go, not that a Python object was dropped.
"""

from __future__ import annotations

import asyncio
import gc
import time
import uuid
from datetime import datetime, timezone

import pytest
from store_kit import entity_key, feature_view, free_port, repo_config, row

from feast_dragonfly import DragonflyConnectionError, DragonflyOnlineStore

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)
SECRET = "sekret-XYZ"


@pytest.fixture
def client_name():
    return f"fdtest-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def named_config(tmp_path, server_connection_string, client_name):
    """Our connections carry a unique CLIENT SETNAME, so the server can count them."""
    return repo_config(tmp_path, f"{server_connection_string},client_name={client_name}")


@pytest.fixture
def count_connections(redis_client, client_name):
    def count() -> int:
        return sum(1 for c in redis_client.client_list() if c.get("name") == client_name)

    return count


def wait_for(condition, timeout=2.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def test_async_supported_is_read_and_write():
    supported = DragonflyOnlineStore().async_supported
    assert supported.read is True
    assert supported.write is True


async def test_initialize_pings_the_server(named_config, count_connections):
    store = DragonflyOnlineStore()
    try:
        await store.initialize(named_config)
        assert count_connections() >= 1, "initialize() did not talk to the server"
    finally:
        await store.close()


async def test_initialize_opens_the_whole_async_pool(
    tmp_path, server_connection_string, client_name, count_connections
):
    """A server's first burst of requests must not wait for connects: initialize() opens as
    many connections as the pool may hold, and reads then reuse them."""
    config = repo_config(
        tmp_path, f"{server_connection_string},client_name={client_name}", max_connections=5
    )
    view = feature_view()
    store = DragonflyOnlineStore()
    try:
        await store.initialize(config)
        assert count_connections() == 5
        reads = [store.online_read_async(config, view, [entity_key(i)]) for i in range(20)]
        await asyncio.gather(*reads)
        assert count_connections() == 5
    finally:
        await store.close()


async def test_initialize_fails_fast_on_an_unreachable_server(tmp_path):
    port = free_port()
    config = repo_config(tmp_path, f"127.0.0.1:{port},password={SECRET}")
    store = DragonflyOnlineStore()
    started = time.monotonic()
    try:
        with pytest.raises(DragonflyConnectionError) as caught:
            await store.initialize(config)
    finally:
        await store.close()
    assert time.monotonic() - started < 3
    message = str(caught.value)
    assert f"127.0.0.1:{port}" in message
    assert SECRET not in message and SECRET not in repr(caught.value)


async def test_close_releases_every_connection_and_the_store_reopens(
    named_config, count_connections
):
    config = named_config
    view = feature_view()
    store = DragonflyOnlineStore()
    await store.initialize(config)
    store.online_write_batch(config, view, [row(1, T0, 1)], None)  # sync pool
    await store.online_write_batch_async(config, view, [row(2, T0, 2)], None)
    reads = [store.online_read_async(config, view, [entity_key(i)]) for i in range(8)]
    await asyncio.gather(*reads)  # concurrent reads open several async connections
    assert count_connections() >= 2

    await store.close()
    assert wait_for(lambda: count_connections() == 0), (
        f"{count_connections()} connections still open after close()"
    )

    # The store is usable again afterwards: both pools reopen on demand.
    [(_, values)] = store.online_read(config, view, [entity_key(1)])
    assert values["a"].int64_val == 1
    [(_, values)] = await store.online_read_async(config, view, [entity_key(2)])
    assert values["a"].int64_val == 2
    await store.close()
    assert wait_for(lambda: count_connections() == 0)


async def test_close_twice_and_close_before_use_are_harmless(named_config):
    store = DragonflyOnlineStore()
    await store.close()
    await store.initialize(named_config)
    await store.close()
    await store.close()


def test_async_clients_are_per_event_loop(named_config, count_connections):
    """Each asyncio.run() is a new loop; a client bound to a finished loop must not be reused."""
    config = named_config
    view = feature_view()
    store = DragonflyOnlineStore()

    async def write_then_read(key: int, value: int) -> int:
        await store.online_write_batch_async(config, view, [row(key, T0, value)], None)
        [(_, values)] = await store.online_read_async(config, view, [entity_key(key)])
        return values["a"].int64_val

    assert asyncio.run(write_then_read(1, 10)) == 10
    assert asyncio.run(write_then_read(2, 20)) == 20
    assert asyncio.run(write_then_read(1, 30)) == 10  # same event time: rejected, still read

    async def initialize_and_close():
        await store.initialize(config)
        await store.close()

    asyncio.run(initialize_and_close())
    assert asyncio.run(write_then_read(3, 40)) == 40


def test_close_releases_pools_of_finished_event_loops(named_config, count_connections):
    """close() promises to close every pool the store opened, including ones whose event loop
    has already ended (e.g. a previous asyncio.run); their sockets must not linger until GC."""
    config = named_config
    view = feature_view()
    store = DragonflyOnlineStore()

    async def use():
        await asyncio.gather(
            *[store.online_read_async(config, view, [entity_key(i)]) for i in range(4)]
        )

    # The garbage collector may free the finished loops (and their pools) at any moment, and
    # uvloop's loops (older uvicorn installs uvloop's policy process-wide when a server starts)
    # close their sockets as they end: either would close the sockets before close() is even
    # called. With the GC off and asyncio's own loops, the test is the same whatever ran before.
    policy = asyncio.get_event_loop_policy()
    asyncio.set_event_loop_policy(asyncio.DefaultEventLoopPolicy())
    gc.disable()
    try:
        asyncio.run(use())
        asyncio.run(use())
        assert count_connections() >= 1
        asyncio.run(store.close())
        assert wait_for(lambda: count_connections() == 0), (
            f"{count_connections()} connections of finished loops still open after close()"
        )
    finally:
        gc.enable()
        asyncio.set_event_loop_policy(policy)


def test_close_does_not_hang_on_an_idle_event_loop(named_config, count_connections):
    """A loop that used the store but is neither running nor closed (run_until_complete
    style) must not make close() from another loop wait forever."""
    config = named_config
    view = feature_view()
    store = DragonflyOnlineStore()
    idle_loop = asyncio.new_event_loop()
    try:
        idle_loop.run_until_complete(store.online_read_async(config, view, [entity_key(1)]))

        async def close_with_deadline():
            await asyncio.wait_for(store.close(), timeout=3)

        asyncio.run(close_with_deadline())  # TimeoutError here means close() hung
        assert wait_for(lambda: count_connections() == 0, timeout=2)
    finally:
        idle_loop.close()
