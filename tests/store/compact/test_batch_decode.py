"""``_store/compact/batch_decode.py``: many records of one view decoded with numpy.

No server. The per-record framed reader (``codec.picked_reader(..., framed=True)``) is the
reference throughout:

* for every supported type beside every fixed-width kind, and for random schemas and rows,
  each record the batch reads gives the reader's event time and entries, joined per feature,
  for any order of records (repeats, -1 for an unset value);
* the batch reads every record the reader reads whose variable values are all shorter than
  126 bytes, and leaves to its caller exactly the others: absent, null or fallback values,
  another schema or version, a header or length that does not fit, bytes past the end, a
  bool slot above 1, an empty protobuf value, a long value;
* entries handed back for those (``override``) and records made unset (``clear``) take their
  places in every column;
* ``live`` decides as ``views.expired`` does, at the boundary too.
"""

from __future__ import annotations

import random
import struct
from datetime import datetime, timedelta, timezone

import pytest
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.value_type import ValueType
from hypothesis import given, settings
from hypothesis import strategies as st
from test_codec import SUPPORTED, samples
from test_fast_decode import FIXED, schema_with

from feast_dragonfly._store.compact import views
from feast_dragonfly._store.compact.batch_decode import decode_batch
from feast_dragonfly._store.compact.codec import encode_row, picked_reader
from feast_dragonfly._store.compact.schema import LENGTH, PROTO, Schema
from feast_dragonfly._store.value_columns import UNSET

WHEN = datetime(2026, 12, 1, 8, 0, 1, 250000, tzinfo=timezone.utc)


def reference(schema: Schema, pick: tuple[int, ...], record: bytes | None):
    """The per-record reader's (seconds, nanos, entries), None where it leaves the record to
    the general path, "error" where it raises."""
    if record is None:
        return None
    try:
        return picked_reader(schema, pick, framed=True)(record)
    except Exception:  # noqa: BLE001 - any error: the batch must leave the record alone
        return "error"


def short_enough(schema: Schema, record: bytes) -> bool:
    """Whether every variable value of a typed record is below 126 bytes (what a batch
    reads; longer ones are left to the per-record reader)."""
    position = schema.var_offset
    for kind in schema.kinds:
        if kind in (LENGTH, PROTO):
            if record[position] >= 126:
                return False
            position += record[position] + 1
    return True


def check(schema: Schema, pick: tuple[int, ...], records: list[bytes | None], order=None):
    """The batch against the reader, record by record and column by column; returns how
    many records the batch read."""
    batch = decode_batch(schema, pick, records)
    expected = []
    for i, record in enumerate(records):
        want = reference(schema, pick, record)
        readable = isinstance(want, tuple) and short_enough(schema, record)
        assert bool(batch.read[i]) == readable, (i, want)
        if readable:
            assert (int(batch.seconds[i]), int(batch.nanos[i])) == want[:2]
            expected.append(want[2])
        else:
            expected.append((UNSET,) * len(pick))
    if order is None:
        order = list(range(len(records)))
    columns = batch.columns(order)
    for j in range(len(pick)):
        joined = b"".join(expected[i][j] if i >= 0 else UNSET for i in order)
        assert columns[j] == joined, (pick, j)
    return int(batch.read.sum())


PICKS = [(0,), (7,), (7, 0), (1, 4, 5), (3, 3), tuple(range(8))]


@pytest.mark.parametrize("kind", SUPPORTED, ids=lambda kind: kind.name)
def test_every_type_gives_the_per_record_readers_entries(kind):
    schema = schema_with(kind)
    records = []
    for sample in samples(kind):
        values = {"x": sample, "y": sample, **{name: value for name, (_, value) in FIXED.items()}}
        records.append(encode_row(schema, values, WHEN))
    for pick in PICKS:
        check(schema, pick, records)
        last = len(records) - 1
        check(schema, pick, records, order=[min(2, last), 0, -1, 0, last])


