"""Hash keys and field names of Feast's Redis layout, without importing Feast.

Everything here is plain bytes work (struct, murmur3), so the tools that walk a whole
keyspace (``feast-dragonfly migrate`` / ``stats``) start without paying seconds for importing
Feast; :mod:`feast_dragonfly._store.layout` holds the parts that need Feast's types.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING

import mmh3

if TYPE_CHECKING:
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto

#: Feast's progress callback: called with a number of rows done (None: nobody listens).
Progress = Callable[[int], object] | None

_UINT32_LE = struct.Struct("<I")

#: Start of every view's event-timestamp field, ``_ts:<view>``: the one field name that says
#: which views a hash holds (feature fields are murmur3 hashes). Defined once, here, because the
#: store writes it and ``migrate`` / ``stats`` must recognise exactly the same bytes.
TIMESTAMP_PREFIX = b"_ts:"


#: Between a hash key and a view's name in a compact record's key (Feast's project names are
#: letters, digits, ``_`` and ``-``: the first ``:`` after the entity part ends the project).
COMPACT_SEPARATOR = b":"


def compact_key(hash_key: bytes, view_name: str) -> bytes:
    """The compact layout's key of one (entity, view): the entity's hash key, ``:``, the view's
    storage name."""
    return hash_key + record_suffix(view_name)


def record_suffix(view_name: str) -> bytes:
    """What a compact record's key adds to its entity's hash key."""
    return COMPACT_SEPARATOR + view_name.encode("utf-8")


def record_view(key: bytes, project_bytes: bytes) -> bytes | None:
    """The view name of a compact record key of this project (``<entity><project>:<view>``),
    or None when ``key`` is not one."""
    length = entity_part_length(key)
    if length is None:
        return None
    project, separator, view = key[length:].partition(COMPACT_SEPARATOR)
    return view if separator and project == project_bytes and view else None


@lru_cache(maxsize=65536)
def feature_field(view_name: str, feature_name: str) -> bytes:
    """The hash field that holds one feature of one view (cached: murmur3 per call adds up)."""
    return _UINT32_LE.pack(mmh3.hash(f"{view_name}:{feature_name}", signed=False))


@lru_cache(maxsize=4096)
def timestamp_field(view_name: str) -> bytes:
    """The hash field that holds a view's event timestamp."""
    return TIMESTAMP_PREFIX + view_name.encode()


def feature_fields(view_name: str, feature_names: Sequence[str]) -> list[bytes]:
    return [feature_field(view_name, name) for name in feature_names]


def entity_part_length(key: bytes) -> int | None:
    """Length of the serialized (v3) entity key at the start of a hash key, or None.

    Walking the length-prefixed structure lets teardown tell ``<entity>proj`` from
    ``<entity>myproj`` exactly, where a glob like ``*proj`` cannot.
    """
    size = len(key)
    if size < 4:
        return None
    (count,) = _UINT32_LE.unpack_from(key, 0)
    pos = 4
    for _ in range(2 * count):  # count join-key names, then count values
        if pos + 8 > size:
            return None
        (length,) = _UINT32_LE.unpack_from(key, pos + 4)
        pos += 8 + length
        if pos > size:
            return None
    return pos


def belongs_to_project(key: bytes, project_bytes: bytes) -> bool:
    """True when the hash key is exactly ``<serialized entity key><project>``."""
    length = entity_part_length(key)
    return length is not None and key[length:] == project_bytes


_GLOB_SPECIAL = frozenset(b"*?[]\\")


def glob_escape(raw: bytes) -> bytes:
    """Escape SCAN MATCH metacharacters: serialized lengths can be bytes like ``*`` or ``[``."""
    out = bytearray()
    for byte in raw:
        if byte in _GLOB_SPECIAL:
            out.append(0x5C)  # backslash
        out.append(byte)
    return bytes(out)


def describe_entity(entity_key: EntityKeyProto) -> str:
    """``entity driver_id=1001`` style text for error messages."""
    parts = []
    for name, value in zip(entity_key.join_keys, entity_key.entity_values):
        kind = value.WhichOneof("val")
        parts.append(f"{name}={getattr(value, kind) if kind else None!r}")
    return "entity " + ", ".join(parts)


def describe_key(key: bytes) -> str:
    """``entity driver_id=1001`` for a hash key (serialized entity key + project)."""
    length = entity_part_length(key)
    if length is None:
        return f"key {key!r}"
    try:
        from feast.infra.key_encoding_utils import deserialize_entity_key

        return describe_entity(deserialize_entity_key(key[:length], 3))
    except Exception:  # noqa: BLE001 - best effort, for a message only
        return f"key {key!r}"
