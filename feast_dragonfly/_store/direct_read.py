"""Plain online reads planned and sent without Feast's per-request machinery.

Feast's request handling turns every entity value into a ``ValueProto``, every entity row into
an ``EntityKey``, groups rows per view and builds the response message value by value. For a
request that only reads stored feature views by their join keys — no on-demand views, request
data, entity-less views, aliased join keys, versioned refs or pre-computed services — none of
that is needed, and both consumers skip it: ``feast-dragonfly serve`` (``_direct_json``: the
stored bytes straight to Feast's JSON) and the store's own ``get_online_features[_async]``
(``_response_builder.direct_response``: the response message from the stored bytes).

* What to read, and in which order, comes from Feast's own cached request context
  (``feast.utils._get_cached_request_context``: the same feature resolution, validation and
  errors as Feast), turned once per context into a :class:`DirectPlan` of pre-encoded fields,
  kept for as long as the registry's content is unchanged (:func:`registry_content`).
* Hash keys are encoded from the entity values directly (``layout``'s version-3 encoding),
  one ``HMGET`` per entity hash for all the views that read it.

A request outside these shapes gets ``None`` from :func:`plan_request` or :func:`prepare`,
and the caller takes Feast's path; so does every request on a Feast without that context
hook, or whose context has another shape (``feast_hooks``).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from feast import utils as feast_utils
from feast.feature_service import FeatureService
from feast.feature_view import DUMMY_ENTITY_NAME, FeatureView
from feast.value_type import ValueType

from feast_dragonfly._store import feast_hooks, layout
from feast_dragonfly._store import read as _read
from feast_dragonfly._store.compact import views as compact_views

_INT64 = struct.Struct("<q")
_INT32 = struct.Struct("<i")
_TYPE_AND_LENGTH = struct.Struct("<II")


# --------------------------------------------------------------------------- plans


@dataclass(frozen=True)
class ViewPart:
    """One feature view of a request: the fields it reads and the names it answers under."""

    fieldset: _read.FieldSet
    join_keys: tuple[str, ...]  # sorted, as the version-3 key encoding orders them
    output_names: tuple[str, ...]
    metrics_name: str


@dataclass(frozen=True)
class DirectPlan:
    """Everything about a request that depends only on its features and the registry."""

    views: tuple[ViewPart, ...]
    join_key_types: dict[str, ValueType]
    project_bytes: bytes
    grouped_refs: list  # Feast's (view, features) pairs, for the response's feature types


def plan_request(
    config: Any, registry: Any, project: str, features: list[str] | Any, full_feature_names: bool
) -> DirectPlan | None:
    """The plan for ``features`` (refs or a ``FeatureService``), or ``None`` when the request
    needs Feast's path. Raises Feast's errors for unknown views and features."""
    if config.entity_key_serialization_version != 3:
        return None
    if getattr(features, "precompute_online", False):
        return None
    content = registry_content(registry)
    if content is not None:
        # The config is part of the key: two stores of one project in a process (Feast's
        # layout and compact, say) plan the same request differently.
        key = (content, project, _features_key(features), full_feature_names, id(config))
        entry = _PLANS_BY_CONTENT.get(key)
        if entry is not None and entry[0] is config:
            return entry[1]
    if not feast_hooks.present(feast_hooks.REQUEST_CONTEXT):
        return None
    context = feast_utils._get_cached_request_context(
        registry, project, features, full_feature_names
    )
    if not isinstance(context, tuple) or len(context) != _CONTEXT_FIELDS:
        feast_hooks.fallback(feast_hooks.REQUEST_CONTEXT, "its request context has another shape")
        return None
    plan = _plan_from_context(config, project, context, full_feature_names)
    if content is not None:
        _remember(_PLANS_BY_CONTENT, key, (config, plan))
    return plan


#: Plans by the registry's *content*, so a refresh that changed nothing (``feast serve`` and
#: ``feast-dragonfly serve`` refresh every few seconds) keeps them. Feast's own context cache
#: is keyed by the refresh time: every refresh made the next request re-resolve its features
#: from the registry protos — 6-13 ms measured inside a serving worker, a stall that every
#: request queued behind it paid for. The config is kept alongside: a plan depends on it too.
_PLANS_BY_CONTENT: dict[tuple, tuple[Any, DirectPlan | None]] = {}

#: Digest of the registry protos Feast has cached, by identity and refresh time. A few
#: entries: each holds a whole registry proto alive, and a process serves one or two.
_CONTENT: dict[int, tuple[Any, Any, bytes]] = {}


def _remember(cache: dict, key: Any, value: Any, limit: int = 1024) -> None:
    if len(cache) >= limit:
        cache.clear()
    cache[key] = value


def registry_content(registry: Any) -> bytes | None:
    """A digest of the registry state Feast serves from, or ``None`` when there is none to
    trust: no cached proto (registries that keep none) or a cache past its TTL — then Feast's
    path runs, and refreshes the registry as it always does.

    The digest is recomputed only when Feast replaces the cached proto or refreshes it — the
    same events that invalidate Feast's own request-context cache, so a plan is never older
    than the context Feast would have used."""
    proto = getattr(registry, "cached_registry_proto", None)
    is_valid = getattr(registry, "is_cache_valid", None)
    if proto is None or not callable(is_valid) or not is_valid():
        return None
    refreshed = getattr(registry, "cached_registry_proto_created", None)
    known = _CONTENT.get(id(proto))
    if known is not None and known[0] is proto and known[1] == refreshed:
        return known[2]
    digest = hashlib.blake2b(proto.SerializeToString(deterministic=True), digest_size=16).digest()
    _remember(_CONTENT, id(proto), (proto, refreshed, digest), limit=4)
    return digest


def _features_key(features: Any) -> tuple:
    """What identifies a feature list, as Feast's context cache identifies it: a service by
    its name, refs by their order."""
    if isinstance(features, FeatureService):
        return ("__fs__", features.name)
    return tuple(features)


#: Fields of Feast's cached request context (unpacked by :func:`_plan_from_context`).
_CONTEXT_FIELDS = 9


def _plan_from_context(
    config: Any, project: str, context: tuple, full_feature_names: bool
) -> DirectPlan | None:
    (
        _refs,
        on_demand_views,
        entity_name_to_join_key,
        entity_types,
        _join_keys_set,
        grouped_refs,
        _row_names,
        request_data,
        entityless,
    ) = context
    if on_demand_views or request_data or entityless:
        return None
    settings = config.online_store.settings()
    views = []
    for table, requested in grouped_refs:
        if not isinstance(table, FeatureView) or table.projection.join_key_map:
            return None
        if "@" in table.projection.name_to_use():  # a versioned ref: Feast checks support
            return None
        if DUMMY_ENTITY_NAME in (table.entities or []) or not table.entities:
            return None
        join_keys = tuple(sorted(entity_name_to_join_key[name] for name in table.entities))
        prefix = table.projection.name_to_use()
        names = tuple(f"{prefix}__{name}" for name in requested) if full_feature_names else None
        views.append(
            ViewPart(
                fieldset=_read.field_set(
                    layout.storage_view_name(table, config),
                    tuple(requested),
                    **compact_views.read_options(
                        table, compact=settings.compact, enforce_ttl=settings.enforce_view_ttl
                    ),
                ),
                join_keys=join_keys,
                output_names=names or tuple(requested),
                metrics_name=table.name,
            )
        )
    # Only the join keys these views read: a request naming another join key of the project
    # gets that column in Feast's answer too, converted by inferred type, so it goes to Feast.
    needed = {key for view in views for key in view.join_keys}
    types = {key: entity_types.get(key, ValueType.UNKNOWN) for key in needed}
    if not all(value_type in _KEY_ENCODERS for value_type in types.values()):
        return None
    return DirectPlan(tuple(views), types, project.encode("utf-8"), grouped_refs)


# --------------------------------------------------------------------------- entity keys


def _int64_bytes(value: Any) -> bytes | None:
    if type(value) is int and -(1 << 63) <= value < (1 << 63):
        return _INT64.pack(value)
    return None


def _int32_bytes(value: Any) -> bytes | None:
    if type(value) is int and -(1 << 31) <= value < (1 << 31):
        return _INT32.pack(value)
    return None


def _string_bytes(value: Any) -> bytes | None:
    return value.encode("utf-8") if type(value) is str else None


#: Join-key types served here: how a JSON value becomes the key's value bytes (``None``: a
#: value Feast would convert or reject its own way, so the request takes Feast's path).
_KEY_ENCODERS = {
    ValueType.INT64: (ValueType.INT64.value, _int64_bytes),
    ValueType.INT32: (ValueType.INT32.value, _int32_bytes),
    ValueType.STRING: (ValueType.STRING.value, _string_bytes),
}


def _encoded_columns(plan: DirectPlan, entities: dict[str, list[Any]]) -> dict[str, list[bytes]]:
    """Per join key, each row's value as the key encoding writes it (type, length, bytes)."""
    columns = {}
    for key, values in entities.items():
        value_type, encode = _KEY_ENCODERS[plan.join_key_types[key]]
        encoded = []
        for value in values:
            data = encode(value)
            if data is None:
                raise _NotDirect
            encoded.append(_TYPE_AND_LENGTH.pack(value_type, len(data)) + data)
        columns[key] = encoded
    return columns


