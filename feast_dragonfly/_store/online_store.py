"""The Feast-facing online store: Feast's hooks, each planning and delegating to a backend.

``DragonflyOnlineStore`` subclasses Feast's ``RedisOnlineStore`` on purpose: Feast 0.67 gates
versioned reads (``fv@v2``) and ``feast precompute`` entity scans on
``isinstance(store, RedisOnlineStore)``, and our data layout is the same, so those features
keep working. Every method that touches the server is our own; nothing of the parent's I/O runs.
Feast's loader finds the config class next to the store class, so ``DragonflyOnlineStoreConfig``
(defined in ``config.py``) is exported here too. The private Feast hooks overridden here are
checked by ``feast_hooks``: a Feast that calls them otherwise gets its own implementation.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

from feast import Entity, FeatureService, FeatureView, RepoConfig, utils
from feast.infra.online_stores.online_store import OnlineStore
from feast.infra.online_stores.redis import RedisOnlineStore
from feast.infra.registry.base_registry import BaseRegistry
from feast.infra.supported_async_methods import SupportedAsyncMethods
from feast.online_response import OnlineResponse
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.value_type import ValueType

from feast_dragonfly._protocol.keys import Progress
from feast_dragonfly._store import (
    direct_path,
    feast_hooks,
    feast_serve_hook,
    feature_types,
    response_builder,
)
from feast_dragonfly._store import layout as _layout
from feast_dragonfly._store import read as _read
from feast_dragonfly._store import wide as _wide
from feast_dragonfly._store.backends import Backend, open_backend
from feast_dragonfly._store.compact import directory as _directory
from feast_dragonfly._store.compact import read as _compact_read
from feast_dragonfly._store.compact import views as _views
from feast_dragonfly._store.config import DragonflyOnlineStoreConfig
from feast_dragonfly._store.layout import Row
from feast_dragonfly._store.online_response import FastOnlineResponse
from feast_dragonfly._store.settings import StoreSettings
from feast_dragonfly._store.view_writer import ViewWriter
from feast_dragonfly._store.write_jobs import WriteJob, write_job
from feast_dragonfly.errors import DragonflyConfigError

__all__ = ["DragonflyOnlineStore", "DragonflyOnlineStoreConfig"]

logger = logging.getLogger(__name__)


class DragonflyOnlineStore(RedisOnlineStore):
    """Feast online store for DragonflyDB and Redis, byte-compatible with ``type: redis``.

    Feast's hooks live here; everything that touches a server goes through the backend of
    the configured deployment (``_backends``), built once per connection settings."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._backend: Backend | None = None
        # Backends replaced after a config change: their async clients close with the store.
        self._retired: list[Backend] = []

    @property
    def async_supported(self) -> SupportedAsyncMethods:
        return SupportedAsyncMethods(read=True, write=True)

    # ------------------------------------------------------------------ settings and backend

    @staticmethod
    def _settings(config: Any) -> StoreSettings:
        """The parsed settings of a ``RepoConfig`` or of its ``online_store`` section."""
        store_config = getattr(config, "online_store", config)
        if not isinstance(store_config, DragonflyOnlineStoreConfig):
            raise DragonflyConfigError(
                "DragonflyOnlineStore needs online_store.type: feast_dragonfly.DragonflyOnlineStore, "
                f"got {type(store_config).__name__}"
            )
        return store_config.settings()

    def _backend_for(self, settings: StoreSettings) -> Backend:
        backend = self._backend
        if backend is not None and backend.settings == settings.client:
            return backend
        with self._lock:
            backend = self._backend
            if backend is None or backend.settings != settings.client:
                if backend is not None:
                    backend.close()
                    self._retired.append(backend)
                backend = self._backend = open_backend(settings.client)
            return backend

    def _get_client(self, online_store_config: Any) -> Any:
        """The sync client (also what Feast's ``feast precompute`` scans through):
        ``redis.Redis``, or ``RedisCluster`` with ``redis_type: redis_cluster``."""
        settings = self._settings(online_store_config)
        backend = self._backend_for(settings)
        with backend.errors():
            return backend.client()

    async def _get_client_async(self, online_store_config: Any) -> Any:
        """The asyncio client of the running event loop."""
        backend = self._backend_for(self._settings(online_store_config))
        with backend.errors():
            return await backend.client_async()

    async def initialize(self, config: RepoConfig) -> None:
        """Open the async pool — every connection it may hold, so a burst of requests never
        waits for connects — and check the server answers, so `feast serve` fails fast;
        inside `feast serve`, answer its JSON from the stored bytes (``feast_serve_hook``)."""
        feast_serve_hook.install()
        backend = self._backend_for(self._settings(config))
        with backend.errors():
            client = await backend.client_async()
            await client.ping()
            await backend.connect_pool_async()

    async def close(self) -> None:
        """Close every pool and thread this store opened (Feast's own store leaks its async
        client)."""
        with self._lock:
            backends = [*self._retired, *([self._backend] if self._backend else [])]
            self._retired.clear()
            self._backend = None
        for backend in backends:
            await backend.aclose()

    # ------------------------------------------------------------------ writes

    def view_writer(
        self,
        config: RepoConfig,
        view_name: str,
        *,
        concurrency: int | None = None,
        rows_per_call: int | None = None,
        progress: Progress = None,
        ahead_rows: int = 0,
        schema: Any = None,
    ) -> ViewWriter:
        """A :class:`~feast_dragonfly.ViewWriter` for bulk writers (materialization engines,
        tools) that plan their own script calls; ``view_name`` is the storage name
        (``_layout.storage_view_name``). ``concurrency`` / ``rows_per_call`` default to the
        store's ``write_concurrency`` / ``write_rows_per_call``; ``ahead_rows``: rows that may
        be queued beyond the round trips in flight. ``schema``: with ``layout: compact``, the
        view's record schema (``compact.views.schema_of``), registered on the server first."""
        settings = self._settings(config)
        backend = self._backend_for(settings)
        if schema is not None:
            _schemas_on(
                backend, backend.compact_schemas.registering(config.project, view_name, schema)
            )
        return ViewWriter(
            backend,
            view_name,
            workers=settings.workers_for(concurrency),
            rows_per_call=rows_per_call or settings.write_rows_per_call,
            ttl_seconds=settings.key_ttl_seconds,
            progress=progress,
            ahead_rows=ahead_rows,
        )

    def _write_job(
        self, config: RepoConfig, table: FeatureView, data: list[Row], progress: Progress
    ) -> WriteJob:
        settings = self._settings(config)
        return write_job(settings, self._backend_for(settings), config, table, data, progress)

    def online_write_batch(
        self,
        config: RepoConfig,
        table: FeatureView,
        data: list[Row],
        progress: Progress,
    ) -> None:
        """Write rows; a stored row with a newer-or-equal event time is never replaced.

        ``progress`` is called with numbers of rows (every input row counts once)."""
        if not data:
            return
        job = self._write_job(config, table, data, progress)
        if job.registering is not None:
            _schemas_on(job.backend, job.registering)
        if job.wide_flow is not None:
            with job.backend.errors():
                _wide.write_rows(job.backend.client(), job.wide_flow)
            return
        assert job.plan_calls is not None
        job.backend.write(job.view_name, job.plan_calls, progress, job.workers)

    async def online_write_batch_async(
        self,
        config: RepoConfig,
        table: FeatureView,
        data: list[Row],
        progress: Progress,
    ) -> None:
        if not data:
            return
        job = self._write_job(config, table, data, progress)
        if not job.backend.shard_map_known:  # asked once per backend, off the loop
            await asyncio.to_thread(job.backend.shard_map)
        if job.registering is not None:
            with job.backend.errors():
                await _directory.run_async(job.registering, await job.backend.client_async())
        if job.wide_flow is not None:
            with job.backend.errors():
                await _wide.write_rows_async(await job.backend.client_async(), job.wide_flow)
            return
        assert job.plan_calls is not None
        await job.backend.write_async(job.view_name, job.plan_calls, progress, job.workers)

    # ------------------------------------------------------------------ reads

    def _fetch(
        self, config: Any, plan: _read.ReadPlan, framed: bool = False, columns: bool = False
    ) -> list:
        """HMGET replies for ``plan`` (with ``layout: compact``, made from its records, and
        ``framed`` or in ``columns`` if asked: see ``compact.read.hash_replies``)."""
        settings = self._settings(config)
        backend = self._backend_for(settings)
        if settings.compact:
            return _compact_read.fetch(backend, plan, settings, config.project, framed, columns)
        replies = backend.fetch(plan, settings.read_chunk_size, settings.read_concurrency)
        if settings.enforce_view_ttl:
            _read.drop_expired(plan, replies, _views.now_ms())
        return replies

    async def _fetch_async(
        self, config: Any, plan: _read.ReadPlan, framed: bool = False, columns: bool = False
    ) -> list:
        settings = self._settings(config)
        backend = self._backend_for(settings)
        if settings.compact:
            return await _compact_read.fetch_async(
                backend, plan, settings, config.project, framed, columns
            )
        replies = await backend.fetch_async(plan, settings.read_chunk_size)
        if settings.enforce_view_ttl:
            _read.drop_expired(plan, replies, _views.now_ms())
        return replies

    def _read_options(self, config: Any, table: FeatureView) -> dict[str, Any]:
        settings = self._settings(config)
        return _views.read_options(
            table, compact=settings.compact, enforce_ttl=settings.enforce_view_ttl
        )

    def _single_view_plan(
        self,
        config: RepoConfig,
        table: FeatureView,
        entity_keys: list[EntityKeyProto],
        requested_features: list[str] | None,
    ) -> _read.ReadPlan:
        names = list(requested_features) if requested_features else [f.name for f in table.features]
        view = _read.view_request(
            _layout.storage_view_name(table, config),
            names,
            entity_keys,
            **self._read_options(config, table),
        )
        return _read.plan_read(
            [view], project=config.project, key_version=config.entity_key_serialization_version
        )

    def online_read(
        self,
        config: RepoConfig,
        table: FeatureView,
        entity_keys: list[EntityKeyProto],
        requested_features: list[str] | None = None,
    ) -> list[_read.ReadRow]:
        plan = self._single_view_plan(config, table, entity_keys, requested_features)
        framed = self._settings(config).compact
        return _read.decode_rows(plan.views[0], self._fetch(config, plan, framed), framed)

    async def online_read_async(
        self,
        config: RepoConfig,
        table: FeatureView,
        entity_keys: list[EntityKeyProto],
        requested_features: list[str] | None = None,
    ) -> list[_read.ReadRow]:
        plan = self._single_view_plan(config, table, entity_keys, requested_features)
        framed = self._settings(config).compact
        replies = await self._fetch_async(config, plan, framed)
        return _read.decode_rows(plan.views[0], replies, framed)

    def _plan_feature_views(
        self, config, grouped_refs, join_key_values, entity_name_to_join_key_map
    ):
        views: list[_read.ViewRequest] = []
        placements = []
        for table, requested_features in grouped_refs:
            entity_values, indexes, output_len = utils._get_unique_entities(
                table, join_key_values, entity_name_to_join_key_map
            )
            entity_keys = utils._get_entity_key_protos(entity_values)
            view_name = _layout.storage_view_name(table, config)
            views.append(
                _read.view_request(
                    view_name, requested_features, entity_keys, **self._read_options(config, table)
                )
            )
            placements.append((table, indexes, output_len))
        plan = _read.plan_read(
            views, project=config.project, key_version=config.entity_key_serialization_version
        )
        return plan, placements

    def _read_features_per_fv(self, *args: Any, **kwargs: Any) -> None:
        """Feast's response hook: one HMGET per entity hash for all requested views, the
        response assembled from the stored bytes; Feast's own (view by view, through
        ``online_read``) when this Feast calls it with other arguments."""
        if not feast_hooks.present(feast_hooks.READ_PER_VIEW):
            return OnlineStore._read_features_per_fv(self, *args, **kwargs)
        return self._read_batched(*args, **kwargs)

    async def _read_features_per_fv_async(self, *args: Any, **kwargs: Any) -> None:
        if not feast_hooks.present(feast_hooks.READ_PER_VIEW):
            return await OnlineStore._read_features_per_fv_async(self, *args, **kwargs)
        return await self._read_batched_async(*args, **kwargs)

    def _read_batched(
        self,
        config: RepoConfig,
        grouped_refs,
        join_key_values,
        entity_name_to_join_key_map,
        online_features_response,
        full_feature_names: bool,
        include_feature_view_version_metadata: bool,
    ) -> None:
        plan, placements = self._plan_feature_views(
            config, grouped_refs, join_key_values, entity_name_to_join_key_map
        )
        framed = self._settings(config).compact
        response_builder.fill_response(
            online_features_response,
            plan,
            self._fetch(config, plan, framed, columns=framed),
            placements,
            full_feature_names,
            include_feature_view_version_metadata,
            framed,
        )

    async def _read_batched_async(
        self,
        config: RepoConfig,
        grouped_refs,
        join_key_values,
        entity_name_to_join_key_map,
        online_features_response,
        full_feature_names: bool,
        include_feature_view_version_metadata: bool,
    ) -> None:
        plan, placements = self._plan_feature_views(
            config, grouped_refs, join_key_values, entity_name_to_join_key_map
        )
        framed = self._settings(config).compact
        response_builder.fill_response(
            online_features_response,
            plan,
            await self._fetch_async(config, plan, framed, columns=framed),
            placements,
            full_feature_names,
            include_feature_view_version_metadata,
            framed,
        )

    @staticmethod
    def _build_feature_types(*args: Any, **kwargs: Any) -> dict[str, ValueType]:
        """Feast's hook for the response's name -> ``ValueType`` map, memoized
        (``feature_types``: Feast rebuilds it per request); Feast's own when this Feast calls
        it with other arguments."""
        if not feast_hooks.present(feast_hooks.FEATURE_TYPES):
            return RedisOnlineStore._build_feature_types(*args, **kwargs)
        return feature_types.build(*args, **kwargs)

    def get_online_features(
        self,
        config: RepoConfig,
        features: list[str] | FeatureService,
        entity_rows: Any,
        registry: BaseRegistry,
        project: str,
        full_feature_names: bool = False,
        include_feature_view_version_metadata: bool = False,
    ) -> OnlineResponse:
        """Plain requests (``direct_read``) skip Feast's per-request machinery; the others go
        through Feast's request handling. Either way the response's ``to_dict`` is faster."""
        request = direct_path.request_args(locals())
        prepared = self._direct_request(**request)
        if prepared is not None:
            started = time.monotonic()
            framed = direct_path.framing(self._settings(config).compact)
            replies = self._fetch(config, prepared.read_plan, framed, columns=framed)
            return direct_path.respond(prepared, replies, started, framed)
        return FastOnlineResponse.wrap(super().get_online_features(**request))

    async def get_online_features_async(
        self,
        config: RepoConfig,
        features: list[str] | FeatureService,
        entity_rows: Any,
        registry: BaseRegistry,
        project: str,
        full_feature_names: bool = False,
        include_feature_view_version_metadata: bool = False,
    ) -> OnlineResponse:
        request = direct_path.request_args(locals())
        prepared = self._direct_request(**request)
        if prepared is not None:
            started = time.monotonic()
            framed = direct_path.framing(self._settings(config).compact)
            replies = await self._fetch_async(config, prepared.read_plan, framed, columns=framed)
            return direct_path.respond(prepared, replies, started, framed)
        return FastOnlineResponse.wrap(await super().get_online_features_async(**request))

    #: The direct path's planner; a store attribute so callers can ask whether a request
    #: would take the direct path (None: Feast's path answers it).
    _direct_request = staticmethod(direct_path.prepare)

    # ------------------------------------------------------------------ lifecycle

    def update(
        self,
        config: RepoConfig,
        tables_to_delete: Sequence[FeatureView],
        tables_to_keep: Sequence[FeatureView],
        entities_to_delete: Sequence[Entity],
        entities_to_keep: Sequence[Entity],
        partial: bool,
    ) -> None:
        """Delete the stored fields of removed feature views, in this project only. With
        ``layout: compact``, refuse a feature type a record cannot hold (naming it) and tell
        the server each kept view's schema, so records written under it stay readable."""
        settings = self._settings(config)
        if settings.compact:
            backend = self._backend_for(settings)
            for table in tables_to_keep:
                view_name = _layout.storage_view_name(table, config)
                schema = _views.schema_of(table)
                _schemas_on(
                    backend, backend.compact_schemas.registering(config.project, view_name, schema)
                )
        if not settings.full_scan_for_deletion:
            return
        for table in tables_to_delete:
            self.delete_table(config, table)

    def delete_table(self, config: RepoConfig, table: FeatureView) -> None:
        """Remove one view's fields from every hash of this project, and its compact records
        and schemas; other views stay."""
        backend = self._backend_for(self._settings(config))
        view_name = _layout.storage_view_name(table, config)
        backend.delete_view(
            project=config.project,
            join_keys=table.join_keys,
            view_name=view_name,
            feature_names=[f.name for f in table.features],
        )
        _schemas_on(backend, backend.compact_schemas.forgetting(config.project, [view_name]))

    def delete_entity_values(self, config: RepoConfig, join_keys: list[str]) -> None:
        """Remove every hash of this project for entities with these join keys."""
        self._backend_for(self._settings(config)).delete_entities(
            project=config.project, join_keys=join_keys
        )

    def teardown(
        self,
        config: RepoConfig,
        tables: Sequence[FeatureView],
        entities: Sequence[Entity],
    ) -> None:
        """Delete this project's data for these views (and its compact schemas), and nothing
        of any other project."""
        for join_keys in sorted({tuple(table.join_keys) for table in tables}):
            self.delete_entity_values(config, list(join_keys))
        backend = self._backend_for(self._settings(config))
        _schemas_on(backend, backend.compact_schemas.forgetting(config.project))


def _schemas_on(backend: Backend, steps: Any) -> None:
    """Carry a compact schema-directory flow (``Directory.registering`` / ``forgetting``) out
    on the backend's sync client, its failures translated like every other call's."""
    with backend.errors():
        _directory.run(steps, backend.client())
