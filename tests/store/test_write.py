"""``_store.write``: rows and columns planned into event-time script calls (sent by ``send``).

* ``plan_calls`` packs rows as ``EVALSHA sha n keys... ttl _ts:view`` + per row ``seconds nanos
  m _ts:view stamp field value...`` (checked argument by argument, for any feature names and
  values), at most ``rows_per_call`` rows and ``MAX_ARGS_PER_CALL`` arguments per call, one row
  per entity key (the first with the newest time) while progress still counts every row.
* ``plan_columnar_calls`` (with ``bulk_array`` / ``offsets``) produces the very same bytes.
* ``group_calls`` cuts calls into consecutive groups of ``CALLS_PER_ROUND_TRIP``.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pyarrow as pa
import pytest
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from hypothesis import given
from hypothesis import strategies as st
from store_kit import entity_key, hash_key, row

from feast_dragonfly._protocol import script, wire
from feast_dragonfly._protocol.keys import feature_field
from feast_dragonfly._store import write
from feast_dragonfly._store.layout import encode_event_time

VIEW = "drivers"
TS = b"_ts:drivers"
T0 = datetime(2024, 5, 1, 12, 0, 0, 123_456, tzinfo=timezone.utc)


def plan(rows, rows_per_call=100, ttl=None, view=VIEW):
    return list(write.plan_calls(rows, view_name=view, project="proj", key_version=3,
                                 ttl_seconds=ttl, rows_per_call=rows_per_call))  # fmt: skip


def row_args(values: dict[str, ValueProto], when: datetime, view: str = VIEW) -> list[bytes]:
    stamp, seconds, nanos = encode_event_time(when)
    pairs = [p for n, v in values.items() for p in (feature_field(view, n), v.SerializeToString())]
    ts = b"_ts:" + view.encode()
    return [b"%d" % seconds, b"%d" % nanos, b"%d" % (2 + len(pairs)), ts, stamp, *pairs]


def test_rows_are_packed_call_by_call_in_the_scripts_layout():
    rows = [row(k, T0 + timedelta(seconds=k), k) for k in range(5)]
    calls = plan(rows, rows_per_call=2, ttl=600)
    assert [c.rows for c in calls] == [2, 2, 1] and [c.progress_rows for c in calls] == [2, 2, 1]
    for number, call in enumerate(calls):
        chunk = rows[2 * number : 2 * number + 2]
        keys = [hash_key(r[0]) for r in chunk]
        head = [b"EVALSHA", script.SHA.encode(), b"%d" % len(keys), *keys, b"600", TS]
        body = [arg for r in chunk for arg in row_args(r[1], r[2])]
        assert wire.arguments(call.command) == head + body
        assert list(call.keys) == keys
    assert plan([]) == []
    assert wire.arguments(plan(rows[:1])[0].command)[4] == b"0"  # no TTL


def test_one_row_per_entity_the_first_with_the_newest_time():
    rows = [
        row(1, T0, 1),
        row(2, T0, 2),
        row(1, T0 + timedelta(microseconds=1), 3),  # newer: replaces the first row of 1
        row(1, T0 + timedelta(microseconds=1), 4),  # same time: Feast keeps the earlier one
        row(2, T0 - timedelta(days=1), 5),  # older
    ]
    [call] = plan(rows)
    assert list(call.keys) == [hash_key(2), hash_key(1)]  # in input order of the winners
    assert call.progress_rows == 5  # every input row counted once
    args = wire.arguments(call.command)[7:]  # after EVALSHA sha 2 key key ttl ts_field
    assert args == row_args(rows[1][1], T0) + row_args(rows[2][1], rows[2][2])
    calls = plan(rows, rows_per_call=1)
    assert [c.progress_rows for c in calls] == [1, 4]  # the dropped rows ride on the last


def test_calls_stay_under_the_argument_limit():
    names = tuple(f"f{i}" for i in range(9_000))  # 18,005 arguments per row
    rows = [row(k, T0, k, names) for k in range(3)]
    calls = plan(rows, rows_per_call=100)
    assert [c.rows for c in calls] == [1, 1, 1]
    assert all(len(wire.argument_spans(c.command)) <= write.MAX_ARGS_PER_CALL for c in calls)


#: A feature whose murmur3 field contains b"%" (the row template is %-formatted).
PERCENT_NAME = next(n for n in map("p{}".format, range(10_000)) if b"%" in feature_field(VIEW, n))
names_strategy = st.lists(
    st.text(min_size=1, max_size=8).filter(lambda n: n != PERCENT_NAME),
    min_size=1, max_size=6, unique=True,
)  # fmt: skip


@given(names_strategy, st.lists(st.binary(max_size=20), min_size=6, max_size=6), st.text())
def test_any_names_and_values_are_packed_exactly(names, payloads, view):
    # murmur3 field names are arbitrary bytes: '%' among them must not break the row template
    names = [PERCENT_NAME, *names]
    values = {n: ValueProto(bytes_val=p) for n, p in zip(names, payloads)}
    rows = [(entity_key(7), values, T0, None)]
    [call] = plan(rows, view=view or VIEW)
    assert wire.arguments(call.command)[6:] == row_args(values, T0, view or VIEW)


def columnar(rows, rows_per_call, ttl=None):
    keys = pa.array([hash_key(r[0]) for r in rows], pa.binary())
    times = [encode_event_time(r[2]) for r in rows]
    names = list(rows[0][1])
    columns = [
        (feature_field(VIEW, n), pa.array([r[1][n].SerializeToString() for r in rows], pa.binary()))
        for n in names
    ]
    return list(write.plan_columnar_calls(
        keys, np.array([t[1] for t in times]), np.array([t[2] for t in times]),
        pa.array([t[0] for t in times], pa.binary()), columns,
        view_name=VIEW, ttl_seconds=ttl, rows_per_call=rows_per_call,
    ))  # fmt: skip


@pytest.mark.parametrize("rows_per_call", [1, 3, 100])
def test_columnar_calls_are_the_same_bytes(rows_per_call):
    rows = [row(k, T0 + timedelta(seconds=k, microseconds=k), k * 1000, ("a", "b", "c"))
            for k in range(7)]  # fmt: skip
    by_rows, by_columns = plan(rows, rows_per_call, ttl=60), columnar(rows, rows_per_call, 60)
    assert [c.command for c in by_columns] == [c.command for c in by_rows]
    assert [c.progress_rows for c in by_columns] == [c.progress_rows for c in by_rows]
    assert [c.key(0) for c in by_columns] == [c.key(0) for c in by_rows]
    assert list(write.plan_columnar_calls(
        pa.array([], pa.binary()), np.array([]), np.array([]), pa.array([], pa.binary()), [],
        view_name=VIEW, ttl_seconds=None, rows_per_call=10)) == []  # fmt: skip


@given(st.lists(st.binary(max_size=30), max_size=20), st.integers(0, 20))
def test_bulk_array_and_offsets(values, start):
    start = min(start, len(values))
    encoded = write.bulk_array(pa.array(values, pa.binary()).slice(start))
    assert encoded.to_pylist() == [wire.bulk(v) for v in values[start:]]
    texts = write.bulk_array(pa.array([v.hex() for v in values], pa.string()))
    assert texts.to_pylist() == [wire.bulk(v.hex().encode()) for v in values]
    sliced = pa.array(values, pa.binary()).slice(start)
    bounds, data = write.offsets(sliced), sliced.buffers()[2]
    raw = data.to_pybytes() if data is not None else b""
    assert [raw[bounds[i] : bounds[i + 1]] for i in range(len(sliced))] == values[start:]


def test_group_calls():
    calls = plan([row(k, T0, k) for k in range(10)], rows_per_call=1)
    assert [len(g) for g in write.group_calls(calls)] == [4, 4, 2]
    assert [len(g) for g in write.group_calls(calls, 3)] == [3, 3, 3, 1]


def test_with_a_shard_map_each_call_holds_one_shards_rows():
    from feast_dragonfly._protocol.shards import ShardMap

    shard_map = ShardMap(2)
    rows = [row(k, T0, k) for k in range(40)]
    calls = list(
        write.plan_calls(
            rows,
            view_name=VIEW,
            project="proj",
            key_version=3,
            ttl_seconds=None,
            rows_per_call=5,
            shards=shard_map,
        )
    )
    keys = [key for call in calls for key in call.keys]
    assert sorted(keys) == sorted(hash_key(r[0]) for r in rows)  # every row once
    straddling = [c for c in calls if len({shard_map.shard(k) for k in c.keys}) > 1]
    assert len(straddling) <= 1  # only where one shard's rows end and the next begin
    assert sum(c.progress_rows for c in calls) == 40


def test_by_shard_keeps_the_chosen_rows():
    from feast_dragonfly._protocol.shards import ShardMap

    keys = [b"k%d" % i for i in range(30)]
    chosen = list(range(0, 30, 2))
    grouped = write.by_shard(chosen, keys, ShardMap(3), b":view")
    assert sorted(grouped) == chosen
    assert write.by_shard(chosen, keys, None) is chosen
