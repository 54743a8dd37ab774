"""Reads: plan a request as one HMGET per entity hash, then fetch it in chunks.

Feast's store sends one HMGET per (entity, feature view) pair, so two views sharing an entity
cost two commands on the same hash, and redis-py re-encodes every field name of every command.
Here the field list of each (view, features) pair is encoded to the wire format once and
cached, each hash gets one HMGET carrying the fields of every view that reads it, and large
requests are split into chunks sent over several pooled connections (a DragonflyDB connection
is pinned to one server thread, so more connections means more server threads at work).
Sync and async share planning and decoding; only the fetch differs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any

from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from google.protobuf.timestamp_pb2 import Timestamp
from redis import exceptions as redis_exceptions

from feast_dragonfly._protocol import keys as _keys
from feast_dragonfly._protocol import transport
from feast_dragonfly._protocol import wire as _wire
from feast_dragonfly._protocol.keys import describe_entity
from feast_dragonfly._store import layout as _layout
from feast_dragonfly._store import wide
from feast_dragonfly._store.compact import views
from feast_dragonfly._store.value_columns import parse_entries, parsed_values
from feast_dragonfly.errors import DragonflyDataError

ReadRow = tuple[datetime | None, dict[str, ValueProto] | None]


@dataclass(frozen=True)
class FieldSet:
    """The hash fields one (view, features) pair reads, pre-encoded as RESP bulk strings."""

    view_name: str
    feature_names: tuple[str, ...]
    fields: tuple[bytes, ...]  # feature fields, then the view's timestamp field
    wire: bytes
    #: The view's ``ttl`` in seconds (0: forever): applied on read with ``layout: compact``
    #: or ``enforce_view_ttl``.
    ttl: int = 0
    #: The view's compact record schema (``compact.schema.Schema``), with ``layout: compact``.
    schema: Any = None

    @property
    def width(self) -> int:
        return len(self.feature_names)


@lru_cache(maxsize=4096)
def field_set(
    view_name: str, feature_names: tuple[str, ...], ttl: int = 0, schema: Any = None
) -> FieldSet:
    """Cached by view storage name, features, ttl and schema: a changed view (renamed, new
    version, other features or types) has a different key, so an entry can never go stale."""
    fields = (*_keys.feature_fields(view_name, feature_names), _keys.timestamp_field(view_name))
    wire = b"".join(_wire.bulk(f) for f in fields)
    return FieldSet(view_name, feature_names, fields, wire, ttl, schema)


@dataclass
class ViewRequest:
    """The features one view contributes to a request, and where its replies land."""

    fieldset: FieldSet
    entity_keys: list[EntityKeyProto]
    # For each entity of this view: (index of its HMGET, offset of this view's fields in it).
    positions: list[tuple[int, int]] = field(default_factory=list)

    @property
    def view_name(self) -> str:
        return self.fieldset.view_name

    @property
    def feature_names(self) -> tuple[str, ...]:
        return self.fieldset.feature_names


@dataclass
class ReadPlan:
    """One HMGET per distinct hash key, carrying the fields of every view that reads it."""

    views: list[ViewRequest]
    keys: list[bytes] = field(default_factory=list)
    key_fieldsets: list[list[FieldSet]] = field(default_factory=list)
    key_entities: list[EntityKeyProto] = field(default_factory=list)
    #: One ``GET`` per key instead of an ``HMGET`` (compact records: ``compact.read``).
    records: bool = False

    def describe(self, index: int) -> str:
        """``entity driver_id=1001`` for the hash of HMGET ``index`` (for error messages;
        plans built from hash keys alone carry no entity keys)."""
        if index < len(self.key_entities):
            return describe_entity(self.key_entities[index])
        return _keys.describe_key(self.keys[index])

    def commands(self, start: int, stop: int) -> bytes:
        """RESP bytes of HMGETs (or GETs) ``start:stop``, ready to write to a socket."""
        if self.records:
            return b"".join(_wire.command(b"GET", key) for key in self.keys[start:stop])
        out = []
        for key, fieldsets in zip(self.keys[start:stop], self.key_fieldsets[start:stop]):
            count = 2 + sum(len(fs.fields) for fs in fieldsets)
            out.append(b"*%d\r\n$5\r\nHMGET\r\n" % count)
            out.append(_wire.bulk(key))
            out.extend(fs.wire for fs in fieldsets)
        return b"".join(out)


def view_request(
    view_name: str,
    feature_names: Sequence[str],
    entity_keys: list[EntityKeyProto],
    ttl: int = 0,
    schema: Any = None,
) -> ViewRequest:
    return ViewRequest(field_set(view_name, tuple(feature_names), ttl, schema), entity_keys)


def plan_read(views: Sequence[ViewRequest], *, project: str, key_version: int) -> ReadPlan:
    plan = ReadPlan(views=list(views))
    project_bytes = project.encode("utf-8")
    index_of_key: dict[bytes, int] = {}
    offsets: list[int] = []
    for view in plan.views:
        fieldset = view.fieldset
        keys = _layout.entity_hash_keys(view.entity_keys, project_bytes, key_version)
        for entity_key, key in zip(view.entity_keys, keys):
            command = index_of_key.get(key)
            if command is None:
                command = index_of_key[key] = len(plan.keys)
                plan.keys.append(key)
                plan.key_fieldsets.append([])
                plan.key_entities.append(entity_key)
                offsets.append(0)
            view.positions.append((command, offsets[command]))
            plan.key_fieldsets[command].append(fieldset)
            offsets[command] += len(fieldset.fields)
    return plan


def chunk_bounds(total: int, chunk_size: int) -> list[tuple[int, int]]:
    return [(start, min(start + chunk_size, total)) for start in range(0, total, chunk_size)]


#: Keys per ``MGET`` of compact records: well below Dragonfly's 65,536 arguments per command.
MGET_KEYS = wide.MAX_ARGS - 1


def _mgets(plan: ReadPlan, start: int, stop: int) -> list[bytes]:
    """Records ``start:stop`` as packed ``MGET`` commands. One ``MGET`` costs the server far
    less than a ``GET`` per record: on Dragonfly it is one hop per shard instead of one per
    key. A key holding another type reads as nil, so foreign data reads as not found."""
    return [
        _wire.command(b"MGET", *plan.keys[first : min(first + MGET_KEYS, stop)])
        for first in range(start, stop, MGET_KEYS)
    ]


def _flattened(replies: list[Any], keys: int) -> list[Any]:
    """One reply per key from ``MGET`` replies (an error reply stands for each of its keys)."""
    out: list[Any] = []
    for reply in replies:
        if isinstance(reply, Exception):
            out.extend([reply] * min(MGET_KEYS, keys - len(out)))
        else:
            out.extend(reply)
    return out


def _read_chunk(pool: Any, plan: ReadPlan, start: int, stop: int) -> list[Any]:
    """Send HMGETs ``start:stop`` (compact records: MGETs) on one pooled connection and read
    every reply (retried on a fresh connection after a transient failure: reads are
    idempotent)."""
    if plan.records:
        commands = _mgets(plan, start, stop)
        return _flattened(transport.exchange(pool, commands, len(commands)), stop - start)
    if wide.is_wide_plan(plan):
        return wide.read_chunk(pool, plan, start, stop)
    return transport.exchange(pool, [plan.commands(start, stop)], stop - start)


def fetch(pool: Any, plan: ReadPlan, chunk_size: int, executor: Executor | None) -> list[Any]:
    """Every HMGET reply in plan order; chunks run in parallel when an executor is given."""
    bounds = chunk_bounds(len(plan.keys), chunk_size)
    if len(bounds) == 1 or executor is None:
        replies = [r for start, stop in bounds for r in _read_chunk(pool, plan, start, stop)]
    else:
        futures = [executor.submit(_read_chunk, pool, plan, start, stop) for start, stop in bounds]
        replies = [r for future in futures for r in future.result()]
    raise_on_error(plan, replies)
    return replies


async def _read_chunk_async(pool: Any, plan: ReadPlan, start: int, stop: int) -> list[Any]:
    if plan.records:
        commands = _mgets(plan, start, stop)
        replies = await transport.exchange_async(pool, commands, len(commands))
        return _flattened(replies, stop - start)
    if wide.is_wide_plan(plan):
        return await wide.read_chunk_async(pool, plan, start, stop)
    return await transport.exchange_async(pool, [plan.commands(start, stop)], stop - start)


async def fetch_async(pool: Any, plan: ReadPlan, chunk_size: int) -> list[Any]:
    bounds = chunk_bounds(len(plan.keys), chunk_size)
    if len(bounds) == 1:
        replies = await _read_chunk_async(pool, plan, *bounds[0])
    else:
        parts = await asyncio.gather(
            *(_read_chunk_async(pool, plan, start, stop) for start, stop in bounds)
        )
        replies = [r for part in parts for r in part]
    raise_on_error(plan, replies)
    return replies


def raise_on_error(plan: ReadPlan, replies: Sequence[Any]) -> None:
    """The first error reply of a read, as an error naming the entity."""
    for index, reply in enumerate(replies):
        if not isinstance(reply, Exception):
            continue
        if isinstance(reply, redis_exceptions.NoPermissionError):
            raise reply  # a credentials problem, reported as such by translated_errors
        hint = ""
        if "WRONGTYPE" in str(reply):
            hint = (
                " — the key holds a non-string value, not a compact record"
                if plan.records
                else " — the key holds a non-hash value, not data in Feast's layout"
            )
        raise DragonflyDataError(f"reading {plan.describe(index)} failed: {reply}{hint}")


def decode_rows(
    view: ViewRequest, replies: Sequence[Sequence[bytes | None]], framed: bool = False
) -> list[ReadRow]:
    """Rows shaped exactly like Feast's ``online_read`` output for this view (``framed``:
    the replies' values are ``FeatureVector`` entries, see ``compact.read.hash_replies``)."""
    names = view.feature_names
    width = len(names)
    if width == 0:
        return [(None, None) for _ in view.positions]
    rows: list[ReadRow] = []
    times: dict[bytes | None, datetime] = {}  # rows written together share their event time
    for command, offset in view.positions:
        reply = replies[command]
        # One C-level parse per row instead of one ``FromString`` per value.
        entries = reply[offset : offset + width]
        values = (
            parse_entries(b"".join(entries))  # type: ignore[arg-type]
            if framed
            else parsed_values(entries)
        )
        stamp = reply[offset + width]
        when = times.get(stamp)
        if when is None:
            when = times[stamp] = _layout.decode_event_time(stamp)
        rows.append((when, dict(zip(names, values))))
    return rows


def drop_expired(plan: ReadPlan, replies: list[Any], now: int) -> None:
    """``enforce_view_ttl`` on Feast's layout: every view whose stored event time is past its
    ``ttl`` at ``now`` (Unix ms) reads as not found, in place."""
    for index, fieldsets in enumerate(plan.key_fieldsets):
        reply = replies[index]
        offset = 0
        for fieldset in fieldsets:
            width = len(fieldset.fields)
            stamp = reply[offset + width - 1]
            if fieldset.ttl > 0 and stamp is not None:
                parsed = Timestamp.FromString(stamp)
                if views.expired(parsed.seconds, parsed.nanos, fieldset.ttl, now):
                    reply = replies[index] = list(reply)
                    reply[offset : offset + width] = [None] * width
            offset += width
