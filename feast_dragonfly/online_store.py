"""The Feast-facing online store and its config (Feast's loader wants both in one module).

``DragonflyOnlineStore`` subclasses Feast's ``RedisOnlineStore`` on purpose: Feast 0.67 gates
versioned reads (``fv@v2``) and ``feast precompute`` entity scans on
``isinstance(store, RedisOnlineStore)``, and our data layout is the same, so those features
keep working. Every method that touches the server is our own; nothing of the parent's I/O runs.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any, Literal

import redis
import redis.asyncio as redis_asyncio
from feast import Entity, FeatureView, RepoConfig, utils
from feast.infra.online_stores.redis import RedisOnlineStore
from feast.infra.supported_async_methods import SupportedAsyncMethods
from feast.online_response import OnlineResponse
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.repo_config import FeastConfigBaseModel
from feast.value_type import ValueType
from pydantic import ConfigDict, Field, NonNegativeInt, PositiveInt, StrictStr, model_validator

from feast_dragonfly import (
    _cluster,
    _layout,
    _maintenance,
    _read,
    _response,
    _topology,
    _transport,
    _wide,
    _write,
)
from feast_dragonfly._connection import ConnectionSettings, client_kwargs
from feast_dragonfly._online_response import FastOnlineResponse
from feast_dragonfly._topology import translated_errors
from feast_dragonfly.errors import DragonflyConfigError

logger = logging.getLogger(__name__)

Row = tuple[EntityKeyProto, dict[str, ValueProto], datetime, datetime | None]


class DragonflyOnlineStoreConfig(FeastConfigBaseModel):
    """``online_store:`` settings for DragonflyDB or any Redis-protocol server."""

    # Validation errors must not echo input values: connection_string may hold a password.
    model_config = ConfigDict(
        arbitrary_types_allowed=True, extra="forbid", hide_input_in_errors=True
    )

    type: Literal["feast_dragonfly.DragonflyOnlineStore"] = "feast_dragonfly.DragonflyOnlineStore"
    """Online store type selector."""

    connection_string: StrictStr = "localhost:6379"
    """Feast's ``host:port,password=...,ssl=true,db=0`` or a ``redis://`` / ``rediss://`` URL."""

    redis_type: _topology.RedisType = "redis"
    """Deployment kind, named as in Feast's Redis store: ``redis`` (one server),
    ``redis_cluster`` (connection_string lists startup nodes) or ``redis_sentinel``
    (connection_string lists the sentinels)."""

    sentinel_master: StrictStr = "mymaster"
    """Name of the master the sentinels monitor (``redis_type: redis_sentinel``), as in Feast."""

    key_ttl_seconds: NonNegativeInt | None = None
    """Expire each entity hash this many seconds after its last write (as Feast's store);
    0 or unset: never (0 is accepted because Feast's store treats it so)."""

    max_connections: PositiveInt = 16
    """Size of each connection pool (one sync, one per event loop for async)."""

    socket_timeout: float = Field(default=10.0, gt=0)
    """Seconds to wait for a reply before failing."""

    socket_connect_timeout: float = Field(default=5.0, gt=0)
    """Seconds to wait for a TCP connection before failing."""

    write_rows_per_call: PositiveInt = 100
    """Rows per server-side event-time-checked write call."""

    write_concurrency: PositiveInt = 8
    """Write calls in flight at once, each round trip on its own pooled connection (threads
    for ``online_write_batch``, ``asyncio.gather`` for the async path); at most
    ``max_connections``. 1 sends everything on one connection, in order."""

    read_chunk_size: PositiveInt = 100
    """Entity hashes per chunk of a read; a request with more is split into chunks."""

    read_concurrency: PositiveInt = 4
    """Chunks of one read sent at once, each on its own pooled connection."""

    full_scan_for_deletion: bool = True
    """Whether ``feast apply`` deletes the stored fields of feature views it removes."""

    retry_attempts: NonNegativeInt = 3
    """Retries after a transient connection failure (refused, reset, dropped); 0: none."""

    retry_backoff_base: float = Field(default=0.05, gt=0)
    """Seconds; the n-th retry waits ``min(retry_backoff_cap, retry_backoff_base * 2**n)``."""

    retry_backoff_cap: float = Field(default=2.0, gt=0)
    """Longest wait between two retries, in seconds."""

    @model_validator(mode="before")
    @classmethod
    def _reject_unknown_keys(cls, values: Any) -> Any:
        # Checked here rather than by extra="forbid" alone: pydantic's message would echo the
        # value, and a misplaced `password:` key would end up on the terminal.
        if isinstance(values, dict):
            for key in values:
                if key not in cls.model_fields:
                    raise DragonflyConfigError(_unknown_key_message(key, cls.model_fields))
        return values

    @model_validator(mode="after")
    def _check_connection_string(self) -> DragonflyOnlineStoreConfig:
        # Parse eagerly so a bad string (or a TLS option without TLS) fails when the config
        # loads, not at the first read.
        client_kwargs(
            self.connection_settings(),
            socket_timeout=self.socket_timeout,
            socket_connect_timeout=self.socket_connect_timeout,
            ssl_connection_class=redis.SSLConnection,
        )
        return self

    def connection_settings(self) -> ConnectionSettings:
        return _topology.parse_topology(
            self.connection_string, self.redis_type, self.sentinel_master
        )

    def __repr_args__(self):  # type: ignore[override]
        for name, value in super().__repr_args__():
            if name == "connection_string":
                value = self.connection_settings().redacted()
            yield name, value


