"""``_store.compact.write`` and ``_protocol/compact_write.lua`` (``script.COMPACT_WRITE``):
compact records planned into script calls, and what the script does with them.

Planning, no server:

* ``plan_calls``: ``EVALSHA <compact_write sha> n <keys.compact_key(hash key, view)>...``
  then per row its record (``codec.encode_row`` bytes) and its expiry in Unix ms ("0":
  never; the earlier of event time + view ttl and now + key ttl); per entity only the row
  Feast's layout keeps (the first with the batch's newest event time, as
  ``write.newest_rows``), in input order; rows already past their expiry are not sent but
  counted in ``progress_rows`` (every input row counted once, a batch of expired rows being
  one call without keys); join-key names dropped from the values, a join key that is also a
  feature kept, any other unknown name refused; ``rows_per_call`` (at least 1, at most
  ``MAX_ROWS_PER_CALL``).
* ``plan_columnar_calls``: the same commands and keys as row-wise for the same data, the
  expired rows' progress on the first call, a call of keys only for an all-expired batch.

On a real server, sent through ``send.Sender`` / ``send_all`` (the script flushed first, so
``NOSCRIPT`` loading runs) and ``AsyncSender``, or as ``EVALSHA`` for rows the planner
never makes (several rows for one key in one call):

* a record is stored as is; it replaces a stored one only when strictly newer by its 12
  event-time bytes (seconds before 1970 and nanos included); a tie or an older row keeps the
  stored one, its expiry untouched; a stored zero epoch counts as nothing; rows of one call
  apply in order;
* the expiry is set with ``PXAT`` (``PEXPIRETIME`` is the planned ms), "0" leaves none (and
  clears an older record's);
* a key of another type: the error reply ``FEASTROW <row> WRONGTYPE...``, the key unchanged,
  and through the sender a ``DragonflyDataError`` naming the entity.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import numpy as np
import pyarrow as pa
import pytest
import redis
import redis.asyncio as redis_asyncio
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.value_type import ValueType
from store_kit import entity_key, hash_key
from store_kit import row as int_row

from feast_dragonfly._protocol import script, wire
from feast_dragonfly._protocol.keys import compact_key
from feast_dragonfly._protocol.script import COMPACT_WRITE, EVENT_TIME_WRITE
from feast_dragonfly._store import send
from feast_dragonfly._store import write as feast_write
from feast_dragonfly._store.compact import views
from feast_dragonfly._store.compact import write as compact_write
from feast_dragonfly._store.compact.codec import decode, encode_row, read_header
from feast_dragonfly._store.compact.schema import Schema
from feast_dragonfly.errors import DragonflyDataError

UTC = timezone.utc
VIEW = "drivers"
SCHEMA = Schema([("a", ValueType.INT64), ("b", ValueType.INT64)])
T0 = datetime(2024, 5, 1, 12, 0, 0, 123_456, tzinfo=UTC)
NOW_MS = int(T0.timestamp() * 1000) + 10_000  # ten seconds after T0


def row(key, when, value):
    return int_row(key, when, value, ("a", "b"))


def record(value, when, schema=SCHEMA):
    return encode_row(schema, {n: ValueProto(int64_val=value) for n in schema.names}, when)


def plan(rows, *, rows_per_call=100, view_ttl=0, key_ttl=None, now=NOW_MS, **options):
    return list(
        compact_write.plan_calls(
            rows,
            schema=options.pop("schema", SCHEMA),
            view_name=VIEW,
            project="proj",
            key_version=3,
            view_ttl=view_ttl,
            key_ttl=key_ttl,
            rows_per_call=rows_per_call,
            now=now,
            **options,
        )
    )


def parsed(call):
    """(keys, [(record, expire-at ms)]) of a call, checking its head."""
    args = wire.arguments(call.command)
    assert args[:2] == [b"EVALSHA", COMPACT_WRITE.sha.encode()]
    n = int(args[2])
    keys, rest = args[3 : 3 + n], args[3 + n :]
    assert len(rest) == 2 * n
    assert keys == [call.key(i) for i in range(call.rows)]
    return keys, [(rest[i], int(rest[i + 1])) for i in range(0, len(rest), 2)]


def values_of(rec):
    return [ValueProto.FromString(v).int64_val for v in decode(SCHEMA, rec).values]


def key_of(k):
    return compact_key(hash_key(k), VIEW)


def columns(rows, *, view_ttl=0, key_ttl=None, now=NOW_MS):
    """What materialization hands ``plan_columnar_calls``: hash keys, records, expiries."""
    keys = pa.array([hash_key(r[0]) for r in rows], pa.binary())
    records = pa.array([encode_row(SCHEMA, r[1], r[2]) for r in rows], pa.binary())
    times = [read_header(rec)[:2] for rec in records.to_pylist()]
    expire_at = views.expire_at_ms_array(
        np.array([s for s, _ in times], dtype=np.int64),
        np.array([n for _, n in times], dtype=np.int64),
        view_ttl=view_ttl,
        key_ttl=key_ttl,
        now=now,
    )
    return keys, records, expire_at


def columnar(rows, *, rows_per_call=100, view_ttl=0, key_ttl=None, now=NOW_MS):
    keys, records, expire_at = columns(rows, view_ttl=view_ttl, key_ttl=key_ttl, now=now)
    return list(
        compact_write.plan_columnar_calls(
            keys, records, expire_at, view_name=VIEW, rows_per_call=rows_per_call, now=now
        )
    )


# --------------------------------------------------------------------------- plan_calls


def test_a_call_carries_each_rows_key_record_and_expiry():
    rows = [row(k, T0 + timedelta(seconds=k), k * 10) for k in range(3)]
    [call] = plan(rows)
    assert call.script is COMPACT_WRITE and call.script is not EVENT_TIME_WRITE
    assert call.rows == 3 and call.progress_rows == 3
    keys, body = parsed(call)
    assert keys == [key_of(k) for k in range(3)]
    assert body == [(record(k * 10, T0 + timedelta(seconds=k)), 0) for k in range(3)]
    assert values_of(body[2][0]) == [20, 20]


def test_the_view_name_and_project_make_the_keys():
    [call] = list(
        compact_write.plan_calls(
            [row(7, T0, 1)],
            schema=SCHEMA,
            view_name="fv_v2",
            project="other",
            key_version=3,
            view_ttl=0,
            key_ttl=None,
            rows_per_call=10,
            now=NOW_MS,
        )
    )
    assert [call.key(0)] == [hash_key(7, project="other") + b":fv_v2"]


@pytest.mark.parametrize(
    ("view_ttl", "key_ttl", "expected"),
    [
        pytest.param(0, None, 0, id="never"),
        pytest.param(0, 0, 0, id="key ttl 0: never"),
        pytest.param(3600, None, int(T0.timestamp() * 1000) + 3_600_000, id="view ttl"),
        pytest.param(0, 60, NOW_MS + 60_000, id="key ttl"),
        pytest.param(3600, 60, NOW_MS + 60_000, id="both: the key's earlier"),
        pytest.param(30, 600, int(T0.timestamp() * 1000) + 30_000, id="both: the view's earlier"),
    ],
)
def test_each_row_carries_its_expiry(view_ttl, key_ttl, expected):
    [call] = plan([row(1, T0, 1)], view_ttl=view_ttl, key_ttl=key_ttl)
    assert parsed(call)[1][0][1] == expected


def test_the_expiry_follows_the_clock_when_no_now_is_given():
    [call] = list(
        compact_write.plan_calls(
            [row(1, T0, 1)],
            schema=SCHEMA,
            view_name=VIEW,
            project="proj",
            key_version=3,
            view_ttl=0,
            key_ttl=100,
            rows_per_call=10,
        )
    )
    before = views.now_ms()
    expire_at = parsed(call)[1][0][1]
    assert before - 5_000 <= expire_at - 100_000 <= before


def test_the_newest_row_per_entity_wins_as_in_feasts_layout():
    later = T0 + timedelta(seconds=5)
    rows = [
        row(1, T0, 1),
        row(2, T0, 2),
        row(1, later, 11),  # newest for 1: kept
        row(3, T0, 3),
        row(1, later, 12),  # a tie: the first one stays
        row(2, T0 - timedelta(days=1), 22),  # older
    ]
    [call] = plan(rows)
    keys, body = parsed(call)
    assert keys == [key_of(2), key_of(1), key_of(3)]  # input order of the kept rows
    assert [values_of(rec)[0] for rec, _ in body] == [2, 11, 3]
    assert call.progress_rows == 6
    _hashes, _times, chosen = feast_write.newest_rows(rows, b"proj", 3)
    assert list(chosen) == [1, 2, 3]  # the Feast layout keeps the same rows


def test_rows_already_expired_are_counted_not_sent():
    old, fresh = T0 - timedelta(seconds=61), T0 - timedelta(seconds=59)
    rows = [row(1, old, 1), row(2, fresh, 2), row(3, old, 3), row(4, fresh, 4), row(5, old, 5)]
    calls = plan(rows, view_ttl=60 + 10, rows_per_call=1)  # NOW_MS is T0 + 10 s
    assert [[c.key(i) for i in range(c.rows)] for c in calls] == [[key_of(2)], [key_of(4)]]
    assert sum(call.progress_rows for call in calls) == 5
    # A row expiring exactly now is expired (as reads see it).
    at_now = datetime.fromtimestamp((NOW_MS - 60_000) / 1000, UTC)
    [call] = plan([row(1, at_now, 1)], view_ttl=60)
    assert call.rows == 0 and call.progress_rows == 1
    one_ms_later = at_now + timedelta(milliseconds=1)
    assert plan([row(1, one_ms_later, 1)], view_ttl=60)[0].rows == 1
    # The key ttl never expires a row on its own: now + key ttl is in the future.
    assert plan([row(1, old, 1)], key_ttl=1)[0].rows == 1


def test_a_batch_of_expired_rows_is_one_call_without_keys():
    rows = [row(k, T0 - timedelta(days=1), k) for k in range(5)]
    [call] = plan(rows, view_ttl=60, rows_per_call=2)
    assert call.rows == 0 and call.progress_rows == 5
    assert parsed(call) == ([], [])
    assert plan([]) == []


@pytest.mark.parametrize(
    "when",
    [
        pytest.param(datetime(1969, 12, 31, 23, 59, 59, tzinfo=UTC), id="expires at the epoch"),
        pytest.param(datetime(1969, 12, 31, 23, 0, 0, tzinfo=UTC), id="expires before it"),
    ],
)
def test_a_row_that_expired_before_the_epoch_is_not_sent(when):
    assert views.expired(*read_header(record(1, when))[:2], 1, NOW_MS)  # reads: expired
    assert columnar([row(1, when, 1)], view_ttl=1)[0].rows == 0  # materialization: skipped
    [call] = plan([row(1, when, 1)], view_ttl=1)
    assert call.rows == 0 and call.progress_rows == 1


def test_join_key_values_are_left_out_and_other_names_refused():
    values = {"a": ValueProto(int64_val=1), "driver_id": ValueProto(int64_val=5)}
    pushed = (entity_key(5), values, T0, None)
    [call] = plan([pushed], join_keys=("driver_id",))
    [(rec, _)] = parsed(call)[1]
    assert rec == encode_row(SCHEMA, {"a": ValueProto(int64_val=1)}, T0)
    with pytest.raises(DragonflyDataError, match="driver_id"):
        plan([pushed])  # not a join key here: not in the schema
    with pytest.raises(DragonflyDataError, match="zzz"):
        plan([(entity_key(5), {**values, "zzz": ValueProto()}, T0, None)], join_keys=["driver_id"])
    # a join key that is also a feature stays a feature
    schema = Schema([("a", ValueType.INT64), ("driver_id", ValueType.INT64)])
    [call] = plan([pushed], join_keys=("driver_id",), schema=schema)
    [(rec, _)] = parsed(call)[1]
    assert ValueProto.FromString(decode(schema, rec).values[1]).int64_val == 5
    # rows of several shapes in one batch: each filtered on its own
    mixed = [pushed, (entity_key(6), {"b": ValueProto(int64_val=2)}, T0, None)]
    [call] = plan(mixed, join_keys=("driver_id",))
    records = [rec for rec, _ in parsed(call)[1]]
    assert records[1] == encode_row(SCHEMA, {"b": ValueProto(int64_val=2)}, T0)


def test_rows_per_call_splits_and_progress_counts_every_input_row():
    rows = [row(k, T0, k) for k in range(7)] + [row(0, T0 - timedelta(seconds=1), 99)]
    calls = plan(rows, rows_per_call=3)
    assert [call.rows for call in calls] == [3, 3, 1]
    assert sum(call.progress_rows for call in calls) == 8
    assert [c.key(i) for c in calls for i in range(c.rows)] == [key_of(k) for k in range(7)]
    assert [call.rows for call in plan(rows, rows_per_call=0)] == [1] * 7  # at least one


def test_rows_per_call_is_capped(monkeypatch):
    assert compact_write.MAX_ROWS_PER_CALL == feast_write.MAX_ARGS_PER_CALL // 2
    monkeypatch.setattr(compact_write, "MAX_ROWS_PER_CALL", 4)
    rows = [row(k, T0, k) for k in range(10)]
    assert [call.rows for call in plan(rows, rows_per_call=1000)] == [4, 4, 2]
    assert [c.rows for c in columnar(rows, rows_per_call=1000)] == [4, 4, 2]


def test_an_oversized_records_error_names_its_entity():
    schema = Schema([("s", ValueType.STRING)])
    rows = [
        (entity_key(k), {"s": ValueProto(string_val="x" * ((2 << 20) if k == 3 else 10))}, T0, None)
        for k in range(5)
    ]
    calls = plan(rows, schema=schema)
    hinted = script.with_size_hint(redis.ConnectionError("reset by peer"), calls)
    assert "driver_id=3" in str(hinted)
    with pytest.raises(DragonflyDataError, match="driver_id=3"):
        script.rows_written(
            calls, [redis.ResponseError("Protocol error: invalid bulk length")], VIEW
        )


# --------------------------------------------------------------------------- plan_columnar_calls


@pytest.mark.parametrize("rows_per_call", [1, 3, 100])
@pytest.mark.parametrize(("view_ttl", "key_ttl"), [(0, None), (0, 30), (65, None), (65, 30)])
def test_columns_make_the_same_calls_as_rows(rows_per_call, view_ttl, key_ttl):
    rows = [row(k, T0 - timedelta(seconds=10 * k, microseconds=k), k * (-1) ** k) for k in range(9)]
    by_rows = plan(rows, rows_per_call=rows_per_call, view_ttl=view_ttl, key_ttl=key_ttl)
    by_columns = columnar(rows, rows_per_call=rows_per_call, view_ttl=view_ttl, key_ttl=key_ttl)
    assert [c.command for c in by_columns] == [c.command for c in by_rows]
    for call in by_columns:
        assert call.script is COMPACT_WRITE
        assert isinstance(call.keys, pa.Array)
        assert [call.key(i) for i in range(call.rows)] == parsed(call)[0]
    assert sum(c.progress_rows for c in by_columns) == sum(c.progress_rows for c in by_rows) == 9
    expired = 9 - sum(c.rows for c in by_columns)
    if view_ttl:
        assert expired == 3  # rows 6, 7 and 8 are 70 s old or more at NOW_MS
        assert by_columns[0].progress_rows == by_columns[0].rows + expired
    else:
        assert expired == 0


def test_columns_all_expired_or_empty():
    rows = [row(k, T0 - timedelta(days=1), k) for k in range(4)]
    [call] = columnar(rows, view_ttl=60)
    assert call.rows == 0 and call.progress_rows == 4 and parsed(call) == ([], [])
    empty = pa.array([], pa.binary())
    assert (
        list(
            compact_write.plan_columnar_calls(
                empty,
                empty,
                np.zeros(0, np.int64),
                view_name=VIEW,
                rows_per_call=10,
                now=NOW_MS,
            )
        )
        == []
    )


# --------------------------------------------------------------------------- on the server


def sender(client, progress=None):
    return send.Sender(
        client.connection_pool, VIEW, executor=None, concurrency=1, progress=progress
    )


def send_rows(client, rows, progress=None, **options):
    return send.send_all(sender(client, progress), plan(rows, **options))


@pytest.fixture
def expires_at(redis_client, redis_server):
    """``expires_at(key, ms)``: the key's ``PEXPIRETIME`` is ``ms`` (Dragonfly turns a script's
    ``PXAT`` into a relative expiry against its own clock: up to a few ms earlier)."""
    slack = 0 if redis_server.kind == "redis" else 50

    def check(key, expected):
        got = redis_client.pexpiretime(key)
        assert expected - slack <= got <= expected, (got, expected)

    return check


def evalsha(client, rows):
    """One script call of (key, record, expire-at) rows, as the planner never makes."""
    client.script_load(COMPACT_WRITE.source)
    argv = [a for _, rec, expire_at in rows for a in (rec, str(expire_at).encode())]
    return client.evalsha(COMPACT_WRITE.sha, len(rows), *[k for k, _, _ in rows], *argv)


@pytest.mark.server
def test_records_are_stored_as_planned_and_the_script_reloaded(redis_client):
    redis_client.script_flush()
    seen: list[int] = []
    rows = [row(k, T0, k) for k in range(10)] + [row(3, T0 - timedelta(seconds=1), 0)]
    assert send_rows(redis_client, rows, rows_per_call=3, progress=seen.append) == 10
    assert sum(seen) == 11
    assert redis_client.script_exists(COMPACT_WRITE.sha) == [True]
    for k in range(10):
        assert redis_client.get(key_of(k)) == record(k, T0)
        assert redis_client.pttl(key_of(k)) == -1  # "0": no expiry
    assert set(redis_client.keys("*")) == {key_of(k) for k in range(10)}


@pytest.mark.server
def test_only_a_strictly_newer_record_replaces_the_stored_one(redis_client, expires_at):
    now = views.now_ms()
    when = datetime.fromtimestamp(now // 1000, UTC) + timedelta(microseconds=500)
    assert send_rows(redis_client, [row(1, when, 1)], view_ttl=3600, now=now) == 1
    expires_at(key_of(1), (now // 1000) * 1000 + 3_600_000)
    expiry = redis_client.pexpiretime(key_of(1))
    assert send_rows(redis_client, [row(1, when, 2)], key_ttl=5, now=now) == 0  # a tie
    assert send_rows(redis_client, [row(1, when - timedelta(microseconds=1), 3)], now=now) == 0
    assert redis_client.get(key_of(1)) == record(1, when)
    assert redis_client.pexpiretime(key_of(1)) == expiry  # not touched either
    newer = when + timedelta(microseconds=1)  # the same second, more nanos
    assert send_rows(redis_client, [row(1, newer, 4)], now=now) == 1
    assert redis_client.get(key_of(1)) == record(4, newer)
    assert redis_client.pttl(key_of(1)) == -1  # "0" clears the older record's expiry


@pytest.mark.server
@pytest.mark.parametrize(
    ("stored", "incoming", "replaced"),
    [
        pytest.param(datetime(1969, 12, 31, tzinfo=UTC), datetime(1970, 1, 2, tzinfo=UTC), True),
        pytest.param(datetime(1970, 1, 2, tzinfo=UTC), datetime(1969, 12, 31, tzinfo=UTC), False),
        pytest.param(datetime(1900, 1, 1, tzinfo=UTC), datetime(1950, 1, 1, tzinfo=UTC), True),
        pytest.param(datetime(1950, 1, 1, tzinfo=UTC), datetime(1900, 1, 1, tzinfo=UTC), False),
        pytest.param(T0, datetime(2200, 1, 1, tzinfo=UTC), True),
        pytest.param(datetime(2200, 1, 1, tzinfo=UTC), T0, False),
    ],
)
def test_event_times_compare_byte_wise_across_the_epoch(redis_client, stored, incoming, replaced):
    redis_client.set(key_of(1), record(1, stored))
    assert send_rows(redis_client, [row(1, incoming, 2)]) == int(replaced)
    assert redis_client.get(key_of(1)) == record(
        2 if replaced else 1, incoming if replaced else stored
    )


@pytest.mark.server
def test_a_stored_zero_epoch_counts_as_nothing(redis_client):
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    redis_client.set(key_of(1), record(1, epoch))
    before = datetime(1969, 1, 1, tzinfo=UTC)  # older than the epoch: still written
    assert send_rows(redis_client, [row(1, before, 2)]) == 1
    assert redis_client.get(key_of(1)) == record(2, before)
    # just after the epoch is not the zero epoch: an older row does not replace it
    redis_client.set(key_of(2), record(1, epoch + timedelta(microseconds=1)))
    assert send_rows(redis_client, [row(2, before, 2)]) == 0
    # a string too short to hold an event time is replaced
    redis_client.set(key_of(3), b"\x01short")
    assert send_rows(redis_client, [row(3, before, 3)]) == 1


@pytest.mark.server
def test_rows_of_one_call_apply_in_order(redis_client):
    key = key_of(1)
    late, early = T0 + timedelta(seconds=1), T0
    assert evalsha(redis_client, [(key, record(1, early), 0), (key, record(2, late), 0)]) == 2
    assert redis_client.get(key) == record(2, late)
    redis_client.delete(key)
    assert evalsha(redis_client, [(key, record(2, late), 0), (key, record(1, early), 0)]) == 1
    assert redis_client.get(key) == record(2, late)
    assert evalsha(redis_client, [(key, record(3, late), 0)]) == 0  # a tie


@pytest.mark.server
def test_the_expiry_is_set_with_pxat(redis_client, expires_at):
    now = views.now_ms()
    when = datetime.fromtimestamp(now / 1000, UTC).replace(microsecond=0)
    [call] = plan([row(1, when, 1), row(2, when, 2)], view_ttl=3600, key_ttl=None, now=now)
    expected = int(when.timestamp()) * 1000 + 3_600_000
    assert [e for _, e in parsed(call)[1]] == [expected, expected]
    assert send.send_all(sender(redis_client), [call]) == 2
    expires_at(key_of(1), expected)
    assert 3_590_000 < redis_client.pttl(key_of(2)) <= 3_600_000
    [call] = plan([row(3, when, 3)], key_ttl=50, now=now)
    send.send_all(sender(redis_client), [call])
    expires_at(key_of(3), now + 50_000)


@pytest.mark.server
def test_a_record_reaches_its_expiry_on_the_server(redis_client):
    now = views.now_ms()
    when = datetime.fromtimestamp((now - 59_700) / 1000, UTC)  # 300 ms left of a 60 s ttl
    assert send_rows(redis_client, [row(1, when, 1)], view_ttl=60, now=now) == 1
    assert redis_client.exists(key_of(1))
    time.sleep(max(0.0, (redis_client.pexpiretime(key_of(1)) - views.now_ms()) / 1000) + 0.2)
    assert not redis_client.exists(key_of(1))


@pytest.mark.server
def test_a_key_of_another_type_is_reported_and_left_unchanged(redis_client):
    redis_client.hset(key_of(2), b"x", b"y")
    # Dragonfly's pcall error text keeps the reply's "-": "FEASTROW 2 -WRONGTYPE ..."
    with pytest.raises(redis.ResponseError, match=r"^FEASTROW 2 -?WRONGTYPE"):
        evalsha(redis_client, [(key_of(1), record(1, T0), 0), (key_of(2), record(2, T0), 0)])
    assert redis_client.hgetall(key_of(2)) == {b"x": b"y"}
    redis_client.delete(key_of(1))
    with pytest.raises(DragonflyDataError, match=r"'drivers' for entity driver_id=2: .*WRONGTYPE"):
        send_rows(redis_client, [row(k, T0, k) for k in range(4)], rows_per_call=4)
    assert redis_client.hgetall(key_of(2)) == {b"x": b"y"}
    assert redis_client.type(key_of(2)) == b"hash"


@pytest.mark.server
def test_columns_write_what_rows_write(redis_client, expires_at):
    rows = [row(k, T0 + timedelta(seconds=k), k) for k in range(12)]
    now = views.now_ms()
    calls = columnar(rows, rows_per_call=5, key_ttl=600, now=now)
    redis_client.script_flush()
    assert send.send_all(sender(redis_client), calls) == 12
    for k in range(12):
        assert redis_client.get(key_of(k)) == record(k, T0 + timedelta(seconds=k))
        expires_at(key_of(k), now + 600_000)
    assert send.send_all(sender(redis_client), columnar(rows, rows_per_call=5)) == 0  # ties


@pytest.mark.server
async def test_the_async_sender_writes_the_same(redis_client, redis_server):
    pool = redis_asyncio.ConnectionPool(
        host=redis_server.host,
        port=redis_server.port,
        db=redis_server.db,
        username=redis_server.username,
        password=redis_server.password,
    )
    redis_client.script_flush()
    seen: list[int] = []
    rows = [row(k, T0, k) for k in range(9)] + [row(4, T0 + timedelta(hours=1), 44)]
    try:
        sender = send.AsyncSender(pool, VIEW, concurrency=2, progress=seen.append)
        assert await send.send_all_async(sender, plan(rows, rows_per_call=2)) == 9
        again = send.AsyncSender(pool, VIEW, concurrency=2, progress=None)
        assert await send.send_all_async(again, plan(rows, rows_per_call=2)) == 0
    finally:
        await pool.disconnect()
    assert sum(seen) == 10
    assert redis_client.get(key_of(4)) == record(44, T0 + timedelta(hours=1))
    assert redis_client.get(key_of(8)) == record(8, T0)
