"""Compact records from ``online_write_batch`` rows, a batch of rows at a time.

:func:`~feast_dragonfly._store.compact.codec.encode_row` pays a dict lookup, a ``WhichOneof``,
a ``getattr`` and some list work per value inside one Python loop, and protobuf attribute
access is the dear part. Here every value is serialized instead (one C call each, row after
row: the order the values sit in memory), the serializations go into one Arrow array, and
numpy reads them a type of feature at a time across the whole batch: a scalar feature's
values are all typed when every serialization starts with the tag of the feature's own
field (and, for FLOAT / DOUBLE, has its width); then the fixed slots are the payload bytes
(FLOAT, DOUBLE) or the decoded varints (INT32, INT64, BOOL, UNIX_TIMESTAMP), and a STRING /
BYTES entry is the serialization without its tag byte. A column with nulls or fallback
values, or of a type the record keeps as a protobuf (lists, maps, JSON, ...), goes value by
value through ``codec.classify`` (``columns.by_value``). The records are byte for byte what
``encode_row`` writes (the tests hold the two to the same bytes for every type, null and
fallback).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from functools import lru_cache
from itertools import chain
from operator import itemgetter
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.value_type import ValueType

from feast_dragonfly._store import varints
from feast_dragonfly._store.compact.columns import (
    SLOT_DTYPES,
    Encoded,
    assemble,
    by_value,
)
from feast_dragonfly._store.compact.schema import Schema
from feast_dragonfly.errors import DragonflyDataError

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
#: ``binary_slice``'s stop for "to the end" (pyarrow 26 fails on the default, None).
_ALL = 2**31 - 1
_NOTHING = pa.scalar(b"", pa.binary())
#: Bytes past the serializations that gathers may touch (a null's start is the next one's).
_PAD = np.zeros(16, dtype=np.uint8)


class _Group(NamedTuple):
    """Features of one packing sharing a wire tag: their positions among the batch's
    features (row-major order) and their indices in the schema."""

    kind: ValueType
    tag: int
    positions: np.ndarray
    indices: tuple[int, ...]


class _Serialized(NamedTuple):
    """A batch's serialized values as an (rows × features) grid over one byte buffer."""

    data: np.ndarray  # every serialization, back to back, then _PAD
    starts: np.ndarray  # (n, width) int64
    lengths: np.ndarray  # (n, width) int64
    values: list[ValueProto]  # row-major, for the value-by-value path
    raws: pa.LargeBinaryArray  # the serializations, row-major


def encode_rows(
    schema: Schema,
    rows: Sequence[Mapping[str, ValueProto]],
    seconds: np.ndarray,
    nanos: np.ndarray,
    ignored: Collection[str] = (),
) -> pa.BinaryArray:
    """One record per row (a feature a row lacks is null) at event times ``seconds`` /
    ``nanos`` (int64 arrays, nanos in 0..999 999 999). Names in ``ignored`` are left out; any
    other name outside the schema raises :class:`DragonflyDataError`."""
    n = len(seconds)
    names, flat = _row_major(schema, rows, ignored)
    encoded: list[Encoded | None] = [None] * len(schema)  # None: no row names it, null
    if names:
        grid = _serialize(flat, n, len(names))
        groups, others = _groups(schema, tuple(names))
        strings: list[tuple[int, int]] = []  # (schema index, position) of typed STRING / BYTES
        for group in groups:
            _encode_group(schema, group, grid, encoded, strings)
        for position, i in others:
            encoded[i] = _by_value(schema, i, grid, position)
        _add_entries(encoded, strings, grid)
    return assemble(schema, encoded, seconds, nanos)


def _row_major(
    schema: Schema, rows: Sequence[Mapping[str, ValueProto]], ignored: Collection[str] = ()
) -> tuple[list[str], list[ValueProto]]:
    """The schema's features some row names, and every row's values of them, row after row
    (:data:`NULL` where a row lacks one)."""
    names = _first_row_names(schema, rows)
    flat = _picked(names, rows) if names else None
    if flat is not None:  # the usual batch: no set of every row's names needed
        return names, flat
    present = set().union(*rows)
    extra = present - schema.index.keys()
    if extra and not extra <= set(ignored):
        raise DragonflyDataError(
            f"features not in the view's compact schema: {sorted(extra - set(ignored))}"
        )
    names = [name for name in schema.names if name in present]
    flat = _picked(names, rows) if names else []
    if flat is None:  # some row lacks a feature: null there
        flat = [row.get(name, NULL) for row in rows for name in names]
    return names, flat


def _first_row_names(schema: Schema, rows: Sequence[Mapping[str, ValueProto]]) -> list[str]:
    """The first row's names in schema order when every row has as many names and the first
    names only features of the schema, else []. Rows of equal size that all hold the first
    row's names name exactly those, so the caller needs no set of every row's names."""
    if not rows:
        return []
    first = rows[0]
    if not first.keys() <= schema.index.keys() or set(map(len, rows)) != {len(first)}:
        return []
    return [name for name in schema.names if name in first]


def _picked(names: list[str], rows: Sequence[Mapping[str, ValueProto]]) -> list[ValueProto] | None:
    """Every row's values of ``names`` (at least one), row after row, one C call per row; None
    when a row lacks one of them."""
    pick = itemgetter(*names)
    try:
        if len(names) == 1:
            return list(map(pick, rows))
        return list(chain.from_iterable(map(pick, rows)))
    except KeyError:
        return None


