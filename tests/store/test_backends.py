"""``_store.backends``: one backend per deployment, and the rules that used to be written
twice (sync and async) and had drifted apart.

* ``open_backend`` picks one backend class per way of reading and writing (a Sentinel master
  is read and written as a server is, a cluster by slot); the store keeps its backend until
  the connection settings change (tuning alone keeps it).
* ``close()`` stops every thread the store started — it used to stop the read threads and
  leave the write threads running.
* An async write encodes its script calls as it sends them, a bounded window ahead, as the
  sync path does — it used to encode the whole batch before sending the first call (the
  cluster variant is in ``test_cluster.py``).
* A protocol error (the server gave up on a command and closes the connection) stands for
  every reply still owed, decided in one place for both drivers.

How the config becomes settings (parsed once) is in ``test_config.py`` and
``test_settings.py``.
"""

from __future__ import annotations

import asyncio
import threading
from datetime import datetime, timedelta, timezone

import pytest
from redis import exceptions as redis_exceptions
from store_kit import (
    CountingRows,
    entity_key,
    feature_view,
    hash_key,
    repo_config,
    row,
    stored_values,
)

from feast_dragonfly import DragonflyOnlineStore
from feast_dragonfly._protocol import wire as _wire
from feast_dragonfly._protocol.deployment import Deployment
from feast_dragonfly._store.backends import Backend, ClusterBackend, open_backend
from feast_dragonfly._store.online_store import DragonflyOnlineStoreConfig

UTC = timezone.utc
T0 = datetime(2024, 6, 1, 12, tzinfo=UTC)


def _store_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("feast-dragonfly-")]


def test_close_stops_the_read_and_write_threads(tmp_path, server_connection_string):
    config = repo_config(
        tmp_path,
        server_connection_string,
        write_concurrency=4,
        read_concurrency=4,
        write_rows_per_call=1,
        read_chunk_size=1,
    )
    view = feature_view()
    store = DragonflyOnlineStore()
    store.online_write_batch(config, view, [row(k, T0, k) for k in range(200)], None)
    store.online_read(config, view, [entity_key(k) for k in range(50)])
    names = {t.name.rsplit("_", 1)[0] for t in _store_threads()}
    assert {"feast-dragonfly-write", "feast-dragonfly-read"} <= names, names

    asyncio.run(store.close())
    for thread in _store_threads():
        thread.join(timeout=10)
    assert _store_threads() == []
    # ... and a closed store opens what it needs again.
    assert stored_values(store, config, view, [7])[0][1] == {"a": 7, "b": 7}
    asyncio.run(store.close())


def test_async_writes_encode_as_they_send(tmp_path, server_connection_string, redis_client):
    config = repo_config(tmp_path, server_connection_string, write_concurrency=2)
    view = feature_view()
    data = CountingRows(row(k, T0, k) for k in range(20_000))
    encoded_at_first_reply: list[int] = []

    def progress(rows: int) -> None:
        if not encoded_at_first_reply:
            encoded_at_first_reply.append(data.fetched)

    async def write() -> None:
        store = DragonflyOnlineStore()
        try:
            await store.online_write_batch_async(config, view, data, progress)
        finally:
            await store.close()

    asyncio.run(write())
    assert redis_client.dbsize() == 20_000
    # Two round trips in flight (400 rows each) and one being encoded, not all 20,000.
    assert encoded_at_first_reply[0] <= 2_000, encoded_at_first_reply


def test_an_async_write_error_names_the_entity_and_leaves_its_key_alone(
    tmp_path, server_connection_string, redis_client
):
    """The failing round trip's error is raised (the rest are waited for or cancelled, never
    left running behind the caller's back)."""
    config = repo_config(tmp_path, server_connection_string, write_rows_per_call=1)
    view = feature_view()
    store = DragonflyOnlineStore()
    redis_client.set(hash_key(37), b"not a hash")

    async def write() -> None:
        try:
            await store.online_write_batch_async(
                config, view, [row(k, T0, k) for k in range(100)], None
            )
        finally:
            await store.close()

    with pytest.raises(Exception, match="driver_id=37"):
        asyncio.run(write())
    assert redis_client.get(hash_key(37)) == b"not a hash"


# --------------------------------------------------------------------------- the wire rule


def test_a_protocol_error_stands_for_every_reply_still_owed():
    error = redis_exceptions.ResponseError("Protocol error: invalid bulk length")
    replies: list = [1, error]
    assert _wire.ends_in_protocol_error(replies, 4)
    assert replies == [1, error, error, error]
    other = [1, redis_exceptions.ResponseError("WRONGTYPE ...")]
    assert not _wire.ends_in_protocol_error(other, 4) and len(other) == 2
    assert not _wire.ends_in_protocol_error([], 4)


def test_packed_commands_round_trip_through_the_wire_module():
    packed = _wire.command(b"HMGET", b"key", b"", b"\r\n$3")
    assert _wire.arguments(packed) == [b"HMGET", b"key", b"", b"\r\n$3"]


# --------------------------------------------------------------------------- backends


@pytest.mark.parametrize(
    ("redis_type", "backend"),
    [("redis", Backend), ("redis_cluster", ClusterBackend), ("redis_sentinel", Backend)],
)
def test_one_backend_class_per_way_of_reading_and_writing(redis_type, backend):
    """A Sentinel master is read and written as a server is (its clients and its failover
    retry are the deployment's); a cluster routes by slot."""
    nodes = "h1:7000" if redis_type == "redis" else "h1:7000,h2:7001"
    config = DragonflyOnlineStoreConfig(connection_string=nodes, redis_type=redis_type)
    opened = open_backend(config.settings().client)
    assert type(opened) is backend
    assert isinstance(opened, Deployment) and opened.kind == redis_type


def test_the_store_keeps_its_backend_until_the_connection_changes(
    tmp_path, server_connection_string
):
    config = repo_config(tmp_path, server_connection_string)
    view = feature_view()
    store = DragonflyOnlineStore()
    try:
        store.online_write_batch(config, view, [row(1, T0, 1)], None)
        client = store._get_client(config.online_store)  # Feast's hook: the backend's client
        config.online_store.read_chunk_size = 3  # tuning only
        store.online_read(config, view, [entity_key(1)])
        assert store._get_client(config.online_store) is client
        config.online_store.max_connections = 5  # new pools needed
        later = T0 + timedelta(seconds=1)
        store.online_write_batch(config, view, [row(1, later, 2)], None)
        assert store._get_client(config.online_store) is not client
        assert stored_values(store, config, view, [1])[0][1]["a"] == 2
    finally:
        asyncio.run(store.close())
