"""Removing the source's keys once a layout conversion has put them on the target
(``migrate --to-layout ... --remove-source``).

A source key is removed only when every view it holds is either on the target at the same or
a later event time (a record for each view of a hash; the view's ``_ts`` in the entity's hash
for a record) or past its view's ``ttl``, and only if it has not changed since it was read
(``remove_unchanged.lua`` compares, atomically per key, before deleting). Keys holding a view
the registry does not know, unreadable keys and keys written meanwhile stay where they are.
Meant for once every writer and reader uses the new layout: a writer still on the old one
would only be kept from losing data by that last comparison.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from google.protobuf.timestamp_pb2 import Timestamp

from feast_dragonfly._admin import records
from feast_dragonfly._admin.report import MigrationError, Report
from feast_dragonfly._admin.scan import by_endpoint, pairs
from feast_dragonfly._protocol import record_format, wire
from feast_dragonfly._protocol import script as _script
from feast_dragonfly._protocol.deployment import Deployment, Endpoint
from feast_dragonfly._protocol.keys import TIMESTAMP_PREFIX, compact_key, timestamp_field

if TYPE_CHECKING:
    from feast_dragonfly._admin.convert import Conversion
    from feast_dragonfly._admin.migrate import Migration

SOURCE = _script.script_source("remove_unchanged.lua", package="feast_dragonfly._admin",
                               shared=False)  # fmt: skip
SHA = hashlib.sha1(SOURCE.encode()).hexdigest().encode()
LOAD_COMMAND = wire.command(b"SCRIPT", b"LOAD", SOURCE.encode())


class Removal(NamedTuple):
    """A source key to remove if it still holds what ``args`` say (see the script)."""

    key: bytes
    args: tuple[bytes, ...]


def _timestamp(raw: bytes) -> tuple[int, int]:
    stamp = Timestamp()
    stamp.ParseFromString(raw)
    return stamp.seconds, stamp.nanos


def _expired(conversion: Conversion, view: str, seconds: int, nanos: int, now: int) -> bool:
    ttl = conversion.ttls.get(view, 0)
    return ttl > 0 and now >= seconds * 1000 + nanos // 1_000_000 + ttl * 1000


def converted_hashes(
    conversion: Conversion,
    target: Deployment,
    keys: Sequence[bytes],
    hashes: Sequence[tuple[Any, Any]],
) -> tuple[list[Removal], int]:
    """The source hashes whose every view the target holds as a record at the same or a later
    event time (or that are past their ttl), and how many others are left."""
    now = record_format.now_ms()
    candidates: list[tuple[Removal, list[tuple[bytes, bytes]]]] = []
    left = 0
    for key, (flat, _) in zip(keys, hashes):
        if isinstance(flat, Exception):
            left += 1
            continue
        if not flat:
            continue  # gone since the SCAN
        stamps = [(n, v) for n, v in pairs(flat) if n.startswith(TIMESTAMP_PREFIX)]
        checks = _record_checks(conversion, key, stamps, now)
        if not stamps or checks is None:
            left += 1
            continue
        args = (b"h", b"%d" % len(stamps), *(part for stamp in stamps for part in stamp))
        candidates.append((Removal(key, args), checks))
    wanted = [record for _, checks in candidates for record, _ in checks]
    with target.errors():
        found = dict(zip(wanted, records.read_routed(target, wanted)))
    removals = []
    for removal, checks in candidates:
        there = [records.event_time(found[record]) for record, _ in checks]
        if all(t is not None and t >= mine for t, (_, mine) in zip(there, checks)):
            removals.append(removal)
        else:
            left += 1
    return removals, left


def _record_checks(
    conversion: Conversion, key: bytes, stamps: Sequence[tuple[bytes, bytes]], now: int
) -> list[tuple[bytes, bytes]] | None:
    """(record key, the view's event time bytes) the target must hold at that time or later
    for a hash to go; None when the hash must stay (a view the registry does not know, a
    malformed timestamp)."""
    checks = []
    for name, raw in stamps:
        view = name[len(TIMESTAMP_PREFIX) :].decode("utf-8", errors="replace")
        if view not in conversion.schemas:
            return None
        try:
            seconds, nanos = _timestamp(raw)
            mine = conversion.codec.event_time_bytes(seconds, nanos)
        except Exception:  # noqa: BLE001 - malformed: never removed
            return None
        if not _expired(conversion, view, seconds, nanos, now):
            checks.append((compact_key(key, view), mine))
    return checks


def converted_records(
    conversion: Conversion,
    target: Deployment,
    found: Sequence[tuple[bytes, str]],
    replies: Sequence[tuple[Any, Any]],
) -> tuple[list[Removal], int]:
    """The source records whose view the target's entity hash holds at the same or a later
    event time (or that are past their ttl), and how many others are left."""
    now = record_format.now_ms()
    candidates: list[tuple[Removal, tuple[bytes, bytes] | None, tuple[int, int]]] = []
    left = 0
    for (key, view), (value, _) in zip(found, replies):
        if value is None:
            continue
        try:
            seconds, nanos, _ = conversion.codec.read_header(value)
        except Exception:  # noqa: BLE001 - not a record (or another type): never removed
            left += 1
            continue
        if view not in conversion.schemas:
            left += 1
            continue
        hash_key = key[: len(key) - len(view.encode("utf-8")) - 1]
        check = None
        if not _expired(conversion, view, seconds, nanos, now):
            check = (hash_key, timestamp_field(view))
        candidates.append((Removal(key, (b"s", value)), check, (seconds, nanos)))
    wanted = [check for _, check, _ in candidates if check is not None]
    with target.errors():
        stamps = dict(zip(wanted, _hget_routed(target, wanted)))
    removals = []
    for removal, check, mine in candidates:
        raw = stamps.get(check) if check is not None else None
        try:
            confirmed = check is None or (isinstance(raw, bytes) and _timestamp(raw) >= mine)
        except Exception:  # noqa: BLE001 - a malformed _ts on the target confirms nothing
            confirmed = False
        if confirmed:
            removals.append(removal)
        else:
            left += 1
    return removals, left


def _hget_routed(deployment: Deployment, wanted: Sequence[tuple[bytes, bytes]]) -> list[Any]:
    out: list[Any] = [None] * len(wanted)
    routed = ((deployment.endpoint_for(key), i) for i, (key, _) in enumerate(wanted))
    for endpoint, indices in by_endpoint(routed):
        commands = [wire.command(b"HGET", *wanted[i]) for i in indices]
        for index, reply in zip(indices, endpoint.exchange(commands, len(commands))):
            out[index] = reply
    return out


def _pack(calls: Sequence[Removal]) -> bytes:
    args = [b"EVALSHA", SHA, b"%d" % len(calls), *(r.key for r in calls)]
    args += [part for r in calls for part in r.args]
    return wire.command(*args)


def remove(source: Deployment, removals: Sequence[Removal], per_call: int, out: Report) -> None:
    """Run the removals on the source's masters, ``per_call`` keys per call."""
    for endpoint, mine in by_endpoint((source.endpoint_for(r.key), r) for r in removals):
        calls = [mine[i : i + per_call] for i in range(0, len(mine), per_call)]
        replies = endpoint.exchange([_pack(c) for c in calls], len(calls))
        if any(_script.is_noscript(r) for r in replies):
            endpoint.exchange([LOAD_COMMAND], 1)
            replies = endpoint.exchange([_pack(c) for c in calls], len(calls))
        for call, reply in zip(calls, replies):
            if isinstance(reply, Exception):
                raise MigrationError(
                    f"the source {source.address} refused to remove converted keys: "
                    f"{source.scrub(str(reply))}"
                )
            removed = sum(int(flag) for flag in reply)
            out.add("removed", removed)
            out.add("remove_left", len(call) - removed)


def remove_source(migration: Migration) -> Report:
    """After a conversion: one more pass over the source, removing what the target holds."""
    conversion = migration.options.conversion
    assert conversion is not None
    source = migration.source
    # A script's keys must share a slot (cluster); one key per call is faster on Dragonfly.
    per_call = 1 if source.settings.redis_type == "redis_cluster" or source.dragonfly else 32
    out = Report()
    for endpoint, keys, found in _pages(migration):
        with migration.source.errors():
            if conversion.to_layout == "compact" and keys:
                hashes = migration.read_source(endpoint, keys)
                removals, left = converted_hashes(conversion, migration.target, keys, hashes)
            elif conversion.to_layout == "feast" and found:
                replies = records.read_records(endpoint, [key for key, _ in found])
                removals, left = converted_records(conversion, migration.target, found, replies)
            else:
                continue
            out.add("remove_left", left)
            remove(source, removals, per_call, out)
    return out


def _pages(migration: Migration) -> Iterator[tuple[Endpoint, list[bytes], list]]:
    for _, endpoint, _, _, keys, found in migration.pages(None):
        yield endpoint, keys, found
