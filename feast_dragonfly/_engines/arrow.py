"""Column-wise Arrow → Feast bytes: serialized ``ValueProto`` values and entity-key bytes.

Feast's materialization converts every value into a Python protobuf object
(``feast.type_map.python_values_to_proto_values`` over ``column.to_numpy()``) and every row's
entity key into an ``EntityKeyProto`` before serializing them one by one. Here the same bytes
are produced a column at a time with numpy / Arrow compute kernels:

* the common scalar types (int32, int64, float, double, bool, string, bytes, unix timestamp)
  are encoded directly into protobuf wire format (tag byte + varint / fixed-width payload);
* everything else (lists, sets, maps, JSON, decimals, a column whose Arrow type does not match
  the declared Feast type, ...) goes through Feast's own converter, so it is slower but
  byte-identical by construction — including Feast's errors for values it rejects.

The fast paths reproduce Feast's value semantics exactly, quirks included: ``to_numpy()``
turns an integer column with nulls into float64 (so large integers lose precision exactly as
they do in Feast), NaN becomes an unset value like null, a null timestamp becomes
``INT64_MIN`` seconds, and event times are truncated to microseconds. The hypothesis tests in
``tests/engines/test_arrow_conversion.py`` check every path against Feast's converter byte for byte.
"""

from __future__ import annotations

import struct

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.type_map import python_values_to_proto_values
from feast.value_type import ValueType

# ValueProto field tags (field number << 3 | wire type), from feast/types/Value.proto.
_TAG_BYTES = 0x0A  # 1, length-delimited
_TAG_STRING = 0x12  # 2, length-delimited
_TAG_INT32 = 0x18  # 3, varint
_TAG_INT64 = 0x20  # 4, varint
_TAG_DOUBLE = 0x29  # 5, fixed64
_TAG_FLOAT = 0x35  # 6, fixed32
_TAG_BOOL = 0x38  # 7, varint
_TAG_UNIX_TIMESTAMP = 0x40  # 8, varint

# Entity-key value type codes written by serialize_entity_key (feast.types.Value.ValueType).
_KEY_TYPE_BYTES = 1
_KEY_TYPE_STRING = 2
_KEY_TYPE_INT32 = 3
_KEY_TYPE_INT64 = 4
_KEY_TYPE_UNIX_TIMESTAMP = 12

_INT64_MIN = -(2**63)
_TWO_63 = float(2**63)
_EMPTY = pa.array([], pa.binary())


# --------------------------------------------------------------------------- wire helpers


