"""``layout: compact`` on a Redis Cluster (three masters; Dragonfly: its emulated cluster) and
through Redis Sentinel: writes (sync and async) route each record to the master serving its
slot, reads give the Feast layout's answer, a dropped view's records go and teardown leaves
nothing of the project behind.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest
from local_topology import LocalCluster, LocalSentinelGroup, start_cluster, start_sentinel_group
from store_kit import entity_key, feature_view, hash_key, repo_config, row

from feast_dragonfly import DragonflyOnlineStore
from feast_dragonfly._protocol.keys import compact_key
from feast_dragonfly.testing.local_server import ServerBinary

pytestmark = pytest.mark.server

T0 = datetime(2026, 11, 1, tzinfo=timezone.utc)
N = 150


@pytest.fixture(scope="module")
def cluster(server_binary: ServerBinary) -> Iterator[LocalCluster]:
    with start_cluster(server_binary) as started:
        yield started


def values(rows: list) -> list:
    return [
        {name: value.int64_val for name, value in features.items() if value.WhichOneof("val")}
        for _, features in rows
    ]


def check_round_trip(store: DragonflyOnlineStore, config, feast_config) -> None:
    view, other = feature_view("fv", ("a", "b")), feature_view("other", ("c",))
    store.update(config, [], [view, other], [], [], partial=False)
    store.online_write_batch(config, view, [row(i, T0, i) for i in range(N)], None)
    store.online_write_batch(config, other, [row(i, T0, 2 * i, ("c",)) for i in range(N)], None)
    store.online_write_batch(feast_config, view, [row(i, T0, i) for i in range(N)], None)
    keys = [entity_key(i) for i in range(N + 3)]
    compact_rows = store.online_read(config, view, keys)
    assert compact_rows == store.online_read(feast_config, view, keys)
    assert values(compact_rows)[:N] == [{"a": i, "b": i} for i in range(N)]

    async def async_path() -> None:
        await store.online_write_batch_async(
            config, view, [row(i, T0 + timedelta(1), -i) for i in range(N)], None
        )
        got = await store.online_read_async(config, view, keys[:N])
        assert values(got) == [{"a": -i, "b": -i} for i in range(N)]
        await store.close()

    asyncio.run(async_path())
    store.update(config, [other], [view], [], [], partial=False)
    assert values(store.online_read(config, other, keys[:3])) == [{}, {}, {}]
    store.teardown(config, [view], [])
    assert values(store.online_read(config, view, keys[:3])) == [{}, {}, {}]


def test_a_cluster_routes_records_by_slot(tmp_path, cluster):
    cluster.flushall()
    store = DragonflyOnlineStore()
    try:
        config = repo_config(
            tmp_path / "c", cluster.connection_string, redis_type="redis_cluster", layout="compact"
        )
        feast_config = repo_config(
            tmp_path / "f", cluster.connection_string, redis_type="redis_cluster", project="p2"
        )
        store.online_write_batch(config, feature_view("fv", ("a", "b")), [row(7, T0, 7)], None)
        key = compact_key(hash_key(7), "fv")
        owner = cluster.masters[cluster.master_of_key(key)].client(decode_responses=False)
        try:
            assert owner.type(key) == b"string"
        finally:
            owner.close()
        check_round_trip(store, config, feast_config)
        leftovers = [k for c in cluster.clients() for k in c.keys("*") if not k.endswith(b"p2")]
        assert leftovers == []
    finally:
        store.teardown(feast_config, [feature_view("fv", ("a", "b"))], [])
        asyncio.run(store.close())


@pytest.fixture
def group(server_binary: ServerBinary) -> Iterator[LocalSentinelGroup]:
    if server_binary.kind == "dragonfly":
        pytest.skip("Dragonfly cannot act as a Redis Sentinel; the redis-server pass runs this")
    with start_sentinel_group(server_binary) as started:
        yield started


def test_through_the_sentinels(tmp_path, group):
    store = DragonflyOnlineStore()
    try:
        options = {"redis_type": "redis_sentinel", "sentinel_master": group.master_name}
        config = repo_config(tmp_path / "c", group.connection_string(), layout="compact", **options)
        feast_config = repo_config(
            tmp_path / "f", group.connection_string(), project="p2", **options
        )
        check_round_trip(store, config, feast_config)
    finally:
        asyncio.run(store.close())
