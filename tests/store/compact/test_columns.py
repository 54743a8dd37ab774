"""Compact records a column at a time, against the row codec on Feast's own conversion.

Reference: Feast's materialization turns a column into ValueProtos with
``python_values_to_proto_values(column.to_numpy(zero_copy_only=False), value_type)``; each row
of :func:`encode_columns` must be :func:`encode_row` of those ValueProtos, byte for byte (or,
where Feast rejects the column, fail with the same exception type). No server needed.
"""

from __future__ import annotations

import warnings
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
import pytest
from feast.type_map import python_values_to_proto_values
from feast.value_type import ValueType
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feast_dragonfly._store.compact.codec import decode, encode_row, event_time_bytes
from feast_dragonfly._store.compact.columns import encode_columns
from feast_dragonfly._store.compact.schema import Schema
from feast_dragonfly.errors import DragonflyDataError

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
INT32 = st.integers(min_value=-(2**31), max_value=2**31 - 1)
FLOATS = st.floats(allow_nan=True, allow_infinity=True)
FLOATS32 = st.floats(width=32, allow_nan=True, allow_infinity=True)
TEXT = st.text(max_size=12)
BLOBS = st.binary(max_size=200)  # lengths past 127 take two-byte varints
NANOS = st.integers(min_value=-(2**62), max_value=2**62)


