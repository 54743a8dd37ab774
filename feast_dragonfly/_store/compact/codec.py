"""Compact records, row by row: one view's event time and features as one string, and back.

Record format v1, byte by byte (offsets 0-based; n = number of features in the schema):

=============  ==================================================================================
byte 0         format version: ``0x01``.
bytes 1..8     event time, whole seconds since the epoch (int64) + 2**63, as u64 **big**-endian.
bytes 9..12    event time, nanoseconds (0..999 999 999), u32 **big**-endian. Bytes 1..12
               compared as plain strings order records by event time, negative seconds included:
               the Lua scripts compare ``record:sub(2, 13)`` (:data:`EVENT_TIME_SLICE`).
bytes 13..16   schema id, u32 **little**-endian: murmur3 (seed 0, unsigned) of the canonical
               schema text (:mod:`feast_dragonfly._store.compact.schema`).
bitmap         ceil(2n / 8) bytes. Feature i's state is in bits ``2*(i%4)`` (low) and
               ``2*(i%4)+1`` of bitmap byte ``i//4``; bits past the last feature are 0.
               0 = null (Feast's null: a ValueProto with nothing set, stored as b"");
               1 = typed value (the ValueProto sets the field of the feature's type);
               2 = fallback (it sets another field, e.g. ``int32_val`` for a DOUBLE feature:
               the whole serialized ValueProto is kept, in the variable region);
               3 = reserved, never written (decoding raises).
fixed region   one slot per fixed-width feature, in schema order, present whatever the state
               (zero-filled unless the state is 1): BOOL 1 byte (0 or 1), INT32 i32 LE,
               FLOAT f32 LE, INT64 and UNIX_TIMESTAMP i64 LE, DOUBLE f64 LE.
variable       for each feature, in schema order, that has state 1 and is variable-width
region         (any type but the five fixed-width ones), or that has state 2 (any type): its
               length as a minimal protobuf varint (unsigned LEB128), then its bytes: STRING
               the UTF-8 text, BYTES the raw bytes, every other type (lists, sets, maps, JSON,
               UUID, decimals, ...) and every fallback the serialized ValueProto.
end            nothing follows the last variable-region entry.
=============  ==================================================================================

Decoding gives back, per feature, exactly the serialized ValueProto Feast's layout stores
(typed values are transcoded straight to protobuf wire bytes), and never one feature's bytes
as another's: a record that is truncated, too long, of another version or schema, with a
reserved state or a malformed length raises :class:`~feast_dragonfly.errors.DragonflyDataError`.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, NamedTuple

from feast.protos.feast.types.Value_pb2 import Value as ValueProto

from feast_dragonfly._protocol.record_format import HEADER_SIZE, VERSION
from feast_dragonfly._store.compact.fast_decode import all_typed, error, long_length, picked
from feast_dragonfly._store.compact.schema import (
    BOOL,
    LENGTH,
    RAW,
    SMALL_VARINTS,
    VARINT,
    Schema,
)

# Re-exported: the admin tools' conversion reaches the Feast layout's event time through the codec.
from feast_dragonfly._store.layout import event_time_parts as event_time_parts
from feast_dragonfly._store.layout import timestamp_bytes as timestamp_bytes
from feast_dragonfly._store.varints import varint
from feast_dragonfly.errors import DragonflyDataError

#: Bytes 1..12 (0-based) as Lua's 1-based inclusive ``string.sub`` positions.
EVENT_TIME_SLICE = (2, 13)

_BIAS = 1 << 63
_HEAD = struct.Struct(">BQI")  # version, biased seconds, nanos
_TIME = struct.Struct(">QI")
_ID = struct.Struct("<I")
# bitmap byte -> its four 2-bit states, one byte each.
_EXPAND = tuple(bytes((b >> shift) & 3 for shift in (0, 2, 4, 6)) for b in range(256))


class Decoded(NamedTuple):
    """One decoded record: ``values`` in the order of the schema asked for, each the serialized
    ValueProto Feast stores (b"" for null) or, from :func:`decode_by_name` only, None for a
    feature the record does not have."""

    event_time: tuple[int, int]  # (seconds, nanos)
    schema_id: int
    values: tuple[bytes | None, ...]


# --------------------------------------------------------------------------- event time


def event_time_bytes(seconds: int, nanos: int) -> bytes:
    """Bytes 1..12 of a record with this event time (what the Lua scripts compare)."""
    _check_time(seconds, nanos)
    return _TIME.pack(seconds + _BIAS, nanos)


def _check_time(seconds: int, nanos: int) -> None:
    if not -_BIAS <= seconds < _BIAS or not 0 <= nanos < 1_000_000_000:
        raise DragonflyDataError(f"event time out of range: seconds={seconds}, nanos={nanos}")


# --------------------------------------------------------------------------- encoding


def classify(schema: Schema, i: int, value: Any) -> tuple[int, Any, bytes | None]:
    """Feature ``i``'s ValueProto (or None) as (state, fixed-slot value, variable bytes).
    The slot value is 0 unless the state is 1 and the feature fixed-width; the variable bytes
    are None when nothing goes to that region. :func:`encode_row` applies the same rule
    inline (it is its hot loop); the tests hold the two to the same bytes."""
    which = None if value is None else value.WhichOneof("val")
    fixed = schema.slots[i] >= 0
    if which is None:
        return 0, 0, None
    if which == schema.value_fields[i]:
        if fixed:
            return 1, getattr(value, which), None
        kind = schema.kinds[i]
        if kind == LENGTH:
            data = getattr(value, which)
            return 1, 0, data.encode("utf-8") if isinstance(data, str) else data
        return 1, 0, value.SerializeToString()
    return 2, 0, value.SerializeToString()


def encode_row(schema: Schema, values: Mapping[str, ValueProto], event_time: datetime) -> bytes:
    """One record: ``values`` (feature name -> ValueProto; a missing name is null) at
    ``event_time``. A name outside the schema raises :class:`DragonflyDataError`."""
    if len(values) > len(schema) or not values.keys() <= schema.index.keys():
        extra = sorted(set(values) - set(schema.index))
        raise DragonflyDataError(f"features not in the view's compact schema: {extra}")
    seconds, nanos = event_time_parts(event_time)
    _check_time(seconds, nanos)
    bits = 0
    slots: list[Any] = []
    var: list[bytes] = []
    get = values.get
    # classify() inlined: this loop runs once per feature of every row written.
    for shift, name, field, kind, fixed in schema.encoding:
        value = get(name)
        which = value.WhichOneof("val") if value is not None else None
        if value is None or which is None:
            if fixed:
                slots.append(0)
            continue
        if which == field:
            bits |= 1 << shift
            if fixed:
                slots.append(getattr(value, field))
                continue
            if kind == LENGTH:
                data = getattr(value, field)
                if type(data) is str:
                    data = data.encode("utf-8")
            else:
                data = value.SerializeToString()
        else:
            bits |= 2 << shift
            if fixed:
                slots.append(0)
            data = value.SerializeToString()
        var.append(varint(len(data)))
        var.append(data)
    return b"".join(
        (
            _HEAD.pack(VERSION, seconds + _BIAS, nanos),
            _ID.pack(schema.id),
            bits.to_bytes(schema.bitmap_size, "little"),
            schema.fixed.pack(*slots),
            *var,
        )
    )


# --------------------------------------------------------------------------- decoding


def read_header(record: bytes) -> tuple[int, int, int]:
    """(seconds, nanos, schema id) of a record, checking only its header."""
    if len(record) < HEADER_SIZE:
        raise error(f"{len(record)} bytes, shorter than its header")
    version, biased, nanos = _HEAD.unpack_from(record)
    if version != VERSION:
        raise error(f"format version {version}, not {VERSION}")
    if nanos >= 1_000_000_000:
        raise error(f"event time nanos {nanos} out of range")
    return biased - _BIAS, nanos, _ID.unpack_from(record, 13)[0]


def decode(schema: Schema, record: bytes) -> Decoded:
    """The record's event time and every feature's serialized ValueProto (b"" for null), in
    schema order. A record of another schema raises (use :func:`decode_by_name`)."""
    return _decode(schema, record, read_header(record))


def _decode(schema: Schema, record: bytes, header: tuple[int, int, int]) -> Decoded:
    """:func:`decode` of a record whose header was read already."""
    size = len(record)
    seconds, nanos, schema_id = header
    if schema_id != schema.id:
        raise error(f"written under schema {schema_id:#010x}, not {schema.id:#010x}")
    if size < schema.var_offset:
        raise error(f"{size} bytes, shorter than its fixed part ({schema.var_offset})")
    bitmap = record[HEADER_SIZE : schema.fixed_offset]
    typed, fast = all_typed(schema)
    if bitmap == typed:  # every feature a typed value: the straight-line decoder
        try:
            return Decoded((seconds, nanos), schema_id, fast(record, size))
        except IndexError:
            raise error(f"truncated ({size} bytes)") from None
    rest = len(schema) & 3
    if rest and bitmap[-1] >> (2 * rest):
        raise error("state bits set past the last feature")
    states = b"".join(map(_EXPAND.__getitem__, bitmap))
    ints = schema.integers.unpack_from(record, schema.fixed_offset)
    pos = schema.var_offset
    out: list[bytes | None] = []
    append = out.append
    try:
        for (kind, a, b, tag), state in zip(schema.steps, states):
            if state == 1:
                if kind == VARINT:
                    value = ints[a]
                    append(b[value] if 0 <= value < SMALL_VARINTS else tag + varint(value))
                    continue
                if kind == RAW:
                    append(tag + record[a:b])
                    continue
                if kind == BOOL:
                    if ints[a] > 1:
                        raise error(f"bool slot holds {ints[a]}")
                    append(b[ints[a]])
                    continue
            elif state == 0:
                append(b"")
                continue
            elif state == 3:
                raise error("reserved state 3")
            # A length-prefixed entry: state 1 of LENGTH / PROTO, or state 2 of any kind.
            length = record[pos]
            start = pos + 1
            if length > 0x7F:
                length, start = long_length(record, pos)
            end = start + length
            if end > size:
                raise IndexError
            if state == 1 and kind == LENGTH:
                append(tag + record[pos:end])
            elif length:
                append(record[start:end])
            else:
                raise error("an empty ValueProto stored as a value")
            pos = end
    except IndexError:
        raise error(f"truncated ({size} bytes)") from None
    if pos != size:
        raise error(f"{size - pos} bytes past its last value")
    return Decoded((seconds, nanos), schema_id, tuple(out))


#: Reads one record (see :func:`picked_reader`).
PickedReader = Callable[[bytes], "tuple[int, int, tuple[bytes, ...]] | None"]
_READERS: dict[tuple[Schema, tuple[int, ...], bool], PickedReader] = {}


def picked_reader(schema: Schema, pick: tuple[int, ...], framed: bool = False) -> PickedReader:
    """A function giving (seconds, nanos, the serialized ValueProtos of the features at
    ``pick``) of a record written under ``schema`` whose every feature is typed — the read
    path's common case, decoded no further than the features asked for
    (``fast_decode.picked``) — and None for any other record (another schema or version, a
    null or fallback value, a short or odd header): :func:`decode_by_name` reads those, and
    reports what is wrong with them. ``framed``: each value as its ``FeatureVector`` entry
    (``value_columns.frame``). Built once per schema, pick and framing."""
    reader = _READERS.get((schema, pick, framed))
    if reader is not None:
        return reader
    typed = all_typed(schema)[0]
    decoder = picked(schema, pick, framed)
    id_bytes, fixed_offset, var_offset = schema.id_bytes, schema.fixed_offset, schema.var_offset
    unpack_time = _TIME.unpack_from

    def read(record: bytes) -> tuple[int, int, tuple[bytes, ...]] | None:
        if (
            record[13:HEADER_SIZE] != id_bytes
            or record[HEADER_SIZE:fixed_offset] != typed
            or record[0] != VERSION
            or len(record) < var_offset
        ):
            return None
        biased, nanos = unpack_time(record, 1)
        if nanos >= 1_000_000_000:
            return None
        try:
            return biased - _BIAS, nanos, decoder(record, len(record))
        except IndexError:
            raise error(f"truncated ({len(record)} bytes)") from None

    if len(_READERS) >= 1024:
        _READERS.clear()
    _READERS[(schema, pick, framed)] = read
    return read


def _picks(own: Schema, wanted: Schema) -> tuple[int, ...]:
    picks = wanted.picks.get(own.canonical)
    if picks is None:
        picks = tuple(
            -1 if (j := own.index.get(name, -1)) < 0 or own.types[j] != kind else j
            for name, kind in wanted.features
        )
        if len(wanted.picks) >= 64:
            wanted.picks.clear()
        wanted.picks[own.canonical] = picks
    return picks


def decode_by_name(record: bytes, schemas: Mapping[int, Schema], wanted: Schema) -> Decoded:
    """The record decoded with its own schema (``schemas[its id]``), its values then matched
    by name to ``wanted``'s features: a feature the record lacks, or holds under another type,
    is None; one it holds but ``wanted`` lacks is dropped. An unknown schema id gives None for
    every feature (the event time is still read)."""
    header = read_header(record)
    seconds, nanos, schema_id = header
    if schema_id == wanted.id:
        return _decode(wanted, record, header)
    own = schemas.get(schema_id)
    if own is None:
        return Decoded((seconds, nanos), schema_id, (None,) * len(wanted))
    values = _decode(own, record, header).values
    return Decoded(
        (seconds, nanos),
        schema_id,
        tuple(None if j < 0 else values[j] for j in _picks(own, wanted)),
    )
