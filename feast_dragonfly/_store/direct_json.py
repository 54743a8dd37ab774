"""``feast-dragonfly serve``'s answer for plain requests: the stored bytes straight to JSON.

``_direct_read`` plans and sends the request without Feast's per-request machinery; here the
replies become the document ``feast serve`` answers (``convert_response_to_dict`` of Feast's
response), with no protobuf object per value: a view's stored values — serialized ``Value``
messages — are concatenated and parsed *once* as a message whose fields are Value's scalar
fields made ``repeated`` (``_value_columns.ValueColumn``), and the tag byte of each value says
which column each slice of the per-kind lists belongs to. A column that holds anything else
(lists, bytes, maps, unset values, non-finite floats, ...) goes through Feast's own converter,
value for value. ``tests/serve/test_direct_json.py`` checks the result against Feast's path.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from feast.feature_server_utils import convert_response_to_dict
from feast.protos.feast.serving.ServingService_pb2 import GetOnlineFeaturesResponse
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from google.protobuf import descriptor_pb2
from google.protobuf.message import DecodeError

from feast_dragonfly._store import layout as _layout
from feast_dragonfly._store.direct_read import DirectPlan, Prepared, prepare
from feast_dragonfly._store.response_builder import track_statuses
from feast_dragonfly._store.value_columns import ValueColumn, single_kind

_PRESENT = "PRESENT"
_EPOCH_TEXT = "1970-01-01T00:00:00Z"

# --------------------------------------------------------------------------- values

#: The kinds JSON carries as they are (Feast's converter returns the attribute; bytes it
#: base64-encodes, so they are not among them).
_PLAIN_KINDS = frozenset(
    {"string_val", "int32_val", "int64_val", "double_val", "float_val", "bool_val"}
)
_FLOAT_KINDS = frozenset({"double_val", "float_val"})


def _plain(kind: str, values: Any) -> bool:
    return kind in _PLAIN_KINDS and (kind not in _FLOAT_KINDS or math.isfinite(sum(values)))


def column_values(raws: Sequence[bytes | None]) -> list[Any]:
    """JSON values of one feature column's stored bytes (``None``/empty: unset → null), equal
    to Feast's ``convert_response_to_dict`` of the same Values."""
    present = raws if None not in raws and b"" not in raws else [raw for raw in raws if raw]
    if present:
        try:
            column = ValueColumn.FromString(b"".join(present))  # type: ignore[arg-type]
        except DecodeError:
            column = None
        found = None if column is None else single_kind(column, len(present))
        if found is not None and _plain(*found):
            if present is raws:
                return list(found[1])
            values = iter(found[1])
            return [next(values) if raw else None for raw in raws]
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
                block = ValueColumn.FromString(b"".join(flat))  # type: ignore[arg-type]
            except DecodeError:
                block = None
            # Every kind present is one the tags announced (a Value carrying two kinds, which
            # Feast reads as its last, fails this), each with one value per stored Value.
            if block is not None and len(block.ListFields()) == len(layout.counts):
                lists = {kind: getattr(block, kind) for kind, _count in layout.counts}
                if all(
                    len(lists[kind]) == count and _plain(kind, lists[kind])
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


# --------------------------------------------------------------------------- the answer


async def answer(
    online_store: Any, config: Any, plan: DirectPlan, entities: dict[str, list[Any]]
) -> dict[str, Any] | None:
    """Feast's response document for ``entities`` (join key → values, all the same length),
    or ``None`` when the request needs Feast's path."""
    prepared = prepare(plan, entities)
    if prepared is None:
        return None
    replies = await online_store._fetch_async(config, prepared.read_plan)
    out = document(prepared, replies)
    for view in plan.views:
        track_statuses(view.metrics_name, view.fieldset.width * prepared.rows, 0)
    return out


def document(prepared: Prepared, replies: Sequence[Any]) -> dict[str, Any]:
    """The document of a prepared request's replies: what ``convert_response_to_dict`` makes
    of the response ``_response_builder.direct_response`` builds from the same replies."""
    rows = prepared.rows
    present = [_PRESENT] * rows
    results: list[dict[str, Any]] = []
    names: list[str] = []
    epoch = [_EPOCH_TEXT] * rows
    for join_key, values in prepared.entities.items():
        names.append(join_key)
        results.append({"values": values, "statuses": present, "event_timestamps": epoch})
    for view, view_rows in zip(prepared.plan.views, prepared.view_rows(replies)):
        width = view.fieldset.width
        by_column = list(zip(*view_rows))
        stamps = [_stamp_text(raw) for raw in by_column[width]]
        values = block_values(by_column[:width], rows)
        for name, column in zip(view.output_names, values):
            names.append(name)
            results.append({"values": column, "statuses": present, "event_timestamps": stamps})
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
