"""Small builders shared by the event-time, lifecycle, async-lifecycle and bad-input tests.

Everything here talks to a real server through the stores' public methods; nothing is mocked.
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import Any

import redis
from feast import Entity, FeatureView, Field, FileSource, RepoConfig
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.types import Int64
from feast.value_type import ValueType

from feast_dragonfly._protocol import flow
from feast_dragonfly._protocol.flow import Call
from feast_dragonfly._store.layout import Row, entity_hash_key
from feast_dragonfly.testing.local_server import free_port as free_port  # re-exported for the tests

OURS = "feast_dragonfly.DragonflyOnlineStore"
FEAST_REDIS = "redis"

_FEAST_PROJECT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


def repo_config(
    path: Path,
    connection_string: str,
    *,
    project: str = "proj",
    store_type: str = OURS,
    versioning: bool = False,
    **store_options: Any,
) -> RepoConfig:
    """A RepoConfig for calling a store's methods directly (nothing is applied)."""
    path.mkdir(parents=True, exist_ok=True)
    config = RepoConfig(
        project=project if _FEAST_PROJECT_NAME.match(project) else "placeholder",
        registry={
            "path": str(path / f"registry-{abs(hash(project))}.db"),
            "enable_online_feature_view_versioning": versioning,
        },
        provider="local",
        online_store={
            "type": store_type,
            "connection_string": connection_string,
            **store_options,
        },
        offline_store={"type": "file"},
        entity_key_serialization_version=3,
        repo_path=path,
    )
    # Feast refuses project names with glob characters; assigning one afterwards (no
    # validation on assignment) lets tests prove that SCAN patterns are escaped anyway.
    config.project = project
    return config


def entity(name: str = "driver", join_key: str = "driver_id") -> Entity:
    return Entity(name=name, join_keys=[join_key], value_type=ValueType.INT64)


def feature_view(
    name: str = "fv",
    features: tuple[str, ...] = ("a", "b"),
    entities: list[Entity] | None = None,
) -> FeatureView:
    """A view as the registry hands it over: join-key columns in the schema, so ``join_keys``
    is filled in (``feast apply`` infers it; a bare ``FeatureView(...)`` leaves it empty)."""
    source = FileSource(path="/nonexistent/unused.parquet", timestamp_field="event_timestamp")
    entities = entities if entities is not None else [entity()]
    join_columns = [Field(name=e.join_key, dtype=Int64) for e in entities]
    view = FeatureView(
        name=name,
        entities=entities,
        schema=join_columns + [Field(name=f, dtype=Int64) for f in features],
        source=source,
    )
    assert view.join_keys == [e.join_key for e in entities], view.join_keys
    assert [f.name for f in view.features] == list(features)
    return view


def typed_view(
    name: str = "fv", fields: tuple = (("a", Int64), ("b", Int64)), ttl: Any = None
) -> FeatureView:
    """A one-entity view whose features have these ``(name, Feast type)``s (and ``ttl``)."""
    source = FileSource(path="/nonexistent/unused.parquet", timestamp_field="event_timestamp")
    return FeatureView(
        name=name,
        entities=[entity()],
        schema=[Field(name="driver_id", dtype=Int64)] + [Field(name=n, dtype=t) for n, t in fields],
        source=source,
        ttl=ttl,
    )


def entity_key(value: int, join_key: str = "driver_id") -> EntityKeyProto:
    return EntityKeyProto(join_keys=[join_key], entity_values=[ValueProto(int64_val=value)])


def compound_key(**values: int) -> EntityKeyProto:
    return EntityKeyProto(
        join_keys=list(values), entity_values=[ValueProto(int64_val=v) for v in values.values()]
    )


def row(
    key: int | EntityKeyProto,
    when: datetime,
    value: int,
    features: tuple[str, ...] = ("a", "b"),
) -> Row:
    ek = entity_key(key) if isinstance(key, int) else key
    return ek, {f: ValueProto(int64_val=value) for f in features}, when, None


def hash_key(key: int | EntityKeyProto, project: str = "proj") -> bytes:
    ek = entity_key(key) if isinstance(key, int) else key
    return entity_hash_key(ek, project.encode(), 3)


def stored_values(
    store: Any, config: RepoConfig, view: FeatureView, keys: list[int | EntityKeyProto]
) -> list[tuple[datetime | None, dict[str, int | None]]]:
    """online_read, with each ValueProto reduced to its int (None when unset)."""
    protos = [entity_key(k) if isinstance(k, int) else k for k in keys]
    out = []
    for when, features in store.online_read(config, view, protos):
        values = {
            name: (v.int64_val if v.WhichOneof("val") else None)
            for name, v in (features or {}).items()
        }
        out.append((when, values))
    return out


def value_of(store: Any, config: RepoConfig, view: FeatureView, key: int) -> int | None:
    """The stored value of feature ``a`` for one entity."""
    return stored_values(store, config, view, [key])[0][1]["a"]


def snapshot(client: redis.Redis) -> dict[bytes, tuple[bytes, Any, int]]:
    """Every key with its type, full contents and TTL state (-1 none, else >= 0)."""
    out: dict[bytes, tuple[bytes, Any, int]] = {}
    for key in sorted(client.scan_iter(count=1000)):
        kind = client.type(key)
        kind = kind if isinstance(kind, bytes) else kind.encode()
        if kind == b"hash":
            content: Any = client.hgetall(key)
        elif kind == b"string":
            content = client.get(key)
        else:
            content = None
        ttl = client.ttl(key)
        out[key] = (kind, content, -1 if ttl < 0 else 0)
    return out


class CountingRows(list):
    """Rows that count how many were fetched by index (what encoding a row does)."""

    fetched = 0

    def __getitem__(self, index):  # type: ignore[override]
        self.fetched += 1
        return super().__getitem__(index)


def calls_of(steps: Any, replies: dict[str, Any]) -> list[tuple[Any, ...]]:
    """Run a flow of redis-client ``Call`` requests (``_protocol.flow``) without a server: each
    answered from ``replies`` (method -> reply); the requests, as ``(method, *args)``."""
    sent: list[tuple[Any, ...]] = []

    def send(request: Any) -> Any:
        assert isinstance(request, Call)
        sent.append((request.method, *request.args))
        return replies[request.method]

    flow.run(steps, send)
    return sent
