"""Feature views wider than one server command (Dragonfly caps a command at 65,536 arguments).

A 70,000-feature view needs 70,001 HMGET fields per entity and 140,000 HSET arguments per
row: reads must be split into several HMGETs per hash and stitched back, writes must be split
without losing the event-time rule or atomicity. Run on Redis too, where nothing is capped,
so both servers must give the same answers.
"""

from __future__ import annotations

import asyncio
import threading
from datetime import datetime, timedelta, timezone

import pytest
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from store_kit import entity_key, feature_view, hash_key, repo_config

from feast_dragonfly import DragonflyDataError, DragonflyOnlineStore
from feast_dragonfly._store import read as _read
from feast_dragonfly._store import wide as _wide

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)
WIDTH = 70_000
NAMES = tuple(f"f{i}" for i in range(WIDTH))


@pytest.fixture(scope="module")
def wide_view():
    """Built once: Feast takes a couple of seconds to validate a 70,000-field schema."""
    return feature_view("wide", NAMES)


@pytest.fixture
def config(tmp_path, server_connection_string):
    return repo_config(tmp_path, server_connection_string)


def wide_row(key: int, when: datetime, base: int):
    values = {name: ValueProto(int64_val=base + i) for i, name in enumerate(NAMES)}
    return entity_key(key), values, when, None


def check_row(result, when: datetime, base: int) -> None:
    stored_when, values = result
    assert stored_when == when
    assert len(values) == WIDTH
    for i in (0, 1, 31_999, 32_000, 65_533, 65_534, WIDTH - 1):
        assert values[f"f{i}"].int64_val == base + i, i


def test_width_threshold():
    assert not _wide.is_wide_view(15_000)
    assert _wide.is_wide_view(WIDTH)


def test_a_70000_feature_view_round_trips_and_keeps_the_event_time_rule(
    config, wide_view, redis_client
):
    store = DragonflyOnlineStore()
    progress: list[int] = []
    store.online_write_batch(
        config,
        wide_view,
        [wide_row(1, T0, 0), wide_row(2, T0, 100), wide_row(1, T0 - timedelta(hours=1), 7)],
        progress.append,
    )
    assert sum(progress) == 3  # every input row counts once, as on the normal path
    assert redis_client.hlen(hash_key(1)) == WIDTH + 1

    older = T0 - timedelta(seconds=1)
    newer = T0 + timedelta(seconds=1)
    store.online_write_batch(
        config, wide_view, [wide_row(1, older, 5), wide_row(2, newer, 9)], None
    )
    one, two, missing = store.online_read(
        config, wide_view, [entity_key(1), entity_key(2), entity_key(3)]
    )
    check_row(one, T0, 0)  # the older row was rejected
    check_row(two, newer, 9)  # the newer one replaced every field
    assert missing[1] is not None and missing[1]["f0"] == ValueProto()


async def test_async_wide_writes_and_reads(config, wide_view):
    store = DragonflyOnlineStore()
    try:
        await store.online_write_batch_async(config, wide_view, [wide_row(5, T0, 3)], None)
        await store.online_write_batch_async(
            config, wide_view, [wide_row(5, T0, 4)], None
        )  # equal time: rejected
        [result] = await store.online_read_async(config, wide_view, [entity_key(5)])
    finally:
        await store.close()
    check_row(result, T0, 3)


def test_two_views_that_only_together_overflow_one_hmget(config, redis_client):
    """The merged read puts every requested view's fields of one hash in one HMGET."""
    left = feature_view("left", tuple(f"l{i}" for i in range(20_000)))
    right = feature_view("right", tuple(f"r{i}" for i in range(20_000)))
    store = DragonflyOnlineStore()
    for view, base in ((left, 1), (right, 2)):
        rows = [
            (
                entity_key(k),
                {f.name: ValueProto(int64_val=base * k) for f in view.features},
                T0,
                None,
            )
            for k in (1, 2)
        ]
        store.online_write_batch(config, view, rows, None)
    views = [
        _read.view_request(v.name, [f.name for f in v.features], [entity_key(1), entity_key(2)])
        for v in (left, right)
    ]
    plan = _read.plan_read(views, project="proj", key_version=3)
    assert len(plan.keys) == 2 and _wide.is_wide_plan(plan)
    replies = store._fetch(config.online_store, plan)
    rows_left = _read.decode_rows(plan.views[0], replies)
    rows_right = _read.decode_rows(plan.views[1], replies)
    assert [r[1]["l19999"].int64_val for r in rows_left] == [1, 2]
    assert [r[1]["r0"].int64_val for r in rows_right] == [2, 4]
    replies = asyncio.run(_fetch_async_and_close(store, config, plan))
    assert [r[1]["r19999"].int64_val for r in _read.decode_rows(plan.views[1], replies)] == [2, 4]


async def _fetch_async_and_close(store, config, plan):
    try:
        return await store._fetch_async(config.online_store, plan)
    finally:
        await store.close()


def test_wide_write_onto_a_non_hash_key_names_it_and_changes_nothing(
    config, wide_view, redis_client
):
    redis_client.set(hash_key(9), b"not a hash")
    store = DragonflyOnlineStore()
    with pytest.raises(DragonflyDataError) as caught:
        store.online_write_batch(config, wide_view, [wide_row(9, T0, 0)], None)
    message = str(caught.value)
    assert "driver_id=9" in message and "WRONGTYPE" in message and "'wide'" in message
    assert redis_client.get(hash_key(9)) == b"not a hash"
    with pytest.raises(DragonflyDataError, match="WRONGTYPE"):
        store.online_read(config, wide_view, [entity_key(9)])


def test_wide_write_onto_a_malformed_stored_timestamp_changes_nothing(
    config, wide_view, redis_client
):
    redis_client.hset(hash_key(8), mapping={b"_ts:wide": b"garbage", b"\x01\x02\x03\x04": b"old"})
    before = redis_client.hgetall(hash_key(8))
    with pytest.raises(DragonflyDataError, match="malformed stored timestamp"):
        DragonflyOnlineStore().online_write_batch(config, wide_view, [wide_row(8, T0, 0)], None)
    assert redis_client.hgetall(hash_key(8)) == before


def test_concurrent_wide_writers_keep_the_newest_row(config, wide_view):
    """The transactions retry when another writer touched the hash between WATCH and EXEC;
    whatever the interleaving, the newest event time wins."""
    offsets = [3, 7, 1, 5, 6, 2, 4, 0]  # seconds after T0; writer i sends two of them
    errors: list[BaseException] = []

    def writer(index: int) -> None:
        store = DragonflyOnlineStore()
        try:
            for offset in offsets[2 * index : 2 * index + 2]:
                when = T0 + timedelta(seconds=offset)
                store.online_write_batch(config, wide_view, [wide_row(4, when, offset)], None)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    [result] = DragonflyOnlineStore().online_read(config, wide_view, [entity_key(4)])
    check_row(result, T0 + timedelta(seconds=7), 7)
