"""Compact reads: a read plan answered from compact records, in the shape the rest expects.

The read path plans one entry per entity hash with the fields of every view it reads
(``read.ReadPlan``) and builds Feast's responses from HMGET replies. With compact records
the plan stays the same: :func:`record_plan` turns each (entity, view) of it into one ``GET``
of that view's record, and :func:`hash_replies` turns the records back into the HMGET
replies the plan expects — each requested feature's serialized ``ValueProto`` and the view's
serialized ``Timestamp`` — so responses, the direct path and ``feast serve``'s JSON are built
exactly as for Feast's layout.

A record written under an older schema of its view is read by name (``codec.decode_by_name``
with the schemas in the server's directory): a feature added or retyped since comes back not
found, never as another feature's value. A record past its view's ``ttl`` comes back not
found. A record that fails to decode raises an error naming its entity and view.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from feast_dragonfly._protocol import flow, record_format
from feast_dragonfly._protocol import keys as _keys
from feast_dragonfly._protocol.flow import Flow
from feast_dragonfly._store.backends import Backend
from feast_dragonfly._store.compact import views
from feast_dragonfly._store.compact.codec import (
    PickedReader,
    decode_by_name,
    picked_reader,
    read_header,
)
from feast_dragonfly._store.compact.directory import Directory
from feast_dragonfly._store.compact.schema import Schema
from feast_dragonfly._store.layout import timestamp_bytes
from feast_dragonfly._store.read import FieldSet, ReadPlan
from feast_dragonfly._store.settings import StoreSettings
from feast_dragonfly._store.value_columns import UNSET, frame
from feast_dragonfly.errors import DragonflyDataError

_NO_FIELDS: list[FieldSet] = []


def record_plan(plan: ReadPlan) -> ReadPlan:
    """One ``GET`` per (entity, view) of ``plan``, in plan order: each hash's views in turn."""
    keys: list[bytes] = []
    entities = []
    for index, (key, fieldsets) in enumerate(zip(plan.keys, plan.key_fieldsets)):
        for fieldset in fieldsets:
            keys.append(_keys.compact_key(key, fieldset.view_name))
            if index < len(plan.key_entities):
                entities.append(plan.key_entities[index])
    return ReadPlan(
        views=[],
        keys=keys,
        key_fieldsets=[_NO_FIELDS] * len(keys),
        key_entities=entities,
        records=True,
    )


def views_to_learn(
    plan: ReadPlan, records: Sequence[bytes | None], known: Mapping[str, Mapping[int, Schema]]
) -> set[str]:
    """Views with a record written under a schema id this process does not know (neither the
    view's current schema nor one learned from the server's directory)."""
    out: set[str] = set()
    position = 0
    for fieldsets in plan.key_fieldsets:
        for fieldset in fieldsets:
            record = records[position]
            position += 1
            if record is None or fieldset.view_name in out:
                continue
            if record[record_format.SCHEMA_ID] == fieldset.schema.id_bytes:
                continue  # the current schema (most records)
            schema_id = _schema_id(record)
            if schema_id is not None and schema_id != fieldset.schema.id:
                if schema_id not in known.get(fieldset.view_name, {}):
                    out.add(fieldset.view_name)
    return out


def _schema_id(record: bytes) -> int | None:
    try:
        return read_header(record)[2]
    except DragonflyDataError:
        return None  # reported, naming the entity, when the record is decoded


def hash_replies(
    plan: ReadPlan,
    records: Sequence[bytes | None],
    known: Mapping[str, Mapping[int, Schema]],
    now: int,
    framed: bool = False,
) -> list[list[bytes | None]]:
    """The HMGET replies ``plan`` expects, from its records (``record_plan`` order); ``known``:
    view name -> the schemas its old records may use; ``now``: Unix ms, for the ttl.
    ``framed``: every feature value (not the event times) as its ``FeatureVector`` entry
    (``value_columns.frame``; nothing stored: ``UNSET``), for the response builders."""
    out: list[list[bytes | None]] = []
    position = 0
    nothing: bytes | None = UNSET if framed else None
    # Per fieldset: where its features are in the schema, and the reader of typed records.
    picks: dict[int, tuple[tuple[int, ...], PickedReader | None]] = {}
    # One serialized Timestamp per distinct event time (rows written together share one).
    stamps: dict[tuple[int, int], bytes] = {}
    for index, fieldsets in enumerate(plan.key_fieldsets):
        reply: list[bytes | None] = []
        for fieldset in fieldsets:
            record = records[position]
            position += 1
            if record is None:
                reply.extend(_absent(fieldset, nothing))
                continue
            entry = picks.get(id(fieldset))
            if entry is None:
                entry = picks[id(fieldset)] = _picking(fieldset, framed)
            pick, reader = entry
            try:
                decoded: tuple[int, int, Sequence[bytes | None]] | None = (
                    reader(record) if reader is not None else None
                )
                if decoded is None:  # another schema, a null or fallback value: by name
                    decoded = _by_name(fieldset, pick, record, known)
                    if framed:
                        decoded = (decoded[0], decoded[1], list(map(frame, decoded[2])))
            except DragonflyDataError as exc:
                raise DragonflyDataError(
                    f"reading feature view '{fieldset.view_name}' for {plan.describe(index)}: "
                    f"the stored compact record is unreadable ({exc})"
                ) from None
            seconds, nanos, values = decoded
            if fieldset.ttl and views.expired(seconds, nanos, fieldset.ttl, now):
                reply.extend(_absent(fieldset, nothing))
                continue
            reply.extend(values)
            stamp = stamps.get((seconds, nanos))
            if stamp is None:
                stamp = stamps[(seconds, nanos)] = timestamp_bytes(seconds, nanos)
            reply.append(stamp)
        out.append(reply)
    return out


