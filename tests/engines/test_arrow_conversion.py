"""Column-wise conversion (``feast_dragonfly._engines.arrow``) against Feast's own converters, byte for byte.

Reference: what Feast's ``local`` engine does to a column — ``python_values_to_proto_values(
column.to_numpy(zero_copy_only=False), value_type)`` then ``SerializeToString()`` per value,
``serialize_entity_key`` per row, and ``Timestamp.FromDatetime(pd.to_datetime(...)
.to_pydatetime())`` per event time. No server needed.
"""

from __future__ import annotations

import math
import warnings
from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.type_map import python_values_to_proto_values
from feast.value_type import ValueType
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feast_dragonfly._engines import arrow

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
INT32 = st.integers(min_value=-(2**31), max_value=2**31 - 1)
FLOATS = st.floats(allow_nan=True, allow_infinity=True)
FLOATS32 = st.floats(width=32, allow_nan=True, allow_infinity=True)
TEXT = st.text(max_size=12)  # unicode, empty strings included
BLOBS = st.binary(max_size=40)
# Nanosecond instants pandas can hold (it backs Feast's reading of them).
NANOS = st.integers(min_value=-(2**62), max_value=2**62)


def feast_bytes(array: pa.Array | pa.ChunkedArray, value_type: ValueType) -> list[bytes]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        protos = python_values_to_proto_values(array.to_numpy(zero_copy_only=False), value_type)
    return [p.SerializeToString() for p in protos]


def assert_same(array: pa.Array | pa.ChunkedArray, value_type: ValueType) -> None:
    """Same bytes as Feast, or — where Feast rejects the column — the same exception type."""
    try:
        expected = feast_bytes(array, value_type)
    except Exception as exc:  # noqa: BLE001
        with pytest.raises(type(exc)):
            arrow.value_bytes_list(array, value_type)
        return
    assert arrow.value_bytes_list(array, value_type) == expected


def column(values: list, kind: pa.DataType) -> pa.Array:
    return pa.array(values, kind)


def nullable(strategy: st.SearchStrategy) -> st.SearchStrategy:
    return st.lists(st.one_of(st.none(), strategy), min_size=1, max_size=30)


# --------------------------------------------------------------------------- scalars


@SETTINGS
@given(nullable(INT64))
def test_int64(values):
    assert_same(column(values, pa.int64()), ValueType.INT64)


@SETTINGS
@given(st.lists(INT64, min_size=1, max_size=30))
def test_int64_without_nulls_keeps_every_bit(values):
    assert_same(column(values, pa.int64()), ValueType.INT64)


@SETTINGS
@given(nullable(INT32), st.sampled_from([pa.int32(), pa.int64()]))
def test_int32(values, kind):
    assert_same(column(values, kind), ValueType.INT32)


@SETTINGS
@given(nullable(st.integers(min_value=0, max_value=255)), st.sampled_from([pa.uint8(), pa.int8()]))
def test_small_integer_columns(values, kind):
    values = [v if v is None or kind == pa.uint8() else v - 128 for v in values]
    assert_same(column(values, kind), ValueType.INT64)


@SETTINGS
@given(nullable(FLOATS32))
def test_float32_nan_inf_and_nulls(values):
    assert_same(column(values, pa.float32()), ValueType.FLOAT)


@SETTINGS
@given(nullable(FLOATS))
def test_float64_column_declared_float32(values):
    assert_same(column(values, pa.float64()), ValueType.FLOAT)


@SETTINGS
@given(nullable(FLOATS))
def test_float64(values):
    assert_same(column(values, pa.float64()), ValueType.DOUBLE)


@SETTINGS
@given(nullable(st.booleans()))
def test_bool(values):
    assert_same(column(values, pa.bool_()), ValueType.BOOL)


@SETTINGS
@given(nullable(TEXT), st.sampled_from([pa.string(), pa.large_string()]))
def test_string_unicode_and_empty(values, kind):
    assert_same(column(values, kind), ValueType.STRING)


@SETTINGS
@given(nullable(BLOBS), st.sampled_from([pa.binary(), pa.large_binary()]))
def test_bytes(values, kind):
    assert_same(column(values, kind), ValueType.BYTES)


