"""``_store/compact/proto_columns.py``: ``online_write_batch`` rows encoded a feature at a time.

* for every supported type — all typed, with nulls (missing or empty), with fallback values
  (another field set) — the records are byte for byte ``codec.encode_row``'s;
* a feature no row names is null throughout; event times go into every header;
* typed scalar columns take the packed path (no ``classify`` call); one with a null, or of a
  type kept as a protobuf, does not;
* varints of every width, negative int32 (ten bytes) included, come out as encode_row's;
* several STRING / BYTES features between fixed ones (entries joined per row, alone or beside
  a list's), and rows naming different features of one size (and a stranger in a later row).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.value_type import ValueType
from test_codec import SUPPORTED, samples

from feast_dragonfly._store.compact import columns, proto_columns
from feast_dragonfly._store.compact.codec import decode, encode_row
from feast_dragonfly._store.compact.proto_columns import encode_rows
from feast_dragonfly._store.compact.schema import Schema
from feast_dragonfly._store.layout import event_time_parts
from feast_dragonfly.errors import DragonflyDataError

T0 = datetime(2026, 12, 1, 8, 0, 1, 250000, tzinfo=timezone.utc)


def _encode_both(schema: Schema, rows: list[dict[str, ValueProto]]) -> tuple[list, list]:
    """(``encode_rows``' records, ``encode_row``'s) for rows at T0, T0 + 1 s, ..."""
    times = [T0 + timedelta(seconds=k, microseconds=k) for k in range(len(rows))]
    parts = [event_time_parts(moment) for moment in times]
    seconds = np.array([s for s, _ in parts], dtype=np.int64)
    nanos = np.array([n for _, n in parts], dtype=np.int64)
    ours = encode_rows(schema, rows, seconds, nanos).to_pylist()
    expected = [encode_row(schema, row, moment) for row, moment in zip(rows, times)]
    return ours, expected


def _fallback(kind: ValueType) -> ValueProto:
    """A value setting another field than ``kind``'s."""
    if kind in (ValueType.INT64, ValueType.INT64_LIST):
        return ValueProto(string_val="not an int")
    return ValueProto(int64_val=-3)


@pytest.mark.parametrize("kind", SUPPORTED, ids=lambda kind: kind.name)
def test_every_type_gives_encode_rows_bytes(kind):
    schema = Schema([("x", kind), ("n", ValueType.INT64), ("s", ValueType.STRING)])
    values = samples(kind)
    typed = [
        {"x": v, "n": ValueProto(int64_val=k), "s": ValueProto(string_val="é" * k)}
        for k, v in enumerate(values)
    ]
    ours, expected = _encode_both(schema, typed)
    assert ours == expected
    mixed = [dict(row) for row in typed]
    mixed[0]["x"] = ValueProto()  # null, set explicitly
    del mixed[-1]["x"]  # null, missing
    mixed.append({"x": _fallback(kind), "s": ValueProto(bool_val=True)})  # fallbacks
    ours, expected = _encode_both(schema, mixed)
    assert ours == expected
    assert decode(schema, ours[-1]).values[0] == _fallback(kind).SerializeToString()


def test_a_feature_no_row_names_is_null():
    schema = Schema([("a", ValueType.DOUBLE), ("b", ValueType.STRING)])
    ours, expected = _encode_both(schema, [{"a": ValueProto(double_val=1.0)}] * 3)
    assert ours == expected
    assert decode(schema, ours[0]).values == (ValueProto(double_val=1.0).SerializeToString(), b"")


def test_typed_columns_are_packed_and_mixed_ones_classified(monkeypatch):
    calls = []

    def counting(schema, i, protos, n):
        calls.append(schema.names[i])
        return columns.by_value(schema, i, protos, n)

    monkeypatch.setattr(proto_columns, "by_value", counting)
    schema = Schema(
        [
            (name, kind)
            for name, kind in [
                ("f", ValueType.FLOAT),
                ("t", ValueType.STRING),
                ("l", ValueType.INT64_LIST),
            ]
        ]
    )
    rows = [
        {
            "f": ValueProto(float_val=0.5),
            "t": ValueProto(string_val="x"),
            "l": samples(ValueType.INT64_LIST)[1],
        },
        {"f": ValueProto(float_val=1.5), "t": ValueProto(), "l": samples(ValueType.INT64_LIST)[0]},
    ]
    ours, expected = _encode_both(schema, rows)
    assert ours == expected
    assert calls == ["t", "l"]  # t has a null; l, a list, is kept as a protobuf


@pytest.mark.parametrize("kind", [ValueType.INT32, ValueType.INT64, ValueType.UNIX_TIMESTAMP])
def test_varints_of_every_width(kind):
    field = {ValueType.INT32: "int32_val"}.get(kind, kind.name.lower() + "_val")
    bound = 31 if kind == ValueType.INT32 else 63
    numbers = [0, 1, -1, 127, 128, 2**14, 2**21 + 3, 2**35, -(2**bound), 2**bound - 1]
    numbers = [x for x in numbers if -(2**bound) <= x < 2**bound]
    schema = Schema([("v", kind)])
    ours, expected = _encode_both(schema, [{"v": ValueProto(**{field: x})} for x in numbers])
    assert ours == expected


@pytest.mark.parametrize("with_list", [False, True], ids=["strings only", "beside a list"])
def test_several_string_and_bytes_features_between_fixed_ones(with_list):
    kinds = [ValueType.STRING, ValueType.DOUBLE, ValueType.BYTES, ValueType.INT64]
    kinds += [ValueType.STRING, ValueType.BOOL]
    if with_list:  # another feature with entries: each string feature's entries go on their own
        kinds.append(ValueType.INT64_LIST)
    schema = Schema([(f"f{i}", kind) for i, kind in enumerate(kinds)])
    rows = []
    for k in range(40):
        row = {
            name: samples(kind)[k % len(samples(kind))] for name, kind in zip(schema.names, kinds)
        }
        row["f0"] = ValueProto(string_val="é" * (k % 7))  # "" included
        row["f2"] = ValueProto(bytes_val=bytes(range(k % 200)))  # past one length byte
        rows.append(row)
    ours, expected = _encode_both(schema, rows)
    assert ours == expected


def test_rows_naming_different_features_of_one_size():
    schema = Schema([("a", ValueType.INT64), ("b", ValueType.STRING), ("c", ValueType.DOUBLE)])
    rows = [
        {"a": ValueProto(int64_val=1), "b": ValueProto(string_val="x")},
        {"a": ValueProto(int64_val=2), "c": ValueProto(double_val=0.5)},  # same size, other names
        {"b": ValueProto(string_val="y")},
    ]
    ours, expected = _encode_both(schema, rows)
    assert ours == expected
    with pytest.raises(DragonflyDataError, match="zzz"):  # a later row naming a stranger
        encode_rows(schema, [rows[0], {"a": ValueProto(), "zzz": ValueProto()}], *_times(2))


def _times(n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