class DragonflyOnlineStore(RedisOnlineStore):
    """Feast online store for DragonflyDB and Redis, byte-compatible with ``type: redis``."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._sync_client: redis.Redis | None = None
        self._sync_signature: tuple | None = None
        self._read_executor: ThreadPoolExecutor | None = None
        self._read_workers = 0
        self._write_pool_executor: ThreadPoolExecutor | None = None
        self._write_pool_workers = 0
        self._async_clients: dict[int, tuple[asyncio.AbstractEventLoop, redis_asyncio.Redis]] = {}

    @property
    def async_supported(self) -> SupportedAsyncMethods:
        return SupportedAsyncMethods(read=True, write=True)

    # ------------------------------------------------------------------ clients

    @staticmethod
    def _store_config(config: Any) -> DragonflyOnlineStoreConfig:
        store_config = getattr(config, "online_store", config)
        if not isinstance(store_config, DragonflyOnlineStoreConfig):
            raise DragonflyConfigError(
                "DragonflyOnlineStore needs online_store.type: feast_dragonfly.DragonflyOnlineStore, "
                f"got {type(store_config).__name__}"
            )
        return store_config

    @staticmethod
    def _pool_kwargs(store_config: DragonflyOnlineStoreConfig, ssl_class: type) -> dict:
        kwargs = client_kwargs(
            store_config.connection_settings(),
            socket_timeout=store_config.socket_timeout,
            socket_connect_timeout=store_config.socket_connect_timeout,
            ssl_connection_class=ssl_class,
        )
        kwargs["max_connections"] = store_config.max_connections
        # The connections' retry policy: redis-py's own commands and our hot paths use it.
        kwargs["retry"] = _transport.make_retry(
            store_config.retry_attempts,
            store_config.retry_backoff_base,
            store_config.retry_backoff_cap,
            for_asyncio=issubclass(ssl_class, redis_asyncio.Connection),
        )
        return kwargs

    def _get_client(self, online_store_config: Any) -> Any:
        """The sync client (also what Feast's ``feast precompute`` scans through):
        ``redis.Redis``, or ``RedisCluster`` with ``redis_type: redis_cluster``."""
        store_config = self._store_config(online_store_config)
        signature = (
            store_config.connection_string,
            store_config.max_connections,
            store_config.socket_timeout,
            store_config.socket_connect_timeout,
            store_config.retry_attempts,
            store_config.retry_backoff_base,
            store_config.retry_backoff_cap,
            store_config.redis_type,
            store_config.sentinel_master,
        )
        with self._lock:
            if self._sync_client is None or self._sync_signature != signature:
                if self._sync_client is not None:
                    _topology.close_sync(self._sync_client)
                if store_config.redis_type != "redis":
                    self._sync_client = _topology.sync_client(store_config)
                else:
                    pool = redis.BlockingConnectionPool(
                        timeout=store_config.socket_timeout,
                        **self._pool_kwargs(store_config, redis.SSLConnection),
                    )
                    self._sync_client = redis.Redis(connection_pool=pool)
                self._sync_signature = signature
            return self._sync_client

    async def _get_client_async(self, online_store_config: Any) -> Any:
        """One async client per running event loop: redis-py's asyncio pools are loop-bound."""
        store_config = self._store_config(online_store_config)
        loop = asyncio.get_running_loop()
        entry = self._async_clients.get(id(loop))
        if entry is not None and entry[0] is loop:
            return entry[1]
        self._drop_clients_of_closed_loops()
        if store_config.redis_type != "redis":
            client = await _topology.async_client(store_config)
        else:
            pool = redis_asyncio.BlockingConnectionPool(
                timeout=store_config.socket_timeout,
                **self._pool_kwargs(store_config, redis_asyncio.SSLConnection),
            )
            client = redis_asyncio.Redis(connection_pool=pool)
        self._async_clients[id(loop)] = (loop, client)
        return client

    async def initialize(self, config: RepoConfig) -> None:
        """Open the async pool and check the server answers, so `feast serve` fails fast."""
        settings = self._store_config(config).connection_settings()
        client = await self._get_client_async(config.online_store)
        with translated_errors(settings):
            await client.ping()

    def _drop_clients_of_closed_loops(self) -> None:
        """Callers doing ``asyncio.run`` per request leave a pool behind per loop: close their
        sockets now rather than when the garbage collector gets to them."""
        for key, (owner, client) in list(self._async_clients.items()):
            if owner.is_closed():
                del self._async_clients[key]
                _close_sockets_of_dead_loop(client)

    async def close(self) -> None:
        """Close every pool this store opened (Feast's own store leaks its async client)."""
        loop = asyncio.get_running_loop()
        for key, (owner, client) in list(self._async_clients.items()):
            del self._async_clients[key]
            closing = _topology.aclose(client)
            if owner is loop:
                await closing
            elif owner.is_closed():
                closing.close()
                _close_sockets_of_dead_loop(client)
            elif owner.is_running():
                # Pools are bound to their loop: let that loop close its own.
                await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(closing, owner))
            else:
                # An idle loop (run_until_complete style) runs nothing by itself.
                await asyncio.to_thread(owner.run_until_complete, closing)
        with self._lock:
            if self._sync_client is not None:
                _topology.close_sync(self._sync_client)
                self._sync_client = None
                self._sync_signature = None
            if self._read_executor is not None:
                self._read_executor.shutdown(wait=False)
                self._read_executor = None
                self._read_workers = 0

    # ------------------------------------------------------------------ writes

    def _write_executor(
        self, store_config: DragonflyOnlineStoreConfig
    ) -> ThreadPoolExecutor | None:
        """Threads that carry the script calls of one write over separate connections."""
        workers = self._write_workers_for(store_config)
        if workers <= 1:
            return None
        with self._lock:
            executor = self._write_pool_executor
            if executor is None or self._write_pool_workers != workers:
                if executor is not None:
                    executor.shutdown(wait=False)
                executor = ThreadPoolExecutor(
                    max_workers=workers, thread_name_prefix="feast-dragonfly-write"
                )
                self._write_pool_executor = executor
                self._write_pool_workers = workers
            return executor

    @staticmethod
    def _write_workers_for(store_config: DragonflyOnlineStoreConfig) -> int:
        return max(1, min(store_config.write_concurrency, store_config.max_connections))

    @staticmethod
    def _rows_per_call(
        store_config: DragonflyOnlineStoreConfig, requested: int | None = None
    ) -> int:
        """Rows per script call: a cluster runs a script only if all its keys share one slot,
        and Feast's keys carry no hash tags, so there every call carries one row."""
        if store_config.redis_type == "redis_cluster":
            return 1
        return requested or store_config.write_rows_per_call

    def _write_sender(
        self,
        store_config: DragonflyOnlineStoreConfig,
        view_name: str,
        *,
        executor: ThreadPoolExecutor | None,
        concurrency: int,
        progress: Callable[[int], Any] | None,
        window: int | None = None,
    ) -> Any:
        """What carries script calls to the server(s): one pool, or a cluster's masters.
        ``window``: round trips queued or in flight before ``submit`` waits (see Sender)."""
        client = self._get_client(store_config)
        if _topology.is_cluster(client):
            return _cluster.ClusterSender(
                client,
                view_name,
                executor=executor,
                concurrency=concurrency,
                progress=progress,
                window=window,
            )
        return _write.Sender(
            client.connection_pool,
            view_name,
            executor=executor,
            concurrency=concurrency,
            progress=progress,
            window=window,
        )

    def _plan_writes(self, config: RepoConfig, table: FeatureView, data: Sequence[Row]):
        store_config = self._store_config(config)
        view_name = _layout.storage_view_name(table, config)
        calls = _write.plan_calls(
            data,
            view_name=view_name,
            project=config.project,
            key_version=config.entity_key_serialization_version,
            ttl_seconds=store_config.key_ttl_seconds,
            rows_per_call=self._rows_per_call(store_config),
        )
        return store_config, view_name, calls

    def online_write_batch(
        self,
        config: RepoConfig,
        table: FeatureView,
        data: list[Row],
        progress: Callable[[int], Any] | None,
    ) -> None:
        """Write rows; a stored row with a newer-or-equal event time is never replaced.

        ``progress`` is called with numbers of rows (every input row counts once)."""
        if not data:
            return
        if _wide.is_wide_view(len(table.features)):
            self._write_wide(config, table, data, progress)
            return
        store_config = self._store_config(config)
        if store_config.redis_type == "redis_sentinel":
            _topology.retry_after_failover(
                lambda report: self._write_once(config, table, data, report),
                progress,
                self._get_client(store_config),
            )
        else:
            self._write_once(config, table, data, progress)

    def _write_once(
        self,
        config: RepoConfig,
        table: FeatureView,
        data: list[Row],
        progress: Callable[[int], Any] | None,
    ) -> None:
        store_config, view_name, calls = self._plan_writes(config, table, data)
        client = self._get_client(store_config)
        with translated_errors(store_config.connection_settings()):
            if _topology.is_cluster(client):
                _cluster.run_calls(
                    client,
                    calls,
                    view_name,
                    progress,
                    executor=self._write_executor(store_config),
                    concurrency=self._write_workers_for(store_config),
                )
                return
            _write.run_calls(
                client.connection_pool,
                calls,
                view_name,
                progress,
                executor=self._write_executor(store_config),
                concurrency=self._write_workers_for(store_config),
            )

    async def online_write_batch_async(
        self,
        config: RepoConfig,
        table: FeatureView,
        data: list[Row],
        progress: Callable[[int], Any] | None,
    ) -> None:
        if not data:
            return
        if _wide.is_wide_view(len(table.features)):
            await self._write_wide_async(config, table, data, progress)
            return
        store_config = self._store_config(config)
        if store_config.redis_type == "redis_sentinel":
            await _topology.retry_after_failover_async(
                lambda report: self._write_once_async(config, table, data, report),
                progress,
                await self._get_client_async(store_config),
            )
        else:
            await self._write_once_async(config, table, data, progress)

    async def _write_once_async(
        self,
        config: RepoConfig,
        table: FeatureView,
        data: list[Row],
        progress: Callable[[int], Any] | None,
    ) -> None:
        store_config, view_name, calls = self._plan_writes(config, table, data)
        client = await self._get_client_async(store_config)
        with translated_errors(store_config.connection_settings()):
            if _topology.is_cluster(client):
                await _cluster.run_calls_async(
                    client,
                    calls,
                    view_name,
                    progress,
                    concurrency=self._write_workers_for(store_config),
                )
                return
            await _write.run_calls_async(
                client.connection_pool,
                calls,
                view_name,
                progress,
                concurrency=self._write_workers_for(store_config),
            )

    def _wide_options(self, config: RepoConfig, table: FeatureView) -> dict[str, Any]:
        return {
            "view_name": _layout.storage_view_name(table, config),
            "project": config.project,
            "key_version": config.entity_key_serialization_version,
            "ttl_seconds": self._store_config(config).key_ttl_seconds,
        }

    def _write_wide(self, config: RepoConfig, table: FeatureView, data: list[Row], progress):
        """Rows too wide for one server command: one transaction per row (see ``_wide``)."""
        store_config = self._store_config(config)
        client = self._get_client(store_config)
        with translated_errors(store_config.connection_settings()):
            _wide.write_rows(client, data, progress=progress, **self._wide_options(config, table))

    async def _write_wide_async(
        self, config: RepoConfig, table: FeatureView, data: list[Row], progress
    ) -> None:
        store_config = self._store_config(config)
        client = await self._get_client_async(store_config)
        with translated_errors(store_config.connection_settings()):
            await _wide.write_rows_async(
                client, data, progress=progress, **self._wide_options(config, table)
            )

    # ------------------------------------------------------------------ reads

    def _executor(self, store_config: DragonflyOnlineStoreConfig) -> ThreadPoolExecutor | None:
        """Threads that send the chunks of one large sync read over separate connections."""
        if store_config.read_concurrency <= 1:
            return None
        with self._lock:
            if self._read_executor is None or self._read_workers != store_config.read_concurrency:
                if self._read_executor is not None:
                    self._read_executor.shutdown(wait=False)
                self._read_executor = ThreadPoolExecutor(
                    max_workers=store_config.read_concurrency,
                    thread_name_prefix="feast-dragonfly-read",
                )
                self._read_workers = store_config.read_concurrency
            return self._read_executor

    def _fetch(self, store_config: DragonflyOnlineStoreConfig, plan: _read.ReadPlan) -> list:
        if not plan.keys:
            return []
        if store_config.redis_type == "redis_sentinel":
            # Reads are idempotent: one broken by a failover is simply read again.
            return _topology.retry_after_failover(
                lambda _rows: self._fetch_once(store_config, plan),
                None,
                self._get_client(store_config),
            )
        return self._fetch_once(store_config, plan)

    def _fetch_once(self, store_config: DragonflyOnlineStoreConfig, plan: _read.ReadPlan) -> list:
        client = self._get_client(store_config)
        with translated_errors(store_config.connection_settings()):
            if _topology.is_cluster(client):
                return _cluster.fetch(
                    client, plan, store_config.read_chunk_size, self._executor(store_config)
                )
            return _read.fetch(
                client.connection_pool,
                plan,
                store_config.read_chunk_size,
                self._executor(store_config),
            )

    async def _fetch_async(
        self, store_config: DragonflyOnlineStoreConfig, plan: _read.ReadPlan
    ) -> list:
        if not plan.keys:
            return []
        if store_config.redis_type == "redis_sentinel":
            return await _topology.retry_after_failover_async(
                lambda _rows: self._fetch_once_async(store_config, plan),
                None,
                await self._get_client_async(store_config),
            )
        return await self._fetch_once_async(store_config, plan)

    async def _fetch_once_async(
        self, store_config: DragonflyOnlineStoreConfig, plan: _read.ReadPlan
    ) -> list:
        client = await self._get_client_async(store_config)
        with translated_errors(store_config.connection_settings()):
            if _topology.is_cluster(client):
                return await _cluster.fetch_async(client, plan, store_config.read_chunk_size)
            return await _read.fetch_async(
                client.connection_pool, plan, store_config.read_chunk_size
            )

    @staticmethod
    def _single_view_plan(
        config: RepoConfig,
        table: FeatureView,
        entity_keys: list[EntityKeyProto],
        requested_features: list[str] | None,
    ) -> _read.ReadPlan:
        names = list(requested_features) if requested_features else [f.name for f in table.features]
        view = _read.view_request(_layout.storage_view_name(table, config), names, entity_keys)
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
        store_config = self._store_config(config)
        plan = self._single_view_plan(config, table, entity_keys, requested_features)
        return _read.decode_rows(plan.views[0], self._fetch(store_config, plan))

    async def online_read_async(
        self,
        config: RepoConfig,
        table: FeatureView,
        entity_keys: list[EntityKeyProto],
        requested_features: list[str] | None = None,
    ) -> list[_read.ReadRow]:
        store_config = self._store_config(config)
        plan = self._single_view_plan(config, table, entity_keys, requested_features)
        return _read.decode_rows(plan.views[0], await self._fetch_async(store_config, plan))

    @staticmethod
    def _plan_feature_views(config, grouped_refs, join_key_values, entity_name_to_join_key_map):
        views: list[_read.ViewRequest] = []
        placements = []
        for table, requested_features in grouped_refs:
            entity_values, indexes, output_len = utils._get_unique_entities(
                table, join_key_values, entity_name_to_join_key_map
            )
            entity_keys = utils._get_entity_key_protos(entity_values)
            view_name = _layout.storage_view_name(table, config)
            views.append(_read.view_request(view_name, requested_features, entity_keys))
            placements.append((table, indexes, output_len))
        plan = _read.plan_read(
            views, project=config.project, key_version=config.entity_key_serialization_version
        )
        return plan, placements

    def _read_features_per_fv(
        self,
        config: RepoConfig,
        grouped_refs,
        join_key_values,
        entity_name_to_join_key_map,
        online_features_response,
        full_feature_names: bool,
        include_feature_view_version_metadata: bool,
    ) -> None:
        """Feast 0.67's response hook: one HMGET per entity hash for all requested views,
        the response assembled from the stored bytes."""
        store_config = self._store_config(config)
        plan, placements = self._plan_feature_views(
            config, grouped_refs, join_key_values, entity_name_to_join_key_map
        )
        _response.fill_response(
            online_features_response,
            plan,
            self._fetch(store_config, plan),
            placements,
            full_feature_names,
            include_feature_view_version_metadata,
        )

    async def _read_features_per_fv_async(
        self,
        config: RepoConfig,
        grouped_refs,
        join_key_values,
        entity_name_to_join_key_map,
        online_features_response,
        full_feature_names: bool,
        include_feature_view_version_metadata: bool,
    ) -> None:
        store_config = self._store_config(config)
        plan, placements = self._plan_feature_views(
            config, grouped_refs, join_key_values, entity_name_to_join_key_map
        )
        _response.fill_response(
            online_features_response,
            plan,
            await self._fetch_async(store_config, plan),
            placements,
            full_feature_names,
            include_feature_view_version_metadata,
        )

    @staticmethod
    def _build_feature_types(grouped_refs: list) -> dict[str, ValueType]:
        """Feast's name -> ``ValueType`` map for the response, built per request by Feast with a
        list scan per feature (~0.15 ms for 50 features, a fifth of a 1x50 async request): the
        same map, from a set lookup and a cached dtype conversion."""
        types: dict[str, ValueType] = {}
        for table, requested_features in grouped_refs:
            prefix = table.projection.name_to_use() + "__"
            wanted = set(requested_features)
            for feature in table.features:
                name = feature.name
                if name in wanted:
                    value_type = _value_type_of(feature.dtype)
                    types[name] = value_type
                    types[prefix + name] = value_type
        return types

    def get_online_features(self, *args: Any, **kwargs: Any) -> OnlineResponse:
        """Feast's request handling, returning a response whose ``to_dict`` is faster."""
        return FastOnlineResponse.wrap(super().get_online_features(*args, **kwargs))

    async def get_online_features_async(self, *args: Any, **kwargs: Any) -> OnlineResponse:
        return FastOnlineResponse.wrap(await super().get_online_features_async(*args, **kwargs))

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
        """Delete the stored fields of removed feature views, in this project only."""
        store_config = self._store_config(config)
        if not store_config.full_scan_for_deletion:
            return
        for table in tables_to_delete:
            self.delete_table(config, table)

    def delete_table(self, config: RepoConfig, table: FeatureView) -> None:
        """Remove one view's fields from every hash of this project; other views stay."""
        store_config = self._store_config(config)
        with translated_errors(store_config.connection_settings()):
            _maintenance.delete_view(
                self._get_client(store_config),
                project=config.project,
                join_keys=table.join_keys,
                view_name=_layout.storage_view_name(table, config),
                feature_names=[f.name for f in table.features],
            )

    def delete_entity_values(self, config: RepoConfig, join_keys: list[str]) -> None:
        """Remove every hash of this project for entities with these join keys."""
        store_config = self._store_config(config)
        client = self._get_client(store_config)
        with translated_errors(store_config.connection_settings()):
            if _topology.is_cluster(client):
                _cluster.delete_entities(client, project=config.project, join_keys=join_keys)
                return
            _maintenance.delete_entities(client, project=config.project, join_keys=join_keys)

    def teardown(
        self,
        config: RepoConfig,
        tables: Sequence[FeatureView],
        entities: Sequence[Entity],
    ) -> None:
        """Delete this project's data for these views, and nothing of any other project."""
        for join_keys in sorted({tuple(table.join_keys) for table in tables}):
            self.delete_entity_values(config, list(join_keys))


