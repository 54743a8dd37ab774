"""One backend per deployment: the fast reads and writes that run on its clients.

A backend is a :class:`~feast_dragonfly._protocol.deployment.Deployment` (clients, masters,
errors, failover — shared with ``migrate`` and ``stats``) plus what the store does on it. The
store (``online_store.py``) keeps Feast's hooks and asks its backend for everything that
touches a server; :func:`open_backend` picks one per
:class:`~feast_dragonfly._protocol.settings.ClientSettings`. The interface:

* ``client()`` / ``client_async()`` — redis-py clients (one per event loop for asyncio);
* ``fetch`` / ``fetch_async`` — the replies of a planned read (``_read.ReadPlan``);
* ``sender`` / ``sender_async`` — what carries a write's script calls (``_send.Sender`` or the
  cluster's per-master sender), and ``rows_per_call`` — how many rows one call may carry;
* ``retrying_after_failover`` (+ ``_async``) — run a write or read again when the deployment
  says a failover broke it (Sentinel only);
* ``delete_entities`` / ``delete_view`` — a project's hashes or a view's fields gone;
  ``close`` / ``aclose``.

Adding a topology is its client builders in ``_protocol/topology.py``, its entry in
``_protocol/deployment.py`` and, if its reads or writes differ, a subclass here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any, ClassVar, TypeVar

from feast_dragonfly._protocol import shards as _shards
from feast_dragonfly._protocol.deployment import Deployment
from feast_dragonfly._protocol.keys import Progress
from feast_dragonfly._protocol.script import ScriptCall
from feast_dragonfly._protocol.settings import ClientSettings
from feast_dragonfly._store import cluster as _cluster
from feast_dragonfly._store import cluster_write as _cluster_write
from feast_dragonfly._store import maintenance as _maintenance
from feast_dragonfly._store import read as _read
from feast_dragonfly._store import send as _send
from feast_dragonfly._store.cluster_replay import NOTHING_KEPT
from feast_dragonfly._store.compact.directory import Directory

T = TypeVar("T")

_UNKNOWN: Any = object()


class Backend(Deployment):
    """A standalone server or a Sentinel-managed master: one blocking connection pool (sync)
    and one per event loop, HMGETs and script calls sent on them."""

    #: Delete keys with one single-key command each (multi-key commands cost a round trip
    #: per slot on a cluster).
    key_by_key: ClassVar[bool] = False
    #: What carries a write's script calls, sync and async.
    sender_class: ClassVar[Callable[..., _send.RoundTrips]] = _send.Sender
    async_sender_class: ClassVar[Callable[..., _send.AsyncRoundTrips]] = _send.AsyncSender

    def __init__(self, settings: ClientSettings) -> None:
        super().__init__(settings)
        self._executors: dict[str, tuple[int, ThreadPoolExecutor]] = {}
        #: The compact layout's schemas, as far as this process knows this deployment's.
        self.compact_schemas = Directory()
        self._shard_map: _shards.ShardMap | None = _UNKNOWN

    def shard_map(self) -> _shards.ShardMap | None:
        """Where a standalone Dragonfly keeps each key (``_protocol.shards``; asked once, then
        remembered), so writers group a call's rows by shard; None on other servers."""
        if self._shard_map is _UNKNOWN:
            self._shard_map = self._detect_shards()
        return self._shard_map

    @property
    def shard_map_known(self) -> bool:
        """Whether :meth:`shard_map` has asked the server already (it answers at once)."""
        return self._shard_map is not _UNKNOWN

    def _detect_shards(self) -> _shards.ShardMap | None:
        return _shards.detect(self.client())

    def executor(self, purpose: str, workers: int) -> ThreadPoolExecutor | None:
        """Threads (``purpose``: "read" or "write") that carry one call's round trips over
        separate connections; None when one is enough."""
        if workers <= 1:
            return None
        with self._lock:
            entry = self._executors.get(purpose)
            if entry is None or entry[0] != workers:
                if entry is not None:
                    entry[1].shutdown(wait=False)
                executor = ThreadPoolExecutor(
                    max_workers=workers, thread_name_prefix=f"feast-dragonfly-{purpose}"
                )
                entry = self._executors[purpose] = (workers, executor)
            return entry[1]

    # ------------------------------------------------------------------ reads

    def fetch(self, plan: _read.ReadPlan, chunk_size: int, concurrency: int) -> list[Any]:
        """Every HMGET reply of ``plan``, in plan order (read again after a failover: reads
        are idempotent)."""
        if not plan.keys:
            return []

        def attempt(_progress: Progress) -> list[Any]:
            with self.errors():
                return self._fetch(plan, chunk_size, concurrency)

        return self.retrying_after_failover(attempt, None)

    async def fetch_async(self, plan: _read.ReadPlan, chunk_size: int) -> list[Any]:
        if not plan.keys:
            return []

        async def attempt(_progress: Progress) -> list[Any]:
            with self.errors():
                return await self._fetch_async(plan, chunk_size)

        return await self.retrying_after_failover_async(attempt, None)

    def _fetch(self, plan: _read.ReadPlan, chunk_size: int, concurrency: int) -> list[Any]:
        return _read.fetch(
            self.client().connection_pool,
            plan,
            chunk_size,
            self.executor("read", concurrency),
        )

    async def _fetch_async(self, plan: _read.ReadPlan, chunk_size: int) -> list[Any]:
        client = await self.client_async()
        return await _read.fetch_async(client.connection_pool, plan, chunk_size)

    # ------------------------------------------------------------------ writes

    def rows_per_call(self, requested: int) -> int:
        """Rows one script call may carry."""
        return requested

    def _write_target(self, client: Any) -> Any:
        """What a sender writes through: the client's connection pool (a cluster: the client,
        which routes)."""
        return client.connection_pool

    def sender(
        self,
        view_name: str,
        *,
        executor: Executor | None,
        concurrency: int,
        progress: Progress,
        window: int | None = None,
    ) -> _send.RoundTrips:
        """What carries one write's script calls (``submit`` groups, then ``finish``)."""
        return self.sender_class(
            self._write_target(self.client()),
            view_name,
            executor=executor,
            concurrency=concurrency,
            progress=progress,
            window=window,
        )

    async def sender_async(
        self,
        view_name: str,
        *,
        concurrency: int,
        progress: Progress,
        window: int | None = None,
    ) -> _send.AsyncRoundTrips:
        return self.async_sender_class(
            self._write_target(await self.client_async()),
            view_name,
            concurrency=concurrency,
            progress=progress,
            window=window,
        )

    def write(
        self,
        view_name: str,
        plan_calls: Callable[[], Iterable[ScriptCall]],
        progress: Progress,
        workers: int,
    ) -> int:
        """Send the script calls ``plan_calls()`` makes, ``workers`` round trips at once;
        returns the rows written. Planned again if a failover makes a second attempt."""

        def attempt(report: Progress) -> int:
            with self.errors():
                sender = self.sender(
                    view_name,
                    executor=self.executor("write", workers),
                    concurrency=workers,
                    progress=report,
                )
                return _send.send_all(sender, plan_calls())

        return self.retrying_after_failover(attempt, progress)

    async def write_async(
        self,
        view_name: str,
        plan_calls: Callable[[], Iterable[ScriptCall]],
        progress: Progress,
        workers: int,
    ) -> int:
        async def attempt(report: Progress) -> int:
            with self.errors():
                sender = await self.sender_async(view_name, concurrency=workers, progress=report)
                return await _send.send_all_async(sender, plan_calls())

        return await self.retrying_after_failover_async(attempt, progress)

    # ------------------------------------------------------------------ maintenance

    def delete_entities(self, *, project: str, join_keys: Sequence[str]) -> int:
        """Remove this project's hashes of entities with these join keys."""
        with self.errors():
            return _maintenance.delete_entities(
                self.client(), project=project, join_keys=join_keys, key_by_key=self.key_by_key
            )

    def delete_view(
        self,
        *,
        project: str,
        join_keys: Sequence[str],
        view_name: str,
        feature_names: Sequence[str],
    ) -> int:
        """Remove one view's fields from this project's hashes."""
        with self.errors():
            return _maintenance.delete_view(
                self.client(),
                project=project,
                join_keys=join_keys,
                view_name=view_name,
                feature_names=feature_names,
            )

    # ------------------------------------------------------------------ closing

    def close(self) -> None:
        """Close the sync client and stop every thread (async clients: :meth:`aclose`)."""
        super().close()
        with self._lock:
            for _, executor in self._executors.values():
                executor.shutdown(wait=False)
            self._executors.clear()


