"""One copied entity hash → the server-side merge call that applies it per feature view.

Which fields belong to which view: a ``_ts:<view>`` field names each view, but feature fields
are murmur3 hashes, so

* a hash with **one** view: every other field is that view's;
* **several** views and a field → view map from the registry (``-C REPO``): one group per view;
* several views and no map (or a field the map does not know, e.g. of a deleted view): one
  group for the whole key — the newest timestamp on either side decides for all its views
  (the caller counts these keys and warns).

The merge itself runs in ``migrate_merge.lua``, atomically per key on the target.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from feast_dragonfly import _script, _wire
from feast_dragonfly._migrate_scan import pairs

TS_PREFIX = b"_ts:"
SOURCE = _script.script_source("migrate_merge.lua")
SHA = hashlib.sha1(SOURCE.encode()).hexdigest().encode()
LOAD_COMMAND = _wire.command(b"SCRIPT", b"LOAD", SOURCE.encode())
_EVALSHA = _wire.bulk(b"EVALSHA") + _wire.bulk(SHA)
_PAIR = b"$%d\r\n%b\r\n$%d\r\n%b\r\n"

#: Per-key status codes of the script's reply.
OK, NOT_A_HASH, MALFORMED_TIMESTAMP = 0, 1, 2


@dataclass(frozen=True)
class Group:
    """Fields decided together: the ``_ts`` pairs of its view(s), then its feature pairs."""

    timestamps: tuple[tuple[bytes, bytes], ...]
    features: tuple[tuple[bytes, bytes], ...]

    @property
    def views(self) -> int:
        return len(self.timestamps)


@dataclass(frozen=True)
class KeyPlan:
    """How one source hash is merged: its groups, whether it fell back to one whole-key
    group for several views, and its remaining TTL (ms, -1 none)."""

    key: bytes
    groups: tuple[Group, ...]
    whole_key: bool
    pttl: int


def view_groups(flat: Any, owners: Mapping[bytes, bytes] | None) -> tuple[tuple[Group, ...], bool]:
    """The groups of one HGETALL reply and whether it is a whole-key fallback; no groups
    when the hash holds no ``_ts`` field (not Feast's layout: nothing to merge by)."""
    stamps: dict[bytes, tuple[bytes, bytes]] = {}
    features: list[tuple[bytes, bytes]] = []
    for name, value in pairs(flat):
        if name.startswith(TS_PREFIX):
            stamps[name[len(TS_PREFIX) :]] = (name, value)
        else:
            features.append((name, value))
    if not stamps:
        return (), False
    if len(stamps) == 1:
        return (Group(tuple(stamps.values()), tuple(features)),), False
    by_view: dict[bytes, list[tuple[bytes, bytes]]] = {view: [] for view in stamps}
    for pair in features:
        view = owners.get(pair[0]) if owners is not None else None
        if view is None or view not in by_view:
            return (Group(tuple(stamps.values()), tuple(features)),), True
        by_view[view].append(pair)
    return tuple(Group((stamps[v],), tuple(f)) for v, f in by_view.items()), False


def pack_call(plans: Sequence[KeyPlan]) -> bytes:
    """``EVALSHA`` of the merge script for these keys (one slot's worth on a cluster), packed
    straight into RESP: a field and its value are one formatting step (this is the hot loop)."""
    parts = [_wire.bulk(plan.key) for plan in plans]
    count = 3 + len(plans)
    for plan in plans:
        parts.append(_wire.bulk_int(plan.pttl))
        parts.append(_wire.bulk_int(len(plan.groups)))
        count += 2
        for group in plan.groups:
            size = 2 * (group.views + len(group.features))
            parts.append(_wire.bulk_int(group.views))
            parts.append(_wire.bulk_int(size))
            count += 2 + size
            for name, value in (*group.timestamps, *group.features):
                parts.append(_PAIR % (len(name), name, len(value), value))
    head = b"*%d\r\n%b%b" % (count, _EVALSHA, _wire.bulk_int(len(plans)))
    return head + b"".join(parts)


def parse_reply(reply: Sequence[int]) -> list[tuple[int, int, int]]:
    """(views written, views kept, status) per key of one call."""
    return [(reply[i], reply[i + 1], reply[i + 2]) for i in range(0, len(reply), 3)]


def event_time(raw: bytes | None) -> tuple[int, int] | None:
    """A stored ``_ts`` value as (seconds, nanos); None when absent or the zero epoch (which
    Feast treats as "no data")."""
    if not raw:
        return None
    stamp = Timestamp()
    stamp.ParseFromString(raw)
    if stamp.seconds == 0 and stamp.nanos == 0:
        return None
    return stamp.seconds, stamp.nanos
