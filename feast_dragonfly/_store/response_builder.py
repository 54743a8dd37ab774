"""Build Feast's ``GetOnlineFeaturesResponse`` straight from the stored bytes.

Stored values are already serialized ``ValueProto`` messages, and a ``FeatureVector`` is just
those messages, a packed status array and timestamps, each length-prefixed. So instead of one
Python ``ValueProto`` object per value, a dict per entity and a copy into the response (Feast's
path), each feature column is concatenated as bytes and the whole result parsed once by
protobuf's C implementation. The output is the message Feast's own Redis store produces.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from feast.metrics import track_feature_statuses
from feast.protos.feast.serving.ServingService_pb2 import FieldStatus, GetOnlineFeaturesResponse
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.value_type import ValueType

from feast_dragonfly._store import layout
from feast_dragonfly._store.compact.read import ViewBatch
from feast_dragonfly._store.direct_read import Prepared
from feast_dragonfly._store.read import ReadPlan
from feast_dragonfly._store.value_columns import UNSET, value_entries, varint

_PRESENT = FieldStatus.PRESENT
_NOT_FOUND = FieldStatus.NOT_FOUND


# Tag bytes of FeatureVector's fields: statuses = 2 (packed), event_timestamps = 3; and of
# GetOnlineFeaturesResponse.results = 2. (Values, field 1: ``_value_columns.value_entries``.)
_TS_HEAD = b"\x1a"
_UNSET_TIMESTAMP = _TS_HEAD + b"\x00"
_RESULT_HEAD = b"\x12"


def _feast_timestamp(raw: bytes | None, cache: dict[bytes | None, bytes]) -> bytes:
    """The event timestamp entry exactly as Feast writes it into the response (once per
    distinct stored timestamp)."""
    entry = cache.get(raw)
    if entry is None:
        body = layout.response_timestamp(raw).SerializeToString()
        entry = cache[raw] = _TS_HEAD + varint(len(body)) + body
    return entry


def track_statuses(view_name: str, present: int, not_found: int) -> None:
    """Feast's per-view PRESENT / NOT_FOUND counters (``feast serve --metrics``), which Feast's
    own response builder feeds and ours replaces; a no-op unless metrics are on."""
    try:
        track_feature_statuses(view_name, present, not_found)
    except Exception:  # noqa: BLE001 - metrics must never fail a read (Feast: the same)
        pass


def _add_metadata(
    response: Any, table: Any, names: Sequence[str], full_names: bool, with_versions: bool
) -> None:
    projection = table.projection
    prefix = projection.name_to_use()
    refs = [f"{prefix}__{name}" for name in names] if full_names else list(names)
    response.metadata.feature_names.val.extend(refs)
    if with_versions:
        shown_name = projection.name_alias or projection.name
        existing = {m.name for m in response.metadata.feature_view_metadata}
        if shown_name not in existing:
            entry = response.metadata.feature_view_metadata.add()
            entry.name = shown_name
            entry.version = getattr(table, "current_version_number", 0) or 0


def fill_response(
    response: Any,
    plan: ReadPlan,
    replies: Sequence[Any],
    placements: Sequence[tuple[Any, Sequence[Sequence[int]], int]],
    full_feature_names: bool,
    include_version_metadata: bool,
    framed: bool = False,
) -> None:
    """Append one FeatureVector per requested feature, view by view, as Feast does
    (``framed``: the replies' values are entries already, see ``compact.read.hash_replies``)."""
    timestamps: dict[bytes | None, bytes] = {}
    blobs: list[bytes] = []
    batches = _batched_views(replies)
    for view, (table, indexes, output_len) in zip(plan.views, placements):
        names = view.feature_names
        width = len(names)
        _add_metadata(response, table, names, full_feature_names, include_version_metadata)
        if width == 0:
            continue
        view_batch = batches.get(id(view.fieldset)) if batches else None
        if view_batch is not None:
            order = [-1] * output_len
            for (command, _), destinations in zip(view.positions, indexes):
                for position in destinations:
                    order[position] = view_batch.records[command]
            _append_batch(blobs, table.name, order, view_batch, timestamps)
            continue
        # For every output row: the view's fields in its entity's reply (None: no entity).
        rows: list[Sequence[bytes | None] | None] = [None] * output_len
        for (command, offset), destinations in zip(view.positions, indexes):
            fields = replies[command][offset : offset + width + 1]
            for position in destinations:
                rows[position] = fields
        _append_view(blobs, table.name, width, rows, timestamps, framed)
    if blobs:
        response.MergeFromString(b"".join(blobs))


def _append_view(
    blobs: list[bytes],
    metrics_name: str,
    width: int,
    rows: Sequence[Sequence[bytes | None] | None],
    timestamps: dict[bytes | None, bytes],
    framed: bool = False,
) -> None:
    """The serialized FeatureVectors of one view's features: ``rows`` holds, per output row,
    the stored feature values (``framed``: their entries) followed by the ``_ts`` field
    (None: the entity was not read)."""
    statuses = bytearray()
    ts_entries = []
    values: list[Sequence[bytes | None]] = []
    missing: list[bytes | None] = [UNSET if framed else None] * width + [None]
    found = 0
    for row in rows:
        if row is None:
            statuses.append(_NOT_FOUND)
            ts_entries.append(_UNSET_TIMESTAMP)
            values.append(missing)
        else:
            found += 1
            statuses.append(_PRESENT)
            ts_entries.append(_feast_timestamp(row[width], timestamps))
            values.append(row)
    output_len = len(rows)
    track_statuses(metrics_name, width * found, width * (output_len - found))
    tail = (
        b"\x12" + varint(len(statuses)) + bytes(statuses) + b"".join(ts_entries)
        if output_len
        else b""
    )
    columns = list(zip(*values))[:width] if output_len else [()] * width
    entries = b"".join if framed else value_entries
    _add_vectors(blobs, [entries(column) for column in columns], tail)  # type: ignore[arg-type]


def _add_vectors(blobs: list[bytes], columns: Sequence[bytes], tail: bytes) -> None:
    """One serialized ``results`` FeatureVector per feature: its joined value entries, then
    the view's statuses and event timestamps (``tail``)."""
    for column in columns:
        vector = column + tail
        blobs.append(_RESULT_HEAD + varint(len(vector)) + vector)


def _batched_views(replies: Sequence[Any]) -> dict[int, ViewBatch]:
    """The views of ``replies`` decoded in batches (``compact.read.BatchedReplies``)."""
    return getattr(replies, "batches", None) or {}


def _append_batch(
    blobs: list[bytes],
    metrics_name: str,
    order: list[int],
    view_batch: ViewBatch,
    timestamps: dict[bytes | None, bytes],
) -> None:
    """:func:`_append_view` for a view decoded as one batch (``compact.read.hash_replies``
    with ``columns``): ``order`` holds, per output row, its record's index in the batch (-1:
    the entity was not read)."""
    rows = np.asarray(order, dtype=np.int64)
    missing = rows < 0
    # Per row, its event timestamp entry: the record's, an unset one (no record, or past
    # its ttl), or none read (no entity).
    table = [_feast_timestamp(raw, timestamps) for raw in view_batch.distinct_stamps]
    table += [_feast_timestamp(None, timestamps), _UNSET_TIMESTAMP]
    stamp = view_batch.stamp_of[rows]
    pointers = np.where(missing, len(table) - 1, np.where(stamp < 0, len(table) - 2, stamp))
    ts_entries = b"".join([table[i] for i in pointers.tolist()])
    statuses = np.where(missing, _NOT_FOUND, _PRESENT).astype(np.uint8).tobytes()
    found = len(order) - int(missing.sum())
    width = len(view_batch.batch.pick)
    track_statuses(metrics_name, width * found, width * (len(order) - found))
    tail = b"\x12" + varint(len(statuses)) + statuses + ts_entries if order else b""
    _add_vectors(blobs, view_batch.batch.columns(order), tail)


#: How each join-key type served by ``_direct_read`` becomes Feast's entity ``Value``.
_ENTITY_VALUE_FIELD = {ValueType.INT64: "int64_val", ValueType.INT32: "int32_val"}


def direct_response(
    prepared: Prepared, replies: Sequence[Any], framed: bool = False
) -> GetOnlineFeaturesResponse:
    """Feast's response message for a request ``_direct_read`` planned: the join-key columns
    (as Feast's ``_populate_result_rows_from_columnar`` writes them), then every view's
    features from the stored bytes (``framed``: see :func:`fill_response`), with the same
    metadata."""
    plan = prepared.plan
    rows = prepared.rows
    names: list[str] = []
    blobs: list[bytes] = []
    # Join keys: every row PRESENT, with an unset event timestamp.
    entity_tail = b"\x12" + varint(rows) + bytes([_PRESENT]) * rows + _UNSET_TIMESTAMP * rows
    for join_key, values in prepared.entities.items():
        names.append(join_key)
        field = _ENTITY_VALUE_FIELD.get(plan.join_key_types[join_key], "string_val")
        entries = value_entries([ValueProto(**{field: v}).SerializeToString() for v in values])
        vector = entries + entity_tail
        blobs.append(_RESULT_HEAD + varint(len(vector)) + vector)
    timestamps: dict[bytes | None, bytes] = {}
    batches = _batched_views(replies)
    for index, view in enumerate(plan.views):
        names.extend(view.output_names)
        view_batch = batches.get(id(view.fieldset)) if batches else None
        if view_batch is not None:  # (a view without features is never in a batch)
            records = view_batch.records
            order = [records[command] for command, _ in prepared.placements[index]]
            _append_batch(blobs, view.metrics_name, order, view_batch, timestamps)
        else:
            view_rows = prepared.rows_of(index, replies)
            width = view.fieldset.width
            _append_view(blobs, view.metrics_name, width, view_rows, timestamps, framed)
    response = GetOnlineFeaturesResponse()
    response.metadata.feature_names.val.extend(names)
    response.MergeFromString(b"".join(blobs))
    return response
