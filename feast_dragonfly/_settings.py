"""The store's settings, parsed once from ``feature_store.yaml`` into frozen objects.

``DragonflyOnlineStoreConfig`` (pydantic, in ``online_store.py``) is what users write and what
Feast validates; every read and write used to re-parse its connection string. Here it becomes
two immutable values built once per config (and again only when a field is assigned):

* :class:`ClientSettings` — everything the connections are built from. Equal settings mean
  the same backend (pools, cluster client, sentinels) can serve them.
* :class:`StoreSettings` — those plus the per-call tuning (chunk sizes, concurrency, TTL),
  which can change without reconnecting.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from feast_dragonfly import _topology
from feast_dragonfly._connection import ConnectionSettings, client_kwargs


@dataclass(frozen=True)
class ClientSettings:
    """How to reach the server(s); ``repr`` never shows a password."""

    connection: ConnectionSettings
    redis_type: str = "redis"
    sentinel_master: str = "mymaster"
    max_connections: int = 16
    socket_timeout: float = 10.0
    socket_connect_timeout: float = 5.0
    retry_attempts: int = 3
    retry_backoff_base: float = 0.05
    retry_backoff_cap: float = 2.0

    def pool_kwargs(self, ssl_connection_class: type) -> dict[str, Any]:
        """redis-py connection keyword arguments (host, port, timeouts, TLS, credentials)."""
        return client_kwargs(
            self.connection,
            socket_timeout=self.socket_timeout,
            socket_connect_timeout=self.socket_connect_timeout,
            ssl_connection_class=ssl_connection_class,
        )


@dataclass(frozen=True)
class StoreSettings:
    """Connection settings plus the tuning of each read and write."""

    client: ClientSettings
    key_ttl_seconds: int | None = None
    write_rows_per_call: int = 100
    write_concurrency: int = 8
    read_chunk_size: int = 100
    read_concurrency: int = 4
    full_scan_for_deletion: bool = True

    @property
    def write_workers(self) -> int:
        """Write round trips in flight at once: never more than the pool has connections."""
        return self.workers_for(None)

    def workers_for(self, requested: int | None) -> int:
        """Round trips in flight for a writer asking for ``requested`` (None: the store's
        ``write_concurrency``), bounded by the pool."""
        return max(1, min(requested or self.write_concurrency, self.client.max_connections))


#: The config fields that become :class:`ClientSettings` (besides the parsed connection).
CLIENT_FIELDS = (
    "redis_type",
    "sentinel_master",
    "max_connections",
    "socket_timeout",
    "socket_connect_timeout",
    "retry_attempts",
    "retry_backoff_base",
    "retry_backoff_cap",
)
#: The config fields that become the tuning part of :class:`StoreSettings`.
TUNING_FIELDS = (
    "key_ttl_seconds",
    "write_rows_per_call",
    "write_concurrency",
    "read_chunk_size",
    "read_concurrency",
    "full_scan_for_deletion",
)
#: Config fields that are not settings of their own.
NOT_SETTINGS = ("type", "connection_string")


def settings_from(config: Any) -> StoreSettings:
    """Parse a ``DragonflyOnlineStoreConfig`` (raises ``DragonflyConfigError`` on a bad
    connection string, and on TLS options without TLS, without echoing a password)."""
    connection = _topology.parse_topology(
        config.connection_string, config.redis_type, config.sentinel_master
    )
    client = ClientSettings(
        connection=connection, **{name: getattr(config, name) for name in CLIENT_FIELDS}
    )
    client.pool_kwargs(object)  # validates the TLS options against ssl=...
    return StoreSettings(client=client, **{name: getattr(config, name) for name in TUNING_FIELDS})
