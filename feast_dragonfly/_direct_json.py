"""Feast's online-features JSON straight from the stored bytes, for the requests most servers see.

``feast-dragonfly serve`` spent most of a request outside the store: Feast's request handling
turns every entity value into a ``ValueProto``, every entity row into an ``EntityKey``, builds a
response protobuf, and the JSON step then reads that protobuf back value by value. For a request
that only reads stored feature views by their join keys (no on-demand views, request data,
entity-less views, aliased join keys or pre-computed services) none of that is needed:

* what to read and in which order comes from Feast's own cached request context
  (``feast.utils._get_cached_request_context``: the same feature resolution, validation and
  errors as ``feast serve``), turned once into a :class:`DirectPlan` of pre-encoded fields;
* hash keys are encoded from the JSON entity values directly (``_layout``'s version-3 encoding);
* each feature column's stored values — serialized ``Value`` messages — are concatenated and
  parsed *once* as a message whose fields are Value's scalar fields made ``repeated``
  (:data:`_Column`): protobuf's C parser then hands back the whole column as Python values,
  with no protobuf object per value. A column that holds anything else (lists, bytes, maps,
  non-finite floats, ...) goes through Feast's own converter, value for value.

The answer equals ``convert_response_to_dict`` of Feast's response, result for result
(``tests/test_direct_json.py`` checks it against Feast's path); a request outside this shape
returns ``None`` and the caller takes Feast's path.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from feast import utils as feast_utils
from feast.feature_server_utils import convert_response_to_dict
from feast.feature_view import DUMMY_ENTITY_NAME, FeatureView
from feast.protos.feast.serving.ServingService_pb2 import GetOnlineFeaturesResponse
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.value_type import ValueType
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError

from feast_dragonfly import _layout, _read
from feast_dragonfly._response_builder import track_statuses

_PRESENT = "PRESENT"
_EPOCH_TEXT = "1970-01-01T00:00:00Z"
_INT64 = struct.Struct("<q")
_INT32 = struct.Struct("<i")
_TYPE_AND_LENGTH = struct.Struct("<II")

# --------------------------------------------------------------------------- column parser

#: Value's scalar kinds that JSON carries as they are (Feast's converter returns the attribute).
_PLAIN_KINDS = ("string_val", "int32_val", "int64_val", "double_val", "float_val", "bool_val")
_FLOAT_KINDS = frozenset({"double_val", "float_val"})


def _column_class() -> Any:
    """A message with Value's plain scalar fields, same numbers and types, but ``repeated``:
    the concatenation of N serialized Values parses into one list per kind, in order."""
    file = descriptor_pb2.FileDescriptorProto(
        name="feast_dragonfly/value_column.proto",
        package="feast_dragonfly",
        syntax="proto3",
    )
    message = file.message_type.add(name="ValueColumn")
    for field in ValueProto.DESCRIPTOR.fields:
        if field.name in _PLAIN_KINDS:
            message.field.add(
                name=field.name,
                number=field.number,
                type=field.type,
                label=descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED,
            )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(
        pool.FindMessageTypeByName("feast_dragonfly.ValueColumn")
    )


_Column = _column_class()


def column_values(raws: Sequence[bytes | None]) -> list[Any]:
    """JSON values of one feature column's stored bytes (``None``/empty: unset → null), equal
    to Feast's ``convert_response_to_dict`` of the same Values."""
    present = raws if None not in raws and b"" not in raws else [raw for raw in raws if raw]
    if present:
        try:
            column = _Column.FromString(b"".join(present))  # type: ignore[arg-type]
        except DecodeError:
            column = None
        if column is not None:
            fields = column.ListFields()
            if len(fields) == 1:
                descriptor, values = fields[0]
                # One value per stored Value, all of one plain kind: the common case.
                if len(values) == len(present) and (
                    descriptor.name not in _FLOAT_KINDS or math.isfinite(sum(values))
                ):
                    if present is raws:
                        return list(values)
                    found = iter(values)
                    return [next(found) if raw else None for raw in raws]
    return _values_by_feast(raws)


