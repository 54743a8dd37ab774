"""Deleting a project's data exactly: never a key of another project, never a full flush.

Feast's store SCANs ``<prefix>*<project>``, which also matches project ``myproj`` when
tearing down ``proj``. Here every scanned key is checked by walking its serialized entity
key, and only keys whose remainder is exactly this project's name are touched.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from feast_dragonfly._protocol import keys as _keys
from feast_dragonfly._store import layout

_SCAN_COUNT = 1000
_BATCH = 1000


def project_keys(client: Any, *, project: str, join_keys: Sequence[str]) -> Iterator[bytes]:
    """Every hash key of this project for entities with exactly these join keys."""
    prefix = layout.key_prefix_for_join_keys(join_keys)
    project_bytes = project.encode("utf-8")
    pattern = _keys.glob_escape(prefix) + b"*" + _keys.glob_escape(project_bytes)
    for key in client.scan_iter(match=pattern, count=_SCAN_COUNT):
        if key.startswith(prefix) and _keys.belongs_to_project(key, project_bytes):
            yield key


def _batches(keys: Iterator[bytes]) -> Iterator[list[bytes]]:
    batch: list[bytes] = []
    for key in keys:
        batch.append(key)
        if len(batch) >= _BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def delete_entities(
    client: Any, *, project: str, join_keys: Sequence[str], key_by_key: bool = False
) -> int:
    """Remove whole hashes; returns how many were removed. ``key_by_key``: pipelined
    single-key ``UNLINK``s, for a cluster (a multi-key ``UNLINK`` there would cost one round
    trip per slot; redis-py's cluster ``SCAN`` already visits every master)."""
    removed = 0
    # Collect first: deleting while a SCAN cursor is open may make it skip keys.
    keys = list(project_keys(client, project=project, join_keys=join_keys))
    for batch in _batches(iter(keys)):
        if key_by_key:
            pipe = client.pipeline()
            for key in batch:
                pipe.unlink(key)
            removed += sum(int(reply) for reply in pipe.execute())
        else:
            removed += int(client.unlink(*batch))
    return removed


def delete_view(
    client: Any,
    *,
    project: str,
    join_keys: Sequence[str],
    view_name: str,
    feature_names: Sequence[str],
) -> int:
    """Remove one view's fields; a hash left with no other view is removed whole."""
    ts_field = _keys.timestamp_field(view_name)
    fields = _keys.feature_fields(view_name, feature_names) + [ts_field]
    touched = 0
    keys = list(project_keys(client, project=project, join_keys=join_keys))
    for batch in _batches(iter(keys)):
        with client.pipeline(transaction=False) as pipe:
            for key in batch:
                pipe.hkeys(key)
            all_fields = pipe.execute()
        with client.pipeline(transaction=False) as pipe:
            for key, stored in zip(batch, all_fields):
                views = {f for f in stored if f.startswith(_keys.TIMESTAMP_PREFIX)}
                if ts_field not in views:
                    continue
                if len(views) == 1:
                    pipe.unlink(key)
                else:
                    pipe.hdel(key, *fields)
                touched += 1
            pipe.execute()
    return touched
