"""Compact records from ``online_write_batch`` rows, a feature at a time.

:func:`~feast_dragonfly._store.compact.codec.encode_row` pays a dict lookup, a ``WhichOneof``,
a ``getattr`` and some list work per value inside one Python loop, and protobuf attribute
access is the dear part. Taken a feature at a time across the batch, each value is serialized
instead (one C call) and numpy reads the column's bytes at once: a scalar feature's values
are all typed when every serialization starts with the tag of the feature's own field (and,
for FLOAT / DOUBLE, has its width); then the fixed slots are the payload bytes (FLOAT, DOUBLE)
or the decoded varints (INT32, INT64, BOOL, UNIX_TIMESTAMP), and a STRING / BYTES entry is the
serialization without its tag byte. A column with nulls or fallback values, or of a type the
record keeps as a protobuf (lists, maps, JSON, ...), goes value by value through
``codec.classify`` (``columns.by_value``). The records are byte for byte what ``encode_row``
writes (the tests hold the two to the same bytes for every type, null and fallback).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import chain
from operator import itemgetter

import numpy as np
import pyarrow as pa
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.value_type import ValueType

from feast_dragonfly._store.compact.columns import (
    SLOT_DTYPES,
    Encoded,
    assemble,
    by_value,
)
from feast_dragonfly._store.compact.schema import Schema

#: What a row without a value for a feature stands for: Feast's null (nothing set).
NULL = ValueProto()

_SERIALIZE = ValueProto.SerializeToString
#: Wire tag byte of each scalar type's own ValueProto field, and how its payload is packed:
#: copied (fixed-width little-endian, then its width), a varint, or length-prefixed bytes.
_COPIED = {ValueType.FLOAT: (0x35, 4), ValueType.DOUBLE: (0x29, 8)}
_VARINTS = {
    ValueType.INT32: 0x18,
    ValueType.INT64: 0x20,
    ValueType.BOOL: 0x38,
    ValueType.UNIX_TIMESTAMP: 0x40,
}
_PREFIXED = {ValueType.STRING: 0x12, ValueType.BYTES: 0x0A}


def encode_rows(
    schema: Schema,
    rows: Sequence[Mapping[str, ValueProto]],
    seconds: np.ndarray,
    nanos: np.ndarray,
) -> pa.BinaryArray:
    """One record per row (a feature a row lacks is null) at event times ``seconds`` /
    ``nanos`` (int64 arrays, nanos in 0..999 999 999). Values are serialized row by row — the
    order they sit in memory, which is markedly faster than a feature at a time across the
    rows — and each feature's column is then a strided slice of that list."""
    n = len(seconds)
    names, flat = _row_major(schema, rows)
    width = len(names)
    raws = list(map(_SERIALIZE, flat))
    column_of = {name: j for j, name in enumerate(names)}
    encoded: list[Encoded | None] = []
    for i, name in enumerate(schema.names):
        j = column_of.get(name)
        if j is None:
            encoded.append(None)  # no row names it: null throughout
        else:
            encoded.append(_column(schema, i, flat[j::width], raws[j::width], n))
    return assemble(schema, encoded, seconds, nanos)


def _row_major(
    schema: Schema, rows: Sequence[Mapping[str, ValueProto]]
) -> tuple[list[str], list[ValueProto]]:
    """The schema's features some row names, and every row's values of them, row after row
    (:data:`NULL` where a row lacks one)."""
    present = set().union(*rows)
    names = [name for name in schema.names if name in present]
    if not names:
        return names, []
    pick = itemgetter(*names)
    try:  # every row names every feature (nearly always): one C call per row
        if len(names) == 1:
            return names, list(map(pick, rows))
        return names, list(chain.from_iterable(map(pick, rows)))
    except KeyError:
        return names, [row.get(name, NULL) for row in rows for name in names]


def _column(
    schema: Schema, i: int, values: Sequence[ValueProto], raws: Sequence[bytes], n: int
) -> Encoded | None:
    """Feature ``i``'s column from its values and their serializations."""
    kind = schema.types[i]
    if kind not in _COPIED and kind not in _VARINTS and kind not in _PREFIXED:
        return by_value(schema, i, values, n)  # lists, maps, JSON, ...: protobuf-packed anyway
    lengths = np.fromiter(map(len, raws), np.int64, n)
    if not lengths.any():
        return None  # null throughout
    data = np.frombuffer(b"".join(raws), np.uint8)
    starts = np.cumsum(lengths) - lengths
    typed = np.ones(n, dtype=np.uint8)
    if kind in _COPIED:
        tag, width = _COPIED[kind]
        if (lengths != width + 1).any() or (data[starts] != tag).any():
            return by_value(schema, i, values, n)
        slots = data.reshape(n, width + 1)[:, 1:].copy().view(SLOT_DTYPES[kind]).reshape(n)
        return typed, slots, ()
    tag = _VARINTS[kind] if kind in _VARINTS else _PREFIXED[kind]
    if (lengths < 2).any() or (data[starts] != tag).any():
        return by_value(schema, i, values, n)
    if kind in _VARINTS:
        return typed, _varints(data, starts + 1, lengths - 1).astype(SLOT_DTYPES[kind]), ()
    # STRING / BYTES: the serialized value is its tag, then exactly the entry the record holds.
    keep = np.ones(len(data), dtype=bool)
    keep[starts] = False
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths - 1, out=offsets[1:])
    if offsets[-1] >= 2**31:
        return by_value(schema, i, values, n)
    entries = pa.Array.from_buffers(
        pa.binary(),
        n,
        [None, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(data[keep].tobytes())],
    )
    return typed, None, (entries,)


def _varints(data: np.ndarray, starts: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """The protobuf varints of ``sizes`` bytes at ``starts`` in ``data``, as int64 (two's
    complement: what ``int64_val`` / ``int32_val`` hold)."""
    out = np.zeros(len(starts), dtype=np.uint64)
    for k in range(int(sizes.max())):
        more = sizes > k
        group = (data[starts[more] + k] & 0x7F).astype(np.uint64)
        out[more] |= group << np.uint64(7 * k)
    return out.view(np.int64)
