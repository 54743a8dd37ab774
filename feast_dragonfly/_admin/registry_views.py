"""Which feature view a stored hash field belongs to, from a feature repo's registry.

Feature fields are murmur3 hashes of ``"<view>:<feature>"``: a hash holding several views
cannot be split into views from the bytes alone. The registry knows every view's features,
so hashing them the way the store does (``layout``) gives the owner of every field.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from feast_dragonfly._protocol import keys


@dataclass(frozen=True)
class RepoViews:
    """A repo's project, online-store settings, and its views' fields."""

    project: str
    connection_string: str
    redis_type: str
    sentinel_master: str
    #: storage view name (``name`` or ``name_vN``) -> its feature names
    views: Mapping[str, tuple[str, ...]]
    #: storage view name -> its features' Feast ``ValueType`` numbers, in the same order
    #: (what a compact record's schema is made of: ``_store.compact.views.schema_of``)
    types: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    #: storage view name -> its ``ttl`` in whole seconds, 0 for none (``views.ttl_seconds``)
    ttls: Mapping[str, int] = field(default_factory=dict)

    def field_owners(self) -> FieldOwners:
        """Which view each feature field of this registry belongs to."""
        fields: dict[bytes, bytes] = {}
        for view, features in self.views.items():
            for name in keys.feature_fields(view, features):
                fields[name] = view.encode()
        return FieldOwners(fields, frozenset(view.encode() for view in self.views))


@dataclass(frozen=True)
class FieldOwners:
    """feature field -> the storage name of its view (bytes, as in ``_ts:<view>``), and every
    view the registry has."""

    fields: Mapping[bytes, bytes]
    views: frozenset[bytes]

    def owner(self, field: bytes, views_in_hash: Collection[bytes]) -> bytes | None:
        """The view of ``field`` in a hash holding ``views_in_hash``; None when that cannot be
        told. A field the registry does not know, in a hash with exactly one view the registry
        does not know (a deleted view next to live ones), is that view's: every field of a
        live view is known, except fields of deleted features, which nothing reads."""
        view = self.fields.get(field)
        if view is not None:
            return view if view in views_in_hash else None
        unknown = [v for v in views_in_hash if v not in self.views]
        return unknown[0] if len(unknown) == 1 else None


def load_repo_views(repo: str) -> RepoViews:
    """Read ``feature_store.yaml`` and the registry of the repo at ``repo`` (Feast is imported
    only here: ``migrate`` without ``-C`` never pays for it)."""
    from feast import FeatureStore
    from feast.infra.online_stores.helpers import compute_versioned_name

    store = FeatureStore(repo_path=repo)
    config = store.config
    tables: list[Any] = [
        *store.list_feature_views(),
        *store.list_stream_feature_views(),
        *(v for v in store.list_on_demand_feature_views() if v.write_to_online_store),
    ]
    versioning = config.registry.enable_online_feature_view_versioning
    # The name a view's fields hash under, as the store computes it (name or name_vN).
    named = {compute_versioned_name(table, versioning): table for table in tables}
    views = {name: tuple(f.name for f in table.features) for name, table in named.items()}
    types = {
        name: tuple(int(f.dtype.to_value_type().value) for f in table.features)
        for name, table in named.items()
    }
    ttls = {name: _ttl_seconds(table) for name, table in named.items()}
    online = config.online_store
    redis_type = getattr(online, "redis_type", "redis")
    return RepoViews(
        project=config.project,
        connection_string=getattr(online, "connection_string", "localhost:6379"),
        redis_type=str(getattr(redis_type, "value", redis_type)),  # Feast: an enum
        sentinel_master=getattr(online, "sentinel_master", "mymaster"),
        views=views,
        types=types,
        ttls=ttls,
    )


def _ttl_seconds(table: Any) -> int:
    """A view's ``ttl`` in whole seconds, 0 for none (the compact layout's rule)."""
    ttl = getattr(table, "ttl", None)
    return int(ttl.total_seconds()) if ttl else 0
