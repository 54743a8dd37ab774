"""Compact records row by row: the bytes of format v1, round trips to Feast's exact
``ValueProto`` bytes for every type, fallbacks, schema changes, and corrupt records.

No server needed.
"""

from __future__ import annotations

import math
import random
import struct
from datetime import datetime, timedelta, timezone

import mmh3
import pytest
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.value_type import ValueType
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feast_dragonfly._store.compact.codec import (
    EVENT_TIME_SLICE,
    Decoded,
    classify,
    decode,
    decode_by_name,
    encode_row,
    event_time_bytes,
    read_header,
)
from feast_dragonfly._store.compact.schema import Schema, value_field
from feast_dragonfly._store.layout import event_time_parts, timestamp_bytes
from feast_dragonfly.errors import DragonflyDataError

UTC = timezone.utc
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
WHEN = datetime(2024, 5, 1, 12, 30, 15, 123456, tzinfo=UTC)
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SUPPORTED = [kind for kind in ValueType if kind not in (ValueType.UNKNOWN, ValueType.NULL)]

# Typed values per scalar field, defaults (which a oneof still serializes) and extremes included.
SCALARS = {
    "bool_val": [True, False],
    "int32_val": [0, 1, -1, 127, 128, 300, -300, 2**31 - 1, -(2**31)],
    "int64_val": [0, 5, -5, 2**14, 1_700_000_000, 1_700_000_000_000, 2**63 - 1, -(2**63)],
    "unix_timestamp_val": [0, 1_700_000_000, -1, -(2**63), 2**63 - 1],
    "double_val": [0.0, -0.0, 1.5, -2.25, math.inf, -math.inf, math.nan, 1e308, 5e-324],
    "float_val": [0.0, -0.0, 1.5, math.inf, math.nan, 3.4e38, 1e-45],
    "string_val": ["", "x", "héllo wörld", "a" * 127, "b" * 128, "c" * 20_000],
    "bytes_val": [b"", b"\x00", b"\xff" * 300],
}
ITEMS = {  # repeated field type -> items
    1: [1.5, -0.0],
    2: [2.5],
    3: [1, -2, 2**40],
    5: [7, -7],
    8: [True, False],
    9: ["a", ""],
    12: [b"x", b""],
}


def samples(kind: ValueType) -> list[ValueProto]:
    """ValueProtos of type ``kind`` (its own oneof field set), empty and non-empty."""
    field = value_field(kind)
    assert field is not None
    if field in SCALARS:
        return [ValueProto(**{field: value}) for value in SCALARS[field]]
    descriptor = ValueProto.DESCRIPTOR.fields_by_name[field]
    if descriptor.message_type is None:  # a string field: JSON, UUID, decimal, ...
        texts = ["", '{"a": [1, 2]}', "5f8c2e2a-0000-4000-8000-000000000000", "é" * 100]
        return [ValueProto(**{field: text}) for text in texts]
    empty = ValueProto()
    getattr(empty, field).SetInParent()
    full = ValueProto()
    message = getattr(full, field)
    if field in ("map_val", "struct_val"):
        message.val["k"].int64_val = 3
        message.val["e"].SetInParent()
    elif field in ("map_list_val", "struct_list_val"):
        message.val.add().val["k"].string_val = "x"
    elif field in ("list_val", "set_val"):
        message.val.add().int64_val = 1
        message.val.add().string_list_val.val.append("s")
    elif field == "scalar_map_val":
        entry = message.val.add()
        entry.key.SetInParent()
        entry.value.double_val = 1.5
    elif field == "zoned_timestamp_val":
        message.unix_timestamp = -5
        message.zone = "Europe/Paris"
    else:
        message.val.extend(ITEMS[message.DESCRIPTOR.fields_by_name["val"].type])
    return [empty, full]


def round_trip(schema: Schema, values: dict[str, ValueProto]) -> Decoded:
    record = encode_row(schema, values, WHEN)
    decoded = decode(schema, record)
    expected = tuple(
        values[name].SerializeToString() if name in values else b"" for name in schema.names
    )
    assert decoded.values == expected
    assert decoded.event_time == event_time_parts(WHEN)
    assert decoded.schema_id == schema.id
    return decoded