# id(dtype) -> (dtype, its ValueType). Keyed by identity because Feast's types hash slowly in
# Python; holding the dtype keeps its id from being reused while the entry exists.
_VALUE_TYPES: dict[int, tuple[Any, ValueType]] = {}


def _value_type_of(dtype: Any) -> ValueType:
    """``dtype.to_value_type()``, memoized per type object."""
    entry = _VALUE_TYPES.get(id(dtype))
    if entry is not None and entry[0] is dtype:
        return entry[1]
    value_type = dtype.to_value_type()
    if len(_VALUE_TYPES) >= 4096:  # registries that rebuild views per request make new types
        _VALUE_TYPES.clear()
    _VALUE_TYPES[id(dtype)] = (dtype, value_type)
    return value_type


def _close_sockets_of_dead_loop(client: Any) -> None:
    """Close the sockets of an asyncio client whose event loop is gone (nothing can await
    them)."""
    for connection in _topology.async_connections(client):
        writer = getattr(connection, "_writer", None)
        sock = getattr(getattr(writer, "transport", None), "_sock", None)
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass


_MIGRATION_HINTS = {
    "skip_dedup": "writes are always event-time checked on the server in one round trip; "
    "remove skip_dedup",
    "client": "reads use redis-py with hiredis; remove client",
    "password": "put the password in connection_string (host:port,password=...) or a "
    "redis://user:password@host:port URL",
}


def _unknown_key_message(key: str, fields: Any) -> str:
    known = ", ".join(sorted(name for name in fields if name != "type"))
    hint = _MIGRATION_HINTS.get(key)
    text = f"online_store option '{key}' is not supported by feast_dragonfly.DragonflyOnlineStore"
    if hint:
        text += f" ({hint})"
    return f"{text}; known options: {known}"
