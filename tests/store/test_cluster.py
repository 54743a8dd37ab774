"""``redis_type: redis_cluster`` against a real local cluster.

The cluster comes from ``start_cluster`` (``tests/local_topology.py``) with the suite's server
binary: three ``redis-server --cluster-enabled yes`` masters on the redis-server pass, three
``dragonfly --cluster_mode=yes`` masters (slots pushed by the fixture with ``DFLYCLUSTER
CONFIG``) on the Dragonfly pass, plus Dragonfly's single-node ``--cluster_mode=emulated`` for
the basic reads and writes. The same tests run on all of them; ``ASK`` (a half-moved slot)
and replica failovers are Redis Cluster's only: Dragonfly migrates a slot range whole and the
fixture starts no cluster replicas.

Covered: writes and reads (sync, async, several views, entities spread over every master),
byte identity and equal answers against Feast's own ``RedisOnlineStore`` in cluster mode
(materialization through both engines), ``update`` / ``teardown`` across masters, ``MOVED``
and ``ASK`` redirections after the store learned the slot map, and configuration mistakes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import redis
from differential_kit import TYPED_VIEW, assert_same_response, typed_rows
from engine_kit import Repo, typed_frame, window
from failover_kit import Traffic, replicas_in_sync
from feast.infra.online_stores.redis import RedisOnlineStore
from feast_repo import assert_same_keyspace, dump_keyspace
from local_topology import LocalCluster, start_cluster
from store_kit import (
    CountingRows,
    entity,
    entity_key,
    feature_view,
    free_port,
    hash_key,
    repo_config,
    row,
)

from feast_dragonfly import DragonflyConnectionError, DragonflyOnlineStore
from feast_dragonfly.testing.local_server import LocalServer, ServerBinary

UTC = timezone.utc
T0 = datetime(2024, 6, 1, 12, tzinfo=UTC)
CLUSTER = {"redis_type": "redis_cluster"}


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def cluster(server_binary: ServerBinary) -> Iterator[LocalCluster]:
    """Three masters (redis-server or Dragonfly); stopped at the end of the module."""
    with start_cluster(server_binary) as started:
        yield started


@pytest.fixture(scope="module")
def emulated(server_binary: ServerBinary) -> Iterator[LocalCluster]:
    """Dragonfly's single-node emulated cluster (Dragonfly pass only)."""
    if server_binary.kind != "dragonfly":
        pytest.skip("Dragonfly's --cluster_mode=emulated (the Dragonfly pass runs this)")
    with start_cluster(server_binary, emulated=True) as started:
        yield started


@pytest.fixture
def clean_cluster(cluster: LocalCluster) -> LocalCluster:
    cluster.flushall()
    return cluster


@pytest.fixture
def multi_master(clean_cluster: LocalCluster) -> LocalCluster:
    if clean_cluster.emulated:
        pytest.skip(
            "needs several masters: Dragonfly's emulated cluster is a single node (the "
            "redis-server pass runs this on three masters)"
        )
    return clean_cluster


def cluster_dump(cluster: LocalCluster) -> dict:
    dump: dict = {}
    for client in cluster.clients():
        try:
            dump.update(dump_keyspace(client))
        finally:
            client.close()
    return dump


def config_for(tmp_path: Path, cluster: LocalCluster, project: str = "proj", **options):
    return repo_config(tmp_path, cluster.connection_string, project=project, **CLUSTER, **options)


STORE_TYPES = {"feast": "redis", "ours": "feast_dragonfly.DragonflyOnlineStore"}


def new_store(kind: str) -> RedisOnlineStore:
    return RedisOnlineStore() if kind == "feast" else DragonflyOnlineStore()


def typed_config(tmp_path: Path, cluster: LocalCluster, kind: str):
    return repo_config(
        tmp_path / kind,
        cluster.connection_string,
        project="diffproj",
        store_type=STORE_TYPES[kind],
        **CLUSTER,
    )


def values_of(rows: list) -> list:
    return [
        None if features is None else {k: v.int64_val for k, v in features.items()}
        for _when, features in rows
    ]


# --------------------------------------------------------------------------- reads and writes


