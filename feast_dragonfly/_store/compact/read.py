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

The response builders take a view read for many entities another way (``columns``): its
records are decoded as one batch (``batch_decode``), which hands them each feature's column
of entries joined, instead of a reply per record to be joined again (:class:`ViewBatch`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, NamedTuple

import numpy as np

from feast_dragonfly._protocol import flow, record_format
from feast_dragonfly._protocol import keys as _keys
from feast_dragonfly._protocol.flow import Flow
from feast_dragonfly._store.backends import Backend
from feast_dragonfly._store.compact import views
from feast_dragonfly._store.compact.batch_decode import (
    BATCH_FROM,
    BATCH_MOST,
    BATCH_VALUES,
    Batch,
    decode_batch,
)
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
    suffixes: dict[str, bytes] = {}
    known_entities = len(plan.key_entities)
    for index, (key, fieldsets) in enumerate(zip(plan.keys, plan.key_fieldsets)):
        for fieldset in fieldsets:
            suffix = suffixes.get(fieldset.view_name)
            if suffix is None:
                suffix = suffixes[fieldset.view_name] = _keys.record_suffix(fieldset.view_name)
            keys.append(key + suffix)
        if index < known_entities:
            entities += [plan.key_entities[index]] * len(fieldsets)
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
    columns: bool = False,
) -> list[list[Any]]:
    """The HMGET replies ``plan`` expects, from its records (``record_plan`` order); ``known``:
    view name -> the schemas its old records may use; ``now``: Unix ms, for the ttl.
    ``framed``: every feature value (not the event times) as its ``FeatureVector`` entry
    (``value_columns.frame``; nothing stored: ``UNSET``), for the response builders.
    ``columns`` (framed too, for the response builders): a view read for many entities is
    decoded as one :class:`ViewBatch` instead, and its fields in the replies are left None;
    the replies are then a :class:`BatchedReplies`."""
    framed = framed or columns
    nothing: bytes | None = UNSET if framed else None
    # Per fieldset: where its features are in the schema, and the reader of typed records.
    picks: dict[int, tuple[tuple[int, ...], PickedReader | None]] = {}
    # One serialized Timestamp per distinct event time (rows written together share one).
    stamps: dict[tuple[int, int], bytes] = {}
    batches, complete = (
        _batches(plan, records, known, now, picks, stamps)
        if columns and len(records) >= BATCH_FROM  # else no view has enough records
        else ({}, False)
    )
    out: list[list[Any]] = BatchedReplies(batches) if columns else []
    if complete:  # every view in batches: no reply is read
        out.extend([] for _ in plan.key_fieldsets)
        return out
    position = 0
    for index, fieldsets in enumerate(plan.key_fieldsets):
        reply: list[Any] = []
        for fieldset in fieldsets:
            record = records[position]
            position += 1
            if batches and id(fieldset) in batches:
                reply.extend([None] * len(fieldset.fields))
                continue
            if record is None:
                reply.extend(_absent(fieldset, nothing))
                continue
            seconds, nanos, values = _decoded(plan, index, fieldset, record, known, picks, framed)
            if fieldset.ttl and views.expired(seconds, nanos, fieldset.ttl, now):
                reply.extend(_absent(fieldset, nothing))
                continue
            reply.extend(values)
            reply.append(_stamp(stamps, seconds, nanos))
        out.append(reply)
    return out


def _stamp(stamps: dict[tuple[int, int], bytes], seconds: int, nanos: int) -> bytes:
    """The serialized ``Timestamp`` of an event time (once per distinct one)."""
    stamp = stamps.get((seconds, nanos))
    if stamp is None:
        stamp = stamps[(seconds, nanos)] = timestamp_bytes(seconds, nanos)
    return stamp


class ViewBatch(NamedTuple):
    """A view's records decoded as one batch: per reply (HMGET index), its record's index
    in the batch (-1: the entity does not read this view); per record, the index of its
    serialized event time in ``distinct_stamps`` (-1: no record, or one past its ttl: not
    found)."""

    batch: Batch
    records: list[int]
    stamp_of: np.ndarray
    distinct_stamps: list[bytes]


