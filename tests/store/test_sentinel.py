"""``redis_type: redis_sentinel`` against a real master, replica and sentinel.

Each test starts its own group with ``start_sentinel_group`` (``tests/local_topology.py``)
(redis-server only: Dragonfly cannot act as a sentinel, so the Dragonfly pass skips these; the
redis-server pass runs them). The data nodes and the sentinel both require passwords, and the
connection string lists an unreachable sentinel first, so discovery has to skip it.

The failover tests force ``SENTINEL FAILOVER`` while reads (and writes) run in a loop (the
threaded one is ``failover_kit.Traffic``, shared with the cluster failover test), then stop the
old master: every request must keep succeeding, now served by the new master.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest
from failover_kit import Traffic, replicas_in_sync
from local_topology import LocalSentinelGroup, start_sentinel_group
from store_kit import entity_key, feature_view, free_port, hash_key, repo_config, row

from feast_dragonfly import DragonflyConnectionError, DragonflyOnlineStore
from feast_dragonfly.testing.local_server import ServerBinary

UTC = timezone.utc
T0 = datetime(2024, 6, 1, 12, tzinfo=UTC)
DATA_PASSWORD = "data-s3cret"
SENTINEL_PASSWORD = "sentinel-s3cret"
N = 200


@pytest.fixture
def group(server_binary: ServerBinary) -> Iterator[LocalSentinelGroup]:
    if server_binary.kind == "dragonfly":
        pytest.skip(
            "Dragonfly cannot act as a Redis Sentinel (nor be monitored as a replica set "
            "here); the redis-server pass runs the Sentinel tests"
        )
    with start_sentinel_group(
        server_binary, password=DATA_PASSWORD, sentinel_password=SENTINEL_PASSWORD
    ) as started:
        yield started


def sentinel_config(tmp_path, group: LocalSentinelGroup, **options):
    dead = f"127.0.0.1:{free_port()}"  # discovery must skip a sentinel that is down
    return repo_config(
        tmp_path,
        group.connection_string(extra_sentinels=[dead]),
        redis_type="redis_sentinel",
        sentinel_master=group.master_name,
        **options,
    )


def values_of(rows: list) -> list:
    return [{k: v.int64_val for k, v in features.items()} for _when, features in rows]


def replicate(group: LocalSentinelGroup) -> None:
    """Wait until the replica has what the master has (so a failover loses nothing)."""
    assert replicas_in_sync(group.master()) >= 1


def test_reads_writes_and_teardown_through_the_sentinels(tmp_path, group, store):
    config = sentinel_config(tmp_path, group)
    view = feature_view("fv", ("a", "b"))
    store.online_write_batch(config, view, [row(i, T0, i) for i in range(N)], None)
    master = group.master().client()
    try:
        assert master.exists(hash_key(0)) and master.dbsize() == N
    finally:
        master.close()
    keys = [entity_key(i) for i in range(N)]
    assert values_of(store.online_read(config, view, keys)) == [{"a": i, "b": i} for i in range(N)]

    async def async_path() -> None:
        await store.initialize(config)  # what `feast serve` does first
        await store.online_write_batch_async(
            config, view, [row(i, T0 + timedelta(1), -i) for i in range(N)], None
        )
        got = await store.online_read_async(config, view, keys)
        assert values_of(got) == [{"a": -i, "b": -i} for i in range(N)]
        await store.close()

    asyncio.run(async_path())
    store.teardown(config, [view], [])
    master = group.master().client()
    try:
        assert master.dbsize() == 0
    finally:
        master.close()
    # Passwords never show, whatever is printed.
    for text in (repr(config.online_store), str(config.online_store.connection_settings())):
        assert DATA_PASSWORD not in text and SENTINEL_PASSWORD not in text


def test_wrong_master_name_or_sentinel_password_is_reported(tmp_path, group, store):
    view = feature_view()
    wrong_name = sentinel_config(tmp_path / "name", group)
    wrong_name.online_store.sentinel_master = "no-such-master"
    with pytest.raises(DragonflyConnectionError) as caught:
        store.online_read(wrong_name, view, [entity_key(1)])
    assert "no-such-master" in str(caught.value)

    bad_password = repo_config(
        tmp_path / "password",
        group.connection_string().replace(SENTINEL_PASSWORD, "wrong-password"),
        redis_type="redis_sentinel",
    )
    with pytest.raises(DragonflyConnectionError) as caught:
        DragonflyOnlineStore().online_read(bad_password, view, [entity_key(1)])
    text = str(caught.value) + repr(caught.value)
    for secret in (DATA_PASSWORD, "wrong-password"):
        assert secret not in text


def test_failover_during_reads_and_writes(tmp_path, group, store):
    """Reads and writes loop in threads while the sentinels move the master and the old
    master is then stopped: no request fails, and afterwards everything is served by (and
    written to) the new master."""
    config = sentinel_config(tmp_path, group)
    view = feature_view("fv", ("a", "b"))
    store.online_write_batch(config, view, [row(i, T0, i) for i in range(N)], None)
    replicate(group)
    keys = [entity_key(i) for i in range(N)]
    # Another view of other entities: never changes what the reader checks.
    other = feature_view("other", ("c",))

    def read() -> None:
        assert values_of(store.online_read(config, view, keys)) == [
            {"a": i, "b": i} for i in range(N)
        ]

    def write(step: int) -> None:
        rows = [row(N + i, T0 + timedelta(seconds=step), step, ("c",)) for i in range(20)]
        store.online_write_batch(config, other, rows, None)

    with Traffic(read, write) as traffic:
        old = group.master()
        new = group.failover()
        assert new.port != old.port
        before_stop = traffic.counts()
        old.stop()
        traffic.wait_for(reads=before_stop.reads + 20, writes=before_stop.writes + 5)
    assert not traffic.failures, traffic.failures[:3]
    assert traffic.reads >= before_stop.reads + 20 and traffic.writes >= before_stop.writes + 5

    # Served by the new master: the old one is gone, and new writes land there.
    reported: list[int] = []
    store.online_write_batch(
        config, view, [row(i, T0 + timedelta(1), 5 * i) for i in range(N)], reported.append
    )
    assert sum(reported) == N
    client = new.client()
    try:
        assert client.info("replication")["role"] == "master"
        assert client.exists(*[hash_key(i) for i in range(N)]) == N
    finally:
        client.close()
    assert values_of(store.online_read(config, view, keys)) == [
        {"a": 5 * i, "b": 5 * i} for i in range(N)
    ]


def test_failover_during_async_reads(tmp_path, group, store):
    config = sentinel_config(tmp_path, group)
    view = feature_view("fv", ("a",))
    store.online_write_batch(config, view, [row(i, T0, i, ("a",)) for i in range(N)], None)
    replicate(group)
    keys = [entity_key(i) for i in range(N)]
    expected = [{"a": i} for i in range(N)]

    async def scenario() -> tuple[int, int]:
        stop = asyncio.Event()
        counts = [0]

        async def reader() -> None:
            while not stop.is_set():
                assert values_of(await store.online_read_async(config, view, keys)) == expected
                counts[0] += 1
                await asyncio.sleep(0)

        task = asyncio.create_task(reader())
        try:
            await asyncio.sleep(0.2)
            old = group.master()
            await asyncio.to_thread(group.failover)
            await asyncio.to_thread(old.stop)
            after = counts[0]
            deadline = time.monotonic() + 10
            while counts[0] < after + 20 and time.monotonic() < deadline and not task.done():
                await asyncio.sleep(0.05)
        finally:
            stop.set()
            await task  # re-raises a failed read
        await store.online_write_batch_async(
            config, view, [row(i, T0 + timedelta(1), -i, ("a",)) for i in range(N)], None
        )
        assert values_of(await store.online_read_async(config, view, keys)) == [
            {"a": -i} for i in range(N)
        ]
        await store.close()
        return after, counts[0]

    after, total = asyncio.run(scenario())
    assert total >= after + 20


def test_the_group_helper_leaves_no_process_or_directory_behind(server_binary):
    if server_binary.kind == "dragonfly":
        pytest.skip("Dragonfly cannot act as a Redis Sentinel; the redis-server pass runs this")
    with start_sentinel_group(server_binary, replicas=1, sentinels=2) as group:
        servers = [*group.data_nodes, *group.sentinels]
        assert len(servers) == 4 and all(server.is_running() for server in servers)
        workdirs = [server.workdir for server in servers]
        assert all(workdir and os.path.isdir(workdir) for workdir in workdirs)
        # The sentinel rewrites its config (passwords included) itself: only its owner may
        # enter the directory.
        assert all(os.stat(workdir).st_mode & 0o077 == 0 for workdir in workdirs)
    assert not any(server.is_running() for server in servers)
    assert not any(os.path.exists(workdir) for workdir in workdirs)
