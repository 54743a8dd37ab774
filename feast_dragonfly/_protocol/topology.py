"""Deployment topologies: one server, a Redis Cluster, or a Sentinel-managed master.

Feast's ``RedisOnlineStore`` names the kind with ``redis_type`` (``redis``, ``redis_cluster``,
``redis_sentinel``) and lists every node (cluster startup nodes, or sentinels) as ``host:port``
entries of one ``connection_string``. This module parses that, builds the matching redis-py
clients (sync and async) for ``deployment.py``, and closes them again.

* **Standalone** (``redis``): ``redis.Redis`` on a blocking pool.
* **Cluster** (``redis_cluster``): ``redis.cluster.RedisCluster`` /
  ``redis.asyncio.cluster.RedisCluster``; the fast read/write paths that route by hash slot
  live in ``_store/cluster.py``.
* **Sentinel** (``redis_sentinel``): ``Sentinel(...).master_for(sentinel_master)`` on a
  *blocking* sentinel-managed pool, so the raw ``get_connection()`` / ``send_packed_command``
  fast paths of ``_store/read.py`` and ``_store/send.py`` work unchanged: every new connection
  asks the sentinels where the master is, so after a failover fresh connections reach the new
  one.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import redis
import redis.asyncio as redis_asyncio
import redis.asyncio.cluster as redis_asyncio_cluster
import redis.asyncio.retry as redis_async_retry
import redis.asyncio.sentinel as redis_asyncio_sentinel
import redis.cluster as redis_cluster
import redis.sentinel as redis_sentinel
from redis.backoff import NoBackoff
from redis.retry import Retry

from feast_dragonfly._protocol import connection as _connection
from feast_dragonfly._protocol import flow, transport
from feast_dragonfly._protocol.connection import ConnectionSettings, parse_connection_string
from feast_dragonfly._protocol.flow import Flow
from feast_dragonfly._protocol.keys import Progress
from feast_dragonfly._protocol.settings import ClientSettings
from feast_dragonfly.errors import (
    DragonflyConfigError,
    DragonflyConnectionError,
    DragonflyStoreError,
)

T = TypeVar("T")

RedisType = Literal["redis", "redis_cluster", "redis_sentinel"]
REDIS_TYPES: tuple[str, ...] = ("redis", "redis_cluster", "redis_sentinel")

#: Options of the Sentinel connections themselves (our extension; Feast has no way to give
#: sentinels their own credentials). Everything else in the string applies to the master.
_SENTINEL_OPTIONS = frozenset({"sentinel_username", "sentinel_password"})
_SECRET = frozenset({"password", "sentinel_password"})

#: A sentinel that does not answer is skipped, not retried with backoff: the next one in the
#: list is asked instead (redis-py's default client retry would add seconds per dead sentinel).
_NO_RETRY = Retry(NoBackoff(), 0)


@dataclass(frozen=True, repr=False)
class TopologySettings(ConnectionSettings):
    """Connection settings of a cluster or Sentinel deployment: every listed node, plus the
    options of the data connections (``host``/``port`` are the first node). No password in
    ``repr`` or in :attr:`address`."""

    kind: str = "redis"
    nodes: tuple[tuple[str, int], ...] = ()
    sentinel_master: str = "mymaster"
    sentinel_options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def node_list(self) -> str:
        return ",".join(_format_node(host, port) for host, port in self.nodes)

    @property
    def address(self) -> str:
        """What error messages name: every node, and for Sentinel the master's name."""
        if self.kind == "redis_sentinel":
            return f"master '{self.sentinel_master}' via sentinels {self.node_list}"
        return self.node_list

    def redacted(self) -> str:
        parts = [_format_node(host, port) for host, port in self.nodes]
        merged = {**self.options, **self.sentinel_options}
        for key, value in sorted(merged.items()):
            parts.append(f"{key}={'***' if key in _SECRET else value}")
        return ",".join(parts)

    def __repr__(self) -> str:
        return f"TopologySettings({self.kind}: {self.redacted()})"

    __str__ = __repr__


