"""Feast's Redis byte layout in one place, so every path writes and reads the same bytes.

One hash per (entity key, project): key = serialized entity key + project name. Inside it,
each feature is a 4-byte little-endian unsigned murmur3 of ``"{view}:{feature}"``, each
feature view has a ``_ts:{view}`` field holding a serialized protobuf ``Timestamp``, and
values are serialized Feast ``ValueProto`` messages. Byte-identical to Feast 0.67's
``RedisOnlineStore`` so either store can read what the other wrote. Field names and the
parsing of hash keys, which need no Feast type, live in :mod:`feast_dragonfly._protocol.keys`.
"""

from __future__ import annotations

import calendar
import struct
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pyarrow as pa
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.helpers import compute_versioned_name
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.protos.feast.types.Value_pb2 import ValueType
from google.protobuf.timestamp_pb2 import Timestamp

from feast_dragonfly._store import varints
from feast_dragonfly._store.varints import varint

#: One row as Feast's ``online_write_batch`` hands it over: entity key, feature values, event
#: time, created time.
Row = tuple[EntityKeyProto, dict[str, ValueProto], datetime, datetime | None]

_UINT32_LE = struct.Struct("<I")
_EPOCH = datetime.fromtimestamp(0, tz=timezone.utc)
_EPOCH_NAIVE = datetime(1970, 1, 1)


def storage_view_name(table: Any, config: Any) -> str:
    """The name a view's fields hash under: ``name`` or ``name_vN`` with versioning on."""
    return compute_versioned_name(table, config.registry.enable_online_feature_view_versioning)


def entity_hash_key(entity_key: EntityKeyProto, project_bytes: bytes, version: int) -> bytes:
    if version == 3:
        return serialize_entity_key_v3(entity_key) + project_bytes
    return (
        serialize_entity_key(entity_key, entity_key_serialization_version=version) + project_bytes
    )


#: Batches smaller than this go key by key (numpy's fixed costs outweigh the saving).
BATCH_KEYS_FROM = 32


def entity_hash_keys(
    entity_keys: Sequence[EntityKeyProto], project_bytes: bytes, version: int
) -> list[bytes]:
    """:func:`entity_hash_key` of every key. A batch whose keys all have one int64 join key
    of one name (the usual entity) is read a column at a time: each ``EntityKey`` is
    serialized (one C call), the serializations are checked to have exactly that shape and
    their int64s read at once, a fraction of the cost of attribute access key by key."""
    if version == 3 and len(entity_keys) >= BATCH_KEYS_FROM and project_bytes[-1:] != b"\x00":
        keys = _int64_keys_v3(entity_keys, project_bytes)
        if keys is not None:
            return keys
    return [entity_hash_key(key, project_bytes, version) for key in entity_keys]


def _int64_keys_v3(
    entity_keys: Sequence[EntityKeyProto], project_bytes: bytes
) -> list[bytes] | None:
    """The v3 hash keys of a batch of single-int64 keys of one name, or None when a key has
    another shape (the caller then goes key by key)."""
    first = entity_keys[0]
    if len(first.join_keys) != 1 or len(first.entity_values) != 1:
        return None
    name = first.join_keys[0].encode("utf-8")
    # A serialized EntityKey of that shape: 0x0A, len, name, 0x12, len(Value), Value, where
    # Value is 0x20 and the int64's varint (1..10 bytes).
    head = np.frombuffer(b"\x0a" + varint(len(name)) + name + b"\x12", dtype=np.uint8)
    size = len(head)
    raws = pa.array(list(map(EntityKeyProto.SerializeToString, entity_keys)), pa.binary())
    offsets = np.frombuffer(raws.buffers()[1], dtype=np.int32, count=len(raws) + 1)
    starts, lengths = offsets[:-1], np.diff(offsets)
    if lengths.min() < size + 3 or lengths.max() > size + 12:
        return None
    data = np.frombuffer(raws.buffers()[2], dtype=np.uint8)
    value_sizes = data[starts + size].astype(np.int64)
    if (
        (data[starts[:, None] + np.arange(size)] != head).any()
        or (value_sizes != lengths - size - 1).any()
        or (data[starts + size + 1] != 0x20).any()
    ):
        return None
    numbers = varints.decode(data, starts + size + 2, value_sizes - 1)
    prefix = join_key_prefix((first.join_keys[0],)) + _INT64_HEAD
    width = len(prefix) + 8 + len(project_bytes)
    table = np.empty((len(numbers), width), dtype=np.uint8)
    table[:, : len(prefix)] = np.frombuffer(prefix, dtype=np.uint8)
    table[:, len(prefix) : len(prefix) + 8] = numbers.astype("<i8").view(np.uint8).reshape(-1, 8)
    table[:, len(prefix) + 8 :] = np.frombuffer(project_bytes, dtype=np.uint8)
    # Fixed-width byte strings: numpy drops trailing NULs, and a key ends in its project's
    # last byte, never NUL (the caller checks).
    keys: list[bytes] = table.view(f"S{width}").ravel().tolist()
    return keys


# Feast's entity-key encoding (version 3), re-implemented because Feast's generic version costs
# ~4 µs per key and every read and write serializes one key per row. Anything outside the
# common shapes (several join keys with a repeated name, unsupported value kinds) goes to
# Feast's own function, so the bytes — and the errors — stay Feast's.
_TYPE_AND_LENGTH = struct.Struct("<II")
_INT64 = struct.Struct("<q")
_INT32 = struct.Struct("<i")
_INT64_HEAD = _TYPE_AND_LENGTH.pack(ValueType.INT64, 8)
_INT32_HEAD = _TYPE_AND_LENGTH.pack(ValueType.INT32, 4)
_TIMESTAMP_HEAD = _TYPE_AND_LENGTH.pack(ValueType.UNIX_TIMESTAMP, 8)
# Keyed by the tuple of names, and for one join key also by the bare name (the hot path).
_JOIN_KEY_PREFIXES: dict[tuple[str, ...] | str, bytes] = {}


