"""Compact-layout records for ``migrate``: reading them, writing them with the store's own
event-time-guarded script, and copying a project's schema directory — all without Feast.

A record (``docs/data-layout.md``, "The compact layout") is one string per entity and feature
view, under ``<entity hash key>:<view>``; bytes 1..12 of it are its event time in an order
that compares byte-wise, bytes 13..16 its schema id, whose text lives in the project's
schema directory (``feast_dragonfly:schemas:{<project>}``). A migration copies records as
they are — decoding them is a layout conversion's business (``convert``) — through
``compact_write.lua``: a record replaces only a strictly older one, with an absolute expiry
(``PXAT``) carrying the source's remaining time to live.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from feast_dragonfly._admin import batch
from feast_dragonfly._admin.report import MAX_REPORTED, Report
from feast_dragonfly._admin.scan import by_endpoint
from feast_dragonfly._protocol import script as _script
from feast_dragonfly._protocol import wire
from feast_dragonfly._protocol.deployment import Deployment, Endpoint
from feast_dragonfly._protocol.keys import COMPACT_SEPARATOR, describe_key, entity_part_length
from feast_dragonfly._protocol.record_format import (  # re-exported: what migrate reads of a record
    EVENT_TIME as EVENT_TIME,
)
from feast_dragonfly._protocol.record_format import (
    HEADER_SIZE as HEADER_SIZE,
)
from feast_dragonfly._protocol.record_format import (
    VERSION as VERSION,
)
from feast_dragonfly._protocol.record_format import (
    directory_key as directory_key,
)
from feast_dragonfly._protocol.record_format import (
    now_ms as now_ms,
)
from feast_dragonfly._protocol.record_format import (
    schema_id as schema_id,
)
from feast_dragonfly._protocol.script import COMPACT_WRITE

#: Script calls carry two arguments per record; far below any server's argument limit.
MAX_RECORDS_PER_CALL = 1000


def split_page(
    keys: Sequence[bytes], project: bytes
) -> tuple[list[bytes], list[tuple[bytes, str]]]:
    """A SCAN page's keys of ``project``: its entity hashes (``<entity><project>``), and its
    records as ``(key, view)`` (``<entity><project>:<view>``); other keys are left out."""
    hashes: list[bytes] = []
    found: list[tuple[bytes, str]] = []
    record_start = project + COMPACT_SEPARATOR
    for key in keys:
        length = entity_part_length(key)
        if length is None:
            continue
        rest = key[length:]
        if rest == project:
            hashes.append(key)
        elif rest.startswith(record_start) and len(rest) > len(record_start):
            found.append((key, rest[len(record_start) :].decode("utf-8", errors="replace")))
    return hashes, found


def event_time(record: Any) -> bytes | None:
    """A record's 12 event-time bytes (they compare byte-wise in time order); None when the
    value is not a record of a known format."""
    if not isinstance(record, bytes) or len(record) < HEADER_SIZE or record[0] != VERSION:
        return None
    return record[EVENT_TIME]


def expire_at(pttl: Any, now: int) -> int:
    """A source key's remaining time to live as an absolute expiry in ms (0: never)."""
    remaining = batch.remaining(pttl)
    return 0 if remaining < 0 else now + remaining


class RecordWrite(NamedTuple):
    """One record for ``compact_write.lua``: its key, bytes, and absolute expiry (ms, 0 never)."""

    key: bytes
    record: bytes
    expire_at: int
    view: str


def read_records(endpoint: Endpoint, keys: Sequence[bytes]) -> list[tuple[Any, Any]]:
    """``(GET reply, PTTL)`` per key in one round trip: the record's bytes, None when it is
    gone, or the error reply (WRONGTYPE) as an exception object."""
    if not keys:
        return []
    commands = []
    for key in keys:
        commands.append(wire.command(b"GET", key))
        commands.append(wire.command(b"PTTL", key))
    replies = endpoint.exchange(commands, 2 * len(keys))
    return [(replies[i], replies[i + 1]) for i in range(0, len(replies), 2)]


def read_routed(deployment: Deployment, keys: Sequence[bytes]) -> list[Any]:
    """``GET`` of each key on the master of its slot (None when absent, an error reply as an
    exception object)."""
    found: list[Any] = [None] * len(keys)
    routed = ((deployment.endpoint_for(key), index) for index, key in enumerate(keys))
    for endpoint, indices in by_endpoint(routed):
        replies = endpoint.exchange([wire.command(b"GET", keys[i]) for i in indices], len(indices))
        for index, reply in zip(indices, replies):
            found[index] = reply
    return found


def _pack(writes: Sequence[RecordWrite]) -> bytes:
    keys = b"".join([wire.bulk(w.key) for w in writes])
    body = b"".join([wire.bulk(w.record) + wire.bulk_int(w.expire_at) for w in writes])
    return _script.pack_call(
        keys, len(writes), b"", body, 2 * len(writes), COMPACT_WRITE, n_header_args=0
    )