@SETTINGS
@given(nullable(NANOS), st.sampled_from(["s", "ms", "us", "ns"]), st.sampled_from([None, "UTC"]))
def test_unix_timestamps_every_unit_nanos_and_nulls(values, unit, tz):
    scale = {"s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}[unit]
    values = [None if v is None else v // scale for v in values]
    assert_same(column(values, pa.timestamp(unit, tz=tz)), ValueType.UNIX_TIMESTAMP)


@pytest.mark.parametrize(
    ("kind", "value_type"),
    [
        (pa.int64(), ValueType.INT64),
        (pa.float32(), ValueType.FLOAT),
        (pa.string(), ValueType.STRING),
        (pa.timestamp("ns"), ValueType.UNIX_TIMESTAMP),
        (pa.bool_(), ValueType.BOOL),
    ],
)
def test_all_null_columns(kind, value_type):
    assert_same(pa.array([None, None, None], kind), value_type)


def test_special_floats_exactly():
    values = [0.0, -0.0, math.inf, -math.inf, math.nan, 1e-45, 3.4028235e38, 1e39, None]
    for kind, value_type in ((pa.float32(), ValueType.FLOAT), (pa.float64(), ValueType.DOUBLE)):
        assert_same(pa.array(values, pa.float64()).cast(kind), value_type)
    assert_same(pa.array(values, pa.float64()), ValueType.FLOAT)


def test_integers_beyond_2_53_with_nulls_round_like_feast():
    """to_numpy() makes an int column with nulls float64: Feast stores the rounded value."""
    values = [2**53 + 1, None, -(2**62) - 3, 2**63 - 1]
    assert_same(pa.array(values, pa.int64()), ValueType.INT64)


# --------------------------------------------------------------------------- lists and the slow path

LIST_CASES = [
    (pa.list_(pa.int32()), ValueType.INT32_LIST, INT32),
    (pa.list_(pa.int64()), ValueType.INT64_LIST, INT64),
    (pa.list_(pa.float32()), ValueType.FLOAT_LIST, st.floats(width=32, allow_nan=False)),
    (pa.list_(pa.float64()), ValueType.DOUBLE_LIST, st.floats(allow_nan=False)),
    (pa.list_(pa.bool_()), ValueType.BOOL_LIST, st.booleans()),
    (pa.list_(pa.string()), ValueType.STRING_LIST, TEXT),
    (pa.list_(pa.binary()), ValueType.BYTES_LIST, BLOBS),
    (
        pa.list_(pa.timestamp("us", tz="UTC")),
        ValueType.UNIX_TIMESTAMP_LIST,
        st.integers(min_value=-(2**50), max_value=2**50),
    ),
]


@pytest.mark.parametrize(("kind", "value_type", "items"), LIST_CASES, ids=lambda c: str(c))
@SETTINGS
@given(data=st.data())
def test_every_list_type_incl_empty_lists_and_none(kind, value_type, items, data):
    lists = data.draw(
        st.lists(st.one_of(st.none(), st.lists(items, max_size=5)), min_size=1, max_size=12)
    )
    # Feast fails on some list columns; we must fail the same way (assert_same checks).
    assert_same(pa.array(lists, kind), value_type)


@pytest.mark.parametrize(
    ("values", "kind", "value_type"),
    [
        ([1.5, 2.0], pa.float32(), ValueType.DOUBLE),  # Feast asserts on the sample type
        ([2**40], pa.int64(), ValueType.INT32),  # out of range for int32
        ([1, 2], pa.int64(), ValueType.STRING),  # str(x)
        ([1, None], pa.int64(), ValueType.DOUBLE),
    ],
)
def test_mismatched_types_behave_exactly_like_feast(values, kind, value_type):
    assert_same(pa.array(values, kind), value_type)


def test_multi_chunk_columns_convert_every_chunk():
    chunked = pa.chunked_array([pa.array([1, 2], pa.int64()), pa.array([3, None, 5], pa.int64())])
    assert arrow.value_bytes_list(chunked, ValueType.INT64) == feast_bytes(
        chunked.combine_chunks(), ValueType.INT64
    )
    assert len(arrow.value_bytes_list(chunked, ValueType.INT64)) == 5


# --------------------------------------------------------------------------- entity keys


def feast_keys(columns: dict, types: dict, suffix: bytes) -> list[bytes]:
    names = list(types)
    protos = {
        name: python_values_to_proto_values(
            pa.array(columns[name]).to_numpy(zero_copy_only=False), types[name]
        )
        for name in names
    }
    return [
        serialize_entity_key(
            EntityKeyProto(join_keys=names, entity_values=[protos[k][i] for k in names]), 3
        )
        + suffix
        for i in range(len(columns[names[0]]))
    ]


@SETTINGS
@given(
    st.lists(st.tuples(INT64, TEXT, INT32, BLOBS), min_size=1, max_size=20),
    st.permutations(["driver_id", "city", "zone", "blob"]),
)
def test_composite_entity_keys_int_and_string(rows, order):
    columns = {
        "driver_id": pa.array([r[0] for r in rows], pa.int64()),
        "city": pa.array([r[1] for r in rows], pa.string()),
        "zone": pa.array([r[2] for r in rows], pa.int32()),
        "blob": pa.array([r[3] for r in rows], pa.binary()),
    }
    all_types = {
        "driver_id": ValueType.INT64,
        "city": ValueType.STRING,
        "zone": ValueType.INT32,
        "blob": ValueType.BYTES,
    }
    for width in (1, 2, 4):
        names = order[:width]
        types = {name: all_types[name] for name in names}
        try:
            expected = feast_keys({n: columns[n] for n in names}, types, b"proj")
        except ValueError:  # e.g. an all-empty bytes key column: Feast cannot key it
            with pytest.raises(ValueError):
                arrow.entity_key_bytes(columns, types, b"proj")
            continue
        assert arrow.entity_key_bytes(columns, types, b"proj").to_pylist() == expected


def test_entity_key_from_an_int32_column_declared_int64():
    columns = {"driver_id": pa.array([1, -2, 3], pa.int32())}
    types = {"driver_id": ValueType.INT64}
    assert arrow.entity_key_bytes(columns, types, b"p").to_pylist() == feast_keys(
        columns, types, b"p"
    )


def test_a_null_join_key_fails_like_feast():
    columns = {"driver_id": pa.array([1, None], pa.int64())}
    types = {"driver_id": ValueType.INT64}
    with pytest.raises(ValueError):
        feast_keys(columns, types, b"p")
    with pytest.raises(ValueError):
        arrow.entity_key_bytes(columns, types, b"p")


# --------------------------------------------------------------------------- event times


def feast_event_time_bytes(array: pa.Array) -> list[bytes]:
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "discarding nonzero nanoseconds"
        for value in pd.to_datetime(array.to_numpy(zero_copy_only=False)):
            moment = value.to_pydatetime()
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=timezone.utc)
            stamp = Timestamp()
            stamp.FromDatetime(moment)
            out.append(stamp.SerializeToString())
    return out


@SETTINGS
@given(
    st.lists(st.integers(min_value=-(2**62), max_value=2**62), min_size=1, max_size=30),
    st.sampled_from(["s", "ms", "us", "ns"]),
)
def test_event_times_truncate_to_microseconds_like_feast(values, unit):
    scale = {"s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}[unit]
    array = pa.array([v // scale for v in values], pa.timestamp(unit, tz="UTC"))
    seconds, nanos = arrow.timestamp_parts(arrow.event_time_micros(array))
    assert arrow.timestamp_bytes(seconds, nanos).to_pylist() == feast_event_time_bytes(array)


def test_event_time_edges():
    edges = [
        datetime(1970, 1, 1, tzinfo=timezone.utc),
        datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc),
        datetime(1900, 1, 1, 0, 0, 0, 1, tzinfo=timezone.utc),
        datetime(2262, 4, 11, tzinfo=timezone.utc),
    ]
    array = pa.array(edges, pa.timestamp("us", tz="UTC"))
    seconds, nanos = arrow.timestamp_parts(arrow.event_time_micros(array))
    assert arrow.timestamp_bytes(seconds, nanos).to_pylist() == feast_event_time_bytes(array)
    assert np.array_equal(seconds, [int(e.timestamp() // 1) for e in edges])