class BatchedReplies(list):  # type: ignore[type-arg]
    """``hash_replies(columns=True)``: the replies, and the views decoded in batches (by the
    ``id`` of their ``FieldSet``), whose fields in the replies are None."""

    def __init__(self, batches: dict[int, ViewBatch]) -> None:
        super().__init__()
        self.batches = batches


def _records_by_fieldset(
    plan: ReadPlan,
) -> tuple[dict[int, Sequence[int]], dict[int, Sequence[int]], dict[int, FieldSet]]:
    """Per fieldset (by ``id``): its records' positions, their replies' indexes, itself."""
    groups = plan.key_fieldsets
    first = groups[0] if groups else []
    if all(fieldsets == first for fieldsets in groups):  # every entity reads the same views
        width = len(first)
        total = width * len(groups)
        replies = range(len(groups))
        if len({id(fieldset) for fieldset in first}) == width:
            return (
                {id(f): range(at, total, width) for at, f in enumerate(first)},
                {id(f): replies for f in first},
                {id(f): f for f in first},
            )
    where: dict[int, list[int]] = {}
    commands: dict[int, list[int]] = {}
    fieldsets: dict[int, FieldSet] = {}
    position = 0
    for index, key_fieldsets in enumerate(groups):
        for fieldset in key_fieldsets:
            key = id(fieldset)
            if key not in where:
                where[key], commands[key], fieldsets[key] = [], [], fieldset
            where[key].append(position)
            commands[key].append(index)
            position += 1
    return where, commands, fieldsets  # type: ignore[return-value]


def _batches(
    plan: ReadPlan,
    records: Sequence[bytes | None],
    known: Mapping[str, Mapping[int, Schema]],
    now: int,
    picks: dict[int, tuple[tuple[int, ...], PickedReader | None]],
    stamps: dict[tuple[int, int], bytes],
) -> tuple[dict[int, ViewBatch], bool]:
    """The views read for enough entities and features, and not too many
    (``batch_decode.BATCH_FROM``, ``BATCH_VALUES``, ``BATCH_MOST``) whose requested features
    are all in their current schema, decoded in batches (a record the batch cannot read is
    decoded on its own, and a record past its ttl reads as not found); and whether every view
    of ``plan`` is among them."""
    where, commands, fieldsets = _records_by_fieldset(plan)
    out: dict[int, ViewBatch] = {}
    for key, positions in where.items():
        fieldset = fieldsets[key]
        size = len(positions)
        count = size * fieldset.width
        if not fieldset.width or size < BATCH_FROM or not BATCH_VALUES <= count <= BATCH_MOST:
            continue
        entry = picks.get(key)
        if entry is None:
            entry = picks[key] = _picking(fieldset, True)
        pick, reader = entry
        if reader is None:
            continue
        own = (
            list(records[positions.start : positions.stop : positions.step])
            if isinstance(positions, range) and isinstance(records, list)
            else [records[p] for p in positions]
        )
        batch = decode_batch(fieldset.schema, pick, own)
        stamped = _Stamped(batch, stamps)
        alive = batch.live(fieldset.ttl, now)
        cleared = np.flatnonzero(batch.read & ~alive).tolist()  # past the ttl: not found
        stamped.add(batch.read & alive)
        for i in np.flatnonzero(~batch.read).tolist():  # absent, or read on its own
            record = own[i]
            if record is not None:
                index = commands[key][i]
                seconds, nanos, values = _decoded(plan, index, fieldset, record, known, picks, True)
                if not (fieldset.ttl and views.expired(seconds, nanos, fieldset.ttl, now)):
                    batch.override(i, values)
                    stamped.put(i, seconds, nanos)
                    continue
            cleared.append(i)
        batch.clear(cleared)
        if commands[key] == range(len(plan.key_fieldsets)):  # a record per reply, in order
            per_reply = list(commands[key])
        else:
            per_reply = [-1] * len(plan.key_fieldsets)
            for i, index in enumerate(commands[key]):
                per_reply[index] = i
        out[key] = ViewBatch(batch, per_reply, stamped.of, stamped.distinct)
    return out, len(out) == len(fieldsets)


