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

from feast.metrics import track_feature_statuses
from feast.protos.feast.serving.ServingService_pb2 import FieldStatus

from feast_dragonfly import _layout
from feast_dragonfly._read import ReadPlan

_PRESENT = FieldStatus.PRESENT
_NOT_FOUND = FieldStatus.NOT_FOUND


def _varint_slow(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


# Varints below 2**14 (every length but huge vectors') are looked up, not computed.
_SMALL_VARINTS = [_varint_slow(n) for n in range(1 << 14)]


def _varint(value: int) -> bytes:
    return _SMALL_VARINTS[value] if value < 16384 else _varint_slow(value)


# Tag bytes of FeatureVector's fields: values = 1, statuses = 2 (packed), event_timestamps = 3;
# and of GetOnlineFeaturesResponse.results = 2.
_VALUE_HEAD = [b"\x0a" + _varint(n) for n in range(128)]
_EMPTY_VALUE = b"\x0a\x00"
_TS_HEAD = b"\x1a"
_RESULT_HEAD = b"\x12"


def _value_entry(raw: bytes) -> bytes:
    return b"\x0a" + _varint(len(raw)) + raw


def _feast_timestamp(raw: bytes | None, cache: dict[bytes | None, bytes]) -> bytes:
    """The event timestamp entry exactly as Feast writes it into the response (once per
    distinct stored timestamp)."""
    entry = cache.get(raw)
    if entry is None:
        body = _layout.response_timestamp(raw).SerializeToString()
        entry = cache[raw] = _TS_HEAD + _varint(len(body)) + body
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
) -> None:
    """Append one FeatureVector per requested feature, view by view, as Feast does."""
    timestamps: dict[bytes | None, bytes] = {}
    blobs: list[bytes] = []
    for view, (table, indexes, output_len) in zip(plan.views, placements):
        names = view.feature_names
        width = len(names)
        _add_metadata(response, table, names, full_feature_names, include_version_metadata)
        if width == 0:
            continue
        # For every output row: the reply list and offset it reads from (None: no entity).
        sources: list[tuple[Any, int] | None] = [None] * output_len
        for (command, offset), destinations in zip(view.positions, indexes):
            reply_at = (replies[command], offset)
            for position in destinations:
                sources[position] = reply_at

        statuses = bytearray()
        ts_entries = []
        rows = []
        missing: list[bytes | None] = [None] * (width + 1)
        found = 0
        for source in sources:
            if source is None:
                statuses.append(_NOT_FOUND)
                ts_entries.append(_TS_HEAD + b"\x00")
                rows.append(missing)
            else:
                reply, offset = source
                found += 1
                statuses.append(_PRESENT)
                ts_entries.append(_feast_timestamp(reply[offset + width], timestamps))
                rows.append(reply[offset : offset + width])
        track_statuses(table.name, width * found, width * (output_len - found))
        tail = (
            b"\x12" + _varint(len(statuses)) + bytes(statuses) + b"".join(ts_entries)
            if output_len
            else b""
        )
        heads = _VALUE_HEAD
        for column in zip(*rows) if output_len else [()] * width:
            vector = (
                b"".join(
                    [
                        _EMPTY_VALUE
                        if not raw
                        else (heads[len(raw)] + raw if len(raw) < 128 else _value_entry(raw))
                        for raw in column
                    ]
                )
                + tail
            )
            blobs.append(_RESULT_HEAD + _varint(len(vector)) + vector)
    if blobs:
        response.MergeFromString(b"".join(blobs))