class ClusterBackend(Backend):
    """A Redis Cluster: commands routed by hash slot to the masters (``cluster`` reads,
    ``cluster_write`` writes). On Dragonfly, acknowledged writes are kept for a replay after a
    resharding (``cluster_replay``); Redis Cluster never erases one, so nothing is kept."""

    key_by_key = True
    sender_class = _cluster_write.ClusterSender
    async_sender_class = _cluster_write.AsyncClusterSender

    def _replaying(self, client: Any) -> Any:
        if getattr(client, "recent_writes", None) is None and not self.dragonfly:
            client.recent_writes = NOTHING_KEPT
        return client

    def _fetch(self, plan: _read.ReadPlan, chunk_size: int, concurrency: int) -> list[Any]:
        client = self._replaying(self.client())
        return _cluster.fetch(client, plan, chunk_size, self.executor("read", concurrency))

    async def _fetch_async(self, plan: _read.ReadPlan, chunk_size: int) -> list[Any]:
        client = self._replaying(await self.client_async())
        return await _cluster.fetch_async(client, plan, chunk_size)

    def _detect_shards(self) -> _shards.ShardMap | None:
        """None: a call carries one row here (:meth:`rows_per_call`)."""
        return None

    def rows_per_call(self, requested: int) -> int:
        """One: a cluster runs a script only if all its keys share one slot, and Feast's keys
        carry no hash tags."""
        return 1

    def _write_target(self, client: Any) -> Any:
        return self._replaying(client)


def open_backend(settings: ClientSettings) -> Backend:
    """The backend for ``settings.redis_type`` (validated by the config already)."""
    if settings.redis_type == "redis_cluster":
        return ClusterBackend(settings)
    return Backend(settings)