def test_writes_and_reads_spread_over_every_master(tmp_path, clean_cluster, store):
    config = config_for(tmp_path, clean_cluster)
    driver = entity()
    stats = feature_view("stats", ("a", "b"), [driver])
    profile = feature_view("profile", ("c",), [driver])
    n = 600
    reported: list[int] = []
    # Duplicates: the newest row per entity wins, every input row is reported once.
    rows = [row(i, T0, i) for i in range(n)] + [row(i, T0 + timedelta(1), i + 1) for i in range(5)]
    store.online_write_batch(config, stats, rows, reported.append)
    assert sum(reported) == len(rows)
    store.online_write_batch(config, profile, [row(i, T0, -i, ("c",)) for i in range(n)], None)

    per_master = [len(keys) for keys in clean_cluster.keys_per_master()]
    assert sum(per_master) == n
    assert all(count > 0 for count in per_master), per_master  # every master holds data

    keys = [entity_key(i) for i in range(n)] + [entity_key(10**9)]
    got = store.online_read(config, stats, keys)
    expected = [{"a": i + (i < 5), "b": i + (i < 5)} for i in range(n)]
    assert values_of(got)[:n] == expected
    assert not any(v.WhichOneof("val") for v in got[-1][1].values())  # unknown entity
    assert values_of(store.online_read(config, profile, keys[:n])) == [{"c": -i} for i in range(n)]
    # Small chunks: many HMGET batches per master, sent concurrently.
    config.online_store.read_chunk_size = 7
    assert values_of(store.online_read(config, stats, keys[:n])) == expected


def test_an_emulated_dragonfly_cluster_serves_reads_and_writes(tmp_path, emulated, store):
    emulated.flushall()
    config = config_for(tmp_path, emulated)
    view = feature_view("fv", ("a", "b"))
    store.online_write_batch(config, view, [row(i, T0, i) for i in range(200)], None)
    assert values_of(store.online_read(config, view, [entity_key(i) for i in range(200)])) == [
        {"a": i, "b": i} for i in range(200)
    ]

    async def async_path() -> None:
        await store.online_write_batch_async(
            config, view, [row(i, T0 + timedelta(1), -i) for i in range(200)], None
        )
        got = await store.online_read_async(config, view, [entity_key(i) for i in range(200)])
        assert values_of(got) == [{"a": -i, "b": -i} for i in range(200)]
        await store.close()

    asyncio.run(async_path())


def test_async_writes_and_reads(tmp_path, clean_cluster, store):
    config = config_for(tmp_path, clean_cluster)
    view = feature_view("fv", ("a", "b"))
    n = 400

    async def scenario() -> None:
        await store.initialize(config)  # what `feast serve` does first: PING the cluster
        reported: list[int] = []
        await store.online_write_batch_async(
            config, view, [row(i, T0, i) for i in range(n)], reported.append
        )
        assert sum(reported) == n
        # An older row never replaces a newer one; a newer one does.
        await store.online_write_batch_async(
            config, view, [row(i, T0 - timedelta(1), -1) for i in range(n)], None
        )
        await store.online_write_batch_async(
            config, view, [row(i, T0 + timedelta(1), 2 * i) for i in range(0, n, 2)], None
        )
        got = await store.online_read_async(config, view, [entity_key(i) for i in range(n)])
        assert values_of(got) == [
            {"a": 2 * i if i % 2 == 0 else i, "b": 2 * i if i % 2 == 0 else i} for i in range(n)
        ]
        await store.close()

    asyncio.run(scenario())
    assert sum(len(keys) for keys in clean_cluster.keys_per_master()) == n


def test_async_writes_route_as_they_encode(tmp_path, clean_cluster, store):
    """Like the sync path, an async cluster write sends each master's calls while it encodes
    the rest (it used to route every call of the batch before sending the first)."""
    config = config_for(tmp_path, clean_cluster, write_concurrency=2)
    view = feature_view("fv", ("a", "b"))
    data = CountingRows(row(i, T0, i) for i in range(20_000))
    encoded_at_first_reply: list[int] = []

    def progress(rows: int) -> None:
        if not encoded_at_first_reply:
            encoded_at_first_reply.append(data.fetched)

    async def scenario() -> None:
        try:
            await store.online_write_batch_async(config, view, data, progress)
        finally:
            await store.close()

    asyncio.run(scenario())
    assert sum(len(keys) for keys in clean_cluster.keys_per_master()) == 20_000
    assert encoded_at_first_reply[0] <= 2_000, encoded_at_first_reply


