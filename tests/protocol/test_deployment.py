"""``_protocol.deployment``: the one deployment abstraction the store and the admin tools share.

* ``client_settings`` parses a connection string plus options once, refuses TLS options without
  TLS and never echoes a password;
* a ``Deployment`` builds its clients on first use (sync, one asyncio client per loop), names
  its masters, routes a key to the master serving its slot, tells Dragonfly from Redis;
* ``connect`` pings every master and fails with an error naming the server, not the password,
  closing what it opened;
* ``retrying_after_failover`` runs an attempt once on deployments without failover.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from local_topology import LocalCluster, start_cluster
from redis.crc import key_slot

from feast_dragonfly._protocol import deployment
from feast_dragonfly._protocol.deployment import Deployment, client_settings, connect
from feast_dragonfly.errors import DragonflyConfigError, DragonflyConnectionError
from feast_dragonfly.testing.local_server import ServerBinary, free_port

SECRET = "s3cr3t-pw-0ff-limits"


def test_client_settings_parse_the_string_and_take_options():
    settings = client_settings(
        "127.0.0.1:7000,db=3", "redis", "mymaster", max_connections=5, socket_timeout=2.5
    )
    assert settings.connection.address == "127.0.0.1:7000"
    assert (settings.redis_type, settings.max_connections, settings.socket_timeout) == (
        "redis",
        5,
        2.5,
    )
    assert Deployment(settings).db == 3


def test_client_settings_refuse_tls_options_without_tls_and_hide_the_password():
    with pytest.raises(DragonflyConfigError) as raised:
        client_settings(f"127.0.0.1:7000,password={SECRET},ssl_ca_certs=/x.pem", "redis", "m")
    assert SECRET not in str(raised.value) and SECRET not in repr(raised.value)
    with pytest.raises(DragonflyConfigError):
        client_settings("127.0.0.1:notaport", "redis", "m")


@pytest.mark.server
def test_a_standalone_deployment_is_one_master_serving_every_key(server_connection_string):
    with _opened(server_connection_string) as opened:
        [master] = opened.endpoints
        assert master.name == opened.address
        assert opened.endpoint_for(b"any key") is master
        assert master.exchange([b"*1\r\n$4\r\nPING\r\n"], 1) == [b"PONG"]
        assert opened.dragonfly == ("dragonfly" in _server_kind(opened))
        assert opened.retrying_after_failover(lambda progress: progress, "p") == "p"


@pytest.mark.server
def test_asyncio_clients_are_one_per_event_loop_and_closed_with_it(server_connection_string):
    deployment_ = Deployment(client_settings(server_connection_string, "redis", "m"))

    async def use() -> object:
        client = await deployment_.client_async()
        assert await deployment_.client_async() is client
        assert await client.ping()
        return client

    first, second = asyncio.run(use()), asyncio.run(use())
    assert first is not second  # a new loop, a new pool
    asyncio.run(deployment_.aclose())
    assert deployment_._async_clients == {}


def test_connect_fails_naming_the_server_not_the_password():
    port = free_port()
    settings = client_settings(f"127.0.0.1:{port},password={SECRET}", "redis", "m")
    with pytest.raises(DragonflyConnectionError) as raised:
        connect(settings)
    assert f"127.0.0.1:{port}" in str(raised.value)
    assert SECRET not in str(raised.value)


@pytest.fixture(scope="module")
def cluster(server_binary: ServerBinary) -> Iterator[LocalCluster]:
    with start_cluster(server_binary) as started:
        yield started


@pytest.mark.server
def test_a_cluster_routes_each_key_to_the_master_serving_its_slot(cluster):
    with _opened(cluster.connection_string, "redis_cluster") as opened:
        assert sorted(e.name for e in opened.endpoints) == sorted(
            s.address for s in cluster.masters
        )
        for index in range(50):
            key = b"key-%d" % index
            expected = cluster.masters[cluster.master_of_slot(key_slot(key))].address
            assert opened.endpoint_for(key).name == expected


class _opened:
    """A connected deployment, closed on exit."""

    def __init__(self, connection_string: str, redis_type: str = "redis") -> None:
        self._settings = client_settings(connection_string, redis_type, "mymaster")

    def __enter__(self) -> Deployment:
        self._deployment = deployment.connect(self._settings)
        return self._deployment

    def __exit__(self, *_exc: object) -> None:
        self._deployment.close()


def _server_kind(opened: Deployment) -> str:
    info = opened.endpoints[0].client.info("server")
    return "dragonfly" if "dragonfly_version" in info else "redis"
