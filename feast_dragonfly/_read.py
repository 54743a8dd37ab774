"""Reads: plan a request as one HMGET per entity hash, fetch, and hand rows to Feast.

Feast's store sends one HMGET per (entity, feature view) pair, so two views sharing an entity
cost two commands on the same hash. The planner here merges them into one HMGET per hash and
slices the reply back per view. Sync and async share planning and decoding; only the fetch
differs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from redis import exceptions as redis_exceptions

from feast_dragonfly import _layout
from feast_dragonfly._write import describe_entity
from feast_dragonfly.errors import DragonflyDataError

ReadRow = tuple[datetime | None, dict[str, ValueProto] | None]


@dataclass
class ViewRequest:
    """The features one view contributes to a request, and where its replies land."""

    view_name: str
    feature_names: list[str]
    fields: list[bytes]  # feature fields, then the view's timestamp field
    entity_keys: list[EntityKeyProto]
    # For each entity of this view: (index of the HMGET, offset of this view's fields in it).
    slots: list[tuple[int, int]] = field(default_factory=list)


@dataclass
class ReadPlan:
    """One HMGET per distinct hash key, carrying the fields of every view that reads it."""

    views: list[ViewRequest]
    keys: list[bytes] = field(default_factory=list)
    key_fields: list[list[bytes]] = field(default_factory=list)
    key_entities: list[EntityKeyProto] = field(default_factory=list)


def plan_read(views: Sequence[ViewRequest], *, project: str, key_version: int) -> ReadPlan:
    plan = ReadPlan(views=list(views))
    project_bytes = project.encode("utf-8")
    index_of_key: dict[bytes, int] = {}
    for view in plan.views:
        for entity_key in view.entity_keys:
            key = _layout.entity_hash_key(entity_key, project_bytes, key_version)
            command = index_of_key.get(key)
            if command is None:
                command = index_of_key[key] = len(plan.keys)
                plan.keys.append(key)
                plan.key_fields.append([])
                plan.key_entities.append(entity_key)
            fields = plan.key_fields[command]
            view.slots.append((command, len(fields)))
            fields.extend(view.fields)
    return plan


def view_request(
    view_name: str, feature_names: Sequence[str], entity_keys: list[EntityKeyProto]
) -> ViewRequest:
    names = list(feature_names)
    fields = _layout.feature_fields(view_name, names)
    fields.append(_layout.timestamp_field(view_name))
    return ViewRequest(view_name, names, fields, entity_keys)


def fetch(client: Any, plan: ReadPlan) -> list[Any]:
    with client.pipeline(transaction=False) as pipe:
        for key, fields in zip(plan.keys, plan.key_fields):
            pipe.hmget(key, fields)
        replies = pipe.execute(raise_on_error=False)
    _raise_on_error(plan, replies)
    return replies


async def fetch_async(client: Any, plan: ReadPlan) -> list[Any]:
    async with client.pipeline(transaction=False) as pipe:
        for key, fields in zip(plan.keys, plan.key_fields):
            pipe.hmget(key, fields)
        replies = await pipe.execute(raise_on_error=False)
    _raise_on_error(plan, replies)
    return replies


def _raise_on_error(plan: ReadPlan, replies: Sequence[Any]) -> None:
    for index, reply in enumerate(replies):
        if not isinstance(reply, Exception):
            continue
        if isinstance(reply, (redis_exceptions.ConnectionError, redis_exceptions.TimeoutError)):
            raise reply
        hint = ""
        if "WRONGTYPE" in str(reply):
            hint = " — the key holds a non-hash value, not data in Feast's layout"
        raise DragonflyDataError(
            f"reading {describe_entity(plan.key_entities[index])} failed: {reply}{hint}"
        )


def decode_rows(view: ViewRequest, replies: Sequence[Sequence[bytes | None]]) -> list[ReadRow]:
    """Rows shaped exactly like Feast's ``online_read`` output for this view."""
    names = view.feature_names
    width = len(names)
    if width == 0:
        return [(None, None) for _ in view.slots]
    rows: list[ReadRow] = []
    parse = ValueProto.FromString
    for command, offset in view.slots:
        reply = replies[command]
        values = reply[offset : offset + width]
        features = {name: parse(raw) if raw else ValueProto() for name, raw in zip(names, values)}
        rows.append((_layout.decode_event_time(reply[offset + width]), features))
    return rows