def test_stored_bytes_and_cross_reads_match_feasts_cluster_store(tmp_path, clean_cluster):
    """Every value type through Feast's ``RedisOnlineStore`` (``redis_type: redis_cluster``)
    and ours: same keys and bytes on every master, and each store reads the other's data."""
    rows = typed_rows()
    keys = [r[0] for r in rows] + [entity_key(999_999)]
    stores = {kind: new_store(kind) for kind in STORE_TYPES}
    configs = {kind: typed_config(tmp_path, clean_cluster, kind) for kind in STORE_TYPES}
    dumps = {}
    try:
        for writer in STORE_TYPES:
            clean_cluster.flushall()
            stores[writer].online_write_batch(configs[writer], TYPED_VIEW, rows, None)
            dumps[writer] = cluster_dump(clean_cluster)
            reads = {
                reader: [
                    (when, {n: v.SerializeToString() for n, v in (features or {}).items()})
                    for when, features in stores[reader].online_read(
                        configs[reader], TYPED_VIEW, keys
                    )
                ]
                for reader in STORE_TYPES
            }
            assert reads["ours"] == reads["feast"], f"reads of what {writer} wrote differ"
    finally:
        stores["feast"]._client.close()  # Feast's store never closes its client
        asyncio.run(stores["ours"].close())
    assert_same_keyspace(dumps["feast"], dumps["ours"])


def test_materialize_and_get_online_features_match_feast_in_cluster_mode(tmp_path, clean_cluster):
    """Feast's local engine + ``RedisOnlineStore`` against our engine + store, both in cluster
    mode: identical keyspace on every master, identical ``get_online_features`` answers."""
    repo = Repo(tmp_path, clean_cluster.connection_string, typed_frame())
    features = [f"{repo.view.name}:{name}" for name in ("i64", "f32", "text", "ints", "names")]
    entity_rows = [{"driver_id": d, "city": c} for d in range(0, 60, 3) for c in ("nyc", "", "x")]
    dumps, answers = {}, {}
    for kind in ("feast", "ours"):
        clean_cluster.flushall()
        store = repo.store(kind, store_options=dict(CLUSTER))
        window(store)
        dumps[kind] = cluster_dump(clean_cluster)
        answers[kind] = store.get_online_features(features=features, entity_rows=entity_rows)
        answers[f"{kind}-async"] = asyncio.run(
            store.get_online_features_async(features=features, entity_rows=entity_rows)
        )
        store.teardown()
    assert_same_keyspace(dumps["feast"], dumps["ours"])
    assert_same_response(answers["feast"], answers["ours"], "sync")
    assert_same_response(answers["feast-async"], answers["ours-async"], "async")


# --------------------------------------------------------------------------- update / teardown


def test_update_and_teardown_reach_every_master_and_only_this_project(
    tmp_path, clean_cluster, store
):
    driver = entity()
    keep = feature_view("keep", ("a",), [driver])
    drop = feature_view("drop", ("b",), [driver])
    n = 300
    configs = {p: config_for(tmp_path / p, clean_cluster, project=p) for p in ("proj", "other")}
    for config in configs.values():
        store.online_write_batch(config, keep, [row(i, T0, i, ("a",)) for i in range(n)], None)
        store.online_write_batch(config, drop, [row(i, T0, i, ("b",)) for i in range(n)], None)
    # Entities whose hash holds only the dropped view disappear whole.
    store.online_write_batch(
        configs["proj"], drop, [row(i, T0, i, ("b",)) for i in range(n, n + 30)], None
    )

    store.update(configs["proj"], [drop], [keep], [], [driver], partial=False)
    assert values_of(store.online_read(configs["proj"], keep, [entity_key(7)])) == [{"a": 7}]
    after = store.online_read(configs["proj"], drop, [entity_key(i) for i in range(n + 30)])
    assert not any(v.WhichOneof("val") for _when, features in after for v in features.values())
    stored = {k for keys in clean_cluster.keys_per_master() for k in keys}
    assert not any(hash_key(i, "proj") in stored for i in range(n, n + 30))
    assert values_of(store.online_read(configs["other"], drop, [entity_key(7)])) == [{"b": 7}]

    store.teardown(configs["proj"], [keep, drop], [driver])
    remaining = clean_cluster.keys_per_master()
    survivors = {k for keys in remaining for k in keys}
    assert survivors == {hash_key(i, "other") for i in range(n)}
    if not clean_cluster.emulated:
        assert all(keys for keys in remaining)  # the other project still spans every master


# --------------------------------------------------------------------------- redirections