def _serialize(flat: list[ValueProto], n: int, width: int) -> _Serialized:
    raws = pa.array(list(map(_SERIALIZE, flat)), pa.large_binary())
    offsets = np.frombuffer(raws.buffers()[1], dtype=np.int64, count=len(flat) + 1)
    buffer = raws.buffers()[2]
    data = np.frombuffer(buffer, dtype=np.uint8) if buffer is not None else _PAD[:0]
    data = np.concatenate([data[: offsets[-1]], _PAD])
    return _Serialized(
        data, offsets[:-1].reshape(n, width), np.diff(offsets).reshape(n, width), flat, raws
    )


@lru_cache(maxsize=256)
def _groups(
    schema: Schema, names: tuple[str, ...]
) -> tuple[tuple[_Group, ...], tuple[tuple[int, int], ...]]:
    """The batch's features by packing (scalar groups), and (position, schema index) of
    those of a type kept as a protobuf."""
    by_kind: dict[ValueType, list[tuple[int, int]]] = {}
    others: list[tuple[int, int]] = []
    for position, name in enumerate(names):
        i = schema.index[name]
        kind = schema.types[i]
        if kind in _COPIED or kind in _VARINTS or kind in _PREFIXED:
            by_kind.setdefault(kind, []).append((position, i))
        else:
            others.append((position, i))
    groups = []
    for kind, members in by_kind.items():
        tag = _COPIED[kind][0] if kind in _COPIED else {**_VARINTS, **_PREFIXED}[kind]
        positions = np.array([position for position, _ in members], dtype=np.int64)
        groups.append(_Group(kind, tag, positions, tuple(i for _, i in members)))
    return tuple(groups), tuple(others)


def _encode_group(
    schema: Schema,
    group: _Group,
    grid: _Serialized,
    encoded: list[Encoded | None],
    strings: list[tuple[int, int]],
) -> None:
    """Fill ``encoded`` for one group's features: packed where every value is typed, null
    where none is set, value by value otherwise. Typed STRING / BYTES features go to
    ``strings`` (their entries are cut from the grid afterwards)."""
    kind, tag, positions = group.kind, group.tag, group.positions
    lengths = grid.lengths[:, positions]
    starts = grid.starts[:, positions]
    first = grid.data[starts]
    if kind in _COPIED:
        typed = (lengths == _COPIED[kind][1] + 1) & (first == tag)
    else:
        typed = (lengths >= 2) & (first == tag)
    all_typed = typed.all(axis=0)
    unset = ~lengths.any(axis=0)
    n = len(lengths)
    states = np.ones(n, dtype=np.uint8)
    good = np.flatnonzero(all_typed)
    if kind in _COPIED and len(good):
        slots = _unaligned(grid.data, SLOT_DTYPES[kind])[starts[:, good] + 1]
    elif kind in _VARINTS and len(good):
        numbers = varints.decode(
            grid.data, starts[:, good].ravel() + 1, lengths[:, good].ravel() - 1
        )
        slots = numbers.astype(SLOT_DTYPES[kind]).reshape(n, len(good))
    for column, k in enumerate(good):
        i = group.indices[k]
        if kind in _PREFIXED:
            encoded[i] = (states, None, ())
            strings.append((i, int(positions[k])))
        else:
            encoded[i] = (states, slots[:, column], ())
    for k in np.flatnonzero(~all_typed & ~unset):
        i = group.indices[k]
        encoded[i] = _by_value(schema, i, grid, int(positions[k]))


def _unaligned(data: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``data`` as one ``dtype`` value starting at every byte (element i: bytes i..i+width),
    so a gather of payloads at arbitrary offsets is one index per value, not per byte."""
    count = len(data) - dtype.itemsize + 1
    return np.ndarray((max(count, 0),), dtype=dtype, buffer=data, strides=(1,))


def _by_value(schema: Schema, i: int, grid: _Serialized, position: int) -> Encoded:
    width = grid.lengths.shape[1]
    return by_value(schema, i, grid.values[position::width], len(grid.lengths))


def _add_entries(
    encoded: list[Encoded | None], strings: list[tuple[int, int]], grid: _Serialized
) -> None:
    """The variable-region entries of the typed STRING / BYTES features: each value's
    serialization without its tag byte. When no other feature has entries, a record's are
    contiguous in the row-major grid, so all go out as one array on the first of them."""
    if not strings:
        return
    others = any(column is not None and column[2] for column in encoded)
    if not others:
        positions = np.array(sorted(position for _, position in strings), dtype=np.int64)
        first = min(i for i, _ in strings)
        states, slot, _ = encoded[first]  # type: ignore[misc]
        encoded[first] = (states, slot, (_entries(grid, positions),))
        return
    for i, position in strings:
        states, slot, _ = encoded[i]  # type: ignore[misc]
        encoded[i] = (states, slot, (_entries(grid, np.array([position], dtype=np.int64)),))


def _entries(grid: _Serialized, positions: np.ndarray) -> pa.BinaryArray:
    """Per row, the serializations at ``positions`` without their tag bytes, joined: three
    Arrow kernels (take, slice, join) that copy whole values, not a byte at a time."""
    n, width = grid.lengths.shape
    picked = (np.arange(n, dtype=np.int64)[:, None] * width + positions).ravel()
    if int(grid.lengths.ravel()[picked].sum()) >= 2**31:
        raise DragonflyDataError("compact records over 2 GiB in one batch: write smaller batches")
    values = pc.binary_slice(grid.raws.take(picked).cast(pa.binary()), 1, _ALL)
    bounds = np.arange(0, len(picked) + 1, len(positions), dtype=np.int32)
    return pc.binary_join(pa.ListArray.from_arrays(pa.array(bounds), values), _NOTHING)