def states_of(schema: Schema, record: bytes) -> list[int]:
    bitmap = record[17 : 17 + schema.bitmap_size]
    return [(bitmap[i // 4] >> (2 * (i % 4))) & 3 for i in range(len(schema))]


# --------------------------------------------------------------------------- the format


def test_a_record_byte_by_byte():
    schema = Schema([("a", ValueType.INT64), ("s", ValueType.STRING), ("d", ValueType.DOUBLE)])
    moment = datetime(1970, 1, 1, 0, 0, 1, 2, tzinfo=UTC)  # 1 s + 2 µs
    record = encode_row(
        schema, {"a": ValueProto(int64_val=5), "s": ValueProto(string_val="hi")}, moment
    )
    assert record == (
        b"\x01"  # version
        + bytes.fromhex("8000000000000001")  # seconds + 2**63, big-endian
        + bytes.fromhex("000007d0")  # 2000 nanos, big-endian
        + mmh3.hash(b"v1|a:INT64|s:STRING|d:DOUBLE", 0, signed=False).to_bytes(4, "little")
        + bytes([0b00_00_01_01])  # a: 1, s: 1, d: 0 (null)
        + struct.pack("<q", 5)  # a's slot
        + bytes(8)  # d's slot, zero-filled: null
        + b"\x02hi"  # s: varint length, UTF-8
    )
    assert decode(schema, record).values == (b"\x20\x05", b"\x12\x02hi", b"")


@SETTINGS
@given(
    st.tuples(st.integers(-(2**63), 2**63 - 1), st.integers(0, 999_999_999)),
    st.tuples(st.integers(-(2**63), 2**63 - 1), st.integers(0, 999_999_999)),
)
def test_event_time_bytes_sort_as_the_times_do(first, second):
    a, b = event_time_bytes(*first), event_time_bytes(*second)
    assert len(a) == len(b) == 12
    assert (a < b) == (first < second) and (a == b) == (first == second)


def test_the_lua_slice_holds_the_event_time():
    schema = Schema([("a", ValueType.INT64)])
    record = encode_row(schema, {}, WHEN)
    start, end = EVENT_TIME_SLICE  # Lua: record:sub(start, end), 1-based inclusive
    assert record[start - 1 : end] == event_time_bytes(*event_time_parts(WHEN))
    assert read_header(record) == (*event_time_parts(WHEN), schema.id)


@SETTINGS
@given(
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
    st.one_of(
        st.none(),
        st.integers(-23 * 60, 23 * 60).map(lambda m: timezone(timedelta(minutes=m))),
    ),
)
def test_event_time_is_feasts_timestamp(moment, zone):
    moment = moment if zone is None else moment.replace(tzinfo=zone)
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    assert event_time_parts(moment) == (stamp.seconds, stamp.nanos)


@SETTINGS
@given(st.integers(-62135596800, 253402300799), st.integers(0, 999_999_999))
def test_timestamp_bytes_are_protobufs(seconds, nanos):
    expected = Timestamp(seconds=seconds, nanos=nanos).SerializeToString()
    assert timestamp_bytes(seconds, nanos) == expected


@pytest.mark.parametrize("seconds, nanos", [(0, -1), (0, 10**9), (2**63, 0), (-(2**63) - 1, 0)])
def test_event_time_out_of_range(seconds, nanos):
    with pytest.raises(DragonflyDataError, match="out of range"):
        event_time_bytes(seconds, nanos)


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("kind", SUPPORTED, ids=lambda kind: kind.name)
def test_every_type_round_trips_to_feasts_bytes(kind):
    schema = Schema([("before", ValueType.STRING), ("x", kind), ("after", ValueType.INT64)])
    for value in samples(kind):
        values = {"before": ValueProto(string_val="b"), "x": value}
        record = encode_row(schema, values, WHEN)
        assert states_of(schema, record) == [1, 1, 0]
        round_trip(schema, values)
        round_trip(schema, {"x": value, "after": ValueProto(int64_val=-1)})
    round_trip(schema, {"x": ValueProto()})  # Feast's null
    round_trip(schema, {})


@pytest.mark.parametrize(
    "kind, value",
    [
        (ValueType.DOUBLE, ValueProto(int32_val=3)),  # a push that sent an int for a double
        (ValueType.INT64, ValueProto(string_val="12")),
        (ValueType.INT32, ValueProto(int64_val=2**40)),
        (ValueType.BOOL, ValueProto(null_val=0)),  # null_val set is not Feast's null
        (ValueType.STRING, ValueProto(bytes_val=b"\xff")),
        (ValueType.BYTES, ValueProto(string_val="")),
        (ValueType.UNIX_TIMESTAMP, ValueProto(int64_val=7)),
        (ValueType.STRING_LIST, ValueProto(int64_list_val={"val": [1, 2]})),
        (ValueType.UUID, ValueProto(string_val="5f8c2e2a-0000-4000-8000-000000000000")),
        (ValueType.FLOAT, ValueProto(double_val=1.1)),
    ],
)
def test_a_value_of_another_type_is_kept_whole(kind, value):
    schema = Schema([("x", kind), ("y", ValueType.INT64)])
    values = {"x": value, "y": ValueProto(int64_val=1)}
    record = encode_row(schema, values, WHEN)
    assert states_of(schema, record) == [2, 1]
    round_trip(schema, values)


def test_null_and_fallback_leave_fixed_slots_zero():
    schema = Schema([("a", ValueType.INT64), ("b", ValueType.DOUBLE), ("c", ValueType.BOOL)])
    record = encode_row(schema, {"a": ValueProto(), "b": ValueProto(int32_val=9)}, WHEN)
    assert states_of(schema, record) == [0, 2, 0]
    assert record[schema.fixed_offset : schema.var_offset] == bytes(17)
    assert record[schema.var_offset :] == b"\x02\x18\x09"  # b's whole ValueProto


def test_classify_is_the_rule_encode_row_follows():
    kinds = [ValueType.INT64, ValueType.STRING, ValueType.INT64_LIST, ValueType.DOUBLE]
    schema = Schema([(kind.name, kind) for kind in kinds])
    cases = [None, ValueProto(), ValueProto(int64_val=1), ValueProto(string_val="s")]
    cases += [ValueProto(int64_list_val={"val": [1]}), ValueProto(double_val=2.0)]
    for i, _ in enumerate(kinds):
        for value in cases:
            state, slot, data = classify(schema, i, value)
            record = encode_row(schema, {} if value is None else {kinds[i].name: value}, WHEN)
            assert states_of(schema, record)[i] == state
            if data is not None:
                assert record.endswith(data)


VALUE_CASES = st.sampled_from(
    [
        (kind, value)
        for kind in (ValueType.INT32, ValueType.INT64, ValueType.UNIX_TIMESTAMP, ValueType.BOOL)
        + (ValueType.DOUBLE, ValueType.FLOAT, ValueType.STRING, ValueType.BYTES)
        + (ValueType.STRING_LIST, ValueType.JSON, ValueType.MAP)
        for value in samples(kind) + [ValueProto(), None, ValueProto(int32_val=-4)]
    ]
)


@SETTINGS
@given(st.lists(VALUE_CASES, max_size=40))
def test_random_rows_round_trip(cases):
    schema = Schema([(f"f{i}", kind) for i, (kind, _) in enumerate(cases)])
    values = {f"f{i}": value for i, (_, value) in enumerate(cases) if value is not None}
    round_trip(schema, values)


def test_unknown_feature_names_are_refused_by_name():
    schema = Schema([("a", ValueType.INT64)])
    with pytest.raises(DragonflyDataError, match=r"\['b', 'c'\]"):
        encode_row(schema, {"a": ValueProto(), "b": ValueProto(), "c": ValueProto()}, WHEN)


def test_naive_event_times_are_utc():
    schema = Schema([])
    assert encode_row(schema, {}, WHEN.replace(tzinfo=None)) == encode_row(schema, {}, WHEN)
    later = WHEN.astimezone(timezone(timedelta(hours=5)))
    assert encode_row(schema, {}, later) == encode_row(schema, {}, WHEN)


# --------------------------------------------------------------------------- schema changes

OLD = Schema(
    [
        ("a", ValueType.INT64),
        ("b", ValueType.STRING),  # removed later
        ("c", ValueType.DOUBLE),
        ("d", ValueType.INT32),  # retyped later
    ]
)
NEW = Schema(
    [
        ("d", ValueType.INT64),  # retyped
        ("c", ValueType.DOUBLE),  # moved
        ("e", ValueType.BOOL),  # added
        ("a", ValueType.INT64),  # moved
    ]
)


def old_record() -> bytes:
    values = {"a": ValueProto(int64_val=7), "b": ValueProto(string_val="gone")}
    values |= {"c": ValueProto(), "d": ValueProto(int32_val=3)}
    return encode_row(OLD, values, WHEN)


def test_decode_by_name_maps_an_older_schema_by_name():
    decoded = decode_by_name(old_record(), {OLD.id: OLD, NEW.id: NEW}, NEW)
    assert decoded.schema_id == OLD.id
    assert decoded.event_time == event_time_parts(WHEN)
    # d retyped: not found; c null (b"", not None); e added: not found; a found.
    assert decoded.values == (None, b"", None, b"\x20\x07")


def test_decode_by_name_reads_current_records_directly():
    record = encode_row(NEW, {"a": ValueProto(int64_val=1)}, WHEN)
    assert decode_by_name(record, {}, NEW) == decode(NEW, record)


def test_decode_by_name_with_an_unknown_schema_finds_nothing():
    decoded = decode_by_name(old_record(), {NEW.id: NEW}, NEW)
    assert decoded == Decoded(event_time_parts(WHEN), OLD.id, (None, None, None, None))


def test_decode_refuses_a_record_of_another_schema():
    with pytest.raises(DragonflyDataError, match="schema"):
        decode(NEW, old_record())


def test_decode_by_name_still_checks_the_record():
    with pytest.raises(DragonflyDataError):
        decode_by_name(old_record()[:-1], {OLD.id: OLD}, NEW)


# --------------------------------------------------------------------------- corrupt records

MIXED = Schema(
    [
        ("i", ValueType.INT64),
        ("s", ValueType.STRING),
        ("b", ValueType.BOOL),
        ("l", ValueType.INT64_LIST),
        ("d", ValueType.DOUBLE),
        ("f", ValueType.INT32),  # fallback below
        ("y", ValueType.BYTES),
    ]
)
MIXED_VALUES = {
    "i": ValueProto(int64_val=300),
    "s": ValueProto(string_val="x" * 200),
    "b": ValueProto(bool_val=True),
    "l": ValueProto(int64_list_val={"val": [1, 2, 3]}),
    "d": ValueProto(double_val=0.5),
    "f": ValueProto(string_val="3"),
    "y": ValueProto(),
}


def test_every_truncation_and_extension_is_refused():
    record = encode_row(MIXED, MIXED_VALUES, WHEN)
    round_trip(MIXED, MIXED_VALUES)
    for size in range(len(record)):
        with pytest.raises(DragonflyDataError, match="malformed compact record"):
            decode(MIXED, record[:size])
    for tail in (b"\x00", b"\x01x"):
        with pytest.raises(DragonflyDataError, match="past its last value"):
            decode(MIXED, record + tail)


def _with_byte(record: bytes, index: int, value: int) -> bytes:
    return record[:index] + bytes([value]) + record[index + 1 :]


def test_malformed_headers_states_and_lengths_are_refused():
    schema = Schema([("b", ValueType.BOOL), ("s", ValueType.STRING), ("x", ValueType.DOUBLE)])
    record = encode_row(schema, {"b": ValueProto(bool_val=True)}, WHEN)
    bitmap = 17
    with_string = encode_row(schema, {"s": ValueProto(string_val="hey")}, WHEN)
    fallback = encode_row(schema, {"x": ValueProto(int32_val=1)}, WHEN)
    cases = [
        (_with_byte(record, 0, 2), "format version 2"),
        (_with_byte(record, bitmap, record[bitmap] | 0b11_00_00), "reserved state 3"),
        (_with_byte(record, bitmap, record[bitmap] | 0b01_00_00_00), "past the last feature"),
        (_with_byte(record, schema.fixed_offset, 2), "bool slot holds 2"),
        (record[:9] + (10**9).to_bytes(4, "big") + record[13:], "nanos 1000000000"),
        (record[:13] + (schema.id ^ 1).to_bytes(4, "little") + record[17:], "under schema"),
        (with_string[:-4] + b"\x83\x00hey", "not a minimal varint"),
        (with_string[:-4] + b"\x80" * 6 + b"\x03hey", "varint is too long"),
        (fallback[: schema.var_offset] + b"\x00", "an empty ValueProto"),
        (record[:10], "shorter than its header"),
    ]
    for bad, problem in cases:
        with pytest.raises(DragonflyDataError, match=f"malformed compact record: .*{problem}"):
            decode(schema, bad)


def test_random_corruption_raises_only_data_errors():
    """Flipped bytes either still decode (e.g. inside a value) or raise DragonflyDataError:
    never another exception, never a different number of values."""
    rng = random.Random(7)
    record = encode_row(MIXED, MIXED_VALUES, WHEN)
    for _ in range(3000):
        bad = bytearray(record)
        for _ in range(rng.randint(1, 3)):
            bad[rng.randrange(len(bad))] = rng.randrange(256)
        try:
            decoded = decode(MIXED, bytes(bad))
        except DragonflyDataError:
            continue
        assert len(decoded.values) == len(MIXED)
