"""``_store.settings``: a config parsed once into frozen settings, the tuning beside them.

* Every field of ``DragonflyOnlineStoreConfig`` is accounted for: a connection field, a client
  setting, a tuning setting, or not a setting (``type``).
* ``settings_from`` carries each field into ``ClientSettings`` or ``StoreSettings``, parsing
  the connection string (a bad one is a ``DragonflyConfigError``).
* Equal configs give equal, frozen settings (the same backend can serve them); a change of
  tuning leaves the client settings equal.
* ``workers_for`` / ``write_workers``: the requested write concurrency (the store's by
  default), at least 1 and never more than the pool has connections.
"""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest

from feast_dragonfly import DragonflyConfigError
from feast_dragonfly._protocol.settings import ClientSettings
from feast_dragonfly._store import settings as _settings
from feast_dragonfly._store.online_store import DragonflyOnlineStoreConfig
from feast_dragonfly._store.settings import StoreSettings, settings_from


def test_every_config_field_is_a_setting():
    mapped = set(
        _settings.CONNECTION_FIELDS
        + _settings.CLIENT_FIELDS
        + _settings.TUNING_FIELDS
        + _settings.NOT_SETTINGS
    )
    assert mapped == set(DragonflyOnlineStoreConfig.model_fields)


def test_settings_from_carries_every_field_to_its_place():
    config = DragonflyOnlineStoreConfig(
        connection_string="h1:7000,h2:7001",
        redis_type="redis_cluster",
        sentinel_master="unused",
        key_ttl_seconds=60,
        max_connections=5,
        socket_timeout=1.5,
        socket_connect_timeout=0.5,
        write_rows_per_call=7,
        write_concurrency=3,
        read_chunk_size=11,
        read_concurrency=2,
        full_scan_for_deletion=False,
        retry_attempts=0,
        retry_backoff_base=0.2,
        retry_backoff_cap=0.4,
    )
    settings = settings_from(config)
    for name in _settings.TUNING_FIELDS:
        assert getattr(settings, name) == getattr(config, name), name
    for name in _settings.CLIENT_FIELDS:
        assert getattr(settings.client, name) == getattr(config, name), name
    assert (settings.client.redis_type, settings.client.sentinel_master) == (
        "redis_cluster",
        "unused",
    )
    assert settings.client.connection.kind == "redis_cluster"
    assert settings.client.connection.nodes == (("h1", 7000), ("h2", 7001))


def test_a_bad_connection_string_is_a_config_error():
    config = SimpleNamespace(
        **{name: field.default for name, field in DragonflyOnlineStoreConfig.model_fields.items()}
    )
    config.connection_string = "no-port-here"
    with pytest.raises(DragonflyConfigError, match="no-port-here"):
        settings_from(config)


def test_equal_configs_give_equal_frozen_settings():
    one = settings_from(DragonflyOnlineStoreConfig(connection_string="db:6379,db=2"))
    two = settings_from(DragonflyOnlineStoreConfig(connection_string="db:6379,db=2"))
    assert one == two and one is not two
    retuned = settings_from(
        DragonflyOnlineStoreConfig(connection_string="db:6379,db=2", read_chunk_size=9)
    )
    assert retuned != one and retuned.client == one.client
    with pytest.raises(dataclasses.FrozenInstanceError):
        one.read_chunk_size = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("concurrency", "pool", "requested", "workers"),
    [
        (8, 16, None, 8),  # the store's write_concurrency
        (8, 3, None, 3),  # bounded by the pool
        (8, 16, 2, 2),  # a writer asking for fewer
        (8, 16, 64, 16),  # ... or for more than the pool holds
        (1, 16, None, 1),
    ],
)
def test_write_workers_are_bounded_by_the_pool(concurrency, pool, requested, workers):
    client = ClientSettings(
        connection=settings_from(DragonflyOnlineStoreConfig()).client.connection,
        max_connections=pool,
    )
    settings = StoreSettings(client=client, write_concurrency=concurrency)
    assert settings.workers_for(requested) == workers
    if requested is None:
        assert settings.write_workers == workers