def _varint_matrix(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Protobuf varints of int64 values (two's complement, 10 bytes for negatives):
    an (n, 10) byte matrix, left-aligned, and each row's length."""
    unsigned = values.astype(np.int64, copy=False).view(np.uint64)
    lengths = np.ones(len(unsigned), dtype=np.int64)
    for k in range(1, 10):
        lengths += unsigned >= np.uint64(1 << (7 * k))
    matrix = np.empty((len(unsigned), 10), dtype=np.uint8)
    for k in range(10):
        byte = ((unsigned >> np.uint64(7 * k)) & np.uint64(0x7F)).astype(np.uint8)
        byte |= (k < lengths - 1).astype(np.uint8) << 7
        matrix[:, k] = byte
    return matrix, lengths


def _binary_from_matrix(matrix: np.ndarray, lengths: np.ndarray) -> pa.BinaryArray:
    """Row i of the result is ``matrix[i, :lengths[i]]``; no nulls."""
    n, width = matrix.shape
    mask = np.arange(width)[None, :] < lengths[:, None]
    data = np.ascontiguousarray(matrix)[mask]
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    return pa.Array.from_buffers(
        pa.binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(data.tobytes())]
    )


def _tagged_varints(tag: int, values: np.ndarray, present: np.ndarray) -> pa.BinaryArray:
    """``tag + varint(value)`` where ``present``, empty bytes elsewhere."""
    varints, lengths = _varint_matrix(values)
    matrix = np.empty((len(values), 11), dtype=np.uint8)
    matrix[:, 0] = tag
    matrix[:, 1:] = varints
    return _binary_from_matrix(matrix, np.where(present, lengths + 1, 0))


def _tagged_fixed(tag: int, values: np.ndarray, present: np.ndarray) -> pa.BinaryArray:
    """``tag + little-endian fixed-width value`` where ``present``, empty bytes elsewhere."""
    little = values.astype(values.dtype.newbyteorder("<"), copy=False)
    width = little.dtype.itemsize
    matrix = np.empty((len(values), 1 + width), dtype=np.uint8)
    matrix[:, 0] = tag
    matrix[:, 1:] = np.ascontiguousarray(little).view(np.uint8).reshape(len(values), width)
    return _binary_from_matrix(matrix, np.where(present, width + 1, 0))


def _tagged_length_delimited(tag: int, array: pa.Array) -> pa.BinaryArray:
    """``tag + varint(len) + bytes`` for string/binary values, empty bytes for nulls."""
    binary = array.cast(pa.binary()) if not pa.types.is_binary(array.type) else array
    lengths = pc.binary_length(binary).fill_null(0).to_numpy(zero_copy_only=False)
    varints, var_lengths = _varint_matrix(lengths.astype(np.int64))
    matrix = np.empty((len(binary), 11), dtype=np.uint8)
    matrix[:, 0] = tag
    matrix[:, 1:] = varints
    headers = _binary_from_matrix(matrix, var_lengths + 1)
    joined = pc.binary_join_element_wise(headers, binary, b"")
    return joined.fill_null(b"") if binary.null_count else joined


def _validity(array: pa.Array) -> np.ndarray:
    if array.null_count == 0:
        return np.ones(len(array), dtype=bool)
    return array.is_valid().to_numpy(zero_copy_only=False)


def _has_non_empty(array: pa.Array) -> bool:
    longest = pc.max(pc.binary_length(array)).as_py()
    return bool(longest)


def _as_chunk(array: pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(array, pa.ChunkedArray):
        return array.combine_chunks() if array.num_chunks != 1 else array.chunk(0)
    return array


# --------------------------------------------------------------------------- values


def _integers_as_feast_sees_them(array: pa.Array) -> np.ndarray | None:
    """The int64 values Feast's ``int(x)`` produces from ``array.to_numpy()``, or None when
    that would not be a plain int64 (Feast's own path then decides, errors included).

    With nulls, ``to_numpy()`` yields float64, so values above 2**53 are rounded exactly as
    Feast rounds them; null slots are irrelevant (they encode as empty values)."""
    if array.null_count == 0:
        if pa.types.is_uint64(array.type):
            values = array.to_numpy()
            if len(values) and values.max() >= np.uint64(2**63):
                return None
            return values.astype(np.int64)
        return array.to_numpy().astype(np.int64, copy=False)
    as_float = array.cast(pa.float64(), safe=False).fill_null(0.0).to_numpy()
    if len(as_float) and np.abs(as_float).max() >= _TWO_63:
        return None
    return as_float.astype(np.int64)


def _encode_fast(array: pa.Array, value_type: ValueType) -> pa.BinaryArray | None:
    """Serialized ValueProto bytes for the common scalar cases, or None to use Feast's path."""
    kind = array.type
    n = len(array)
    if value_type == ValueType.UNIX_TIMESTAMP:
        if not pa.types.is_timestamp(kind):
            return None
        # Feast: each to_numpy() datetime64 -> astype("datetime64[s]") -> int; NaT (null)
        # becomes INT64_MIN rather than an unset value.
        seconds = array.to_numpy(zero_copy_only=False).astype("datetime64[s]").astype(np.int64)
        return _tagged_varints(_TAG_UNIX_TIMESTAMP, seconds, np.ones(n, dtype=bool))

    if array.null_count == n:
        return pa.array([b""] * n, pa.binary())  # Feast: no sample -> every value unset
    valid = _validity(array)

    if value_type in (ValueType.INT64, ValueType.INT32):
        if not pa.types.is_integer(kind):
            return None
        values = _integers_as_feast_sees_them(array)
        if values is None:
            return None
        if value_type == ValueType.INT32:
            live = values[valid]
            if len(live) and (live.min() < -(2**31) or live.max() >= 2**31):
                return None  # protobuf rejects it; let Feast raise its own error
            return _tagged_varints(_TAG_INT32, values, valid)
        return _tagged_varints(_TAG_INT64, values, valid)

    if value_type in (ValueType.FLOAT, ValueType.DOUBLE):
        if value_type == ValueType.DOUBLE and not pa.types.is_float64(kind):
            return None  # Feast asserts on the sample's type, or converts oddly
        if value_type == ValueType.FLOAT and not (
            pa.types.is_float32(kind) or pa.types.is_float64(kind)
        ):
            return None
        values = array.fill_null(0).to_numpy(zero_copy_only=False)
        present = valid & ~np.isnan(values)  # Feast: pd.isnull(NaN) -> unset value
        if value_type == ValueType.FLOAT:
            with np.errstate(over="ignore"):
                return _tagged_fixed(_TAG_FLOAT, values.astype(np.float32), present)
        return _tagged_fixed(_TAG_DOUBLE, values.astype(np.float64, copy=False), present)

    if value_type == ValueType.BOOL:
        if not pa.types.is_boolean(kind):
            return None
        values = array.fill_null(False).to_numpy(zero_copy_only=False).astype(np.int64)
        return _tagged_varints(_TAG_BOOL, values, valid)

    if value_type == ValueType.STRING:
        if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
            return None
        return _tagged_length_delimited(_TAG_STRING, array)

    if value_type == ValueType.BYTES:
        if not (pa.types.is_binary(kind) or pa.types.is_large_binary(kind)):
            return None
        if not _has_non_empty(array):
            # Feast's type sample skips empty bytes: with none left, every value is unset.
            return pa.array([b""] * n, pa.binary())
        return _tagged_length_delimited(_TAG_BYTES, array)

    return None


def _encode_with_feast(array: pa.Array, value_type: ValueType) -> pa.BinaryArray:
    protos = python_values_to_proto_values(array.to_numpy(zero_copy_only=False), value_type)
    return pa.array([p.SerializeToString() for p in protos], pa.binary())


def value_bytes(array: pa.Array | pa.ChunkedArray, value_type: ValueType) -> pa.BinaryArray:
    """Each value of ``array`` as Feast's ``ValueProto.SerializeToString()`` (b"" when unset)."""
    array = _as_chunk(array)
    if len(array) == 0:
        return _EMPTY
    fast = _encode_fast(array, value_type)
    return fast if fast is not None else _encode_with_feast(array, value_type)


def value_bytes_list(array: pa.Array | pa.ChunkedArray, value_type: ValueType) -> list[bytes]:
    """:func:`value_bytes` as Python bytes (what tests compare with Feast's output)."""
    return value_bytes(array, value_type).to_pylist()


# --------------------------------------------------------------------------- entity keys


def _key_payload(array: pa.Array, value_type: ValueType) -> tuple[int, pa.Array] | None:
    """(entity-key type code, payload bytes) for one join-key column, or None (slow path)."""
    kind = array.type
    if array.null_count:
        return None  # Feast fails on a null join key; let its path raise
    if value_type in (ValueType.INT64, ValueType.UNIX_TIMESTAMP, ValueType.INT32):
        if value_type == ValueType.UNIX_TIMESTAMP:
            return None  # rare as a join key: Feast's path
        if not pa.types.is_integer(kind):
            return None
        values = _integers_as_feast_sees_them(array)
        if values is None:
            return None
        if value_type == ValueType.INT32:
            if len(values) and (values.min() < -(2**31) or values.max() >= 2**31):
                return None
            raw = values.astype("<i4")
            code = _KEY_TYPE_INT32
        else:
            raw = values.astype("<i8")
            code = _KEY_TYPE_INT64
        width = raw.dtype.itemsize
        n = len(raw)
        offsets = np.arange(n + 1, dtype=np.int32) * width
        payload = pa.Array.from_buffers(
            pa.binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(raw.tobytes())]
        )
        return code, payload
    if value_type == ValueType.STRING and (
        pa.types.is_string(kind) or pa.types.is_large_string(kind)
    ):
        return _KEY_TYPE_STRING, array.cast(pa.binary())
    if value_type == ValueType.BYTES and (
        pa.types.is_binary(kind) or pa.types.is_large_binary(kind)
    ):
        if not _has_non_empty(array):
            return None  # Feast converts an all-empty bytes column to unset values and fails
        return _KEY_TYPE_BYTES, array.cast(pa.binary())
    return None


def _typed_length_prefix(code: int, payload: pa.BinaryArray) -> pa.BinaryArray:
    """``<I type><I len>`` headers for each payload."""
    lengths = pc.binary_length(payload).to_numpy(zero_copy_only=False).astype("<u4")
    n = len(lengths)
    matrix = np.empty((n, 2), dtype="<u4")
    matrix[:, 0] = code
    matrix[:, 1] = lengths
    offsets = np.arange(n + 1, dtype=np.int32) * 8
    return pa.Array.from_buffers(
        pa.binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(matrix.tobytes())]
    )


