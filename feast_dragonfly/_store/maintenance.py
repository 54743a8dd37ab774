"""Deleting a project's data exactly: never a key of another project, never a full flush.

Feast's store SCANs ``<prefix>*<project>``, which also matches project ``myproj`` when
tearing down ``proj``. Here every scanned key is checked by walking its serialized entity
key, and only keys whose remainder is exactly this project's name (a hash of Feast's layout)
or this project's name, ``:`` and a view (a compact record) are touched. Both layouts are
cleaned whatever the store's ``layout``: data written before a switch goes too.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

from feast_dragonfly._protocol import keys as _keys
from feast_dragonfly._store import layout

T = TypeVar("T")

_SCAN_COUNT = 1000
_BATCH = 1000


def project_keys(
    client: Any, *, project: str, join_keys: Sequence[str]
) -> Iterator[tuple[bytes, bytes | None]]:
    """Every key of this project for entities with exactly these join keys, with its view:
    ``(hash key, None)`` for Feast's layout, ``(record key, view name)`` for compact records."""
    prefix = layout.key_prefix_for_join_keys(join_keys)
    project_bytes = project.encode("utf-8")
    pattern = _keys.glob_escape(prefix) + b"*" + _keys.glob_escape(project_bytes) + b"*"
    for key in client.scan_iter(match=pattern, count=_SCAN_COUNT):
        if not key.startswith(prefix):
            continue
        if _keys.belongs_to_project(key, project_bytes):
            yield key, None
            continue
        view = _keys.record_view(key, project_bytes)
        if view is not None:
            yield key, view


def _batches(keys: Iterator[T]) -> Iterator[list[T]]:
    batch: list[T] = []
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
    """Remove whole hashes and compact records; returns how many keys were removed. ``key_by_key``: pipelined
    single-key ``UNLINK``s, for a cluster (a multi-key ``UNLINK`` there would cost one round
    trip per slot; redis-py's cluster ``SCAN`` already visits every master)."""
    removed = 0
    # Collect first: deleting while a SCAN cursor is open may make it skip keys.
    keys = [key for key, _view in project_keys(client, project=project, join_keys=join_keys)]
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
    """Remove one view's fields (a hash left with no other view is removed whole) and its
    compact records; returns how many keys were touched."""
    ts_field = _keys.timestamp_field(view_name)
    fields = _keys.feature_fields(view_name, feature_names) + [ts_field]
    view_bytes = view_name.encode("utf-8")
    touched = 0
    found = list(project_keys(client, project=project, join_keys=join_keys))
    hashes = [key for key, view in found if view is None]
    records = [key for key, view in found if view == view_bytes]
    for batch in _batches(iter(records)):
        with client.pipeline(transaction=False) as pipe:
            for key in batch:
                pipe.unlink(key)
            touched += sum(int(reply) for reply in pipe.execute())
    for batch in _batches(iter(hashes)):
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