def join_key_prefix(names: tuple[str, ...]) -> bytes:
    prefix = _JOIN_KEY_PREFIXES.get(names)
    if prefix is None:
        parts = [_UINT32_LE.pack(len(names))]
        for name in names:
            encoded = name.encode("utf8")
            parts.append(_TYPE_AND_LENGTH.pack(ValueType.STRING, len(encoded)) + encoded)
        prefix = b"".join(parts)
        if len(_JOIN_KEY_PREFIXES) < 4096:
            _JOIN_KEY_PREFIXES[names] = prefix
            if len(names) == 1:
                _JOIN_KEY_PREFIXES[names[0]] = prefix
    return prefix


def _entity_value_bytes(value: Any) -> bytes | None:
    kind = value.WhichOneof("val")
    if kind == "int64_val":
        return _INT64_HEAD + _INT64.pack(value.int64_val)
    if kind == "string_val":
        data = value.string_val.encode("utf8")
        return _TYPE_AND_LENGTH.pack(ValueType.STRING, len(data)) + data
    if kind == "int32_val":
        return _INT32_HEAD + _INT32.pack(value.int32_val)
    if kind == "bytes_val":
        data = value.bytes_val
        return _TYPE_AND_LENGTH.pack(ValueType.BYTES, len(data)) + data
    if kind == "unix_timestamp_val":
        return _TIMESTAMP_HEAD + _INT64.pack(value.unix_timestamp_val)
    return None


def serialize_entity_key_v3(entity_key: EntityKeyProto) -> bytes:
    """Exactly ``serialize_entity_key(entity_key, 3)``, several times faster."""
    names = entity_key.join_keys
    values = entity_key.entity_values
    if len(names) == 1 and values:
        value = values[0]
        kind = value.WhichOneof("val")
        if kind == "int64_val":  # the common case, kept free of further calls
            prefix = _JOIN_KEY_PREFIXES.get(names[0])
            if prefix is None:
                prefix = join_key_prefix((names[0],))
            return prefix + _INT64_HEAD + _INT64.pack(value.int64_val)
        encoded = _entity_value_bytes(value)
        if encoded is not None:
            return join_key_prefix((names[0],)) + encoded
    elif len(names) > 1 and len(values) >= len(names) and len(set(names)) == len(names):
        order = sorted(range(len(names)), key=names.__getitem__)
        parts = [join_key_prefix(tuple(names[i] for i in order))]
        for i in order:
            encoded = _entity_value_bytes(values[i])
            if encoded is None:
                break
            parts.append(encoded)
        else:
            return b"".join(parts)
    return serialize_entity_key(entity_key, entity_key_serialization_version=3)


def as_utc(moment: datetime) -> datetime:
    """Feast treats naive datetimes as UTC."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=timezone.utc)
    return moment


def event_time_parts(moment: datetime) -> tuple[int, int]:
    """(seconds, nanos) exactly as protobuf's ``Timestamp.FromDatetime`` makes them (naive =
    UTC; microseconds), by datetime arithmetic: a fifth of the cost of its
    ``calendar.timegm(utctimetuple())``, and it runs once per row written."""
    try:
        delta = moment - (_EPOCH_NAIVE if moment.tzinfo is None else _EPOCH)
    except TypeError:  # a tzinfo that gives no offset: naive, as utctimetuple() has it
        return calendar.timegm(moment.utctimetuple()), moment.microsecond * 1000
    return delta.days * 86400 + delta.seconds, moment.microsecond * 1000


def timestamp_bytes(seconds: int, nanos: int) -> bytes:
    """The serialized ``google.protobuf.Timestamp`` (Feast's ``_ts`` field) of this time."""
    return (b"\x08" + varint(seconds) if seconds else b"") + (
        b"\x10" + varint(nanos) if nanos else b""
    )


def encode_event_time(moment: datetime) -> tuple[bytes, int, int]:
    """Serialized ``Timestamp`` plus its (seconds, nanos), for the server-side comparison:
    the bytes of protobuf's ``FromDatetime`` and ``SerializeToString``, which Feast stores
    (microsecond precision; the tests hold the two to the same bytes)."""
    seconds, nanos = event_time_parts(moment)
    return timestamp_bytes(seconds, nanos), seconds, nanos


def decode_event_time(raw: bytes | None) -> datetime:
    """The stored ``_ts`` field as Feast's reader returns it (epoch when absent)."""
    if not raw:
        return _EPOCH
    stamp = Timestamp()
    stamp.ParseFromString(raw)
    # Same float arithmetic as Feast's reader, so datetimes compare equal to its output.
    return datetime.fromtimestamp(stamp.seconds + stamp.nanos / 1_000_000_000.0, tz=timezone.utc)


def response_timestamp(raw: bytes | None) -> Timestamp:
    """The event timestamp Feast's response carries for a stored ``_ts`` value: Feast goes
    stored bytes → float seconds → datetime → ``Timestamp``, which rounds to whole
    microseconds; repeating that keeps answers identical."""
    stamp = Timestamp()
    stamp.FromDatetime(decode_event_time(raw))
    return stamp


def key_prefix_for_join_keys(join_keys: Sequence[str]) -> bytes:
    """The leading bytes every hash key of an entity with these join keys starts with."""
    from feast.infra.key_encoding_utils import serialize_entity_key_prefix

    return serialize_entity_key_prefix(list(join_keys))