def entity_key_bytes(
    columns: dict[str, pa.Array | pa.ChunkedArray],
    join_key_types: dict[str, ValueType],
    suffix: bytes = b"",
    key_version: int = 3,
) -> pa.BinaryArray:
    """Feast's ``serialize_entity_key(EntityKeyProto(...), key_version) + suffix`` per row.

    ``columns`` maps each join key to its column; ``join_key_types`` gives the value type
    Feast converts it with (the entity's dtype), in the feature view's entity-column order.
    """
    names = list(join_key_types)
    arrays = {name: _as_chunk(columns[name]) for name in names}
    n = len(arrays[names[0]]) if names else 0
    if n == 0:
        return _EMPTY
    payloads = {}
    if key_version == 3:
        for name in names:
            payload = _key_payload(arrays[name], join_key_types[name])
            if payload is None:
                break
            payloads[name] = payload
    if len(payloads) != len(names):
        return _entity_keys_with_feast(arrays, join_key_types, suffix, key_version)

    ordered = [names[0]] if len(names) == 1 else sorted(names)
    prefix = [struct.pack("<I", len(ordered))]
    for name in ordered:
        encoded = name.encode("utf8")
        prefix += [struct.pack("<II", _KEY_TYPE_STRING, len(encoded)), encoded]
    parts: list[pa.Array | bytes] = [b"".join(prefix)]
    for name in ordered:
        code, payload = payloads[name]
        parts += [_typed_length_prefix(code, payload), payload]
    parts.append(suffix)
    arrays_only = [p for p in parts if not isinstance(p, bytes)]
    if not arrays_only:  # pragma: no cover - there is always a join key here
        return pa.array([b"".join(parts)] * n, pa.binary())
    return pc.binary_join_element_wise(*parts, b"")