def _absent(fieldset: FieldSet, nothing: bytes | None) -> list[bytes | None]:
    """A view's reply where it has no record (or one past its ttl): ``nothing`` for each
    feature, no event time."""
    return [nothing] * (len(fieldset.fields) - 1) + [None]


def _picking(
    fieldset: FieldSet, framed: bool = False
) -> tuple[tuple[int, ...], PickedReader | None]:
    pick = _positions(fieldset.schema, fieldset.feature_names)
    if min(pick, default=0) < 0:
        return pick, None
    return pick, picked_reader(fieldset.schema, pick, framed)


def _by_name(
    fieldset: FieldSet,
    pick: tuple[int, ...],
    record: bytes,
    known: Mapping[str, Mapping[int, Schema]],
) -> tuple[int, int, Sequence[bytes | None]]:
    """(seconds, nanos, the requested values) of a record the fast reader declined, decoded
    by name with the schemas its view has had (a feature it lacks: None)."""
    decoded = decode_by_name(record, known.get(fieldset.view_name, {}), fieldset.schema)
    values = decoded.values
    return (*decoded.event_time, [values[j] if j >= 0 else None for j in pick])


@lru_cache(maxsize=4096)
def _positions(schema: Schema, names: tuple[str, ...]) -> tuple[int, ...]:
    """Where each requested feature sits in the schema (-1: not in it)."""
    return tuple(schema.index.get(name, -1) for name in names)


# --------------------------------------------------------------------------- fetching


@dataclass(frozen=True)
class FetchRecords:
    """Request of :func:`reading`: the records of this plan (``backend.fetch``), for a read
    plan of ``hashes`` entity hashes."""

    plan: ReadPlan
    hashes: int

    def chunk_size(self, hashes_per_chunk: int) -> int:
        """Records per chunk: the records of ``hashes_per_chunk`` entities (``read_chunk_size``
        counts entities, and one entity may have a record per view)."""
        return hashes_per_chunk * max(1, -(-len(self.plan.keys) // max(1, self.hashes)))


def reading(
    plan: ReadPlan, directory: Directory, project: str, framed: bool = False
) -> Flow[list[Any]]:
    """Fetch ``plan``'s records and answer as HMGETs would (``framed``: see
    :func:`hash_replies`); old schemas are learned from the server's directory first when a
    record needs one this process does not know."""
    records = yield FetchRecords(record_plan(plan), len(plan.keys))
    names = {fieldset.view_name for fieldsets in plan.key_fieldsets for fieldset in fieldsets}
    known = {name: directory.schemas(project, name) for name in names}
    if views_to_learn(plan, records, known) and directory.should_learn(project):
        yield from directory.learning(project)
        known = {name: directory.schemas(project, name) for name in names}
    return hash_replies(plan, records, known, views.now_ms(), framed)


def fetch(
    backend: Backend, plan: ReadPlan, settings: StoreSettings, project: str, framed: bool = False
) -> list[Any]:
    """:func:`reading` on the sync client."""
    if not plan.keys:
        return []

    def send(request: Any) -> Any:
        if isinstance(request, FetchRecords):
            chunk_size = request.chunk_size(settings.read_chunk_size)
            return backend.fetch(request.plan, chunk_size, settings.read_concurrency)
        with backend.errors():
            return request.on(backend.client())

    return flow.run(reading(plan, backend.compact_schemas, project, framed), send)


async def fetch_async(
    backend: Backend, plan: ReadPlan, settings: StoreSettings, project: str, framed: bool = False
) -> list[Any]:
    """:func:`reading` on the running loop's asyncio client."""
    if not plan.keys:
        return []

    async def send(request: Any) -> Any:
        if isinstance(request, FetchRecords):
            chunk_size = request.chunk_size(settings.read_chunk_size)
            return await backend.fetch_async(request.plan, chunk_size)
        with backend.errors():
            return await request.on_async(await backend.client_async())

    return await flow.run_async(reading(plan, backend.compact_schemas, project, framed), send)
