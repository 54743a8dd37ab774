"""What ``online_write_batch`` sends, sync or async alike: decided once per call.

Three shapes: rows into Feast's layout as event-time script calls (``write.plan_calls``); a
view too wide for one server command as one transaction per row (``wide``); rows as compact
records (``compact.write``), after the view's schema is registered on the server
(``compact.directory``). The store runs the job with its sync or async client.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from feast import FeatureView, RepoConfig

from feast_dragonfly._protocol.keys import Progress
from feast_dragonfly._protocol.script import ScriptCall
from feast_dragonfly._store import layout as _layout
from feast_dragonfly._store import wide as _wide
from feast_dragonfly._store import write as _write
from feast_dragonfly._store.backends import Backend
from feast_dragonfly._store.compact import views as _views
from feast_dragonfly._store.compact import write as _compact_write
from feast_dragonfly._store.layout import Row
from feast_dragonfly._store.settings import StoreSettings


class WriteJob(NamedTuple):
    backend: Backend
    view_name: str
    workers: int
    wide_flow: Any  # a ``_wide.writing`` flow, or None
    plan_calls: Callable[[], Iterable[ScriptCall]] | None
    registering: Any = None  # compact: a ``Directory.registering`` flow to run first


def write_job(
    settings: StoreSettings,
    backend: Backend,
    config: RepoConfig,
    table: FeatureView,
    data: list[Row],
    progress: Progress,
) -> WriteJob:
    """What writing ``data`` to ``table`` takes: a wide view's transaction flow, or the planner
    of its script calls (and, compact, the schema registration that goes first)."""
    view_name = _layout.storage_view_name(table, config)
    project, key_version = config.project, config.entity_key_serialization_version
    ttl_seconds = settings.key_ttl_seconds
    rows_per_call = backend.rows_per_call(settings.write_rows_per_call)
    if settings.compact:
        schema = _views.schema_of(table)

        def plan_records() -> Iterable[ScriptCall]:
            return _compact_write.plan_calls(
                data,
                schema=schema,
                view_name=view_name,
                project=project,
                key_version=key_version,
                view_ttl=_views.ttl_seconds(table),
                key_ttl=ttl_seconds,
                rows_per_call=rows_per_call,
                join_keys=table.join_keys,
                shards=backend.shard_map(),
            )

        registering = backend.compact_schemas.registering(project, view_name, schema)
        return WriteJob(backend, view_name, settings.write_workers, None, plan_records, registering)
    if _wide.is_wide_view(len(table.features)):
        # Rows too wide for one server command: one transaction per row (see ``_wide``).
        flow = _wide.writing(
            data,
            view_name=view_name,
            project=project,
            key_version=key_version,
            ttl_seconds=ttl_seconds,
            progress=progress,
        )
        return WriteJob(backend, view_name, settings.write_workers, flow, None)

    def plan_calls() -> Iterable[ScriptCall]:
        return _write.plan_calls(
            data,
            view_name=view_name,
            project=project,
            key_version=key_version,
            ttl_seconds=ttl_seconds,
            rows_per_call=rows_per_call,
            shards=backend.shard_map(),
        )

    return WriteJob(backend, view_name, settings.write_workers, None, plan_calls)
