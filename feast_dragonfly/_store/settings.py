"""The store's settings, parsed once from ``feature_store.yaml`` into frozen objects.

``DragonflyOnlineStoreConfig`` (pydantic) is what users write and what Feast validates; every
read and write used to re-parse its connection string. Here it becomes two immutable values
built once per config (and again only when a field is assigned):

* :class:`~feast_dragonfly._protocol.settings.ClientSettings` — everything the connections are
  built from. Equal settings mean the same backend (pools, cluster client, sentinels) can
  serve them.
* :class:`StoreSettings` — those plus the per-call tuning (chunk sizes, concurrency, TTL),
  which can change without reconnecting.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from feast_dragonfly._protocol.deployment import client_settings
from feast_dragonfly._protocol.settings import ClientSettings


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
    layout: str = "feast"
    enforce_view_ttl: bool = False

    @property
    def compact(self) -> bool:
        """Whether rows are stored as compact records (``layout: compact``)."""
        return self.layout == "compact"

    @property
    def write_workers(self) -> int:
        """Write round trips in flight at once: never more than the pool has connections."""
        return self.workers_for(None)

    def workers_for(self, requested: int | None) -> int:
        """Round trips in flight for a writer asking for ``requested`` (None: the store's
        ``write_concurrency``), bounded by the pool."""
        return max(1, min(requested or self.write_concurrency, self.client.max_connections))


#: The config fields that become the rest of :class:`ClientSettings`.
CLIENT_FIELDS = (
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
    "layout",
    "enforce_view_ttl",
)
#: The config fields parsed together into the connection (where, and which topology).
CONNECTION_FIELDS = ("connection_string", "redis_type", "sentinel_master")
#: Config fields that are not settings of their own.
NOT_SETTINGS = ("type",)


def settings_from(config: Any) -> StoreSettings:
    """Parse a ``DragonflyOnlineStoreConfig`` (raises ``DragonflyConfigError`` on a bad
    connection string, and on TLS options without TLS, without echoing a password)."""
    client = client_settings(
        config.connection_string,
        config.redis_type,
        config.sentinel_master,
        **{name: getattr(config, name) for name in CLIENT_FIELDS},
    )
    return StoreSettings(client=client, **{name: getattr(config, name) for name in TUNING_FIELDS})
