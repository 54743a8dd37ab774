"""A view's compact-record schema: its features in order, their types, canonical text and id.

The record layout (see :mod:`feast_dragonfly._store.compact.codec`) is derived from the schema
alone: which features take a fixed-width slot, where each slot starts, how long the state
bitmap is. The schema id stored in every record is the unsigned 32-bit murmur3 (seed 0) of the
UTF-8 bytes of the **canonical text**::

    canonical := "v1" ( "|" escaped-name ":" TYPE )*

one ``|name:TYPE`` per feature in schema order, TYPE being the ``feast.value_type.ValueType``
member name (``INT64``, ``STRING_LIST``, ``PDF_BYTES``, ...), escaped-name the feature name
with ``%`` written ``%25`` and ``|`` written ``%7C`` (in that order; nothing else is escaped,
a ``:`` in a name is fine since TYPE never holds one). Example: a view of ``age`` (Int64),
``score`` (Float64) and ``name`` (String) is ``v1|age:INT64|score:DOUBLE|name:STRING``; a view
without features is ``v1``. Renaming, adding, removing, reordering or retyping a feature
changes the text and so the id.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import mmh3
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.value_type import ValueType

from feast_dragonfly._protocol.record_format import HEADER_SIZE
from feast_dragonfly._store.varints import varint
from feast_dragonfly.errors import DragonflyConfigError, DragonflyDataError

#: The canonical text's prefix (its format version).
CANONICAL_PREFIX = "v1"

#: How a feature is stored: a fixed-width slot read as an integer and re-encoded as a varint
#: (INT32, INT64, UNIX_TIMESTAMP; BOOL likewise, but only 0 or 1), a fixed-width slot copied
#: as is (DOUBLE, FLOAT), length-prefixed raw bytes (STRING as UTF-8, BYTES), or a
#: length-prefixed serialized ValueProto (every other type).
VARINT, RAW, LENGTH, PROTO, BOOL = 0, 1, 2, 3, 4

# ValueType -> (struct code for packing, width, ValueProto wire tag, struct code for reading).
# Reading BOOL as "B" (not "?") keeps a corrupt byte visible; DOUBLE / FLOAT slots are read as
# pad bytes because decoding copies their bytes rather than their values.
_FIXED = {
    ValueType.BOOL: ("?", 1, 0x38, "B"),
    ValueType.INT32: ("i", 4, 0x18, "i"),
    ValueType.FLOAT: ("f", 4, 0x35, "4x"),
    ValueType.INT64: ("q", 8, 0x20, "q"),
    ValueType.UNIX_TIMESTAMP: ("q", 8, 0x40, "q"),
    ValueType.DOUBLE: ("d", 8, 0x29, "8x"),
}
_LENGTH_TAGS = {ValueType.STRING: 0x12, ValueType.BYTES: 0x0A}
#: ValueProto's oneof field of each type where it is not ``<type name in lower case>_val``.
_FIELD_EXCEPTIONS = {
    ValueType.PDF_BYTES: "bytes_val",
    ValueType.IMAGE_BYTES: "bytes_val",
    ValueType.VALUE_LIST: "list_val",
    ValueType.VALUE_SET: "set_val",
}
_VALUE_FIELDS = frozenset(f.name for f in ValueProto.DESCRIPTOR.oneofs_by_name["val"].fields)
#: Types without a declared kind of value: nothing could tell a typed value from a fallback.
_NEVER = frozenset({ValueType.UNKNOWN, ValueType.NULL})


def value_field(value_type: ValueType) -> str | None:
    """The ValueProto oneof field a value of this type sets, or None for unsupported types."""
    if value_type in _NEVER:
        return None
    name = _FIELD_EXCEPTIONS.get(value_type, value_type.name.lower() + "_val")
    return name if name in _VALUE_FIELDS else None


def unsupported(features: Iterable[tuple[str, ValueType]]) -> list[tuple[str, ValueType]]:
    """The (name, type) pairs the compact layout cannot store: ``UNKNOWN`` and ``NULL`` (no
    declared kind of value) and any type without a ValueProto field of its own."""
    return [
        (name, ValueType(kind)) for name, kind in features if value_field(ValueType(kind)) is None
    ]


def require_supported(features: Iterable[tuple[str, ValueType]], view: str | None = None) -> None:
    """Raise :class:`DragonflyConfigError` naming every feature the compact layout cannot store
    (for ``feast apply``: the view is then refused before anything is written)."""
    bad = unsupported(features)
    if bad:
        where = f"feature view {view!r}: " if view else ""
        listed = ", ".join(f"{name!r} ({kind.name})" for name, kind in bad)
        raise DragonflyConfigError(
            f"{where}the compact layout cannot store feature(s) {listed}: give them a concrete "
            "type or keep this view on Feast's layout"
        )


def _escape(name: str) -> str:
    return name.replace("%", "%25").replace("|", "%7C")


def _unescape(name: str) -> str:
    return name.replace("%7C", "|").replace("%25", "%")


def _canonical(features: tuple[tuple[str, ValueType], ...]) -> str:
    return CANONICAL_PREFIX + "".join(f"|{_escape(name)}:{kind.name}" for name, kind in features)


#: One step of decoding, per feature: (kind, a, b, c) where for VARINT / BOOL a = index in
#: the integer slots' tuple, b = the wire bytes of the values 0..127 (0..1), c = tag byte; for
#: RAW a = the slot's offset in the record, b = its end, c = tag byte; for LENGTH c = tag byte.
Step = tuple[int, int, Any, bytes]


@dataclass(frozen=True, init=False)
class Schema:
    """The features of one view, in order, as the compact layout stores them.

    ``Schema([("age", ValueType.INT64), ("name", ValueType.STRING)])``. Equal schemas have
    equal ids; everything besides ``features`` is derived from it.
    """

    features: tuple[tuple[str, ValueType], ...]
    names: tuple[str, ...] = field(compare=False, repr=False)
    types: tuple[ValueType, ...] = field(compare=False, repr=False)
    #: feature name -> position.
    index: dict[str, int] = field(compare=False, repr=False)
    canonical: str = field(compare=False, repr=False)
    id: int = field(compare=False, repr=False)
    #: The id as a record stores it (bytes 13..16), for a comparison without decoding.
    id_bytes: bytes = field(compare=False, repr=False)
    #: The ValueProto oneof field a typed value of each feature sets.
    value_fields: tuple[str, ...] = field(compare=False, repr=False)
    #: Per feature: VARINT, BOOL, RAW, LENGTH or PROTO.
    kinds: tuple[int, ...] = field(compare=False, repr=False)
    #: Per feature: the offset of its slot in the fixed region, or -1 (not fixed-width).
    slots: tuple[int, ...] = field(compare=False, repr=False)
    bitmap_size: int = field(compare=False, repr=False)
    #: Where the fixed region starts, and where the variable region starts (the shortest
    #: possible record's length).
    fixed_offset: int = field(compare=False, repr=False)
    var_offset: int = field(compare=False, repr=False)
    #: Packs every fixed slot, in schema order, in one call (the fixed region).
    fixed: struct.Struct = field(compare=False, repr=False)
    #: Unpacks the integer slots (VARINT features) of a whole record in one call.
    integers: struct.Struct = field(compare=False, repr=False)
    steps: tuple[Step, ...] = field(compare=False, repr=False)
    #: Per feature, for encoding: (2 * position, name, ValueProto field, kind, fixed-width?).
    encoding: tuple[tuple[int, str, str, int, bool], ...] = field(compare=False, repr=False)
    #: Another schema's canonical text -> where each of this schema's features is in it
    #: (-1: not there, or retyped); filled by ``decode_by_name``.
    picks: dict[str, tuple[int, ...]] = field(compare=False, repr=False)

    def __init__(self, features: Iterable[tuple[str, ValueType]]) -> None:
        pairs = tuple((name, ValueType(kind)) for name, kind in features)
        names = tuple(name for name, _ in pairs)
        for name in names:
            if not isinstance(name, str) or not name:
                raise DragonflyConfigError(f"a feature name must be a non-empty string: {name!r}")
        if len(set(names)) != len(names):
            twice = sorted({name for name in names if names.count(name) > 1})
            raise DragonflyConfigError(f"feature names appear more than once: {twice}")
        require_supported(pairs)
        canonical = _canonical(pairs)
        bitmap_size = (len(pairs) + 3) // 4
        fixed_offset = HEADER_SIZE + bitmap_size
        kinds: list[int] = []
        slots: list[int] = []
        steps: list[Step] = []
        pack_codes, read_codes = ["<"], ["<"]
        offset = integer_count = 0
        for kind in (k for _, k in pairs):
            fixed = _FIXED.get(kind)
            if fixed is not None:
                pack_code, width, tag, read_code = fixed
                pack_codes.append(pack_code)
                read_codes.append(read_code)
                slots.append(offset)
                tag_byte = bytes((tag,))
                if read_code.endswith("x"):
                    kinds.append(RAW)
                    start = fixed_offset + offset
                    steps.append((RAW, start, start + width, tag_byte))
                else:
                    step = BOOL if kind == ValueType.BOOL else VARINT
                    kinds.append(step)
                    small = (
                        (bytes((tag, 0)), bytes((tag, 1))) if step == BOOL else small_varints(tag)
                    )
                    steps.append((step, integer_count, small, tag_byte))
                    integer_count += 1
                offset += width
            else:
                slots.append(-1)
                length_tag = _LENGTH_TAGS.get(kind)
                kinds.append(PROTO if length_tag is None else LENGTH)
                tag_byte = b"" if length_tag is None else bytes((length_tag,))
                steps.append((kinds[-1], 0, None, tag_byte))
        derived = {
            "features": pairs,
            "names": names,
            "types": tuple(k for _, k in pairs),
            "index": {name: i for i, name in enumerate(names)},
            "canonical": canonical,
            "id": (schema_id := mmh3.hash(canonical.encode("utf-8"), 0, signed=False)),
            "id_bytes": schema_id.to_bytes(4, "little"),
            "value_fields": tuple(value_field(k) or "" for _, k in pairs),
            "kinds": tuple(kinds),
            "slots": tuple(slots),
            "bitmap_size": bitmap_size,
            "fixed_offset": fixed_offset,
            "var_offset": fixed_offset + offset,
            "fixed": struct.Struct("".join(pack_codes)),
            "integers": struct.Struct("".join(read_codes)),
            "steps": tuple(steps),
            "encoding": tuple(
                (2 * i, name, value_field(kind) or "", kinds[i], slots[i] >= 0)
                for i, (name, kind) in enumerate(pairs)
            ),
            "picks": {},
        }
        for name, value in derived.items():
            object.__setattr__(self, name, value)

    def __len__(self) -> int:
        return len(self.features)

    def __hash__(self) -> int:
        # Its id, already a hash of the features: the generated hash would walk every
        # (name, ValueType) pair at each lookup keyed by the schema (once per record read).
        return self.id

    @classmethod
    def from_canonical(cls, text: str) -> Schema:
        """The schema whose :attr:`canonical` text is ``text`` (e.g. stored beside the data)."""
        head, *items = text.split("|")
        if head != CANONICAL_PREFIX:
            raise DragonflyDataError(
                f"not a compact schema (expected {CANONICAL_PREFIX!r}): {text!r}"
            )
        pairs = []
        for item in items:
            name, colon, type_name = item.rpartition(":")
            if not colon or type_name not in ValueType.__members__:
                raise DragonflyDataError(f"bad feature {item!r} in compact schema {text!r}")
            pairs.append((_unescape(name), ValueType[type_name]))
        try:
            schema = cls(pairs)
        except DragonflyConfigError as exc:
            raise DragonflyDataError(f"bad compact schema {text!r}: {exc}") from None
        if schema.canonical != text:  # e.g. a needlessly escaped name: not canonical
            raise DragonflyDataError(f"compact schema text is not canonical: {text!r}")
        return schema


#: Values below this have their tagged varint in a table (one lookup instead of encoding).
SMALL_VARINTS = 1 << 14
_SMALL: dict[int, tuple[bytes, ...]] = {}


def small_varints(tag: int) -> tuple[bytes, ...]:
    """``tag`` then the varint of each value below ``SMALL_VARINTS``: shared by every integer
    feature with that tag (a few hundred KB per tag, built on first use)."""
    table = _SMALL.get(tag)
    if table is None:
        head = bytes((tag,))
        table = _SMALL[tag] = tuple(
            [bytes((tag, v)) for v in range(0x80)]
            + [head + varint(v) for v in range(0x80, SMALL_VARINTS)]
        )
    return table