class _NotDirect(Exception):
    """The request needs Feast's path after all (an entity value outside the common shapes)."""


def _hash_keys(view: ViewPart, columns: dict[str, list[bytes]], project: bytes) -> list[bytes]:
    prefix = layout.join_key_prefix(view.join_keys)
    if len(view.join_keys) == 1:
        return [prefix + value + project for value in columns[view.join_keys[0]]]
    parts = [columns[key] for key in view.join_keys]
    return [prefix + b"".join(row) + project for row in zip(*parts)]


# --------------------------------------------------------------------------- a request


def columnar(entity_rows: Any) -> dict[str, list[Any]] | None:
    """Entity rows as join key → values (what ``feast serve`` receives), from either form
    ``get_online_features`` takes: a list of dicts with the same keys, or a mapping of lists.
    ``None`` for anything else (Feast's path then says what is wrong with it)."""
    if isinstance(entity_rows, list):
        if not entity_rows or not isinstance(entity_rows[0], dict):
            return None
        keys = entity_rows[0].keys()
        if not all(type(row) is dict and row.keys() == keys for row in entity_rows):
            return None
        return {key: [row[key] for row in entity_rows] for key in keys}
    if isinstance(entity_rows, dict) and all(
        type(values) in (list, tuple) for values in entity_rows.values()
    ):
        return {key: list(values) for key, values in entity_rows.items()}
    return None


