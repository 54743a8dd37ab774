"""One connected deployment — a server, a Sentinel-managed master or a cluster: its clients,
its masters, which master serves a key, and how a failover is survived.

Everything that asks "which kind of deployment is this?" asks it here, once: the store's
backends (``_store/backends.py``) add the fast reads and writes on top of a
:class:`Deployment`, and ``migrate`` / ``stats`` use one as it is, so both build their clients,
name their servers and translate their errors the same way. Settings come from
:func:`client_settings`, the one parser of a connection string plus its options.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from redis import exceptions as redis_exceptions
from redis.crc import key_slot

from feast_dragonfly._protocol import topology, transport
from feast_dragonfly._protocol.connection import scrub, translated_errors
from feast_dragonfly._protocol.keys import Progress
from feast_dragonfly._protocol.settings import ClientSettings
from feast_dragonfly._protocol.wire import out_of_memory
from feast_dragonfly.errors import DragonflyServerFullError

T = TypeVar("T")

#: How long :meth:`Deployment.connect_pool_async` waits for one more connection of its pool.
_FILL_WAIT_S = 1.0


def client_settings(
    connection_string: str, redis_type: str, sentinel_master: str, **options: Any
) -> ClientSettings:
    """Parse a connection string and its options into :class:`ClientSettings` (raises
    ``DragonflyConfigError`` on a bad string, or TLS options without TLS, never echoing a
    password). ``options``: the other :class:`ClientSettings` fields."""
    connection = topology.parse_topology(connection_string, redis_type, sentinel_master)
    settings = ClientSettings(
        connection=connection, redis_type=redis_type, sentinel_master=sentinel_master, **options
    )
    settings.pool_kwargs(object)  # validates the TLS options against ssl=...
    return settings


@dataclass(frozen=True)
class Endpoint:
    """One master of a deployment: ``name`` is its ``host:port`` (safe to print), ``client``
    a redis-py client of that server alone."""

    name: str
    client: Any

    def exchange(self, commands: Sequence[bytes], replies: int) -> list[Any]:
        """Packed commands in one round trip (one write: redis-py would send each command
        with its own system call); error replies come back in place."""
        return transport.exchange(self.client.connection_pool, [b"".join(commands)], replies)


async def _standalone_async(settings: ClientSettings) -> Any:
    return topology.standalone_client_async(settings)


async def _sentinel_async(settings: ClientSettings) -> Any:
    return topology.sentinel_client_async(settings)


#: Per ``redis_type``: how its sync and asyncio clients are built.
_CLIENTS: dict[str, tuple[Callable[[ClientSettings], Any], Callable[..., Awaitable[Any]]]] = {
    "redis": (topology.standalone_client, _standalone_async),
    "redis_sentinel": (topology.sentinel_client, _sentinel_async),
    "redis_cluster": (topology.cluster_client, topology.cluster_client_async),
}


class Deployment:
    """The clients of one deployment, built on first use: a sync client, and an asyncio
    client per event loop (redis-py's asyncio pools are loop-bound)."""

    def __init__(self, settings: ClientSettings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._client: Any = None
        self._async_clients: dict[int, tuple[asyncio.AbstractEventLoop, Any]] = {}
        self._masters: dict[str, Endpoint] | None = None
        self._dragonfly: bool | None = None

    # ------------------------------------------------------------------ identity

    @property
    def kind(self) -> str:
        """``redis``, ``redis_sentinel`` or ``redis_cluster``."""
        return self.settings.redis_type

    @property
    def address(self) -> str:
        """What messages name: every node (a Sentinel deployment: the master's name)."""
        return self.settings.connection.address

    @property
    def db(self) -> int:
        return int(self.settings.connection.options.get("db") or 0)

    @contextmanager
    def errors(self) -> Iterator[None]:
        """redis-py's failures as errors that name this deployment, never its password; a
        server out of memory as :class:`DragonflyServerFullError` naming its limit."""
        try:
            with translated_errors(self.settings.connection):
                yield
        except redis_exceptions.ResponseError as exc:
            if not out_of_memory(exc):
                raise
            raise DragonflyServerFullError(
                f"{self.full_message(exc)}: raise its maxmemory (or free memory there), then "
                "run the same write or materialization again — rows written before the refusal "
                "are kept, whole, and the event-time check skips them"
            ) from None

    def full_message(self, reply: Any, name: str = "the server") -> str:
        """``the server at HOST:PORT is out of memory (maxmemory …, policy …; it answered:
        …)``: what a refused write's error says first (no password; the limit as far as
        ``INFO memory`` tells it, left out when the server will not tell)."""
        limits = self.memory_limits()
        said = f"it answered: {self.scrub(_refusal(reply))}"
        details = "; ".join(filter(None, [limits, said]))
        return f"{name} at {self.address} is out of memory ({details})"

    def memory_limits(self) -> str:
        """Each master's ``maxmemory`` and eviction policy, with the memory it uses, e.g.
        ``maxmemory 10mb, policy noeviction, 9.7mb used``; empty when ``INFO`` is refused or
        the server is gone (a message must not fail for want of it)."""
        found = []
        for endpoint in self.endpoints:
            try:
                info = endpoint.client.info("memory")
                dragonfly = self.dragonfly
            except (redis_exceptions.RedisError, OSError):
                continue
            found.append((endpoint.name, _limit_text(info, dragonfly)))
        if len({text for _, text in found}) == 1 and len(found) == len(self.endpoints):
            return found[0][1]
        return "; ".join(f"{name}: {text}" for name, text in found)

    def scrub(self, text: str) -> str:
        """``text`` without this deployment's secrets."""
        return scrub(text, self.settings.connection)

    # ------------------------------------------------------------------ clients

    def client(self) -> Any:
        """The sync client, built on first use."""
        with self._lock:
            if self._client is None:
                self._client = _CLIENTS[self.kind][0](self.settings)
            return self._client

    async def client_async(self) -> Any:
        """The asyncio client of the running loop."""
        loop = asyncio.get_running_loop()
        entry = self._async_clients.get(id(loop))
        if entry is not None and entry[0] is loop:
            return entry[1]
        self._drop_clients_of_closed_loops()
        client = await _CLIENTS[self.kind][1](self.settings)
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

    # ------------------------------------------------------------------ masters

    @property
    def endpoints(self) -> list[Endpoint]:
        """Every master (a cluster: each primary; otherwise the one server)."""
        return list(self._masters_by_name().values())

    def endpoint_for(self, key: bytes) -> Endpoint:
        """The master that serves ``key``."""
        masters = self._masters_by_name()
        if self.kind != "redis_cluster":
            return next(iter(masters.values()))
        node = self.client().nodes_manager.get_node_from_slot(key_slot(key))
        return masters[node.name]

    def _masters_by_name(self) -> dict[str, Endpoint]:
        if self._masters is None:
            client = self.client()
            if self.kind == "redis_cluster":
                self._masters = {
                    node.name: Endpoint(node.name, client.get_redis_connection(node))
                    for node in client.get_primaries()
                }
            else:
                self._masters = {self.address: Endpoint(self.address, client)}
        return self._masters

    @property
    def dragonfly(self) -> bool:
        """Whether the server is DragonflyDB (``INFO server`` names a ``dragonfly_version``);
        a user the ACL denies INFO is taken for Redis (the choices it steers are speed only)."""
        if self._dragonfly is None:
            try:
                self._dragonfly = "dragonfly_version" in self.endpoints[0].client.info("server")
            except redis_exceptions.ResponseError:
                self._dragonfly = False
        return self._dragonfly

    def connect(self) -> Deployment:
        """PING every master now (errors say where, never the password); closes the clients
        and raises when one does not answer."""
        try:
            with self.errors():
                for endpoint in self.endpoints:
                    endpoint.client.ping()
                _ = self.dragonfly
        except BaseException:
            self.close()
            raise
        return self

    # ------------------------------------------------------------------ failover

    def retrying_after_failover(self, attempt: Callable[[Progress], T], progress: Progress) -> T:
        """``attempt(progress)``; a Sentinel deployment runs it again when a failover broke it
        (safe: every write is event-time guarded, every read idempotent)."""
        if self.kind != "redis_sentinel":
            return attempt(progress)
        return topology.retry_after_failover(attempt, progress, self.client())

    async def retrying_after_failover_async(
        self, attempt: Callable[[Progress], Awaitable[T]], progress: Progress
    ) -> T:
        if self.kind != "redis_sentinel":
            return await attempt(progress)
        return await topology.retry_after_failover_async(
            attempt, progress, await self.client_async()
        )

    # ------------------------------------------------------------------ closing

    def close(self) -> None:
        """Close the sync client (async clients: :meth:`aclose`)."""
        with self._lock:
            if self._client is not None:
                topology.close_sync(self._client)
                self._client = None
            self._masters = None

    async def aclose(self) -> None:
        """Close every client this deployment opened, each on its own event loop."""
        loop = asyncio.get_running_loop()
        for key, (owner, client) in list(self._async_clients.items()):
            del self._async_clients[key]
            closing = topology.aclose(client)
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


def _refusal(reply: Any) -> str:
    """The server's words without what wraps them in a script's error (script hash, line)."""
    text = str(reply).strip()
    if "Out of memory" in text:
        return "Out of memory"
    if "command not allowed when used memory" in text:
        return "OOM command not allowed when used memory > 'maxmemory'"
    return text


def _limit_text(info: dict[str, Any], dragonfly: bool) -> str:
    limit = int(info.get("maxmemory") or 0)
    policy = info.get("maxmemory_policy", "unknown")
    used = int(info.get("used_memory") or 0)
    # 0 is no limit to Redis and Valkey, but nothing fits to Dragonfly: shown as it is.
    text = f"maxmemory {_megabytes(limit)}, policy {policy}, {used / 2**20:.1f}mb used"
    resident = int(info.get("used_memory_rss") or 0)
    if dragonfly and limit and resident > limit:
        # Dragonfly also refuses writes when its resident memory passes the limit.
        text += f" ({resident / 2**20:.1f}mb resident)"
    return text


def _megabytes(size: int) -> str:
    """A size as a maxmemory setting spells it (``mb``: MiB for Redis and Dragonfly; below
    one, plain bytes)."""
    if size < 2**20:
        return str(size)
    text = f"{size / 2**20:.1f}".removesuffix(".0")
    return f"{text}mb"


def connect(settings: ClientSettings) -> Deployment:
    """A deployment whose every master answered a PING."""
    return Deployment(settings).connect()


def _close_sockets_of_dead_loop(client: Any) -> None:
    """Close the sockets of an asyncio client whose event loop is gone (nothing can await
    them)."""
    for connection in topology.async_connections(client):
        writer = getattr(connection, "_writer", None)
        sock = getattr(getattr(writer, "transport", None), "_sock", None)
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass
