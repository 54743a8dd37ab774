"""``layout: compact`` through the store's own API (``_store/compact/read.py``, ``write.py``,
``views.py``, ``directory.py``), on a real server.

* writes store one record per (entity, view) under ``<hash key>:<view>``, nothing in Feast's
  hash layout, and the schema in the project's directory;
* reads (sync and async) give exactly what the Feast layout gives for the same rows;
* the event-time rule: a record is replaced only by a strictly newer row (ties keep the
  first), the newest row of a batch wins;
* per-view ttl: a value past it is not found, and the server expires the key itself;
  ``enforce_view_ttl`` gives the Feast layout the same read rule;
* schema changes never misread: added / removed / reordered / retyped features;
* ``update`` drops a view's records and schemas, ``teardown`` / ``delete_entity_values``
  remove the project's records and nothing of another project;
* a corrupt record and a key of another type give errors naming the entity and view.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta, timezone

import pytest
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.types import Float64, Int64, String
from store_kit import entity, entity_key, feature_view, hash_key, repo_config, row, typed_view

from feast_dragonfly._protocol.keys import compact_key
from feast_dragonfly._store.compact.directory import directory_key
from feast_dragonfly.errors import DragonflyConfigError, DragonflyDataError

pytestmark = [pytest.mark.server, pytest.mark.valkey]

NOW = datetime.now(timezone.utc).replace(microsecond=0)


def compact_config(tmp_path, connection_string, **options):
    return repo_config(tmp_path / "compact", connection_string, layout="compact", **options)


def read(store, config, view, keys, names=None):
    return store.online_read(config, view, [entity_key(k) for k in keys], names)


def ints(rows):
    """Each row's values as ints; None for a row with no value at all (not found: the Feast
    layout's read gives every feature unset then, as Feast's own store does)."""
    out = []
    for _, values in rows:
        found = {n: (v.int64_val if v.WhichOneof("val") else None) for n, v in values.items()}
        out.append(None if not any(v is not None for v in found.values()) else found)
    return out


def test_writes_store_one_record_per_entity_and_view(
    tmp_path, server_connection_string, redis_client, stores
):
    config = compact_config(tmp_path, server_connection_string)
    store, view = stores(), feature_view()
    store.update(config, [], [view], [], [], partial=False)
    store.online_write_batch(config, view, [row(k, NOW, k * 10) for k in range(5)], None)
    keys = set(redis_client.keys("*"))
    assert keys == {compact_key(hash_key(k), "fv") for k in range(5)} | {directory_key("proj")}
    assert redis_client.type(compact_key(hash_key(1), "fv")) == b"string"
    assert ints(read(store, config, view, range(6))) == [
        {"a": k * 10, "b": k * 10} for k in range(5)
    ] + [None]


def test_reads_equal_the_feast_layouts(tmp_path, server_connection_string, stores):
    fields = (("a", Int64), ("score", Float64), ("name", String))
    view = typed_view(fields=fields)
    rows = [
        (
            entity_key(k),
            {
                "a": ValueProto(int64_val=k),
                "score": ValueProto(double_val=k / 3),
                "name": ValueProto(string_val=f"n{k}") if k % 2 else ValueProto(),
            },
            NOW - timedelta(seconds=k),
            None,
        )
        for k in range(20)
    ]
    feast_config = repo_config(tmp_path / "feast", server_connection_string, project="p1")
    compact = compact_config(tmp_path, server_connection_string)
    expected_store, store = stores(), stores()
    expected_store.online_write_batch(feast_config, view, rows, None)
    store.online_write_batch(compact, view, rows, None)
    wanted = [entity_key(k) for k in range(22)]
    expected = expected_store.online_read(feast_config, view, wanted)
    assert store.online_read(compact, view, wanted) == expected
    assert store.online_read(compact, view, wanted, ["name"]) == expected_store.online_read(
        feast_config, view, wanted, ["name"]
    )
    got = asyncio.run(store.online_read_async(compact, view, wanted))
    assert got == expected


def test_rows_grouped_by_dragonfly_shard_read_back_the_same(
    tmp_path, server_connection_string, stores, monkeypatch
):
    """A Dragonfly shard map (forced here on every server) reorders a batch's rows only."""
    from feast_dragonfly._protocol.shards import ShardMap
    from feast_dragonfly._store.backends import Backend

    monkeypatch.setattr(Backend, "_detect_shards", lambda self: ShardMap(3))
    view = feature_view()
    rows = [row(k, NOW - timedelta(seconds=k % 7), k) for k in range(60)]
    rows += [row(k, NOW - timedelta(seconds=9), -1) for k in range(0, 60, 5)]  # older: ignored
    feast_config = repo_config(tmp_path / "feast", server_connection_string, project="p1")
    compact = compact_config(tmp_path, server_connection_string)
    expected_store, store, async_store = stores(), stores(), stores()
    expected_store.online_write_batch(feast_config, view, rows, None)
    store.online_write_batch(compact, view, rows[:30], None)
    asyncio.run(async_store.online_write_batch_async(compact, view, rows[30:], None))
    wanted = [entity_key(k) for k in range(62)]
    assert store.online_read(compact, view, wanted) == expected_store.online_read(
        feast_config, view, wanted
    )


def test_only_a_strictly_newer_row_replaces_a_record(tmp_path, server_connection_string, stores):
    config = compact_config(tmp_path, server_connection_string)
    store, view = stores(), feature_view()
    store.online_write_batch(config, view, [row(1, NOW, 1)], None)
    store.online_write_batch(config, view, [row(1, NOW, 2)], None)  # a tie keeps the first
    store.online_write_batch(config, view, [row(1, NOW - timedelta(1), 3)], None)
    assert ints(read(store, config, view, [1])) == [{"a": 1, "b": 1}]
    batch = [row(1, NOW + timedelta(seconds=1), 4), row(1, NOW + timedelta(seconds=2), 5)]
    store.online_write_batch(config, view, batch + [row(1, NOW + timedelta(seconds=2), 6)], None)
    assert ints(read(store, config, view, [1])) == [{"a": 5, "b": 5}]


def test_a_value_past_its_views_ttl_is_not_found_and_expires(
    tmp_path, server_connection_string, redis_client, stores
):
    config = compact_config(tmp_path, server_connection_string)
    store, view = stores(), typed_view(ttl=timedelta(seconds=30))
    now = datetime.now(timezone.utc)
    fresh = now - timedelta(seconds=29, milliseconds=200)
    stale = now - timedelta(seconds=31)
    store.online_write_batch(config, view, [row(1, fresh, 1), row(2, stale, 2)], None)
    assert not redis_client.exists(compact_key(hash_key(2), "fv"))  # never stored
    assert ints(read(store, config, view, [1, 2])) == [{"a": 1, "b": 1}, None]
    pexpiretime = redis_client.pttl(compact_key(hash_key(1), "fv"))
    assert 0 < pexpiretime <= 1000
    time.sleep(pexpiretime / 1000 + 0.1)
    assert ints(read(store, config, view, [1])) == [None]
    assert not redis_client.exists(compact_key(hash_key(1), "fv"))  # reclaimed by the server


def test_enforce_view_ttl_gives_the_feast_layout_the_read_rule(
    tmp_path, server_connection_string, stores
):
    view = typed_view(ttl=timedelta(seconds=30))
    plain = repo_config(tmp_path / "plain", server_connection_string)
    enforced = repo_config(tmp_path / "ttl", server_connection_string, enforce_view_ttl=True)
    store = stores()
    now = datetime.now(timezone.utc)  # not NOW: collected minutes before this test runs
    old = now - timedelta(minutes=5)
    store.online_write_batch(plain, view, [row(1, old, 1), row(2, now, 2)], None)
    assert ints(read(store, plain, view, [1, 2])) == [{"a": 1, "b": 1}, {"a": 2, "b": 2}]
    assert ints(read(store, enforced, view, [1, 2])) == [None, {"a": 2, "b": 2}]


@pytest.mark.parametrize(
    ("new_fields", "expected"),
    [
        pytest.param(
            (("a", Int64), ("b", Int64), ("c", Int64)), {"a": 1, "b": 2, "c": None}, id="added"
        ),
        pytest.param((("b", Int64),), {"b": 2}, id="removed"),
        pytest.param((("b", Int64), ("a", Int64)), {"b": 2, "a": 1}, id="reordered"),
        pytest.param((("a", String), ("b", Int64)), {"a": None, "b": 2}, id="retyped"),
    ],
)
def test_schema_changes_never_misread(
    tmp_path, server_connection_string, stores, new_fields, expected
):
    config = compact_config(tmp_path, server_connection_string)
    before = typed_view()
    writer, reader = stores(), stores()  # the reader never saw the old schema
    writer.update(config, [], [before], [], [], partial=False)
    values = {"a": ValueProto(int64_val=1), "b": ValueProto(int64_val=2)}
    writer.online_write_batch(config, before, [(entity_key(1), values, NOW, None)], None)
    after = typed_view(fields=new_fields)
    reader.update(config, [], [after], [], [], partial=False)
    [(when, got)] = reader.online_read(config, after, [entity_key(1)])
    assert when == NOW
    assert {
        name: (
            None
            if value is None or not value.WhichOneof("val")
            else getattr(value, value.WhichOneof("val"))
        )
        for name, value in got.items()
    } == expected


def test_a_record_of_an_unknown_schema_is_not_found_never_misread(
    tmp_path, server_connection_string, redis_client, stores
):
    config = compact_config(tmp_path, server_connection_string)
    store, view = stores(), typed_view()
    store.online_write_batch(config, view, [row(1, NOW, 7)], None)
    redis_client.delete(directory_key("proj"))
    reader, changed = stores(), typed_view(fields=(("b", Int64), ("a", Int64)))
    [(_when, got)] = reader.online_read(config, changed, [entity_key(1)])
    assert sorted(got) == ["a", "b"]
    assert not any(value.WhichOneof("val") for value in got.values())


def test_update_drops_a_views_records_and_teardown_the_projects(
    tmp_path, server_connection_string, redis_client, stores
):
    config = compact_config(tmp_path, server_connection_string)
    other = compact_config(tmp_path / "other", server_connection_string, project="proj2")
    store, keep, drop = stores(), feature_view("keep"), feature_view("drop")
    for cfg in (config, other):
        store.update(cfg, [], [keep, drop], [], [], partial=False)
        for view in (keep, drop):
            store.online_write_batch(cfg, view, [row(k, NOW, k) for k in range(3)], None)
    store.update(config, [drop], [keep], [], [], partial=False)
    assert not redis_client.exists(*[compact_key(hash_key(k), "drop") for k in range(3)])
    assert redis_client.exists(*[compact_key(hash_key(k), "keep") for k in range(3)]) == 3
    assert not any(f.startswith(b"drop:") for f in redis_client.hkeys(directory_key("proj")))
    store.teardown(config, [keep], [entity()])
    leftover = set(redis_client.keys("*"))
    assert leftover and all(
        key.endswith((b"proj2:keep", b"proj2:drop", b"{proj2}")) for key in leftover
    )


def test_delete_entity_values_removes_records(
    tmp_path, server_connection_string, redis_client, stores
):
    config = compact_config(tmp_path, server_connection_string)
    store, view = stores(), feature_view()
    store.online_write_batch(config, view, [row(k, NOW, k) for k in range(4)], None)
    store.delete_entity_values(config, ["driver_id"])
    assert ints(read(store, config, view, range(4))) == [None] * 4


def test_bad_records_and_types_are_refused_clearly(
    tmp_path, server_connection_string, redis_client, stores
):
    config = compact_config(tmp_path, server_connection_string)
    store, view = stores(), feature_view()
    store.online_write_batch(config, view, [row(1, NOW, 1)], None)
    key = compact_key(hash_key(1), "fv")
    redis_client.set(key, redis_client.get(key)[:-3])  # truncated
    with pytest.raises(DragonflyDataError, match="feature view 'fv' for entity driver_id=1"):
        read(store, config, view, [1])
    redis_client.delete(key)
    redis_client.hset(key, "x", "y")
    with pytest.raises(DragonflyDataError, match="driver_id=1"):
        store.online_write_batch(config, view, [row(1, NOW, 2)], None)
    assert redis_client.hgetall(key) == {b"x": b"y"}  # left unchanged


def test_an_unknown_layout_is_refused_at_config_load(tmp_path, server_connection_string):
    with pytest.raises(Exception, match="layout"):
        repo_config(tmp_path, server_connection_string, layout="columnar")


def test_a_type_a_record_cannot_hold_is_refused_at_apply(
    tmp_path, server_connection_string, stores
):
    from feast.types import UnixTimestamp  # noqa: F401 - supported; UNKNOWN is not reachable via Field

    config = compact_config(tmp_path, server_connection_string)
    view = typed_view()
    view.features[0].dtype = type("Bad", (), {"to_value_type": lambda self: 0})()  # UNKNOWN
    with pytest.raises(DragonflyConfigError, match="'a'"):
        stores().update(config, [], [view], [], [], partial=False)