def _slot_with_keys(cluster: LocalCluster, keys: list[bytes]) -> tuple[int, list[bytes]]:
    """A slot holding at least one of ``keys``, and the keys in it."""
    by_slot: dict[int, list[bytes]] = {}
    for key in keys:
        by_slot.setdefault(redis.crc.key_slot(key), []).append(key)
    slot = max(by_slot, key=lambda s: len(by_slot[s]))
    return slot, by_slot[slot]


def test_moved_slots_are_followed_and_the_slot_map_refreshed(tmp_path, multi_master, store):
    """After a resharding the store routes by a stale slot map: the masters answer MOVED,
    the store gets those keys through redis-py's cluster client and learns the new map."""
    config = config_for(tmp_path, multi_master)
    view = feature_view("fv", ("a",))
    n = 400
    store.online_write_batch(config, view, [row(i, T0, i, ("a",)) for i in range(n)], None)
    keys = [hash_key(i) for i in range(n)]
    slot, moved = _slot_with_keys(multi_master, keys)
    source = multi_master.master_of_slot(slot)
    target = (source + 1) % len(multi_master.masters)
    multi_master.migrate_slot(slot, target)

    assert values_of(store.online_read(config, view, [entity_key(i) for i in range(n)])) == [
        {"a": i} for i in range(n)
    ]
    # The client followed MOVED and now routes the slot to its new owner directly.
    node = store._get_client(config).nodes_manager.get_node_from_slot(slot)
    assert int(node.port) == multi_master.masters[target].port
    # Writes to the moved slot land on the new owner (which never saw the script before).
    moved_ids = [i for i in range(n) if hash_key(i) in moved]
    store.online_write_batch(
        config, view, [row(i, T0 + timedelta(1), 1000 + i, ("a",)) for i in moved_ids], None
    )
    target_keys = multi_master.keys_per_master()[target]
    assert all(hash_key(i) in target_keys for i in moved_ids)
    assert values_of(store.online_read(config, view, [entity_key(i) for i in moved_ids])) == [
        {"a": 1000 + i} for i in moved_ids
    ]

    async def async_reads() -> None:
        got = await store.online_read_async(config, view, [entity_key(i) for i in range(n)])
        expected = [{"a": 1000 + i if i in moved_ids else i} for i in range(n)]
        assert values_of(got) == expected
        await store.close()

    asyncio.run(async_reads())


def _ids_sharing_a_slot(count: int) -> tuple[int, list[int]]:
    """A slot and ``count`` entity ids whose hash keys (project ``proj``) all hash to it."""
    by_slot: dict[int, list[int]] = {}
    for i in range(1_000_000):
        ids = by_slot.setdefault(redis.crc.key_slot(hash_key(i)), [])
        ids.append(i)
        if len(ids) == count:
            return redis.crc.key_slot(hash_key(i)), ids
    raise AssertionError("unreachable")


def test_ask_redirections_during_a_migration(tmp_path, multi_master, store):
    """Half-way through moving a slot, keys already moved answer ASK at the old owner: reads
    and writes of both halves stay correct (sync and async), also on a target master that
    has never seen the write script."""
    if not multi_master.asks:
        pytest.skip(
            "Redis Cluster only: Dragonfly moves a slot range whole and answers MOVED, never "
            "ASK (test_moved_slots_are_followed_and_the_slot_map_refreshed covers it)"
        )
    config = config_for(tmp_path, multi_master)
    view = feature_view("fv", ("a",))
    slot, ids = _ids_sharing_a_slot(6)
    others = list(range(50))
    everyone = sorted(set(ids + others))
    store.online_write_batch(config, view, [row(i, T0, i, ("a",)) for i in everyone], None)
    source = multi_master.master_of_slot(slot)
    target = (source + 1) % len(multi_master.masters)
    for client in multi_master.clients():
        client.script_flush()  # the target must load the script itself
        client.close()
    moved = [hash_key(i) for i in ids[:3]]
    multi_master.migrate_slot(slot, target, keys=moved, finish=False)
    try:
        assert multi_master.keys_per_master()[target].count(moved[0]) == 1
        assert values_of(store.online_read(config, view, [entity_key(i) for i in everyone])) == [
            {"a": i} for i in everyone
        ]
        store.online_write_batch(
            config, view, [row(i, T0 + timedelta(1), -i, ("a",)) for i in everyone], None
        )
        assert values_of(store.online_read(config, view, [entity_key(i) for i in everyone])) == [
            {"a": -i} for i in everyone
        ]

        async def async_path() -> None:
            await store.online_write_batch_async(
                config, view, [row(i, T0 + timedelta(2), 7 * i, ("a",)) for i in everyone], None
            )
            got = await store.online_read_async(config, view, [entity_key(i) for i in everyone])
            assert values_of(got) == [{"a": 7 * i} for i in everyone]
            await store.close()

        asyncio.run(async_path())
        # Nothing was written to the wrong side: moved keys only on the target.
        per_master = multi_master.keys_per_master()
        assert all(key in per_master[target] for key in moved)
        assert not any(key in per_master[source] for key in moved)
    finally:
        multi_master.migrate_slot(slot, target, keys=None, finish=True)


