"""``_store/compact/fast_decode.py``: the straight-line decoder of all-typed records.

* the all-typed bitmap has state 1 for every feature and zero padding, built once per schema;
* for every supported type, beside every fixed-width kind, the generated decoder gives exactly
  Feast's serialized ``Value`` of each feature (and ``codec.decode`` takes it for such records);
* a record that does not fit — truncated, with bytes past its end, a bool slot above 1, an empty
  protobuf value, a malformed length — raises ``DragonflyDataError`` through ``codec.decode``,
  as the general loop does;
* records with a null or fallback feature take the general loop, with the same results;
* framed decoders give each value's ``FeatureVector`` entry (``value_columns.frame``), for
  every type, lengths and varints past the lookup tables included.
"""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.value_type import ValueType
from test_codec import SUPPORTED, samples

from feast_dragonfly._store.compact import fast_decode
from feast_dragonfly._store.compact.codec import decode, encode_row, picked_reader
from feast_dragonfly._store.compact.schema import SMALL_VARINTS, Schema
from feast_dragonfly._store.value_columns import frame
from feast_dragonfly.errors import DragonflyDataError

WHEN = datetime(2026, 12, 1, 8, 0, 1, 250000, tzinfo=timezone.utc)
FIXED = {
    "i64": (ValueType.INT64, ValueProto(int64_val=-300)),
    "i32": (ValueType.INT32, ValueProto(int32_val=200)),
    "f64": (ValueType.DOUBLE, ValueProto(double_val=2.5)),
    "f32": (ValueType.FLOAT, ValueProto(float_val=-1.5)),
    "ok": (ValueType.BOOL, ValueProto(bool_val=True)),
    "ts": (ValueType.UNIX_TIMESTAMP, ValueProto(unix_timestamp_val=1_700_000_000)),
}


def schema_with(kind: ValueType) -> Schema:
    return Schema([("x", kind), *((name, k) for name, (k, _) in FIXED.items()), ("y", kind)])


def test_the_all_typed_bitmap():
    schema = schema_with(ValueType.STRING)  # 8 features: two bitmap bytes
    bitmap, decoder = fast_decode.all_typed(schema)
    assert bitmap == bytes([0b01010101, 0b01010101])
    assert fast_decode.all_typed(schema) == (bitmap, decoder)  # built once
    three = Schema([("a", ValueType.INT64), ("b", ValueType.INT64), ("c", ValueType.INT64)])
    assert fast_decode.all_typed(three)[0] == bytes([0b010101])  # padding stays 0


@pytest.mark.parametrize("kind", SUPPORTED, ids=lambda kind: kind.name)
def test_every_type_decodes_to_feasts_bytes(kind):
    schema = schema_with(kind)
    _, decoder = fast_decode.all_typed(schema)
    for sample in samples(kind):
        values = {"x": sample, "y": sample, **{name: value for name, (_, value) in FIXED.items()}}
        record = encode_row(schema, values, WHEN)
        expected = tuple(values[name].SerializeToString() for name in schema.names)
        assert decoder(record, len(record)) == expected
        assert decode(schema, record).values == expected


def record_of(schema: Schema, **overrides: ValueProto) -> bytes:
    values = {"x": ValueProto(string_val="abc"), "y": ValueProto(string_val="de")}
    values.update({name: value for name, (_, value) in FIXED.items()}, **overrides)
    return encode_row(schema, values, WHEN)


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (lambda r: r[:-1], "truncated"),
        (lambda r: r + b"\x00", "past its last value"),
        (lambda r: r[:-3] + b"\x05" + r[-2:], "truncated"),  # y's length past the end
    ],
)
def test_a_record_that_does_not_fit_raises(corrupt, message):
    schema = schema_with(ValueType.STRING)
    with pytest.raises(DragonflyDataError, match=message):
        decode(schema, corrupt(record_of(schema)))


def test_a_bool_slot_above_one_raises():
    schema = Schema([("ok", ValueType.BOOL)])
    record = bytearray(encode_row(schema, {"ok": ValueProto(bool_val=True)}, WHEN))
    record[schema.fixed_offset] = 2
    with pytest.raises(DragonflyDataError, match="bool slot holds 2"):
        decode(schema, bytes(record))


def test_an_empty_protobuf_value_raises():
    schema = Schema([("l", ValueType.INT64_LIST)])
    record = encode_row(schema, {"l": samples(ValueType.INT64_LIST)[1]}, WHEN)
    empty = record[: schema.var_offset] + b"\x00"
    with pytest.raises(DragonflyDataError, match="empty ValueProto"):
        decode(schema, empty)