def _format_node(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_topology(
    text: str, redis_type: str = "redis", sentinel_master: str = "mymaster"
) -> ConnectionSettings:
    """Parse ``connection_string`` for the given ``redis_type``.

    ``redis``: exactly one server (``_connection.parse_connection_string``). ``redis_cluster``:
    one or more startup nodes (any reachable one is enough to discover the rest) or one
    ``redis://`` URL. ``redis_sentinel``: the sentinels, then options for the master.
    """
    if redis_type == "redis":
        return parse_connection_string(text)
    if redis_type not in REDIS_TYPES:
        raise DragonflyConfigError(
            f"redis_type '{redis_type}' is not supported; use one of {', '.join(REDIS_TYPES)}"
        )
    text = text.strip()
    if not text:
        raise DragonflyConfigError("connection_string is empty; expected e.g. 'localhost:6379'")
    sentinel_options: dict[str, Any] = {}
    if "://" in text:
        if redis_type == "redis_sentinel":
            raise DragonflyConfigError(
                "with redis_type: redis_sentinel, connection_string lists the sentinels in "
                "Feast's format, e.g. 'sentinel1:26379,sentinel2:26379,password=...' "
                "(password, db, ssl... apply to the master); a URL is not accepted"
            )
        base = parse_connection_string(text)
        nodes = [(base.host, base.port)]
    else:
        node_items: list[str] = []
        option_items: list[str] = []
        for raw in text.split(","):
            item = raw.strip()
            if not item:
                continue
            if "=" not in item:
                node_items.append(item)
                continue
            key = item.partition("=")[0].strip()
            if key in _SENTINEL_OPTIONS:
                if redis_type != "redis_sentinel":
                    raise DragonflyConfigError(
                        f"connection_string option '{key}' only applies to "
                        "redis_type: redis_sentinel"
                    )
                sentinel_options[key] = item.partition("=")[2].strip()
                continue
            option_items.append(item)
        if not node_items:
            raise DragonflyConfigError(
                "connection_string names no node; expected 'host:port' entries first, "
                "e.g. 'node1:6379,node2:6379'"
            )
        # Each node through the standalone parser: the same host:port rules and messages.
        nodes = []
        for item in node_items:
            parsed = parse_connection_string(item)
            if (parsed.host, parsed.port) not in nodes:
                nodes.append((parsed.host, parsed.port))
        base = parse_connection_string(",".join([node_items[0], *option_items]))
    if redis_type == "redis_cluster" and base.options.get("db"):
        raise DragonflyConfigError(
            "a Redis Cluster has only database 0; remove db from connection_string"
        )
    return TopologySettings(
        host=base.host,
        port=base.port,
        options=dict(base.options),
        kind=redis_type,
        nodes=tuple(nodes),
        sentinel_master=sentinel_master,
        sentinel_options=sentinel_options,
    )


# --------------------------------------------------------------------------- clients


class BlockingSentinelConnectionPool(
    redis_sentinel.SentinelConnectionPool, redis.BlockingConnectionPool
):
    """A sentinel-managed pool that makes callers wait for a free connection (up to
    ``timeout``) instead of failing, like the standalone pool (redis-py has no such class)."""


class AsyncBlockingSentinelConnectionPool(
    redis_asyncio_sentinel.SentinelConnectionPool, redis_asyncio.BlockingConnectionPool
):
    """The asyncio twin of :class:`BlockingSentinelConnectionPool`."""


class FastPathLimits:
    """How many connections per node the fast paths of ``_store/cluster.py`` may hold at once, and
    how long they wait for one (``max_connections`` and ``socket_timeout``). redis-py's own
    commands (redirections, retries, SCAN) take their connections outside this limit, so a
    busy fast path never starves them."""

    fast_path_connections: int = 16
    fast_path_timeout: float = 10.0

    def set_fast_path_limits(self, connections: int, timeout: float) -> None:
        self.fast_path_connections = connections
        self.fast_path_timeout = timeout
        self.node_semaphores: dict[str, Any] = {}
        self.node_semaphores_lock = threading.Lock()


class SyncRedisCluster(FastPathLimits, redis_cluster.RedisCluster):
    """redis-py's cluster client with :class:`FastPathLimits`."""


class AsyncRedisCluster(FastPathLimits, redis_asyncio_cluster.RedisCluster):  # type: ignore[misc]
    """redis-py's asyncio cluster client with :class:`FastPathLimits`."""


def _sentinel_kwargs(
    settings: TopologySettings, kwargs: Mapping[str, Any], *, for_asyncio: bool
) -> dict[str, Any]:
    """How to talk to the sentinels themselves: redis-py's default (the socket options of the
    data connections), no retry (of the client's own kind: redis-py converts a sync one with
    a warning), plus our ``sentinel_username`` / ``sentinel_password``."""
    out = {k: v for k, v in kwargs.items() if k.startswith("socket_")}
    out["retry"] = redis_async_retry.Retry(NoBackoff(), 0) if for_asyncio else _NO_RETRY
    if "sentinel_username" in settings.sentinel_options:
        out["username"] = settings.sentinel_options["sentinel_username"]
    if "sentinel_password" in settings.sentinel_options:
        out["password"] = settings.sentinel_options["sentinel_password"]
    return out


def make_retry(settings: ClientSettings, *, for_asyncio: bool) -> Any:
    """The retry policy of the data connections (the fast paths read it off the connection;
    redis-py's own commands use it too); for Sentinel, each reconnect asks the sentinels."""
    return transport.make_retry(
        settings.retry_attempts,
        settings.retry_backoff_base,
        settings.retry_backoff_cap,
        for_asyncio=for_asyncio,
    )


def standalone_client(settings: ClientSettings) -> redis.Redis:
    """One server: ``redis.Redis`` on a blocking pool (callers wait for a free connection up
    to ``socket_timeout`` instead of failing)."""
    pool = redis.BlockingConnectionPool(
        timeout=settings.socket_timeout,
        max_connections=settings.max_connections,
        retry=make_retry(settings, for_asyncio=False),
        **settings.pool_kwargs(redis.SSLConnection),
    )
    return redis.Redis(connection_pool=pool)


def standalone_client_async(settings: ClientSettings) -> redis_asyncio.Redis:
    """:func:`standalone_client` for asyncio (bound to the loop that first uses it)."""
    pool = redis_asyncio.BlockingConnectionPool(
        timeout=settings.socket_timeout,
        max_connections=settings.max_connections,
        retry=make_retry(settings, for_asyncio=True),
        **settings.pool_kwargs(redis_asyncio.SSLConnection),
    )
    return redis_asyncio.Redis(connection_pool=pool)


def _topology_kwargs(settings: ClientSettings, ssl_class: type) -> dict[str, Any]:
    """Data-connection kwargs for cluster and Sentinel clients, which choose their own
    (node- or sentinel-managed) connection classes: TLS as ``ssl=True``, no host/port."""
    kwargs = settings.pool_kwargs(ssl_class)
    kwargs.pop("host", None)
    kwargs.pop("port", None)
    if kwargs.pop("connection_class", None) is not None:
        kwargs["ssl"] = True
    return kwargs


def _topology_of(settings: ClientSettings) -> TopologySettings:
    connection = settings.connection
    assert isinstance(connection, TopologySettings), "a cluster or Sentinel needs its nodes"
    return connection


def _sentinel_master(settings: ClientSettings, *, for_asyncio: bool) -> Any:
    connection = _topology_of(settings)
    sentinel_class: Any
    pool_class: Any
    ssl_class: Any
    if for_asyncio:
        sentinel_class, pool_class, ssl_class = (
            redis_asyncio_sentinel.Sentinel,
            AsyncBlockingSentinelConnectionPool,
            redis_asyncio.SSLConnection,
        )
    else:
        sentinel_class, pool_class, ssl_class = (
            redis_sentinel.Sentinel,
            BlockingSentinelConnectionPool,
            redis.SSLConnection,
        )
    kwargs = _topology_kwargs(settings, ssl_class)
    sentinel = sentinel_class(
        list(connection.nodes),
        sentinel_kwargs=_sentinel_kwargs(connection, kwargs, for_asyncio=for_asyncio),
        **kwargs,
        retry=make_retry(settings, for_asyncio=for_asyncio),
    )
    return sentinel.master_for(
        settings.sentinel_master,
        connection_pool_class=pool_class,
        max_connections=settings.max_connections,
        timeout=settings.socket_timeout,
    )


def sentinel_client(settings: ClientSettings) -> redis.Redis:
    """``redis.Redis`` on the master's sentinel-managed *blocking* pool: the raw
    ``get_connection()`` fast paths work unchanged, and every new connection asks the
    sentinels where the master is."""
    return _sentinel_master(settings, for_asyncio=False)


def sentinel_client_async(settings: ClientSettings) -> redis_asyncio.Redis:
    """:func:`sentinel_client` for asyncio."""
    return _sentinel_master(settings, for_asyncio=True)


def cluster_client(settings: ClientSettings) -> SyncRedisCluster:
    """redis-py's cluster client with :class:`FastPathLimits`; it connects (to learn the
    slots) here."""
    connection = _topology_of(settings)
    kwargs = _topology_kwargs(settings, redis.SSLConnection)
    with _connection.translated_errors(connection):
        # redis-py's node pools fail rather than wait when full, so they are left unbounded
        # and the fast paths bound themselves (FastPathLimits).
        cluster = SyncRedisCluster(
            startup_nodes=[
                redis_cluster.ClusterNode(host, port) for host, port in connection.nodes
            ],
            **kwargs,
        )
    cluster.set_fast_path_limits(settings.max_connections, settings.socket_timeout)
    return cluster


async def cluster_client_async(settings: ClientSettings) -> AsyncRedisCluster:
    """:func:`cluster_client` for asyncio, bound to the running loop; it has learned the
    slots when this returns."""
    connection = _topology_of(settings)
    kwargs = _topology_kwargs(settings, redis_asyncio.SSLConnection)
    # The asyncio cluster client has its own retry policy and takes no retry_on_timeout.
    kwargs.pop("retry_on_timeout", None)
    cluster = AsyncRedisCluster(
        startup_nodes=[
            redis_asyncio_cluster.ClusterNode(host, port) for host, port in connection.nodes
        ],
        # Its nodes fail (rather than wait) when every connection is taken; the fast paths
        # wait on their own per-node limit of max_connections, below this one.
        max_connections=2 * settings.max_connections,
        **kwargs,
    )
    cluster.set_fast_path_limits(settings.max_connections, settings.socket_timeout)
    try:
        with _connection.translated_errors(connection):
            await cluster.initialize()
    except BaseException:
        await cluster.aclose()
        raise
    return cluster


def close_sync(client: Any) -> None:
    """Close a sync client of any topology and every socket it holds (for Sentinel, the
    connections to the sentinels too)."""
    if isinstance(client, redis_cluster.RedisCluster):
        client.close()
        return
    client.close()
    pool = client.connection_pool
    pool.disconnect()
    manager = getattr(pool, "sentinel_manager", None)
    if manager is not None:
        for sentinel in manager.sentinels:
            sentinel.close()


async def aclose(client: Any) -> None:
    """Close an asyncio client of any topology (on its own loop), sentinels included."""
    if isinstance(client, redis_asyncio_cluster.RedisCluster):
        await client.aclose()
        return
    pool = client.connection_pool
    await client.aclose(close_connection_pool=True)
    manager = getattr(pool, "sentinel_manager", None)
    if manager is not None:
        for sentinel in manager.sentinels:
            await sentinel.aclose(close_connection_pool=True)


def async_connections(client: Any) -> list[Any]:
    """Every connection object an asyncio client holds: what is left to close by hand when
    its event loop is gone."""
    if isinstance(client, redis_asyncio_cluster.RedisCluster):
        nodes = list(client.nodes_manager.nodes_cache.values())
        return [c for node in nodes for c in getattr(node, "_connections", ())]
    pools = [client.connection_pool]
    manager = getattr(client.connection_pool, "sentinel_manager", None)
    if manager is not None:
        pools += [sentinel.connection_pool for sentinel in manager.sentinels]
    return [
        connection
        for pool in pools
        for connection in (
            *getattr(pool, "_available_connections", ()),
            *getattr(pool, "_in_use_connections", ()),
        )
    ]


# --------------------------------------------------------------------------- Sentinel failover


def _failover_symptom(exc: BaseException) -> bool:
    """A write broken by a master switch: the connection dropped (the sentinels disconnect
    every client of a reconfigured server) or the server has become a read-only replica."""
    if isinstance(exc, DragonflyConnectionError):
        return True
    return isinstance(exc, DragonflyStoreError) and "READONLY" in str(exc)


class _Progress:
    """Counts the rows reported by a first attempt, then hides that many from the second, so
    the caller's ``progress`` still sees every input row exactly once."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self.reported = 0
        self.hidden = 0

    def report_first_attempt(self, rows: int) -> None:
        self.reported += rows
        if self._progress:
            self._progress(rows)

    def report_second_attempt(self, rows: int) -> None:
        hide = min(rows, self.reported - self.hidden)
        self.hidden += hide
        if self._progress and rows > hide:
            self._progress(rows - hide)


class _Disconnect:
    """Request of :func:`_failover_flow`: drop the pool's idle connections."""


def _failover_flow(progress: Progress) -> Flow[Any]:
    """The attempt (a request: the reporter it runs with) and, if a failover broke it, one
    more after dropping the idle connections: new ones ask the sentinels for the master."""
    counter = _Progress(progress)
    try:
        return (yield counter.report_first_attempt)
    except DragonflyStoreError as exc:
        if not _failover_symptom(exc):
            raise
    yield _Disconnect
    return (yield counter.report_second_attempt)


def retry_after_failover(
    write: Callable[[Callable[[int], Any]], T],
    progress: Progress,
    client: Any,
) -> T:
    """Run ``write`` and, if a Sentinel failover broke it, once more on fresh connections
    (which ask the sentinels for the current master). Safe because every script call is
    event-time guarded: rows the first attempt wrote are skipped by the second."""

    def send(request: Any) -> Any:
        if request is _Disconnect:
            return client.connection_pool.disconnect(inuse_connections=False)
        return write(request)

    return flow.run(_failover_flow(progress), send)


async def retry_after_failover_async(
    write: Callable[[Callable[[int], Any]], Awaitable[T]],
    progress: Progress,
    client: Any,
) -> T:
    """The asyncio twin of :func:`retry_after_failover`."""

    async def send(request: Any) -> Any:
        if request is _Disconnect:
            return await client.connection_pool.disconnect(inuse_connections=False)
        return await write(request)

    return await flow.run_async(_failover_flow(progress), send)