class _Stamped:
    """The serialized event times of a batch's records: ``distinct`` ones, and per record
    the index of its own (-1: none, not found)."""

    def __init__(self, batch: Batch, stamps: dict[tuple[int, int], bytes]) -> None:
        self.batch = batch
        self.stamps = stamps
        self.of = np.full(len(batch.read), -1, dtype=np.int64)
        self.distinct: list[bytes] = []

    def add(self, found: np.ndarray) -> None:
        """The event times of the records at ``found`` (read here): once per distinct one."""
        if not found.any():
            return
        seconds, nanos = self.batch.seconds[found], self.batch.nanos[found]
        if (np.abs(seconds) < _ONE_KEY_SECONDS).all():  # one int64 per event time
            _, first, inverse = np.unique(
                seconds * 1_000_000_000 + nanos, return_index=True, return_inverse=True
            )
        else:
            pairs = np.stack([seconds, nanos], axis=1)
            _, first, inverse = np.unique(pairs, axis=0, return_index=True, return_inverse=True)
        base = len(self.distinct)
        self.distinct += [
            _stamp(self.stamps, second, nano)
            for second, nano in zip(seconds[first].tolist(), nanos[first].tolist())
        ]
        self.of[found] = inverse.ravel() + base

    def put(self, index: int, seconds: int, nanos: int) -> None:
        """Record ``index``'s event time (read on its own)."""
        self.of[index] = len(self.distinct)
        self.distinct.append(_stamp(self.stamps, seconds, nanos))


#: Seconds below this (in magnitude) make ``seconds * 10**9 + nanos`` fit an int64.
_ONE_KEY_SECONDS = 9_000_000_000


def _decoded(
    plan: ReadPlan,
    index: int,
    fieldset: FieldSet,
    record: bytes,
    known: Mapping[str, Mapping[int, Schema]],
    picks: dict[int, tuple[tuple[int, ...], PickedReader | None]],
    framed: bool,
) -> tuple[int, int, Sequence[bytes | None]]:
    """(seconds, nanos, the requested values) of one record: the fast reader of its
    fieldset's features, or by name (another schema, a null or fallback value)."""
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
    return decoded


def _absent(fieldset: FieldSet, nothing: bytes | None) -> list[bytes | None]:
    """A view's reply where it has no record (or one past its ttl): ``nothing`` for each
    feature, no event time."""
    return [nothing] * fieldset.width + [None]


def _picking(
    fieldset: FieldSet, framed: bool = False
) -> tuple[tuple[int, ...], PickedReader | None]:
    """Where the fieldset's features are in its schema, and the reader of its typed records
    (None: a feature is not in the schema)."""
    return _pick_reader(fieldset.schema, fieldset.feature_names, framed)


@lru_cache(maxsize=4096)
def _pick_reader(
    schema: Schema, names: tuple[str, ...], framed: bool
) -> tuple[tuple[int, ...], PickedReader | None]:
    pick = tuple(schema.index.get(name, -1) for name in names)
    if min(pick, default=0) < 0:
        return pick, None
    return pick, picked_reader(schema, pick, framed)


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
    plan: ReadPlan,
    directory: Directory,
    project: str,
    framed: bool = False,
    columns: bool = False,
) -> Flow[list[Any]]:
    """Fetch ``plan``'s records and answer as HMGETs would (``framed``, ``columns``: see
    :func:`hash_replies`); old schemas are learned from the server's directory first when a
    record needs one this process does not know."""
    records = yield FetchRecords(record_plan(plan), len(plan.keys))
    names = {fieldset.view_name for fieldsets in plan.key_fieldsets for fieldset in fieldsets}
    known = {name: directory.schemas(project, name) for name in names}
    if views_to_learn(plan, records, known) and directory.should_learn(project):
        yield from directory.learning(project)
        known = {name: directory.schemas(project, name) for name in names}
    return hash_replies(plan, records, known, views.now_ms(), framed, columns)


def fetch(
    backend: Backend,
    plan: ReadPlan,
    settings: StoreSettings,
    project: str,
    framed: bool = False,
    columns: bool = False,
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

    return flow.run(reading(plan, backend.compact_schemas, project, framed, columns), send)


async def fetch_async(
    backend: Backend,
    plan: ReadPlan,
    settings: StoreSettings,
    project: str,
    framed: bool = False,
    columns: bool = False,
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

    reader = reading(plan, backend.compact_schemas, project, framed, columns)
    return await flow.run_async(reader, send)
