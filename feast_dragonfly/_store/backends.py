"""One backend per deployment: the clients, and the fast paths that run on them.

The store (``online_store.py``) keeps Feast's hooks and asks its backend for everything that
touches a server; the backend is chosen once per :class:`~feast_dragonfly._protocol.settings.ClientSettings`
by :func:`open_backend`, so no other module asks "is this a cluster?". Each backend has the
same small interface:

* ``client()`` / ``client_async()`` — redis-py clients (one per event loop for asyncio);
* ``fetch`` / ``fetch_async`` — the replies of a planned read (``_read.ReadPlan``);
* ``sender`` / ``sender_async`` — what carries a write's script calls (``_write.Sender`` or the
  cluster's per-master sender), and ``rows_per_call`` — how many rows one call may carry;
* ``retrying_after_failover`` (+ ``_async``) — run a write or read again when the deployment
  says a failover broke it (Sentinel only);
* ``delete_entities`` — a project's hashes gone; ``close`` / ``aclose``.

Adding a topology is a new subclass here plus its client builders in ``_protocol/topology.py``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Iterable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from contextlib import AbstractContextManager
from typing import Any, ClassVar, TypeVar

from feast_dragonfly._protocol import topology as _topology
from feast_dragonfly._protocol.connection import translated_errors
from feast_dragonfly._protocol.keys import Progress
from feast_dragonfly._protocol.script import ScriptCall
from feast_dragonfly._protocol.settings import ClientSettings
from feast_dragonfly._store import cluster as _cluster
from feast_dragonfly._store import cluster_write as _cluster_write
from feast_dragonfly._store import maintenance as _maintenance
from feast_dragonfly._store import read as _read
from feast_dragonfly._store import write as _write

T = TypeVar("T")


#: How long :meth:`Backend.connect_pool_async` waits for one more connection of its pool.
_FILL_WAIT_S = 1.0


class Backend:
    """A standalone server: one blocking connection pool (sync) and one per event loop."""

    kind: ClassVar[str] = "redis"
    #: Delete keys with one single-key command each (multi-key commands cost a round trip
    #: per slot on a cluster).
    key_by_key: ClassVar[bool] = False
    #: What carries a write's script calls, sync and async.
    sender_class: ClassVar[Callable[..., _write.RoundTrips]] = _write.Sender
    async_sender_class: ClassVar[Callable[..., _write.AsyncRoundTrips]] = _write.AsyncSender

    def __init__(self, settings: ClientSettings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._client: Any = None
        self._async_clients: dict[int, tuple[asyncio.AbstractEventLoop, Any]] = {}
        self._executors: dict[str, tuple[int, ThreadPoolExecutor]] = {}

    # ------------------------------------------------------------------ clients

    def _new_client(self) -> Any:
        return _topology.standalone_client(self.settings)

    async def _new_client_async(self) -> Any:
        return _topology.standalone_client_async(self.settings)

    def client(self) -> Any:
        """The sync client, built on first use."""
        with self._lock:
            if self._client is None:
                self._client = self._new_client()
            return self._client

    async def client_async(self) -> Any:
        """The asyncio client of the running loop: redis-py's asyncio pools are loop-bound."""
        loop = asyncio.get_running_loop()
        entry = self._async_clients.get(id(loop))
        if entry is not None and entry[0] is loop:
            return entry[1]
        self._drop_clients_of_closed_loops()
        client = await self._new_client_async()
        self._async_clients[id(loop)] = (loop, client)
        return client

    async def connect_pool_async(self) -> int:
        """Open every connection the running loop's pool may hold (``max_connections``), now.

        A pool that grows on demand opens connections when a burst of requests arrives — the
        worst moment: measured in a serving worker, a dozen connects at once (each a TCP
        handshake and redis-py's hello) stalled the requests queued behind them for 20-35 ms.
        Returns how many connections were opened. A cluster's per-node pools fill on demand.
        """
        client = await self.client_async()
        pool = getattr(client, "connection_pool", None)
        if pool is None:
            return 0
        held = []
        try:
            for _ in range(pool.max_connections):
                try:
                    # Never wait for a connection somebody else holds: the pool is full then.
                    held.append(await asyncio.wait_for(pool.get_connection(), _FILL_WAIT_S))
                except asyncio.TimeoutError:
                    break
        finally:
            for connection in held:
                await pool.release(connection)
        return len(held)

    def _drop_clients_of_closed_loops(self) -> None:
        """Callers doing ``asyncio.run`` per request leave a pool behind per loop: close their
        sockets now rather than when the garbage collector gets to them."""
        for key, (owner, client) in list(self._async_clients.items()):
            if owner.is_closed():
                del self._async_clients[key]
                _close_sockets_of_dead_loop(client)

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

    def errors(self) -> AbstractContextManager[None]:
        """redis-py's failures as errors that name this deployment, never its password."""
        return translated_errors(self.settings.connection)

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
    ) -> _write.RoundTrips:
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
    ) -> _write.AsyncRoundTrips:
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
                return _write.send_all(sender, plan_calls())

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
                return await _write.send_all_async(sender, plan_calls())

        return await self.retrying_after_failover_async(attempt, progress)

    def retrying_after_failover(self, attempt: Callable[[Progress], T], progress: Progress) -> T:
        """``attempt(progress)``; a deployment with failover runs it again when one broke it."""
        return attempt(progress)

    async def retrying_after_failover_async(
        self, attempt: Callable[[Progress], Awaitable[T]], progress: Progress
    ) -> T:
        return await attempt(progress)

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
        with self._lock:
            if self._client is not None:
                _topology.close_sync(self._client)
                self._client = None
            for _, executor in self._executors.values():
                executor.shutdown(wait=False)
            self._executors.clear()

    async def aclose(self) -> None:
        """Close every client this backend opened, each on its own event loop."""
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
        self.close()


