"""``_protocol.settings``: ``ClientSettings``, the frozen value every connection is built from.

* Its defaults are the ``online_store:`` section's defaults, so the admin tools (which build
  it from flags) and the store (from its config) connect alike.
* Equal settings compare equal (the same clients can serve them); any difference does not; it
  cannot be changed once built; its ``repr`` never shows the password.
* ``pool_kwargs`` gives redis-py the address, the settings' own timeouts (unless the
  connection string sets them), TLS only with TLS, and refuses TLS options without TLS; a
  pool built from it talks to the real server.
"""

from __future__ import annotations

import dataclasses

import pytest
import redis

from feast_dragonfly import DragonflyConfigError, DragonflyOnlineStoreConfig
from feast_dragonfly._protocol.connection import parse_connection_string
from feast_dragonfly._protocol.settings import ClientSettings

SECRET = "s3cret-client-77"


def test_defaults_are_the_config_sections_defaults():
    fields = DragonflyOnlineStoreConfig.model_fields
    plain = ClientSettings(connection=parse_connection_string("h:1"))
    for field in dataclasses.fields(ClientSettings):
        if field.name != "connection":
            assert getattr(plain, field.name) == fields[field.name].default, field.name


def test_equal_settings_compare_equal_and_are_frozen():
    one = ClientSettings(connection=parse_connection_string("h:1,db=2"), max_connections=4)
    two = ClientSettings(connection=parse_connection_string("h:1,db=2"), max_connections=4)
    assert one == two
    assert one != dataclasses.replace(two, max_connections=5)
    assert one != ClientSettings(connection=parse_connection_string("h:1,db=3"), max_connections=4)
    with pytest.raises(dataclasses.FrozenInstanceError):
        one.max_connections = 8  # type: ignore[misc]


def test_repr_never_shows_the_password():
    settings = ClientSettings(connection=parse_connection_string(f"h:1,password={SECRET}"))
    assert SECRET not in repr(settings) and SECRET not in str(settings)
    assert "password=***" in repr(settings)
    assert settings.connection.password == SECRET  # kept, only never shown


def test_pool_kwargs_carry_the_settings_timeouts_and_tls_class():
    settings = ClientSettings(
        connection=parse_connection_string(f"h:6380,password={SECRET},db=1"),
        socket_timeout=2.5,
        socket_connect_timeout=0.75,
    )
    assert settings.pool_kwargs(redis.SSLConnection) == {
        "host": "h",
        "port": 6380,
        "socket_timeout": 2.5,
        "socket_connect_timeout": 0.75,
        "password": SECRET,
        "db": 1,
    }
    tls = dataclasses.replace(
        settings, connection=parse_connection_string("h:1,ssl=true,socket_timeout=9")
    )
    kwargs = tls.pool_kwargs(redis.SSLConnection)
    assert kwargs["connection_class"] is redis.SSLConnection
    assert kwargs["socket_timeout"] == 9  # the connection string's own value wins
    assert kwargs["socket_connect_timeout"] == 0.75


def test_pool_kwargs_refuse_tls_options_without_tls():
    settings = ClientSettings(
        connection=parse_connection_string(f"h:1,password={SECRET},ssl_ca_certs=/ca.pem")
    )
    with pytest.raises(DragonflyConfigError, match="ssl_ca_certs") as caught:
        settings.pool_kwargs(redis.SSLConnection)
    assert SECRET not in str(caught.value)


@pytest.mark.server
def test_a_pool_built_from_the_kwargs_talks_to_the_server(server_connection_string):
    settings = ClientSettings(
        connection=parse_connection_string(server_connection_string), socket_timeout=5.0
    )
    pool = redis.ConnectionPool(**settings.pool_kwargs(object))
    client = redis.Redis(connection_pool=pool)
    try:
        assert client.ping() is True
        client.set(b"settings-check", b"1")
        assert client.get(b"settings-check") == b"1"
    finally:
        client.close()
        pool.disconnect()
