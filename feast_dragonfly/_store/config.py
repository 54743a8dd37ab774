"""The ``online_store:`` section users write: pydantic validation, parsed once into settings.

Kept apart from the store so the config's validation (and its careful error messages, which
must never echo a password) has one home. Feast looks the config class up next to the store
class and the store class up from the config's module, so ``online_store.py`` re-exports it
and the class names that module as its own.
"""

from __future__ import annotations

from typing import Any, Literal

from feast.repo_config import FeastConfigBaseModel
from pydantic import (
    ConfigDict,
    Field,
    NonNegativeInt,
    PositiveInt,
    PrivateAttr,
    StrictStr,
    model_validator,
)

from feast_dragonfly._protocol import topology
from feast_dragonfly._protocol.connection import ConnectionSettings
from feast_dragonfly._store.settings import StoreSettings, settings_from
from feast_dragonfly.errors import DragonflyConfigError

__all__ = ["DragonflyOnlineStoreConfig"]


class DragonflyOnlineStoreConfig(FeastConfigBaseModel):
    """``online_store:`` settings for DragonflyDB or any Redis-protocol server."""

    # Validation errors must not echo input values: connection_string may hold a password.
    # validate_assignment: a field assigned later is checked, and the parsed settings follow.
    model_config = ConfigDict(
        arbitrary_types_allowed=True,
        extra="forbid",
        hide_input_in_errors=True,
        validate_assignment=True,
    )

    type: Literal["feast_dragonfly.DragonflyOnlineStore"] = "feast_dragonfly.DragonflyOnlineStore"
    """Online store type selector."""

    connection_string: StrictStr = "localhost:6379"
    """Feast's ``host:port,password=...,ssl=true,db=0`` or a ``redis://`` / ``rediss://`` URL."""

    redis_type: topology.RedisType = "redis"
    """Deployment kind, named as in Feast's Redis store: ``redis`` (one server),
    ``redis_cluster`` (connection_string lists startup nodes) or ``redis_sentinel``
    (connection_string lists the sentinels)."""

    sentinel_master: StrictStr = "mymaster"
    """Name of the master the sentinels monitor (``redis_type: redis_sentinel``), as in Feast."""

    key_ttl_seconds: NonNegativeInt | None = None
    """Expire each entity hash this many seconds after its last write (as Feast's store);
    0 or unset: never (0 is accepted because Feast's store treats it so)."""

    layout: Literal["feast", "compact"] = "feast"
    """How rows are stored. ``feast``: Feast's Redis layout, byte for byte (a drop-in for
    Feast's store, and readable by it). ``compact``: one record per entity and feature view,
    its values encoded by the view's schema — about half the memory, less for wide views, each
    view's ``ttl`` enforced on read and by the server's own expiry; only this store reads it
    (``feast-dragonfly migrate`` converts). See docs/data-layout.md."""

    enforce_view_ttl: bool = False
    """With ``layout: feast``, return a value older than its feature view's ``ttl`` as not
    found (Feast's store returns it; ``compact`` always applies the rule)."""

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

    _settings: StoreSettings | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _parse_settings(self) -> DragonflyOnlineStoreConfig:
        # Parsed once, here: a bad string (or a TLS option without TLS) fails when the config
        # loads, not at the first read, and no read or write parses it again.
        self._settings = settings_from(self)
        return self

    def settings(self) -> StoreSettings:
        """This config as frozen, parsed settings (what the store works from)."""
        if self._settings is None:  # a config built without validation (model_construct)
            self._settings = settings_from(self)
        return self._settings

    def connection_settings(self) -> ConnectionSettings:
        return self.settings().client.connection

    def __repr_args__(self):  # type: ignore[override]
        for name, value in super().__repr_args__():
            if name == "connection_string":
                value = self.connection_settings().redacted()
            yield name, value


# Feast finds the store class through its config's module (``get_online_store_from_config``:
# ``import_class(config.__module__, "DragonflyOnlineStore")``), so the class names the store's
# module, as it did when it was defined there; pickles resolve through the same re-export. Set
# after the class is built: pydantic has already resolved its annotations in this module.
DragonflyOnlineStoreConfig.__module__ = "feast_dragonfly._store.online_store"


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