class SentinelBackend(Backend):
    """A Sentinel-managed master: the standalone paths on a sentinel-managed pool (each new
    connection asks the sentinels where the master is), and one retry after a failover."""

    kind = "redis_sentinel"

    def _new_client(self) -> Any:
        return _topology.sentinel_client(self.settings)

    async def _new_client_async(self) -> Any:
        return _topology.sentinel_client_async(self.settings)

    def retrying_after_failover(self, attempt: Callable[[Progress], T], progress: Progress) -> T:
        return _topology.retry_after_failover(attempt, progress, self.client())

    async def retrying_after_failover_async(
        self, attempt: Callable[[Progress], Awaitable[T]], progress: Progress
    ) -> T:
        return await _topology.retry_after_failover_async(
            attempt, progress, await self.client_async()
        )


class ClusterBackend(Backend):
    """A Redis Cluster: commands routed by hash slot to the masters (``cluster`` reads,
    ``cluster_write`` writes)."""

    kind = "redis_cluster"
    key_by_key = True
    sender_class = _cluster_write.ClusterSender
    async_sender_class = _cluster_write.AsyncClusterSender

    def _new_client(self) -> Any:
        return _topology.cluster_client(self.settings)

    async def _new_client_async(self) -> Any:
        return await _topology.cluster_client_async(self.settings)

    def _fetch(self, plan: _read.ReadPlan, chunk_size: int, concurrency: int) -> list[Any]:
        return _cluster.fetch(self.client(), plan, chunk_size, self.executor("read", concurrency))

    async def _fetch_async(self, plan: _read.ReadPlan, chunk_size: int) -> list[Any]:
        return await _cluster.fetch_async(await self.client_async(), plan, chunk_size)

    def rows_per_call(self, requested: int) -> int:
        """One: a cluster runs a script only if all its keys share one slot, and Feast's keys
        carry no hash tags."""
        return 1

    def _write_target(self, client: Any) -> Any:
        return client


_BACKENDS: dict[str, type[Backend]] = {
    backend.kind: backend for backend in (Backend, SentinelBackend, ClusterBackend)
}


def open_backend(settings: ClientSettings) -> Backend:
    """The backend for ``settings.redis_type`` (validated by the config already)."""
    return _BACKENDS[settings.redis_type](settings)


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
