"""``_store.read``: a read request planned as one ``HMGET`` per entity hash, fetched in chunks.

* ``field_set`` asks for each feature's murmur3 field, then the view's ``_ts:`` field, and
  caches that encoding; ``ReadPlan.commands`` is exactly the RESP of those ``HMGET``s.
* ``plan_read`` merges the views that read one hash into one ``HMGET`` (``positions`` say where
  each view's fields are in its reply); ``chunk_bounds`` cover every hash once.
* ``fetch`` / ``fetch_async`` on the real server (data written by the store or by raw
  ``HSET``) return every reply in plan order, chunked or not, in parallel or not, with one
  ``HMGET`` per hash as the server's command stats count them; ``decode_rows`` gives Feast's
  rows; an error reply becomes an error naming the entity.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone

import pytest
import redis.asyncio as redis_asyncio
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from redis import exceptions as redis_exceptions
from store_kit import entity_key, feature_view, hash_key, repo_config, row

from feast_dragonfly._protocol import wire
from feast_dragonfly._protocol.keys import feature_field, timestamp_field
from feast_dragonfly._store import read
from feast_dragonfly._store.layout import encode_event_time
from feast_dragonfly.errors import DragonflyDataError

T0 = datetime(2024, 5, 1, 12, 0, 0, 250_000, tzinfo=timezone.utc)


def async_pool(server) -> redis_asyncio.ConnectionPool:
    return redis_asyncio.ConnectionPool(
        host=server.host, port=server.port, db=server.db, username=server.username,
        password=server.password,
    )  # fmt: skip


def test_field_set_asks_for_each_feature_then_the_timestamp():
    fields = read.field_set("drivers", ("trips", "rating"))
    expected = (
        feature_field("drivers", "trips"),
        feature_field("drivers", "rating"),
        b"_ts:drivers",
    )
    assert fields.fields == expected and fields.width == 2
    assert fields.wire == b"".join(wire.bulk(f) for f in expected)
    assert read.field_set("drivers", ("trips", "rating")) is fields  # cached
    assert read.field_set("drivers_v2", ("trips", "rating")).fields[-1] == b"_ts:drivers_v2"


def test_one_hmget_per_hash_carrying_every_view_that_reads_it():
    a = read.view_request("a", ["x", "y"], [entity_key(1), entity_key(2)])
    b = read.view_request("b", ["z"], [entity_key(2), entity_key(3), entity_key(1)])
    plan = read.plan_read([a, b], project="proj", key_version=3)
    assert plan.keys == [hash_key(1), hash_key(2), hash_key(3)]
    assert [[fs.view_name for fs in fsets] for fsets in plan.key_fieldsets] == [
        ["a", "b"],
        ["a", "b"],
        ["b"],
    ]
    assert a.positions == [(0, 0), (1, 0)]  # a's 3 fields come first in hashes 1 and 2
    assert b.positions == [(1, 3), (2, 0), (0, 3)]
    expected = [
        wire.command(b"HMGET", hash_key(1), *a.fieldset.fields, *b.fieldset.fields),
        wire.command(b"HMGET", hash_key(2), *a.fieldset.fields, *b.fieldset.fields),
        wire.command(b"HMGET", hash_key(3), *b.fieldset.fields),
    ]
    assert plan.commands(0, 3) == b"".join(expected)
    assert plan.commands(1, 3) == b"".join(expected[1:])
    assert plan.describe(2) == "entity driver_id=3"
    other_project = read.plan_read([read.view_request("a", ["x"], [entity_key(1)])],
                                   project="other", key_version=3)  # fmt: skip
    assert other_project.keys == [hash_key(1, project="other")]


def test_chunk_bounds_cover_every_hash_once():
    assert read.chunk_bounds(7, 3) == [(0, 3), (3, 6), (6, 7)]
    assert read.chunk_bounds(6, 3) == [(0, 3), (3, 6)]
    assert read.chunk_bounds(2, 100) == [(0, 2)]
    assert read.chunk_bounds(0, 5) == []


def hmget_calls(client) -> int:
    stats = client.info("commandstats").get("cmdstat_hmget")
    return int(stats["calls"]) if stats else 0


def write_with_store(store, tmp_path, connection_string, view, rows) -> None:
    config = repo_config(tmp_path, connection_string)
    store.online_write_batch(config, view, rows, None)


@pytest.mark.parametrize("chunk_size", [2, 100])
@pytest.mark.parametrize("parallel", [False, True], ids=["serial", "threads"])
def test_fetch_reads_what_the_store_wrote_one_hmget_per_hash(
    tmp_path, store, server_connection_string, redis_client, chunk_size, parallel
):
    view_a = feature_view("a", ("x", "y"))
    view_b = feature_view("b", ("z",))
    write_with_store(store, tmp_path, server_connection_string, view_a,
                     [row(k, T0, 10 * k, ("x", "y")) for k in range(5)])  # fmt: skip
    write_with_store(store, tmp_path, server_connection_string, view_b,
                     [row(k, T0, -k, ("z",)) for k in (1, 3)])  # fmt: skip
    a = read.view_request("a", ["y", "x"], [entity_key(k) for k in range(6)])  # 5: absent
    b = read.view_request("b", ["z"], [entity_key(k) for k in (3, 1, 4)])
    plan = read.plan_read([a, b], project="proj", key_version=3)
    redis_client.config_resetstat()
    with ThreadPoolExecutor(3) as executor:
        replies = read.fetch(redis_client.connection_pool, plan, chunk_size,
                             executor if parallel else None)  # fmt: skip
    assert hmget_calls(redis_client) == len(plan.keys) == 6
    assert replies == [redis_client.hmget(k, *sum((fs.fields for fs in fsets), ()))
                       for k, fsets in zip(plan.keys, plan.key_fieldsets)]  # fmt: skip

    rows_a = read.decode_rows(a, replies)
    assert [when for when, _ in rows_a] == [T0] * 5 + [datetime.fromtimestamp(0, timezone.utc)]
    assert [(v["y"].int64_val, v["x"].int64_val) for _, v in rows_a[:5]] == [
        (10 * k, 10 * k) for k in range(5)
    ]
    assert list(rows_a[5][1]) == ["y", "x"] and rows_a[5][1]["x"] == ValueProto()
    rows_b = read.decode_rows(b, replies)
    assert [v["z"].int64_val for _, v in rows_b] == [-3, -1, 0]
    assert rows_b[2][0] == datetime.fromtimestamp(0, timezone.utc)  # 4 has no b data


async def test_fetch_async_reads_raw_hset_data_in_chunks(redis_client, redis_server):
    stamp, _, _ = encode_event_time(T0)
    for k in range(7):
        redis_client.hset(hash_key(k), mapping={
            feature_field("raw", "v"): ValueProto(string_val=f"s{k}").SerializeToString(),
            timestamp_field("raw"): stamp,
        })  # fmt: skip
    view = read.view_request("raw", ["v"], [entity_key(k) for k in range(7)])
    plan = read.plan_read([view], project="proj", key_version=3)
    pool = async_pool(redis_server)
    try:
        redis_client.config_resetstat()
        replies = await read.fetch_async(pool, plan, 3)
    finally:
        await pool.disconnect()
    assert hmget_calls(redis_client) == 7
    rows = read.decode_rows(view, replies)
    assert [(when, values["v"].string_val) for when, values in rows] == [
        (T0, f"s{k}") for k in range(7)
    ]


def test_an_error_reply_names_the_entity(redis_client):
    redis_client.set(hash_key(3), b"a string, not a hash")
    view = read.view_request("a", ["x"], [entity_key(k) for k in (1, 3)])
    plan = read.plan_read([view], project="proj", key_version=3)
    with pytest.raises(DragonflyDataError) as caught:
        read.fetch(redis_client.connection_pool, plan, 100, None)
    message = str(caught.value)
    assert message.startswith("reading entity driver_id=3 failed: WRONGTYPE")
    assert "non-hash value" in message

    denied = redis_exceptions.NoPermissionError("NOPERM no permissions to run 'hmget'")
    with pytest.raises(redis_exceptions.NoPermissionError) as caught_denied:
        read.raise_on_error(plan, [[None, None], denied])
    assert caught_denied.value is denied  # left for translated_errors to explain
    keys_only = read.ReadPlan(views=[], keys=[hash_key(9), b"not-an-entity"])
    assert keys_only.describe(0) == "entity driver_id=9"
    with pytest.raises(DragonflyDataError, match=r"reading key b'not-an-entity' failed: OOM"):
        read.raise_on_error(keys_only, [[b"x"], redis_exceptions.ResponseError("OOM")])


def test_a_view_without_features_reads_nothing():
    view = read.view_request("a", [], [entity_key(1), entity_key(2)])
    plan = read.plan_read([view], project="proj", key_version=3)
    assert read.decode_rows(view, [[None], [None]]) == [(None, None), (None, None)]
    assert plan.commands(0, 1) == wire.command(b"HMGET", hash_key(1), b"_ts:a")