#: Tag byte of each plain kind (field number and wire type), as it starts a stored Value.
_WIRE_TYPES = {
    descriptor_pb2.FieldDescriptorProto.TYPE_STRING: 2,
    descriptor_pb2.FieldDescriptorProto.TYPE_INT32: 0,
    descriptor_pb2.FieldDescriptorProto.TYPE_INT64: 0,
    descriptor_pb2.FieldDescriptorProto.TYPE_BOOL: 0,
    descriptor_pb2.FieldDescriptorProto.TYPE_DOUBLE: 1,
    descriptor_pb2.FieldDescriptorProto.TYPE_FLOAT: 5,
}
_KIND_OF_TAG = {
    (field.number << 3) | _WIRE_TYPES[field.type]: field.name
    for field in ValueProto.DESCRIPTOR.fields
    if field.name in _PLAIN_KINDS
}


@dataclass(frozen=True)
class _Layout:
    """Where each column's values sit in the per-kind lists of one parsed block."""

    counts: tuple[tuple[str, int], ...]  # values expected per kind
    slices: tuple[tuple[str, int, int], ...]  # per column: kind, start, stop


_LAYOUTS: dict[tuple[bytes, int], _Layout | None] = {}


def _layout_of(tags: bytes, rows: int) -> _Layout | None:
    """The layout of a block whose values start with ``tags`` (cached: a view's columns keep
    their kinds); ``None`` when some column is not all of one plain kind."""
    key = (tags, rows)
    if key in _LAYOUTS:
        return _LAYOUTS[key]
    counts: dict[str, int] = {}
    slices = []
    for start in range(0, len(tags), rows):
        segment = tags[start : start + rows]
        kind = _KIND_OF_TAG.get(segment[0])
        if kind is None or segment.count(segment[0]) != rows:
            layout = None
            break
        first = counts.get(kind, 0)
        counts[kind] = first + rows
        slices.append((kind, first, first + rows))
    else:
        layout = _Layout(tuple(counts.items()), tuple(slices))
    if len(_LAYOUTS) >= 4096:
        _LAYOUTS.clear()
    _LAYOUTS[key] = layout
    return layout


def block_values(columns: Sequence[Sequence[bytes | None]], rows: int) -> list[list[Any]]:
    """JSON values of several feature columns (``rows`` values each). When every value is set
    and each column is all of one plain kind, the whole block is parsed at once and cut into
    columns by the layout of its tag bytes; otherwise column by column."""
    flat = [raw for column in columns for raw in column]
    if None not in flat and b"" not in flat:
        layout = _layout_of(bytes([raw[0] for raw in flat]), rows)  # type: ignore[index]
        if layout is not None:
            try:
                block = _Column.FromString(b"".join(flat))  # type: ignore[arg-type]
            except DecodeError:
                block = None
            # Every kind present is one the tags announced (a Value carrying two kinds, which
            # Feast reads as its last, fails this), each with one value per stored Value.
            if block is not None and len(block.ListFields()) == len(layout.counts):
                lists = {kind: getattr(block, kind) for kind, _count in layout.counts}
                if all(
                    len(lists[kind]) == count
                    and (kind not in _FLOAT_KINDS or math.isfinite(sum(lists[kind])))
                    for kind, count in layout.counts
                ):
                    return [lists[kind][start:stop] for kind, start, stop in layout.slices]
    return [column_values(column) for column in columns]


def _values_by_feast(raws: Sequence[bytes | None]) -> list[Any]:
    response = GetOnlineFeaturesResponse()
    vector = response.results.add()
    parse = ValueProto.FromString
    vector.values.extend(parse(raw) if raw else ValueProto() for raw in raws)
    return convert_response_to_dict(response)["results"][0]["values"]


# --------------------------------------------------------------------------- plans


@dataclass(frozen=True)
class ViewPart:
    """One feature view of a request: the fields it reads and the names it answers under."""

    fieldset: _read.FieldSet
    join_keys: tuple[str, ...]  # sorted, as the version-3 key encoding orders them
    output_names: tuple[str, ...]
    metrics_name: str


