"""One copied entity hash → the server-side merge call that applies it per feature view.

Which fields belong to which view: a ``_ts:<view>`` field names each view, but feature fields
are murmur3 hashes, so

* a hash with **one** view: every other field is that view's;
* **several** views and a field → view map from the registry (``-C REPO``): one group per view;
* several views and no map (or a field the map does not know, e.g. of a deleted view): one
  group for the whole key, whose views the script still compares one by one: every field is
  written when no view is newer on the target; the views the target lacks are added (their
  timestamps, and the fields the target does not have) when none is newer on the source; a
  key with views newer on each side is left alone (``AMBIGUOUS``: only its fields' owners
  could say which to keep) unless the run opted to merge it as a whole (``MERGED_WHOLE``).

The merge itself runs in ``migrate_merge.lua``, atomically per key on the target.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any, NamedTuple

from google.protobuf.timestamp_pb2 import Timestamp

from feast_dragonfly._admin.registry_views import FieldOwners
from feast_dragonfly._protocol import script as _script
from feast_dragonfly._protocol import wire
from feast_dragonfly._protocol.keys import TIMESTAMP_PREFIX

SOURCE = _script.script_source("migrate_merge.lua", package="feast_dragonfly._admin")
SHA = hashlib.sha1(SOURCE.encode()).hexdigest().encode()
LOAD_COMMAND = wire.command(b"SCRIPT", b"LOAD", SOURCE.encode())
_EVALSHA = wire.bulk(b"EVALSHA") + wire.bulk(SHA)
_PAIR = b"$%d\r\n%b\r\n$%d\r\n%b\r\n"

#: Per-key status codes of the script's reply: ``AMBIGUOUS``, views newer on each side of a
#: key whose fields have no known owner (nothing written); ``MERGED_WHOLE``, such a key merged
#: as a whole, because the run asked for it.
OK, NOT_A_HASH, MALFORMED_TIMESTAMP, AMBIGUOUS, MERGED_WHOLE = 0, 1, 2, 3, 4


class Group(NamedTuple):
    """Fields decided together: the ``_ts`` pairs of its view(s), then its feature pairs.
    (Named tuples, not dataclasses: one is built per key, and that shows.)"""

    timestamps: tuple[tuple[bytes, bytes], ...]
    features: tuple[tuple[bytes, bytes], ...]

    @property
    def views(self) -> int:
        return len(self.timestamps)


class KeyPlan(NamedTuple):
    """How one source hash is merged: its groups, whether it fell back to one whole-key
    group for several views, and its remaining TTL (ms, -1 none)."""

    key: bytes
    groups: tuple[Group, ...]
    whole_key: bool
    pttl: int


def view_groups(flat: Any, owners: FieldOwners | None) -> tuple[tuple[Group, ...], bool]:
    """The groups of one HGETALL reply and whether it is a whole-key fallback; no groups
    when the hash holds no ``_ts`` field (not Feast's layout: nothing to merge by). Written
    with comprehensions: this runs once per key, over every field."""
    if isinstance(flat, dict):  # a RESP3 map
        names, values = list(flat), list(flat.values())
    else:
        names, values = flat[0::2], flat[1::2]
    prefix, size = TIMESTAMP_PREFIX, len(TIMESTAMP_PREFIX)
    at = [i for i, name in enumerate(names) if name[:size] == prefix]
    if not at:
        return (), False
    if len(at) == 1:  # the common case: slices and zip, no per-field Python code
        i = at[0]
        rest = zip(names[:i] + names[i + 1 :], values[:i] + values[i + 1 :])
        return (Group(((names[i], values[i]),), tuple(rest)),), False
    stamps = [(names[i], values[i]) for i in at]
    features = [(n, v) for n, v in zip(names, values) if n[:size] != prefix]
    by_view: dict[bytes, list[tuple[bytes, bytes]]] = {name[size:]: [] for name, _ in stamps}
    for pair in features:
        view = owners.owner(pair[0], by_view) if owners is not None else None
        if view is None:
            return (Group(tuple(stamps), tuple(features)),), True
        by_view[view].append(pair)
    return tuple(Group((stamp,), tuple(by_view[stamp[0][size:]])) for stamp in stamps), False


def pack_call(plans: Sequence[KeyPlan], merge_whole: bool = False) -> bytes:
    """``EVALSHA`` of the merge script for these keys (one slot's worth on a cluster), packed
    straight into RESP: a field and its value are one formatting step (this is the hot loop).
    ``merge_whole``: merge keys with views newer on each side as a whole (see the module)."""
    parts = [wire.bulk(plan.key) for plan in plans]
    parts.append(wire.bulk(b"1" if merge_whole else b"0"))
    count = 4 + len(plans)
    for plan in plans:
        parts.append(wire.bulk_int(plan.pttl))
        parts.append(wire.bulk_int(len(plan.groups)))
        count += 2
        for group in plan.groups:
            size = 2 * (group.views + len(group.features))
            parts.append(wire.bulk_int(group.views))
            parts.append(wire.bulk_int(size))
            count += 2 + size
            parts.extend([_PAIR % (len(n), n, len(v), v) for n, v in group.timestamps])
            parts.extend([_PAIR % (len(n), n, len(v), v) for n, v in group.features])
    head = b"*%d\r\n%b%b" % (count, _EVALSHA, wire.bulk_int(len(plans)))
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
