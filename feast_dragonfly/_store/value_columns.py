"""Many serialized ``Value`` messages parsed at once into per-kind Python lists.

Reading a response value by value costs a protobuf wrapper object, a ``WhichOneof`` and a
``getattr`` per value. These messages are ``Value``'s scalar fields made ``repeated`` (same
numbers, same types): parsing N serialized Values concatenated as one :data:`ValueColumn`
appends each value to the list of its kind, in order, in protobuf's C parser. Two wrappers
reach whole responses the same way, because repeated occurrences of a *singular* message field
merge (their repeated fields concatenate): a ``FeatureVector`` parsed as ``VectorColumn`` gets
its values as one ``ValueColumn``, a ``GetOnlineFeaturesResponse`` parsed as
``ResponseColumns`` one per result.

A column whose only kind has one entry per value holds values all of that kind: callers check
that and convert anything else (unset values, lists, maps, ...) the slow, exact way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from feast.protos.feast.types.Value_pb2 import RepeatedValue
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

#: ``Value``'s scalar kinds, each a plain Python value on the ``getattr`` of its field.
SCALAR_KINDS = (
    "bytes_val",
    "string_val",
    "int32_val",
    "int64_val",
    "double_val",
    "float_val",
    "bool_val",
)

_REPEATED = descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED
_OPTIONAL = descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL
_MESSAGE = descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE
_PACKAGE = "feast_dragonfly.columns"


def _classes() -> tuple[Any, Any]:
    file = descriptor_pb2.FileDescriptorProto(
        name="feast_dragonfly/value_columns.proto", package=_PACKAGE, syntax="proto3"
    )
    column = file.message_type.add(name="ValueColumn")
    for field in ValueProto.DESCRIPTOR.fields:
        if field.name in SCALAR_KINDS:
            column.field.add(name=field.name, number=field.number, type=field.type, label=_REPEATED)
    # FeatureVector.values is field 1; GetOnlineFeaturesResponse.results is field 2.
    vector = file.message_type.add(name="VectorColumn")
    vector.field.add(
        name="values",
        number=1,
        type=_MESSAGE,
        label=_OPTIONAL,
        type_name=f".{_PACKAGE}.ValueColumn",
    )
    response = file.message_type.add(name="ResponseColumns")
    response.field.add(
        name="results",
        number=2,
        type=_MESSAGE,
        label=_REPEATED,
        type_name=f".{_PACKAGE}.VectorColumn",
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    find = pool.FindMessageTypeByName
    return (
        message_factory.GetMessageClass(find(f"{_PACKAGE}.ValueColumn")),
        message_factory.GetMessageClass(find(f"{_PACKAGE}.ResponseColumns")),
    )


ValueColumn, ResponseColumns = _classes()


# --------------------------------------------------------------------------- framing


def _varint_slow(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


# Varints below 2**14 (every length but huge vectors') are looked up, not computed.
_SMALL_VARINTS = [_varint_slow(n) for n in range(1 << 14)]


def varint(value: int) -> bytes:
    """Protobuf's base-128 varint (lengths of length-delimited fields)."""
    return _SMALL_VARINTS[value] if value < 16384 else _varint_slow(value)


# ``FeatureVector.values`` and ``RepeatedValue.val`` are both field 1: one framing for both.
VALUE_FIELD = b"\x0a"
_VALUE_HEADS = [VALUE_FIELD + varint(n) for n in range(128)]
#: The entry of an unset Value (a stored null, or nothing stored).
UNSET = VALUE_FIELD + b"\x00"


def frame(raw: bytes | None) -> bytes:
    """One stored value as the field-1 ``Value`` entry of a ``FeatureVector`` or a
    ``RepeatedValue`` (``None`` / empty: an unset Value)."""
    if not raw:
        return UNSET
    return _VALUE_HEADS[len(raw)] + raw if len(raw) < 128 else VALUE_FIELD + varint(len(raw)) + raw


def value_entries(raws: Sequence[bytes | None]) -> bytes:
    """:func:`frame` of each stored value, joined (inline: it runs once per value read)."""
    heads = _VALUE_HEADS
    return b"".join(
        [
            UNSET
            if not raw
            else (heads[len(raw)] + raw if len(raw) < 128 else VALUE_FIELD + varint(len(raw)) + raw)
            for raw in raws
        ]
    )


def parsed_values(raws: Sequence[bytes | None]) -> Any:
    """The stored values as ``Value`` messages, parsed in one C call (unset: an empty Value)."""
    return parse_entries(value_entries(raws))


def parse_entries(entries: bytes) -> Any:
    """``Value`` entries (:func:`frame`, joined) as ``Value`` messages, in one C call."""
    return RepeatedValue.FromString(entries).val


# --------------------------------------------------------------------------- columns


def single_kind(column: Any, count: int) -> tuple[str, Any] | None:
    """``(kind, values)`` when ``column`` holds ``count`` values all of one scalar kind."""
    fields = column.ListFields()
    if len(fields) != 1:
        return None
    descriptor, values = fields[0]
    return (descriptor.name, values) if len(values) == count else None


def response_columns(response: Any) -> list[Any]:
    """One :data:`ValueColumn` per result of a ``GetOnlineFeaturesResponse``."""
    return [
        vector.values for vector in ResponseColumns.FromString(response.SerializeToString()).results
    ]