# --------------------------------------------------------------------------- configuration


def test_a_server_without_cluster_mode_is_reported(tmp_path, redis_server: LocalServer, store):
    config = repo_config(tmp_path, redis_server.connection_string, **CLUSTER)
    with pytest.raises(DragonflyConnectionError) as caught:
        store.online_read(config, feature_view(), [entity_key(1)])
    message = str(caught.value)
    assert redis_server.address in message
    if redis_server.password:
        assert redis_server.password not in message


def test_an_unreachable_cluster_is_reported_without_the_password(tmp_path, store):
    secret = "cluster-s3cret"
    address = f"127.0.0.1:{free_port()}"
    config = repo_config(tmp_path, f"{address},password={secret}", **CLUSTER)
    with pytest.raises(DragonflyConnectionError) as caught:
        store.online_read(config, feature_view(), [entity_key(1)])
    assert address in str(caught.value)
    assert secret not in str(caught.value) and secret not in repr(caught.value)


# --------------------------------------------------------------------------- failover


@pytest.fixture
def cluster_with_replica(server_binary: ServerBinary) -> Iterator[LocalCluster]:
    if server_binary.kind == "dragonfly":
        pytest.skip(
            "needs cluster replicas: the Dragonfly cluster fixture starts masters only (the "
            "redis-server pass runs this)"
        )
    with start_cluster(server_binary, masters=3, replicas=1) as started:
        yield started


def test_a_master_failover_during_reads_and_writes(tmp_path, cluster_with_replica, store):
    """``CLUSTER FAILOVER`` promotes a replica while reads and writes loop in threads: the
    demoted master answers MOVED, the store follows and re-learns the slot map, and no
    request fails; afterwards the promoted node serves and receives that master's slots."""
    cluster = cluster_with_replica
    config = config_for(tmp_path, cluster)
    view = feature_view("fv", ("a",))
    n = 300
    store.online_write_batch(config, view, [row(i, T0, i, ("a",)) for i in range(n)], None)
    # masters[0] is the master with the replica, and the replica has its keys
    assert replicas_in_sync(cluster.masters[0]) == 1
    keys = [entity_key(i) for i in range(n)]
    expected = [{"a": i} for i in range(n)]
    other = feature_view("other", ("b",))

    def read() -> None:
        assert values_of(store.online_read(config, view, keys)) == expected

    def write(step: int) -> None:
        rows = [row(i, T0 + timedelta(seconds=step), step, ("b",)) for i in range(50)]
        store.online_write_batch(config, other, rows, None)

    with Traffic(read, write) as traffic:
        promoted = cluster.failover(0)
        after = traffic.counts()
        traffic.wait_for(reads=after.reads + 10, writes=after.writes + 5)
    assert not traffic.failures, traffic.failures[:3]
    assert traffic.reads >= after.reads + 10 and traffic.writes >= after.writes + 5

    store.online_write_batch(
        config, view, [row(i, T0 + timedelta(1), -i, ("a",)) for i in range(n)], None
    )
    new_master = cluster.masters[promoted].client()
    try:
        assert new_master.info("replication")["role"] == "master"
        owned = [hash_key(i) for i in range(n) if cluster.master_of_key(hash_key(i)) == promoted]
        assert owned and all(new_master.exists(key) for key in owned)
    finally:
        new_master.close()
    assert values_of(store.online_read(config, view, keys)) == [{"a": -i} for i in range(n)]

    async def async_reads() -> None:
        got = await store.online_read_async(config, view, keys)
        assert values_of(got) == [{"a": -i} for i in range(n)]
        await store.close()

    asyncio.run(async_reads())
