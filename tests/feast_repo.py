"""Helpers for tests that run Feast's own ``RedisOnlineStore`` next to ours on one server.

* temporary feature repos (``feature_store.yaml`` + file registry + file offline store) that
  differ only in ``online_store.type``;
* plain ``RepoConfig`` objects for calling the stores' methods directly;
* keyspace dumps (every key's hash contents and TTL) to compare the bytes each store wrote,
  and a restore so module-scoped data survives the per-test ``FLUSHALL``.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import redis
import yaml
from feast import FeatureStore, RepoConfig

FEAST_REDIS_TYPE = "redis"
DRAGONFLY_TYPE = "feast_dragonfly.DragonflyOnlineStore"

#: Which store each side of a differential test runs.
STORE_TYPES = {"feast": FEAST_REDIS_TYPE, "ours": DRAGONFLY_TYPE}

#: key -> ({field: value}, PTTL in ms; -1 when the key has no expiry)
KeyspaceDump = dict[bytes, tuple[dict[bytes, bytes], int]]


def online_store_settings(kind: str, connection_string: str, **options: Any) -> dict[str, Any]:
    """The ``online_store:`` mapping for ``kind`` ('feast' or 'ours')."""
    return {"type": STORE_TYPES[kind], "connection_string": connection_string, **options}


def repo_config(
    path: Path,
    *,
    project: str,
    online_store: dict[str, Any],
    entity_key_serialization_version: int = 3,
) -> RepoConfig:
    """A ``RepoConfig`` for calling a store's methods directly (nothing is applied)."""
    path.mkdir(parents=True, exist_ok=True)
    return RepoConfig(
        project=project,
        registry=str(path / "registry.db"),
        provider="local",
        online_store=online_store,
        offline_store={"type": "file"},
        entity_key_serialization_version=entity_key_serialization_version,
        repo_path=path,
    )


def write_feature_repo(
    path: Path,
    *,
    project: str,
    online_store: dict[str, Any],
    batch_engine: dict[str, Any] | None = None,
) -> FeatureStore:
    """Write ``feature_store.yaml`` into ``path`` and load it the way ``feast`` does."""
    path.mkdir(parents=True, exist_ok=True)
    settings: dict[str, Any] = {
        "project": project,
        "registry": str(path / "registry.db"),
        "provider": "local",
        "online_store": online_store,
        "offline_store": {"type": "file"},
        "entity_key_serialization_version": 3,
    }
    if batch_engine is not None:
        settings["batch_engine"] = batch_engine
    (path / "feature_store.yaml").write_text(yaml.safe_dump(settings, sort_keys=False))
    return FeatureStore(repo_path=str(path))


def dump_keyspace(client: redis.Redis) -> KeyspaceDump:
    """Every key on the server with its full hash contents and PTTL, in one pipeline."""
    keys = sorted(client.scan_iter(count=1000))
    with client.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.type(key)
            pipe.hgetall(key)
            pipe.pttl(key)
        replies = pipe.execute()
    dump: KeyspaceDump = {}
    for index, key in enumerate(keys):
        kind, fields, pttl = replies[3 * index : 3 * index + 3]
        assert kind in (b"hash", "hash"), f"{key!r} is a {kind!r}, not a hash"
        dump[key] = (fields, pttl)
    return dump


def dump_keys(client: redis.Redis, keys: Iterable[bytes]) -> KeyspaceDump:
    """Like :func:`dump_keyspace` for the given keys only (absent keys are left out)."""
    keys = list(keys)
    with client.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.hgetall(key)
            pipe.pttl(key)
        replies = pipe.execute()
    return {
        key: (replies[2 * i], replies[2 * i + 1]) for i, key in enumerate(keys) if replies[2 * i]
    }


def contents(dump: KeyspaceDump) -> dict[bytes, dict[bytes, bytes]]:
    """The hash contents of a dump, without TTLs."""
    return {key: fields for key, (fields, _) in dump.items()}


def expiring_keys(dump: KeyspaceDump) -> set[bytes]:
    return {key for key, (_, pttl) in dump.items() if pttl >= 0}


def assert_same_keyspace(
    expected: KeyspaceDump, actual: KeyspaceDump, *, ttl_seconds: int | None = None
) -> None:
    """Identical keys and hash bytes; TTLs present on the same keys and close to ``ttl_seconds``.

    The TTL itself is compared approximately: the two dumps are taken moments apart.
    """
    assert expected, "nothing was written: the comparison would prove nothing"
    assert sorted(actual) == sorted(expected), _key_diff(expected, actual)
    for key in expected:
        assert actual[key][0] == expected[key][0], f"hash {key!r} differs"
    assert expiring_keys(actual) == expiring_keys(expected)
    if ttl_seconds is None:
        assert not expiring_keys(actual), "a key got a TTL though none was configured"
        return
    assert expiring_keys(actual) == set(actual), "some keys got no TTL"
    for key, (_, pttl) in {**expected, **actual}.items():
        assert ttl_seconds * 1000 - 60_000 <= pttl <= ttl_seconds * 1000, (key, pttl)


def _key_diff(expected: KeyspaceDump, actual: KeyspaceDump) -> str:
    missing = sorted(set(expected) - set(actual))
    extra = sorted(set(actual) - set(expected))
    return f"keys only in the reference dump: {missing[:5]}; only in ours: {extra[:5]}"


def restore_keyspace(client: redis.Redis, dump: KeyspaceDump) -> None:
    """Write a dump back (after a FLUSHALL), TTLs included."""
    with client.pipeline(transaction=False) as pipe:
        for key, (fields, pttl) in dump.items():
            pipe.hset(key, mapping=fields)
            if pttl > 0:
                pipe.pexpire(key, pttl)
        pipe.execute()