@dataclass(frozen=True)
class DirectPlan:
    """Everything about a request that depends only on its features and the registry."""

    views: tuple[ViewPart, ...]
    join_key_types: dict[str, ValueType]
    project_bytes: bytes


def plan_request(
    store: Any, features: list[str] | Any, full_feature_names: bool
) -> DirectPlan | None:
    """The plan for ``features`` (refs or a ``FeatureService``), or ``None`` when the request
    needs Feast's path. Raises Feast's errors for unknown views and features."""
    config = store.config
    if config.entity_key_serialization_version != 3:
        return None
    if getattr(features, "precompute_online", False):
        return None
    context = feast_utils._get_cached_request_context(
        store.registry, store.project, features, full_feature_names
    )
    cached = _PLANS.get(id(context))
    if cached is not None and cached[0] is context:
        return cached[1]
    plan = _plan_from_context(config, store.project, context, full_feature_names)
    if len(_PLANS) >= 1024:
        _PLANS.clear()
    _PLANS[id(context)] = (context, plan)
    return plan


#: Plans by Feast's request context, which Feast caches until the registry changes (the
#: context is kept alongside, so its id cannot be reused while the entry lives).
_PLANS: dict[int, tuple[Any, DirectPlan | None]] = {}


def _plan_from_context(
    config: Any, project: str, context: tuple, full_feature_names: bool
) -> DirectPlan | None:
    (
        _refs,
        on_demand_views,
        entity_name_to_join_key,
        entity_types,
        _join_keys_set,
        grouped_refs,
        _row_names,
        request_data,
        entityless,
    ) = context
    if on_demand_views or request_data or entityless:
        return None
    views = []
    for table, requested in grouped_refs:
        if not isinstance(table, FeatureView) or table.projection.join_key_map:
            return None
        if "@" in table.projection.name_to_use():  # a versioned ref: Feast checks support
            return None
        if DUMMY_ENTITY_NAME in (table.entities or []) or not table.entities:
            return None
        join_keys = tuple(sorted(entity_name_to_join_key[name] for name in table.entities))
        prefix = table.projection.name_to_use()
        names = tuple(f"{prefix}__{name}" for name in requested) if full_feature_names else None
        views.append(
            ViewPart(
                fieldset=_read.field_set(
                    _layout.storage_view_name(table, config), tuple(requested)
                ),
                join_keys=join_keys,
                output_names=names or tuple(requested),
                metrics_name=table.name,
            )
        )
    # Only the join keys these views read: a request naming another join key of the project
    # gets that column in Feast's answer too, converted by inferred type, so it goes to Feast.
    needed = {key for view in views for key in view.join_keys}
    types = {key: entity_types.get(key, ValueType.UNKNOWN) for key in needed}
    if not all(value_type in _KEY_ENCODERS for value_type in types.values()):
        return None
    return DirectPlan(tuple(views), types, project.encode("utf-8"))


# --------------------------------------------------------------------------- entity keys


def _int64_bytes(value: Any) -> bytes | None:
    if type(value) is int and -(1 << 63) <= value < (1 << 63):
        return _INT64.pack(value)
    return None


def _int32_bytes(value: Any) -> bytes | None:
    if type(value) is int and -(1 << 31) <= value < (1 << 31):
        return _INT32.pack(value)
    return None


def _string_bytes(value: Any) -> bytes | None:
    return value.encode("utf-8") if type(value) is str else None


#: Join-key types served here: how a JSON value becomes the key's value bytes (``None``: a
#: value Feast would convert or reject its own way, so the request takes Feast's path).
_KEY_ENCODERS = {
    ValueType.INT64: (ValueType.INT64.value, _int64_bytes),
    ValueType.INT32: (ValueType.INT32.value, _int32_bytes),
    ValueType.STRING: (ValueType.STRING.value, _string_bytes),
}


