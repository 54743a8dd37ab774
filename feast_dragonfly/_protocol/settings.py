"""How to reach a deployment: the frozen client settings every connection is built from.

The store parses them from its config (``_store.settings.settings_from``) and the admin tools
build them from command-line flags; both hand them to ``topology``'s client builders. Equal
settings mean the same clients can serve them, so they are a frozen value compared with ``==``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from feast_dragonfly._protocol.connection import ConnectionSettings, client_kwargs


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
