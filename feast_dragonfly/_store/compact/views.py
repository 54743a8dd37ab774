"""What the compact layout needs of a feature view: its record schema, and when a record of
it stops being valid (its ``ttl``), which the server enforces by expiring the key.

A view's ``ttl`` (Feast: "how long a feature value stays valid after its event time"; 0 or
unset: forever) becomes each record's absolute expiry, ``event time + ttl``, set with
``SET ... PXAT`` when the record is written. ``key_ttl_seconds`` (the store's "expire N seconds
after the last write") still applies; a record gets the earlier of the two. A record whose
expiry has already passed when it is written is not sent at all. Reads apply the same rule
(:func:`expired`), so a value past its ``ttl`` is never returned even before the server has
reclaimed it.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
from feast.value_type import ValueType

from feast_dragonfly._protocol.record_format import now_ms as now_ms  # the clock, re-exported
from feast_dragonfly._store.compact.schema import Schema, require_supported


@lru_cache(maxsize=4096)
def _schema(features: tuple[tuple[str, ValueType], ...], view: str) -> Schema:
    require_supported(features, view=view)
    return Schema(features)


def schema_of(table: Any) -> Schema:
    """The record schema of a feature view (its features, in order, with their types);
    raises ``DragonflyConfigError`` naming a feature whose type cannot be stored."""
    features = tuple((f.name, f.dtype.to_value_type()) for f in table.features)
    return _schema(features, table.name)


def ttl_seconds(table: Any) -> int:
    """The view's ``ttl`` in whole seconds; 0 means forever (as in Feast)."""
    ttl = getattr(table, "ttl", None)
    return int(ttl.total_seconds()) if ttl else 0


def expire_at_ms(seconds: int, nanos: int, *, view_ttl: int, key_ttl: int | None, now: int) -> int:
    """When a record with this event time expires, in Unix ms (0: never; a moment at or before
    the epoch is 1, long past, never 0 or a negative time a server would refuse)."""
    candidates = []
    if view_ttl > 0:
        candidates.append(seconds * 1000 + nanos // 1_000_000 + view_ttl * 1000)
    if key_ttl:
        candidates.append(now + key_ttl * 1000)
    return max(1, min(candidates)) if candidates else 0


def expire_at_ms_array(
    seconds: np.ndarray, nanos: np.ndarray, *, view_ttl: int, key_ttl: int | None, now: int
) -> np.ndarray:
    """:func:`expire_at_ms` for columns of event times (int64 ms, 0: never)."""
    candidates = []
    if view_ttl > 0:
        event_ms = seconds.astype(np.int64) * 1000 + nanos.astype(np.int64) // 1_000_000
        candidates.append(event_ms + view_ttl * 1000)
    if key_ttl:
        candidates.append(np.full(len(seconds), now + key_ttl * 1000, dtype=np.int64))
    if not candidates:
        return np.zeros(len(seconds), dtype=np.int64)
    return np.maximum(np.minimum.reduce(candidates), 1)


def expired(seconds: int, nanos: int, view_ttl: int, now: int) -> bool:
    """Whether a value with this event time is past its view's ``ttl`` at ``now`` (ms)."""
    return view_ttl > 0 and now >= seconds * 1000 + nanos // 1_000_000 + view_ttl * 1000


def read_options(table: Any, *, compact: bool, enforce_ttl: bool) -> dict[str, Any]:
    """What a read of this view needs beyond its features (``read.field_set``'s ``ttl`` and
    ``schema``): the ttl when it is enforced, the record schema with ``layout: compact``."""
    return {
        "ttl": ttl_seconds(table) if compact or enforce_ttl else 0,
        "schema": schema_of(table) if compact else None,
    }
