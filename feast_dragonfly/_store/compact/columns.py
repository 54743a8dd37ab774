"""Compact records a column at a time (materialization): Arrow columns in, one record per row.

The records are byte for byte those :func:`~feast_dragonfly._store.compact.codec.encode_row`
writes for the ValueProtos Feast's materialization would build from the same columns
(``feast.type_map.python_values_to_proto_values(column.to_numpy(zero_copy_only=False), type)``),
Feast's value semantics included, as in :mod:`feast_dragonfly._engines.arrow`: an integer
column with nulls goes through float64 (large values round as they do in Feast), NaN is null,
a null timestamp is the typed value ``INT64_MIN`` seconds (not null), an all-null column is
null throughout, and a BYTES column without a non-empty value is null throughout.

The header, state bitmap and fixed region of every row have the schema's width, so they are
one numpy record array (a field per header part, bitmap byte and slot) filled a feature at a
time; the variable region is joined onto it with one Arrow kernel. The common scalar types (INT32, INT64, FLOAT, DOUBLE, BOOL, UNIX_TIMESTAMP,
STRING, BYTES, in the Arrow types Feast reads them from) take no per-row Python; everything
else (lists, maps, JSON, a column whose Arrow type does not match its Feast type, ...) goes
through Feast's converter and :func:`~feast_dragonfly._store.compact.codec.classify` value by
value, so it is slower but the same by construction, Feast's errors included.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from feast.type_map import python_values_to_proto_values
from feast.value_type import ValueType

from feast_dragonfly._protocol.record_format import HEADER_SIZE, VERSION
from feast_dragonfly._store.compact.codec import classify
from feast_dragonfly._store.compact.schema import Schema
from feast_dragonfly._store.varints import varint
from feast_dragonfly.errors import DragonflyDataError

_TWO_63 = float(2**63)
SLOT_DTYPES: dict[ValueType, np.dtype] = {
    ValueType.BOOL: np.dtype("u1"),
    ValueType.INT32: np.dtype("<i4"),
    ValueType.FLOAT: np.dtype("<f4"),
    ValueType.INT64: np.dtype("<i8"),
    ValueType.UNIX_TIMESTAMP: np.dtype("<i8"),
    ValueType.DOUBLE: np.dtype("<f8"),
}

#: One feature's column: its states (uint8 per row), its fixed-slot values (zero unless the
#: state is 1; None when not fixed-width) and its variable-region entries (arrays joined in
#: order, each row's entries b"" or null where it has none).
Encoded = tuple[np.ndarray, np.ndarray | None, tuple[pa.Array, ...]]

#: The header, bitmap and fixed region of one record as a numpy record type, per schema.
_LAYOUTS: dict[str, np.dtype] = {}
_NO_ENTRIES: tuple[pa.Array, ...] = ()


def _layout(schema: Schema) -> np.dtype:
    layout = _LAYOUTS.get(schema.canonical)
    if layout is None:
        fields = [("version", "u1", 0), ("seconds", ">u8", 1), ("nanos", ">u4", 9)]
        fields.append(("schema", "<u4", 13))
        fields += [(f"b{j}", "u1", HEADER_SIZE + j) for j in range(schema.bitmap_size)]
        fields += [
            (f"f{i}", SLOT_DTYPES[kind].str, schema.fixed_offset + slot)
            for i, (kind, slot) in enumerate(zip(schema.types, schema.slots))
            if slot >= 0
        ]
        layout = np.dtype(
            {
                "names": [name for name, _, _ in fields],
                "formats": [code for _, code, _ in fields],
                "offsets": [offset for _, _, offset in fields],
                "itemsize": schema.var_offset,
            }
        )
        if len(_LAYOUTS) >= 256:
            _LAYOUTS.clear()
        _LAYOUTS[schema.canonical] = layout
    return layout


def _as_chunk(array: pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(array, pa.ChunkedArray):
        return array.combine_chunks() if array.num_chunks != 1 else array.chunk(0)
    return array


def _validity(array: pa.Array) -> np.ndarray:
    if array.null_count == 0:
        return np.ones(len(array), dtype=bool)
    bits = np.frombuffer(array.buffers()[0], dtype=np.uint8)
    start = array.offset
    return np.unpackbits(bits, bitorder="little")[start : start + len(array)].astype(bool)


def _values(array: pa.Array) -> np.ndarray:
    """A fixed-width column's values, whatever lies under its nulls (callers mask them)."""
    if array.null_count == 0:
        return array.to_numpy()
    dtype = np.dtype(array.type.to_pandas_dtype())
    return np.frombuffer(
        array.buffers()[1], dtype=dtype, count=len(array), offset=array.offset * dtype.itemsize
    )