def _send(endpoint: Endpoint, calls: list[list[RecordWrite]]) -> list[Any]:
    """The calls in one round trip; a server without the script (restarted) learns it first."""
    replies = endpoint.exchange([_pack(c) for c in calls], len(calls))
    if any(_script.is_noscript(r) for r in replies):
        endpoint.exchange([COMPACT_WRITE.load_command], 1)
        replies = endpoint.exchange([_pack(c) for c in calls], len(calls))
    return replies


def write_records(
    writes: Sequence[RecordWrite],
    target: Deployment,
    per_call: int,
    out: Report,
    *,
    written: str,
    kept: str,
) -> None:
    """Write the records with ``compact_write.lua``, ``per_call`` per call on each master;
    counts ``written`` and ``kept`` (a record the target holds at the same or a later event
    time). A record whose key holds another type is an error, named; the others of its call
    are then sent one by one (the script stops at the first error)."""
    step = max(1, min(per_call, MAX_RECORDS_PER_CALL))
    for endpoint, mine in by_endpoint((target.endpoint_for(w.key), w) for w in writes):
        calls = [mine[i : i + step] for i in range(0, len(mine), step)]
        retry: list[RecordWrite] = []
        for call, reply in zip(calls, _send(endpoint, calls)):
            if not isinstance(reply, Exception):
                out.add(written, int(reply))
                out.add(kept, len(call) - int(reply))
            elif len(call) > 1 and "FEASTROW" in str(reply):
                retry.extend(call)  # rows before the bad one are applied: they count as kept
            else:
                _refused(call[0], reply, target, out)
        if retry:
            for write, reply in zip(retry, _send(endpoint, [[w] for w in retry])):
                if isinstance(reply, Exception):
                    _refused(write, reply, target, out)
                else:
                    out.add(written, int(reply))
                    out.add(kept, 1 - int(reply))


def _refused(write: RecordWrite, reply: Any, target: Deployment, out: Report) -> None:
    if "FEASTROW" not in str(reply):
        batch.fail_on(reply, target)  # out of memory, scripting refused: stops the run
    out.add("errors")
    out.note(
        f"skipped {describe_key(write.key)}, view {write.view}: the target key is not a "
        "compact record (WRONGTYPE)"
    )


# --------------------------------------------------------------------------- copying as is


def copy_plan(
    records: Sequence[tuple[bytes, str]], replies: Sequence[tuple[Any, Any]], out: Report
) -> list[RecordWrite]:
    """The records of one batch to copy as they are, each with its remaining TTL; the others
    are counted (gone since the SCAN, or not a record)."""
    now = now_ms()
    writes = []
    for (key, view), (value, pttl) in zip(records, replies):
        if value is None:
            out.add("skipped_vanished")
        elif event_time(value) is None:
            out.add("records_unreadable")
            what = "not a string" if isinstance(value, Exception) else "not a compact record"
            out.note(f"skipped {describe_key(key)}, view {view}: the source key is {what}")
        else:
            writes.append(RecordWrite(key, value, expire_at(pttl, now), view))
    return writes


def copy_directory(source: Deployment, target: Deployment, project: str, out: Report) -> None:
    """Give the target every schema the source's directory holds for ``project`` (``HSETNX``:
    the same field always names the same text; a different text there is reported)."""
    key = directory_key(project)
    with source.errors():
        stored = source.endpoint_for(key).client.hgetall(key)
    if not stored:
        return
    with target.errors():
        client = target.endpoint_for(key).client
        for name, text in stored.items():
            if client.hsetnx(key, name, text) or client.hget(key, name) == text:
                continue
            out.add("errors")
            out.note(
                f"project '{project}': the target's schema directory holds another schema "
                f"under {name.decode(errors='replace')} (a hash collision); records of it were "
                "not readable there"
            )


def verify_copies(
    source: Endpoint,
    records: Sequence[tuple[bytes, str]],
    target: Deployment,
    out: Report,
) -> None:
    """Compare copied records with the source: identical, kept by the target (its event time
    is the same or later), or a mismatch."""
    assert out.verify is not None
    keys = [key for key, _ in records]
    replies = read_records(source, keys)
    with target.errors():
        stored = read_routed(target, keys)
    for key, (value, _), there in zip(keys, replies, stored):
        mine = event_time(value)
        if mine is None:
            continue  # gone, or not a record: never copied
        tally(out, mine, event_time(there), there == value, describe_key(key))


def tally(out: Report, mine: bytes, theirs: bytes | None, same: bool, what: str) -> None:
    """Count one verified record: identical (``same``), kept by the target (its event time
    ``theirs`` is the same as or later than the source's ``mine``), or a mismatch, named
    ``what`` in the report."""
    assert out.verify is not None
    out.verified_keys += 1
    if same:
        out.verify.match += 1
    elif theirs is not None and theirs >= mine:
        out.verify.kept += 1
    else:
        out.verify.mismatch += 1
        if len(out.mismatched) < MAX_REPORTED:
            out.mismatched.append(what)