def times(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    seconds = rng.integers(-(2**40), 2**40, n, dtype=np.int64)
    nanos = rng.integers(0, 1_000_000, n, dtype=np.int64) * 1000
    return seconds, nanos


def expected_records(
    schema: Schema, columns: dict, seconds: np.ndarray, nanos: np.ndarray
) -> list[bytes]:
    """encode_row of the ValueProtos Feast builds from each column, at each row's time."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        protos = {
            name: python_values_to_proto_values(
                column.to_numpy(zero_copy_only=False), schema.types[schema.index[name]]
            )
            for name, column in columns.items()
        }
    out = []
    for row in range(len(seconds)):
        record = encode_row(schema, {name: values[row] for name, values in protos.items()}, EPOCH)
        out.append(record[:1] + event_time_bytes(int(seconds[row]), int(nanos[row])) + record[13:])
    return out


def assert_same(columns: dict, types: dict[str, ValueType]) -> list[bytes]:
    schema = Schema([(name, types[name]) for name in columns])
    n = len(next(iter(columns.values())))
    seconds, nanos = times(n)
    try:
        expected = expected_records(schema, columns, seconds, nanos)
    except Exception as exc:  # noqa: BLE001 - Feast rejects the column: so must we
        with pytest.raises(type(exc)):
            encode_columns(schema, columns, seconds, nanos)
        return []
    got = encode_columns(schema, columns, seconds, nanos)
    assert got.type == pa.binary()
    assert got.to_pylist() == expected
    for record in expected:
        decode(schema, record)  # and every record decodes
    return expected


def nullable(strategy: st.SearchStrategy, min_size: int = 1) -> st.SearchStrategy:
    return st.lists(st.one_of(st.none(), strategy), min_size=min_size, max_size=30)


def one(values: list, kind: pa.DataType, value_type: ValueType) -> list[bytes]:
    return assert_same({"x": pa.array(values, kind)}, {"x": value_type})


# --------------------------------------------------------------------------- fast paths


@SETTINGS
@given(nullable(INT64))
def test_int64(values):
    one(values, pa.int64(), ValueType.INT64)


@SETTINGS
@given(nullable(st.integers(0, 2**64 - 1)))
def test_uint64_as_int64(values):
    one(values, pa.uint64(), ValueType.INT64)


@SETTINGS
@given(nullable(INT32), st.sampled_from([pa.int32(), pa.int64(), pa.int16()]))
def test_int32(values, kind):
    if kind == pa.int16():
        values = [None if v is None else v % 2**15 for v in values]
    one(values, kind, ValueType.INT32)


@SETTINGS
@given(nullable(INT64))
def test_int64_values_out_of_int32_range(values):
    one(values, pa.int64(), ValueType.INT32)  # Feast's error, or its values


@SETTINGS
@given(nullable(FLOATS))
def test_double(values):
    one(values, pa.float64(), ValueType.DOUBLE)


@SETTINGS
@given(nullable(FLOATS32), st.sampled_from([pa.float32(), pa.float64()]))
def test_float(values, kind):
    one(values, kind, ValueType.FLOAT)


@SETTINGS
@given(nullable(FLOATS))
def test_float_from_doubles_that_overflow(values):
    one(values, pa.float64(), ValueType.FLOAT)


@SETTINGS
@given(nullable(st.booleans()))
def test_bool(values):
    one(values, pa.bool_(), ValueType.BOOL)


@SETTINGS
@given(nullable(TEXT), st.sampled_from([pa.string(), pa.large_string()]))
def test_string(values, kind):
    one(values, kind, ValueType.STRING)


@SETTINGS
@given(nullable(BLOBS), st.sampled_from([pa.binary(), pa.large_binary()]))
def test_bytes(values, kind):
    one(values, kind, ValueType.BYTES)


def test_long_strings_take_longer_length_varints():
    values = ["a" * 127, "b" * 128, "c" * 20_000, "d" * 3_000_000, None, ""]
    one(values, pa.string(), ValueType.STRING)


@SETTINGS
@given(
    nullable(NANOS),
    st.sampled_from(["s", "ms", "us", "ns"]),
    st.sampled_from([None, "UTC", "America/New_York"]),
)
def test_unix_timestamp(values, unit, zone):
    divisor = {"s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}[unit]
    scaled = [None if v is None else v // divisor for v in values]
    records = one(scaled, pa.timestamp(unit, tz=zone), ValueType.UNIX_TIMESTAMP)
    if records and None in values:  # Feast: a null timestamp is INT64_MIN seconds, not null
        assert any(record[17] == 1 for record in records)


@pytest.mark.parametrize(
    "kind, value_type",
    [
        (pa.int64(), ValueType.INT64),
        (pa.int32(), ValueType.INT32),
        (pa.float64(), ValueType.DOUBLE),
        (pa.float32(), ValueType.FLOAT),
        (pa.bool_(), ValueType.BOOL),
        (pa.string(), ValueType.STRING),
        (pa.binary(), ValueType.BYTES),
        (pa.timestamp("us"), ValueType.UNIX_TIMESTAMP),
        (pa.list_(pa.int64()), ValueType.INT64_LIST),
        (pa.string(), ValueType.JSON),
    ],
)
def test_all_null_columns(kind, value_type):
    one([None, None, None], kind, value_type)


def test_bytes_without_a_non_empty_value_are_null_as_in_feast():
    records = one([b"", None, b""], pa.binary(), ValueType.BYTES)
    assert all(record[17] == 0 for record in records)


# --------------------------------------------------------------------------- Feast's path


@pytest.mark.parametrize(
    "values, kind, value_type",
    [
        ([1, None, 3], pa.int64(), ValueType.DOUBLE),  # an int column for a double feature
        ([1.0, None, 2.5], pa.float64(), ValueType.INT64),
        ([1.5, float("nan")], pa.float64(), ValueType.INT32),
        (["1", "2"], pa.string(), ValueType.INT64),
        ([1, 0, None], pa.int64(), ValueType.BOOL),
        ([1, None], pa.int64(), ValueType.STRING),
        (["a", None], pa.string(), ValueType.BYTES),
        ([b"a", None], pa.binary(), ValueType.STRING),
        ([1_700_000_000, None], pa.int64(), ValueType.UNIX_TIMESTAMP),
        ([[1, 2], None, []], pa.list_(pa.int64()), ValueType.INT64_LIST),
        ([[1, 2], None, [3]], pa.list_(pa.int32()), ValueType.INT32_LIST),
        ([["a", None], None, []], pa.list_(pa.string()), ValueType.STRING_LIST),
        ([[1.5], None], pa.list_(pa.float64()), ValueType.DOUBLE_LIST),
        ([[1.5], None], pa.list_(pa.float32()), ValueType.FLOAT_LIST),
        ([[True, False], None], pa.list_(pa.bool_()), ValueType.BOOL_LIST),
        ([[b"x"], None], pa.list_(pa.binary()), ValueType.BYTES_LIST),
        (
            [[datetime(2024, 1, 1, tzinfo=timezone.utc)], None],
            pa.list_(pa.timestamp("us", tz="UTC")),
            ValueType.UNIX_TIMESTAMP_LIST,
        ),
        ([[1, 2, 2], None], pa.list_(pa.int64()), ValueType.INT64_SET),
        (['{"a": 1}', None], pa.string(), ValueType.JSON),
        (["5f8c2e2a-0000-4000-8000-000000000000", None], pa.string(), ValueType.UUID),
        (["1.25", None], pa.string(), ValueType.DECIMAL),
        ([b"%PDF", None], pa.binary(), ValueType.PDF_BYTES),
        ([{"k": 1}, None], pa.struct([("k", pa.int64())]), ValueType.MAP),
        ([[("k", 1)], None], pa.map_(pa.string(), pa.int64()), ValueType.MAP),
        *(  # a kind of Feast 0.65 on
            [
                (
                    [datetime(2024, 1, 1, tzinfo=timezone.utc), None],
                    pa.timestamp("us", tz="UTC"),
                    ValueType.ZONED_TIMESTAMP,
                )
            ]
            if hasattr(ValueType, "ZONED_TIMESTAMP")
            else []
        ),
    ],
)
def test_other_types_and_mismatched_columns_go_through_feast(values, kind, value_type):
    one(values, kind, value_type)


def test_ints_above_two_to_the_53_with_nulls_round_as_in_feast():
    one([2**62 + 1, None, -(2**60) - 3], pa.int64(), ValueType.INT64)
    one([2**63 + 5, 1], pa.uint64(), ValueType.INT64)  # beyond int64: Feast's path


# --------------------------------------------------------------------------- whole views


def mixed_columns(n: int, features: int, seed: int = 1) -> tuple[dict, dict]:
    rng = np.random.default_rng(seed)
    mix = [
        (
            ValueType.INT64,
            lambda: pa.array(
                rng.integers(-(2**40), 2**40, n), pa.int64(), mask=rng.random(n) < 0.1
            ),
        ),
        (
            ValueType.DOUBLE,
            lambda: pa.array(rng.normal(size=n), pa.float64(), mask=rng.random(n) < 0.1),
        ),
        (
            ValueType.FLOAT,
            lambda: pa.array(rng.normal(size=n).astype(np.float32), mask=rng.random(n) < 0.1),
        ),
        (
            ValueType.INT32,
            lambda: pa.array(rng.integers(-500, 500, n).astype(np.int32), mask=rng.random(n) < 0.1),
        ),
        (ValueType.BOOL, lambda: pa.array(rng.random(n) < 0.5, mask=rng.random(n) < 0.1)),
        (
            ValueType.STRING,
            lambda: pa.array(
                [f"s{v}" * (v % 50) for v in rng.integers(0, 10**6, n)], mask=rng.random(n) < 0.1
            ),
        ),
        (
            ValueType.UNIX_TIMESTAMP,
            lambda: pa.array(
                rng.integers(0, 2**40, n), pa.timestamp("ms"), mask=rng.random(n) < 0.1
            ),
        ),
        (
            ValueType.BYTES,
            lambda: pa.array(
                [bytes([v % 256]) * (v % 7) for v in rng.integers(0, 10**6, n)], pa.binary()
            ),
        ),
        (
            ValueType.INT64_LIST,
            lambda: pa.array(
                [[int(v)] * (v % 3) for v in rng.integers(0, 9, n)], pa.list_(pa.int64())
            ),
        ),
    ]
    columns, types = {}, {}
    for j in range(features):
        value_type, make = mix[j % len(mix)]
        columns[f"f{j}"] = make()
        types[f"f{j}"] = value_type
    return columns, types


@pytest.mark.parametrize("features", [1, 4, 9, 21, 250])
def test_mixed_views(features):
    columns, types = mixed_columns(300, features)
    assert_same(columns, types)


def test_sliced_and_chunked_columns():
    columns, types = mixed_columns(400, 18)
    sliced = {name: column.slice(37, 200) for name, column in columns.items()}
    expected = assert_same(sliced, types)
    schema = Schema(list(types.items()))
    chunked = {
        name: pa.chunked_array([column.slice(0, 50), column.slice(50)])
        for name, column in sliced.items()
    }
    seconds, nanos = times(200)
    assert encode_columns(schema, chunked, seconds, nanos).to_pylist() == expected


def test_missing_columns_are_null_and_extra_columns_refused():
    schema = Schema([("a", ValueType.INT64), ("b", ValueType.STRING)])
    seconds, nanos = times(2)
    records = encode_columns(schema, {"b": pa.array(["x", None])}, seconds, nanos).to_pylist()
    assert [decode(schema, r).values for r in records] == [(b"", b"\x12\x01x"), (b"", b"")]
    with pytest.raises(DragonflyDataError, match=r"\['c'\]"):
        encode_columns(schema, {"c": pa.array([1, 2])}, seconds, nanos)


def test_bad_lengths_and_times_are_refused():
    schema = Schema([("a", ValueType.INT64)])
    with pytest.raises(DragonflyDataError, match="length"):
        encode_columns(schema, {"a": pa.array([1, 2, 3])}, *times(2))
    with pytest.raises(DragonflyDataError, match="nanos"):
        encode_columns(schema, {"a": pa.array([1])}, np.zeros(1, np.int64), np.full(1, 10**9))


def test_no_rows():
    schema = Schema([("a", ValueType.INT64)])
    empty = np.zeros(0, np.int64)
    assert encode_columns(schema, {"a": pa.array([], pa.int64())}, empty, empty).to_pylist() == []


def test_event_times_at_the_extremes():
    schema = Schema([])
    seconds = np.array([-(2**63), -1, 0, 1, 2**63 - 1], dtype=np.int64)
    nanos = np.array([0, 999_999_999, 0, 1, 999_999_999], dtype=np.int64)
    records = encode_columns(schema, {}, seconds, nanos).to_pylist()
    assert [r[1:13] for r in records] == [
        event_time_bytes(int(s), int(n)) for s, n in zip(seconds, nanos)
    ]
    assert records == sorted(records)
    assert [decode(schema, r).event_time for r in records] == list(
        zip(seconds.tolist(), nanos.tolist())
    )


def test_fallback_values_from_feasts_converter(monkeypatch):
    """Should Feast's converter ever set another field than the type's, the column path keeps
    it whole (state 2), exactly as the row path does."""
    from feast.protos.feast.types.Value_pb2 import Value as ValueProto

    from feast_dragonfly._store.compact import columns as module

    made = {
        ValueType.DOUBLE: [ValueProto(int32_val=3), ValueProto(), ValueProto(double_val=0.5)],
        ValueType.STRING_LIST: [
            ValueProto(int64_val=1),
            ValueProto(string_list_val={"val": ["a"]}),
            ValueProto(),
        ],
    }
    monkeypatch.setattr(module, "python_values_to_proto_values", lambda values, kind: made[kind])
    schema = Schema([("d", ValueType.DOUBLE), ("l", ValueType.STRING_LIST)])
    columns = {"d": pa.array([1, 2, 3], pa.int8()), "l": pa.array([[1], [2], [3]])}
    seconds, nanos = times(3)
    records = encode_columns(schema, columns, seconds, nanos).to_pylist()
    for row, record in enumerate(records):
        values = {"d": made[ValueType.DOUBLE][row], "l": made[ValueType.STRING_LIST][row]}
        expected = encode_row(schema, values, EPOCH)
        assert (
            record
            == expected[:1] + event_time_bytes(int(seconds[row]), int(nanos[row])) + expected[13:]
        )
    assert [record[17] for record in records] == [0b1010, 0b0100, 0b0001]