def _integers_as_feast_sees_them(array: pa.Array, valid: np.ndarray) -> np.ndarray | None:
    """The int64 values Feast's ``int(x)`` makes of ``array.to_numpy()`` (float64 when there
    are nulls), or None when that is not a plain int64 (Feast's path decides)."""
    values = _values(array)
    if array.null_count == 0:
        if values.dtype == np.uint64 and len(values) and values.max() >= np.uint64(2**63):
            return None
        return values.astype(np.int64, copy=False)
    as_float = np.where(valid, values.astype(np.float64), 0.0)
    if len(as_float) and np.abs(as_float).max() >= _TWO_63:
        return None
    return as_float.astype(np.int64)


def length_prefixes(lengths: np.ndarray, valid: np.ndarray) -> pa.BinaryArray:
    """The varint of each length where ``valid``, b"" elsewhere (lengths < 2**35)."""
    n = len(lengths)
    lengths = np.where(valid, lengths, 0).astype(np.uint64)
    if not n or lengths.max() < 0x80:  # the common case: one byte each
        count = valid.astype(np.int64)
        data = lengths[valid].astype(np.uint8)
    else:
        count = np.ones(n, dtype=np.int64)
        for k in range(1, 5):
            count += lengths >= np.uint64(1 << (7 * k))
        matrix = np.empty((n, 5), dtype=np.uint8)
        for k in range(5):
            byte = ((lengths >> np.uint64(7 * k)) & np.uint64(0x7F)).astype(np.uint8)
            matrix[:, k] = byte | ((k < count - 1).astype(np.uint8) << 7)
        count = np.where(valid, count, 0)
        data = matrix[np.arange(5)[None, :] < count[:, None]]
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(count, out=offsets[1:])
    return pa.Array.from_buffers(
        pa.binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(data.tobytes())]
    )