def _entity_keys_with_feast(
    arrays: dict[str, pa.Array],
    join_key_types: dict[str, ValueType],
    suffix: bytes,
    key_version: int,
) -> pa.BinaryArray:
    names = list(join_key_types)
    protos = {
        name: python_values_to_proto_values(
            arrays[name].to_numpy(zero_copy_only=False), join_key_types[name]
        )
        for name in names
    }
    n = len(arrays[names[0]])
    keys = [
        serialize_entity_key(
            EntityKeyProto(join_keys=names, entity_values=[protos[k][i] for k in names]),
            entity_key_serialization_version=key_version,
        )
        + suffix
        for i in range(n)
    ]
    return pa.array(keys, pa.binary())


# --------------------------------------------------------------------------- event times


def event_time_micros(array: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Event times as int64 microseconds since the epoch (UTC), as Feast stores them.

    Feast turns each value into a ``datetime`` (``pd.Timestamp.to_pydatetime()`` drops the
    nanoseconds, flooring) before ``Timestamp.FromDatetime``; naive values are UTC, and an
    aware column's values are instants. Null slots come out as 0 (callers filter them).
    """
    array = _as_chunk(array)
    kind = array.type
    if not pa.types.is_timestamp(kind):
        array = pc.cast(array, pa.timestamp("us"))
        kind = array.type
    raw = array.cast(pa.int64()).fill_null(0).to_numpy(zero_copy_only=False)
    unit = kind.unit
    if unit == "ns":
        return np.floor_divide(raw, 1000)
    if unit == "us":
        return raw
    if unit == "ms":
        return raw * 1000
    return raw * 1_000_000


def timestamp_parts(micros: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(seconds, nanos) of ``google.protobuf.Timestamp.FromDatetime`` for these instants."""
    seconds = np.floor_divide(micros, 1_000_000)
    nanos = (micros - seconds * 1_000_000) * 1000
    return seconds, nanos


def timestamp_bytes(seconds: np.ndarray, nanos: np.ndarray) -> pa.BinaryArray:
    """Serialized ``google.protobuf.Timestamp`` per row (zero fields are omitted, as protobuf
    does: the epoch serializes to b"")."""
    n = len(seconds)
    sec_var, sec_len = _varint_matrix(seconds)
    nan_var, nan_len = _varint_matrix(nanos)
    sec_len = np.where(seconds != 0, sec_len + 1, 0)
    nan_len = np.where(nanos != 0, nan_len + 1, 0)
    matrix = np.zeros((n, 22), dtype=np.uint8)
    rows = np.arange(n)
    # seconds field (tag 0x08) first, then nanos (tag 0x10) right after it
    matrix[:, 0] = 0x08
    matrix[:, 1:11] = sec_var
    # Shift the nanos part to start right after the seconds part of each row.
    nanos_part = np.empty((n, 11), dtype=np.uint8)
    nanos_part[:, 0] = 0x10
    nanos_part[:, 1:] = nan_var
    columns = np.arange(11)[None, :]
    mask = columns < nan_len[:, None]
    starts = np.where(seconds != 0, sec_len, 0)
    target_cols = (starts[:, None] + columns)[mask]
    target_rows = np.broadcast_to(rows[:, None], (n, 11))[mask]
    matrix[target_rows, target_cols] = nanos_part[mask]
    return _binary_from_matrix(matrix, sec_len + nan_len)