def test_every_fixed_width_value_reads_in_a_batch():
    """Extremes of every fixed-width type (negative int32 and int64 as 10-byte varints,
    infinities, NaN) beside short strings: all read here, none left over."""
    schema = Schema(
        [
            ("i32", ValueType.INT32),
            ("i64", ValueType.INT64),
            ("ts", ValueType.UNIX_TIMESTAMP),
            ("f32", ValueType.FLOAT),
            ("f64", ValueType.DOUBLE),
            ("ok", ValueType.BOOL),
            ("s", ValueType.STRING),
            ("b", ValueType.BYTES),
            ("l", ValueType.INT64_LIST),
        ]
    )
    fields = ("int32_val", "int64_val", "unix_timestamp_val", "float_val", "double_val")
    columns = [samples(kind) for _, kind in schema.features[:5]]
    records = []
    for k in range(max(map(len, columns))):
        values = {
            name: ValueProto(**{field: getattr(column[k % len(column)], field)})
            for (name, _), field, column in zip(schema.features, fields, columns)
        }
        values["ok"] = ValueProto(bool_val=k % 2 == 0)
        values["s"] = ValueProto(string_val="é" * (k % 60))  # up to 118 bytes
        values["b"] = ValueProto(bytes_val=bytes(range(k % 125)))
        values["l"] = samples(ValueType.INT64_LIST)[1]
        records.append(encode_row(schema, values, WHEN - timedelta(days=400 * k, microseconds=k)))
    assert check(schema, tuple(range(9)), records) == len(records)
    assert check(schema, (8, 6, 0), records, order=[-1, *range(len(records) - 1, -1, -1)]) == len(
        records
    )


def damaged(schema: Schema, record: bytes) -> dict[str, bytes | None]:
    """A typed record of ``schema_with(STRING)`` spoilt every way the batch must notice."""
    bool_at = schema.fixed_offset + schema.slots[schema.index["ok"]]
    other = Schema([("x", ValueType.STRING)])
    return {
        "absent": None,
        "truncated": record[:-1],
        "past its end": record + b"\x00",
        "shorter than its header": record[:10],
        "shorter than its fixed part": record[: schema.var_offset - 1],
        "another version": b"\x02" + record[1:],
        "another schema": encode_row(other, {"x": ValueProto(string_val="a")}, WHEN),
        "nanos out of range": record[:9] + b"\xff\xff\xff\xff" + record[13:],
        "a bool slot above one": record[:bool_at] + b"\x02" + record[bool_at + 1 :],
        "a null value": encode_row(schema, {"x": ValueProto(string_val="a")}, WHEN),
        "a fallback value": encode_row(
            schema,
            {
                "x": ValueProto(int64_val=3),  # an INT64 in a STRING feature
                "y": ValueProto(string_val="b"),
                **{name: value for name, (_, value) in FIXED.items()},
            },
            WHEN,
        ),
        "a value of 126 bytes": record_with(schema, "s" * 126),
        "a two-byte length": record_with(schema, "s" * 200),
        "foreign bytes, every length 255": record[: schema.var_offset] + b"\xff" * 700,
    }


def record_with(schema: Schema, x: str) -> bytes:
    values = {"x": ValueProto(string_val=x), "y": ValueProto(string_val="de")}
    values.update({name: value for name, (_, value) in FIXED.items()})
    return encode_row(schema, values, WHEN)


def test_records_it_cannot_read_are_left_to_the_caller():
    schema = schema_with(ValueType.STRING)
    good = record_with(schema, "abc")
    spoilt = damaged(schema, good)
    records = [good, *spoilt.values(), record_with(schema, "s" * 125)]
    batch = decode_batch(schema, (0, 5, 7), records)  # x, ok, y
    assert batch.read.tolist() == [True] + [False] * len(spoilt) + [True], dict(
        zip(["good", *spoilt, "125"], batch.read.tolist())
    )
    # Last in the buffer, the walk over foreign bytes stays inside its padding.
    foreign = spoilt["foreign bytes, every length 255"]
    assert decode_batch(schema, (7,), [good, foreign]).read.tolist() == [True, False]
    check(schema, (0, 5, 7), records)
    check(schema, (0, 7), records)  # a bool slot not asked for is not looked at


def test_an_empty_protobuf_value_is_left_to_the_caller_only_when_asked_for():
    schema = Schema([("l", ValueType.INT64_LIST), ("n", ValueType.INT64)])
    record = encode_row(
        schema, {"l": samples(ValueType.INT64_LIST)[1], "n": ValueProto(int64_val=1)}, WHEN
    )
    empty = record[: schema.var_offset] + b"\x00"
    assert decode_batch(schema, (0,), [record, empty]).read.tolist() == [True, False]
    assert decode_batch(schema, (1,), [record, empty]).read.tolist() == [True, True]