def test_null_and_fallback_features_take_the_general_loop():
    schema = schema_with(ValueType.STRING)
    record = record_of(schema, x=ValueProto(), y=ValueProto(int64_val=5))  # null, fallback
    assert record[17 : schema.fixed_offset] != fast_decode.all_typed(schema)[0]
    values = decode(schema, record).values
    assert values[0] == b"" and values[-1] == ValueProto(int64_val=5).SerializeToString()
    assert values[1:-1] == tuple(value.SerializeToString() for _, value in FIXED.values())


# --------------------------------------------------------------------------- picked decoders

PICKS = [(0,), (7,), (7, 0), (1, 4, 5), (3, 3), (), tuple(range(8))]


@pytest.mark.parametrize("pick", PICKS, ids=repr)
@pytest.mark.parametrize("kind", [ValueType.STRING, ValueType.INT64_LIST, ValueType.BYTES])
def test_a_picked_decoder_gives_the_features_asked_for_in_order(kind, pick):
    schema = schema_with(kind)
    for sample in samples(kind):
        values = {"x": sample, "y": sample, **{name: value for name, (_, value) in FIXED.items()}}
        record = encode_row(schema, values, WHEN)
        full = decode(schema, record).values
        assert fast_decode.picked(schema, pick)(record, len(record)) == tuple(full[j] for j in pick)
        assert picked_reader(schema, pick)(record) == (*decode(schema, record).event_time, full)[
            :2
        ] + (tuple(full[j] for j in pick),)


def test_picking_every_feature_is_the_full_decoder():
    schema = schema_with(ValueType.STRING)
    assert fast_decode.picked(schema, tuple(range(8))) is fast_decode.all_typed(schema)[1]
    assert fast_decode.picked(schema, (2, 1)) is fast_decode.picked(schema, (2, 1))  # built once


def test_a_picked_decoder_checks_the_whole_record():
    """Values not asked for are stepped over, not skipped: a record truncated or too long
    past the values asked for still raises."""
    schema = schema_with(ValueType.STRING)
    values = {"x": ValueProto(string_val="ab"), "y": ValueProto(string_val="cd")}
    values.update({name: value for name, (_, value) in FIXED.items()})
    record = encode_row(schema, values, WHEN)
    assert picked_reader(schema, (0, 2))(record)[2] == (
        values["x"].SerializeToString(),
        b"\x18\xc8\x01",
    )
    for damaged in (record[:-3], record + b"\x00"):
        with pytest.raises(DragonflyDataError, match="malformed"):
            picked_reader(schema, (0, 2))(damaged)


def test_the_picked_reader_leaves_other_records_to_the_general_path():
    schema = schema_with(ValueType.STRING)
    with_null = encode_row(schema, {"x": ValueProto(string_val="a")}, WHEN)
    assert picked_reader(schema, (0,))(with_null) is None
    other = Schema([("x", ValueType.STRING)])
    assert (
        picked_reader(schema, (0,))(encode_row(other, {"x": ValueProto(string_val="a")}, WHEN))
        is None
    )


# --------------------------------------------------------------------------- framed


@pytest.mark.parametrize("pick", PICKS, ids=repr)
@pytest.mark.parametrize("kind", SUPPORTED, ids=lambda kind: kind.name)
def test_a_framed_decoder_gives_feature_vector_entries(kind, pick):
    schema = schema_with(kind)
    for sample in samples(kind):
        values = {"x": sample, "y": sample, **{name: value for name, (_, value) in FIXED.items()}}
        record = encode_row(schema, values, WHEN)
        plain = picked_reader(schema, pick)(record)
        assert picked_reader(schema, pick, framed=True)(record) == (
            *plain[:2],
            tuple(map(frame, plain[2])),
        )


@pytest.mark.parametrize(
    "x",
    [
        ValueProto(string_val="é" * 70),  # a value of 141 bytes: a two-byte frame length
        ValueProto(string_val="s" * (SMALL_VARINTS + 5)),  # past the table of frame heads
        ValueProto(bytes_val=b"\x00" * 200),
    ],
    ids=["two-byte", "past-table", "bytes"],
)
def test_framing_long_values(x):
    kind = ValueType.STRING if x.WhichOneof("val") == "string_val" else ValueType.BYTES
    schema = Schema([("x", kind), ("n", ValueType.INT64), ("b", ValueType.BOOL)])
    for n in (0, SMALL_VARINTS - 1, SMALL_VARINTS, 2**40, -1, -(2**63)):
        values = {"x": x, "n": ValueProto(int64_val=n), "b": ValueProto(bool_val=n > 0)}
        record = encode_row(schema, values, WHEN)
        framed = picked_reader(schema, (0, 1, 2), framed=True)(record)[2]
        assert framed == tuple(frame(values[name].SerializeToString()) for name in "xnb")