@dataclass
class Prepared:
    """A planned request: the HMGETs to send and where each view's rows land in the replies."""

    plan: DirectPlan
    entities: dict[str, list[Any]]
    rows: int
    read_plan: _read.ReadPlan
    placements: list[list[tuple[int, int]]]  # per view, per row: (HMGET index, field offset)

    def view_rows(self, replies: Sequence[Any]) -> list[list[Sequence[bytes | None]]]:
        """Per view, per row: the view's stored feature values then its ``_ts`` field."""
        return [self.rows_of(index, replies) for index in range(len(self.plan.views))]

    def rows_of(self, index: int, replies: Sequence[Any]) -> list[Sequence[bytes | None]]:
        """:meth:`view_rows` of view ``index`` alone."""
        stop = self.plan.views[index].fieldset.width + 1
        return [
            replies[command][offset : offset + stop] for command, offset in self.placements[index]
        ]


def prepare(plan: DirectPlan, entities: dict[str, list[Any]]) -> Prepared | None:
    """The HMGETs of a request (join key → values, all the same length), or ``None`` when
    it needs Feast's path."""
    if not plan.join_key_types.keys() >= entities.keys() or any(
        key not in entities for view in plan.views for key in view.join_keys
    ):
        return None
    rows = len(next(iter(entities.values())))
    if not rows:
        return None
    try:
        columns = _encoded_columns(plan, entities)
    except _NotDirect:
        return None

    read_plan = _read.ReadPlan(views=[])
    index_of_key: dict[bytes, int] = {}
    offsets: list[int] = []
    placements: list[list[tuple[int, int]]] = []
    for view in plan.views:
        fieldset = view.fieldset
        field_count = len(fieldset.fields)
        spots: dict[bytes, tuple[int, int]] = {}  # an entity asked for twice is read once
        placed = []
        for key in _hash_keys(view, columns, plan.project_bytes):
            spot = spots.get(key)
            if spot is None:
                command = index_of_key.get(key)
                if command is None:
                    command = index_of_key[key] = len(read_plan.keys)
                    read_plan.keys.append(key)
                    read_plan.key_fieldsets.append([])
                    offsets.append(0)
                spot = spots[key] = (command, offsets[command])
                read_plan.key_fieldsets[command].append(fieldset)
                offsets[command] += field_count
            placed.append(spot)
        placements.append(placed)
    return Prepared(plan, entities, rows, read_plan, placements)
