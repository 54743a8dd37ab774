"""``_protocol.topology`` against the real server (``test_topology_config.py`` covers parsing).

* ``standalone_client`` / ``standalone_client_async`` build working clients on *blocking*
  pools (a caller waits ``socket_timeout`` for a free connection, then fails) whose
  connections carry the transient-only retry policy of the settings.
* ``close_sync`` / ``aclose`` leave no connection open on the server; ``async_connections``
  lists every connection an asyncio client holds.
* ``cluster_client`` on a server that is no cluster node fails with a translated error.
* The failover retry decides on the error: a connection error or ``READONLY`` is retried once
  after the idle connections are dropped (seen from the server); anything else is not.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
import redis
import redis.asyncio as redis_asyncio
from redis import exceptions as redis_exceptions

from feast_dragonfly._protocol import topology, transport
from feast_dragonfly._protocol.settings import ClientSettings
from feast_dragonfly.errors import (
    DragonflyConnectionError,
    DragonflyDataError,
    DragonflyScriptingError,
)


def settings_for(server, redis_type: str = "redis", **options) -> tuple[ClientSettings, str]:
    """Client settings for the fixture server whose connections carry a unique name."""
    name = f"topo-{uuid.uuid4().hex[:8]}"
    text = f"{server.connection_string},client_name={name}"
    connection = topology.parse_topology(text, redis_type)
    return ClientSettings(connection=connection, redis_type=redis_type, **options), name


def named(admin: redis.Redis, name: str) -> list[dict]:
    return [c for c in admin.client_list() if c.get("name") == name]


def wait_named(admin: redis.Redis, name: str, count: int) -> None:
    """Wait until the server lists ``count`` connections named ``name`` (closing is async)."""
    deadline = time.monotonic() + 5
    while len(named(admin, name)) != count:
        assert time.monotonic() < deadline, (name, named(admin, name))
        time.sleep(0.01)


def test_standalone_client_works_on_a_blocking_pool_with_the_retry(redis_client, redis_server):
    settings, name = settings_for(
        redis_server, max_connections=2, socket_timeout=0.3, retry_attempts=4
    )
    client = topology.standalone_client(settings)
    try:
        assert client.set(b"k", b"v") and client.get(b"k") == b"v"
        pool = client.connection_pool
        assert isinstance(pool, redis.BlockingConnectionPool) and pool.max_connections == 2
        held = [pool.get_connection() for _ in range(2)]
        assert all(isinstance(c.retry, transport.TransientRetry) for c in held)
        assert held[0].retry._retries == 4
        wait_named(redis_client, name, 2)
        started = time.monotonic()
        with pytest.raises(redis_exceptions.ConnectionError, match="No connection available"):
            client.get(b"k")  # waits socket_timeout for a free connection, then fails
        assert time.monotonic() - started >= 0.25
        pool.release(held.pop())
        assert client.get(b"k") == b"v"  # a released connection is reused
        pool.release(held.pop())
    finally:
        topology.close_sync(client)
    wait_named(redis_client, name, 0)


async def test_standalone_client_async_works_and_closes(redis_client, redis_server):
    settings, name = settings_for(redis_server, max_connections=3, retry_attempts=1)
    client = topology.standalone_client_async(settings)
    try:
        assert isinstance(client.connection_pool, redis_asyncio.BlockingConnectionPool)
        await client.set(b"k", b"v")
        replies = await asyncio.gather(*(client.get(b"k") for _ in range(6)))
        assert replies == [b"v"] * 6
        connections = topology.async_connections(client)
        assert 1 <= len(connections) <= 3
        assert all(isinstance(c, redis_asyncio.Connection) for c in connections)
        assert all(isinstance(c.retry, transport.AsyncTransientRetry) for c in connections)
        assert len(named(redis_client, name)) == len(connections)
    finally:
        await topology.aclose(client)
    wait_named(redis_client, name, 0)


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
async def test_a_cluster_client_on_a_plain_server_is_a_clear_error(redis_server, use_async):
    settings, _ = settings_for(redis_server, redis_type="redis_cluster")
    with pytest.raises(DragonflyConnectionError) as caught:
        if use_async:
            await topology.cluster_client_async(settings)
        else:
            topology.cluster_client(settings)
    assert f"cannot use the Redis Cluster at {redis_server.address}" in str(caught.value)
    assert "use redis_type: redis" in str(caught.value)


# --------------------------------------------------------------------------- failover retry


def test_a_failover_symptom_drops_idle_connections_and_retries_once(redis_client, redis_server):
    settings, name = settings_for(redis_server)
    client = topology.standalone_client(settings)
    seen: list[int] = []
    attempts: list[int] = []

    def write(report):
        attempts.append(len(attempts))
        if len(attempts) == 2:  # the first attempt's idle connection was closed
            wait_named(redis_client, name, 0)
        client.ping()  # leaves an idle pooled connection behind
        report(3)
        if len(attempts) == 1:
            raise DragonflyConnectionError("connection to the old master closed")
        report(4)
        return "written"

    try:
        assert topology.retry_after_failover(write, seen.append, client) == "written"
    finally:
        topology.close_sync(client)
    assert attempts == [0, 1]
    assert seen == [3, 4]  # the 3 rows of the second attempt were reported already


async def test_the_async_twin_decides_the_same(redis_client, redis_server):
    settings, name = settings_for(redis_server)
    client = topology.standalone_client_async(settings)
    attempts: list[int] = []
    seen: list[int] = []

    async def demoted(report):
        attempts.append(len(attempts))
        if len(attempts) == 2:
            wait_named(redis_client, name, 0)
        await client.ping()
        report(2)
        if len(attempts) == 1:
            raise DragonflyDataError("-READONLY You can't write against a read only replica.")
        report(5)
        return len(attempts)

    async def refused(report):
        attempts.append(-1)
        raise DragonflyScriptingError("the server refused the event-time-safe write script")

    try:
        assert await topology.retry_after_failover_async(demoted, seen.append, client) == 2
        assert attempts == [0, 1] and seen == [2, 5]
        attempts.clear()
        with pytest.raises(DragonflyScriptingError):
            await topology.retry_after_failover_async(refused, None, client)
        assert attempts == [-1]
    finally:
        await topology.aclose(client)


def test_only_store_errors_that_look_like_a_failover_are_retried(redis_client, redis_server):
    settings, _ = settings_for(redis_server)
    client = topology.standalone_client(settings)
    calls: list[str] = []

    def raising(error):
        def write(report):
            calls.append(type(error).__name__)
            raise error

        return write

    try:
        for error in (
            redis_exceptions.ConnectionError("raw redis-py error, not ours"),
            ValueError("a bug"),
            DragonflyDataError("WRONGTYPE Operation against a key holding the wrong kind"),
        ):
            calls.clear()
            with pytest.raises(type(error)) as caught:
                topology.retry_after_failover(raising(error), None, client)
            assert caught.value is error and len(calls) == 1
        calls.clear()
        with pytest.raises(DragonflyDataError):
            topology.retry_after_failover(raising(DragonflyDataError("READONLY")), None, client)
        assert len(calls) == 2  # retried once, then the second failure is raised
    finally:
        topology.close_sync(client)