def _encoded_columns(plan: DirectPlan, entities: dict[str, list[Any]]) -> dict[str, list[bytes]]:
    """Per join key, each row's value as the key encoding writes it (type, length, bytes)."""
    columns = {}
    for key, values in entities.items():
        value_type, encode = _KEY_ENCODERS[plan.join_key_types[key]]
        encoded = []
        for value in values:
            data = encode(value)
            if data is None:
                raise _NotDirect
            encoded.append(_TYPE_AND_LENGTH.pack(value_type, len(data)) + data)
        columns[key] = encoded
    return columns


class _NotDirect(Exception):
    """The request needs Feast's path after all (an entity value outside the common shapes)."""


def _hash_keys(view: ViewPart, columns: dict[str, list[bytes]], project: bytes) -> list[bytes]:
    prefix = _layout.join_key_prefix(view.join_keys)
    if len(view.join_keys) == 1:
        return [prefix + value + project for value in columns[view.join_keys[0]]]
    parts = [columns[key] for key in view.join_keys]
    return [prefix + b"".join(row) + project for row in zip(*parts)]


# --------------------------------------------------------------------------- the answer


async def answer(
    online_store: Any, config: Any, plan: DirectPlan, entities: dict[str, list[Any]]
) -> dict[str, Any] | None:
    """Feast's response document for ``entities`` (join key → values, all the same length),
    or ``None`` when the request needs Feast's path."""
    if not plan.join_key_types.keys() >= entities.keys() or any(
        key not in entities for view in plan.views for key in view.join_keys
    ):
        return None
    rows = len(next(iter(entities.values())))
    if not rows:
        return None
    try:
        columns = _encoded_columns(plan, entities)
    except _NotDirect:
        return None

    read_plan = _read.ReadPlan(views=[])
    index_of_key: dict[bytes, int] = {}
    offsets: list[int] = []
    placements: list[list[tuple[int, int]]] = []
    for view in plan.views:
        fieldset = view.fieldset
        field_count = len(fieldset.fields)
        spots: dict[bytes, tuple[int, int]] = {}  # an entity asked for twice is read once
        placed = []
        for key in _hash_keys(view, columns, plan.project_bytes):
            spot = spots.get(key)
            if spot is None:
                command = index_of_key.get(key)
                if command is None:
                    command = index_of_key[key] = len(read_plan.keys)
                    read_plan.keys.append(key)
                    read_plan.key_fieldsets.append([])
                    offsets.append(0)
                spot = spots[key] = (command, offsets[command])
                read_plan.key_fieldsets[command].append(fieldset)
                offsets[command] += field_count
            placed.append(spot)
        placements.append(placed)
    replies = await online_store._fetch_async(config, read_plan) if read_plan.keys else []

    present = [_PRESENT] * rows
    results: list[dict[str, Any]] = []
    names: list[str] = []
    epoch = [_EPOCH_TEXT] * rows
    for join_key, values in entities.items():
        names.append(join_key)
        results.append({"values": values, "statuses": present, "event_timestamps": epoch})
    for view, placed in zip(plan.views, placements):
        width = view.fieldset.width
        table = [replies[command][offset : offset + width + 1] for command, offset in placed]
        by_column = list(zip(*table))
        stamps = [_stamp_text(raw) for raw in by_column[width]]
        values = block_values(by_column[:width], rows)
        for name, column in zip(view.output_names, values):
            names.append(name)
            results.append({"values": column, "statuses": present, "event_timestamps": stamps})
        track_statuses(view.metrics_name, width * rows, 0)
    return {"results": results, "metadata": {"feature_names": names}}


_STAMPS: dict[bytes | None, str] = {}


def _stamp_text(raw: bytes | None) -> str:
    """The event timestamp as Feast's response shows it: stored value → float seconds →
    datetime (whole microseconds) → RFC 3339; cached per stored value."""
    text = _STAMPS.get(raw)
    if text is None:
        if len(_STAMPS) > 65536:
            _STAMPS.clear()
        text = _STAMPS[raw] = _layout.response_timestamp(raw).ToJsonString()
    return text