def as_binary(array: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """A string / binary column as ``pa.binary()`` and each value's length (0 for nulls)."""
    binary = array if pa.types.is_binary(array.type) else array.cast(pa.binary())
    n = len(binary)
    offsets = np.frombuffer(
        binary.buffers()[1], dtype=np.int32, count=n + 1, offset=binary.offset * 4
    )
    return binary, np.diff(offsets)


def _fast(array: pa.Array, value_type: ValueType, n: int) -> Encoded | None:
    """The common scalar cases with numpy / Arrow kernels, or None (Feast's path)."""
    kind = array.type
    if value_type == ValueType.UNIX_TIMESTAMP:
        if not pa.types.is_timestamp(kind):
            return None
        # Feast: datetime64 -> datetime64[s] -> int; NaT becomes INT64_MIN, a set value.
        seconds = array.to_numpy(zero_copy_only=False).astype("datetime64[s]").astype(np.int64)
        return np.ones(n, dtype=np.uint8), seconds, _NO_ENTRIES
    if array.null_count == n:
        return np.zeros(n, dtype=np.uint8), None, _NO_ENTRIES
    valid = _validity(array)
    values: np.ndarray | None
    if value_type in (ValueType.INT64, ValueType.INT32):
        values = _integers_as_feast_sees_them(array, valid) if pa.types.is_integer(kind) else None
        if values is None:
            return None
        if value_type == ValueType.INT32 and (values.min() < -(2**31) or values.max() >= 2**31):
            return None  # protobuf rejects it: Feast's path raises its own error
        present = valid
    elif value_type in (ValueType.FLOAT, ValueType.DOUBLE):
        is_double = pa.types.is_float64(kind)
        if not (is_double or (value_type == ValueType.FLOAT and pa.types.is_float32(kind))):
            return None
        values = _values(array)
        present = valid & ~np.isnan(values)  # Feast: NaN is null
        if value_type == ValueType.FLOAT:
            with np.errstate(over="ignore"):
                values = values.astype(np.float32)
    elif value_type == ValueType.BOOL:
        if not pa.types.is_boolean(kind):
            return None
        filled = array.fill_null(False) if array.null_count else array
        values = filled.to_numpy(zero_copy_only=False)
        present = valid
    elif value_type in (ValueType.STRING, ValueType.BYTES):
        if value_type == ValueType.STRING:
            if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
                return None
        elif not (pa.types.is_binary(kind) or pa.types.is_large_binary(kind)):
            return None
        binary, lengths = as_binary(array)
        if value_type == ValueType.BYTES and not np.where(valid, lengths, 0).any():
            # Feast's type sample skips empty bytes: with none left, every value is null.
            return np.zeros(n, dtype=np.uint8), None, _NO_ENTRIES
        return valid.astype(np.uint8), None, (length_prefixes(lengths, valid), binary)
    else:
        return None
    slot = np.where(present, values, 0).astype(SLOT_DTYPES[value_type], copy=False)
    return present.astype(np.uint8), slot, _NO_ENTRIES


def _with_feast(schema: Schema, i: int, array: pa.Array, n: int) -> Encoded:
    """Feast's converter, then :func:`by_value`."""
    protos = python_values_to_proto_values(array.to_numpy(zero_copy_only=False), schema.types[i])
    return by_value(schema, i, protos, n)


def by_value(schema: Schema, i: int, protos: Sequence[Any], n: int) -> Encoded:
    """Feature ``i``'s column from its ValueProtos (or None: null), :func:`classify` value by
    value (``encode_row``'s rule): the path of every column the fast ones do not take."""
    states = np.zeros(n, dtype=np.uint8)
    fixed = schema.slots[i] >= 0
    slot_values: list = [0] * n if fixed else []
    entries: list[bytes] = [b""] * n
    any_entry = False
    for row, proto in enumerate(protos):
        state, slot, data = classify(schema, i, proto)
        states[row] = state
        if fixed:
            slot_values[row] = slot
        if data is not None:
            entries[row] = varint(len(data)) + data
            any_entry = True
    slot = np.array(slot_values, dtype=SLOT_DTYPES[schema.types[i]]) if fixed else None
    return states, slot, (pa.array(entries, pa.binary()),) if any_entry else _NO_ENTRIES


def encode_columns(
    schema: Schema,
    columns: Mapping[str, pa.Array | pa.ChunkedArray],
    seconds: np.ndarray,
    nanos: np.ndarray,
) -> pa.BinaryArray:
    """One record per row: row i of every column, at event time ``(seconds[i], nanos[i])``.

    A schema feature without a column is null; a column outside the schema raises
    :class:`DragonflyDataError`, as does a length mismatch or an out-of-range time. The
    result is one ``pa.binary()`` array, so a batch holds under 2 GiB of records.
    """
    n = len(seconds)
    extra = sorted(set(columns) - set(schema.index))
    if extra:
        raise DragonflyDataError(f"columns not in the view's compact schema: {extra}")
    seconds = np.asarray(seconds, dtype=np.int64)
    nanos = np.asarray(nanos, dtype=np.int64)
    if len(nanos) != n or any(len(column) != n for column in columns.values()):
        raise DragonflyDataError("columns and event times differ in length")
    if n and (nanos.min() < 0 or nanos.max() >= 1_000_000_000):
        raise DragonflyDataError("event time nanos out of range 0..999999999")
    if n == 0:
        return pa.array([], pa.binary())

    encoded: list[Encoded | None] = []
    for i, name in enumerate(schema.names):
        column = columns.get(name)
        if column is None:
            encoded.append(None)  # null: state 0, zero slot
            continue
        array = _as_chunk(column)
        encoded.append(_fast(array, schema.types[i], n) or _with_feast(schema, i, array, n))
    return assemble(schema, encoded, seconds, nanos)


def assemble(
    schema: Schema, encoded: list[Encoded | None], seconds: np.ndarray, nanos: np.ndarray
) -> pa.BinaryArray:
    """The records of ``len(seconds)`` rows from each feature's encoded column (None: null
    throughout), at event times ``seconds`` / ``nanos`` (int64, nanos checked by the caller)."""
    n = len(seconds)
    head = np.zeros(n, dtype=_layout(schema))
    head["version"] = VERSION
    head["seconds"] = seconds.view(np.uint64) ^ np.uint64(1 << 63)
    head["nanos"] = nanos
    head["schema"] = schema.id
    states: list[np.ndarray | None] = [None] * (4 * schema.bitmap_size)
    parts: list[pa.Array] = []
    for i, column in enumerate(encoded):
        if column is None:
            continue
        states[i], slot, entries = column
        if slot is not None:
            head[f"f{i}"] = slot
        parts += entries
    for j in range(schema.bitmap_size):
        byte = np.zeros(n, dtype=np.uint8)
        for k, feature_states in enumerate(states[4 * j : 4 * j + 4]):
            if feature_states is not None:
                byte |= feature_states << (2 * k)
        head[f"b{j}"] = byte

    width = schema.var_offset
    offsets = np.arange(n + 1, dtype=np.int64) * width
    if offsets[-1] >= 2**31:
        raise DragonflyDataError("compact records over 2 GiB in one batch: write smaller batches")
    fixed = pa.Array.from_buffers(
        pa.binary(),
        n,
        [None, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(head.view(np.uint8))],
    )
    if not parts:
        return fixed
    return pc.binary_join_element_wise(
        fixed, *parts, b"", null_handling="replace", null_replacement=""
    )