def test_overridden_and_cleared_records_take_their_places():
    schema = schema_with(ValueType.STRING)
    records = [record_with(schema, "v" * k) for k in range(6)] + [None]
    pick = (0, 1, 4, 7)
    batch = decode_batch(schema, pick, records)
    entries = [picked_reader(schema, pick, framed=True)(r)[2] for r in records[:6]]
    mine = (b"\x0a\x02\x12\x00", b"\x0a\x00", b"\x0a\x00", b"\x0a\x03\x12\x01z")
    batch.override(6, mine)  # the absent one, read elsewhere
    batch.clear([2])  # past its ttl
    entries[2] = (UNSET,) * 4
    entries.append(mine)
    for order in ([0, 1, 2, 3, 4, 5, 6], [6, 6, -1, 2, 0], [5, 4, 3, 2, 1, 0, 6]):
        columns = batch.columns(order)
        for j in range(4):
            assert columns[j] == b"".join(entries[i][j] if i >= 0 else UNSET for i in order)


def test_an_override_of_a_record_read_here_replaces_it():
    schema = schema_with(ValueType.STRING)
    records = [record_with(schema, "v" * k) for k in range(3)]
    pick = (3, 4, 0)  # f64, f32 (copied slots: every entry full width), x
    batch = decode_batch(schema, pick, records)
    assert batch.read.all()
    entries = [picked_reader(schema, pick, framed=True)(r)[2] for r in records]
    mine = (UNSET, b"\x0a\x05\x35\x00\x00\x80\x3f", UNSET)
    batch.override(1, mine)
    entries[1] = mine
    for order in ([0, 1, 2], [1, -1, 1, 0]):
        columns = batch.columns(order)
        for j in range(3):
            assert columns[j] == b"".join(entries[i][j] if i >= 0 else UNSET for i in order)


KINDS = [
    ValueType.INT32,
    ValueType.INT64,
    ValueType.UNIX_TIMESTAMP,
    ValueType.FLOAT,
    ValueType.DOUBLE,
    ValueType.BOOL,
    ValueType.STRING,
    ValueType.BYTES,
    ValueType.FLOAT_LIST,
    ValueType.STRING_LIST,
]


@settings(max_examples=60, deadline=None)
@given(
    kinds=st.lists(st.sampled_from(KINDS), min_size=1, max_size=12),
    seed=st.integers(0, 2**32 - 1),
    rows=st.integers(1, 40),
)
def test_random_schemas_and_rows_read_as_record_by_record(kinds, seed, rows):
    schema = Schema([(f"f{i}", kind) for i, kind in enumerate(kinds)])
    chance = random.Random(seed)
    records: list[bytes | None] = []
    for _ in range(rows):
        if chance.random() < 0.05:
            records.append(None)
            continue
        values = {}
        for name, kind in schema.features:
            options = samples(kind)
            if kind in (ValueType.STRING, ValueType.BYTES):
                options = options[:3]  # mostly short
            if chance.random() < 0.03:
                continue  # null
            values[name] = chance.choice(options)
        when = WHEN + timedelta(seconds=chance.randint(-(10**10), 10**10), microseconds=seed % 997)
        records.append(encode_row(schema, values, when))
    pick = tuple(chance.randrange(len(kinds)) for _ in range(chance.randint(1, 2 * len(kinds))))
    order = [chance.randrange(-1, rows) for _ in range(chance.randint(0, 2 * rows))]
    check(schema, pick, records)
    check(schema, pick, records, order=order)


@settings(max_examples=300, deadline=None)
@given(
    seconds=st.one_of(st.integers(-(2**63), 2**63 - 1), st.integers(-(10**10), 10**10)),
    nanos=st.integers(0, 999_999_999),
    ttl=st.integers(0, 10**12),
    now=st.integers(-(10**15), 10**15),
)
def test_live_decides_as_views_expired(seconds, nanos, ttl, now):
    schema = Schema([("a", ValueType.INT64)])
    record = encode_row(schema, {"a": ValueProto(int64_val=1)}, WHEN)
    record = record[:1] + struct.pack(">QI", seconds + 2**63, nanos) + record[13:]
    batch = decode_batch(schema, (0,), [record])
    assert (int(batch.seconds[0]), int(batch.nanos[0])) == (seconds, nanos)
    boundary = seconds * 1000 + nanos // 1_000_000 + ttl * 1000
    for at in (now, boundary - 1, boundary, boundary + 1):
        if abs(at) < 2**62:  # a clock in Unix ms
            assert bool(batch.live(ttl, at)[0]) is not views.expired(seconds, nanos, ttl, at)
