"""``redis_type`` / ``sentinel_master`` and multi-node connection strings, without a server.

Feast's ``RedisOnlineStoreConfig`` spells deployments as ``redis_type: redis | redis_cluster |
redis_sentinel`` with every node listed in ``connection_string``; a Feast user switching
``type:`` must keep the rest of the section. Passwords (the data nodes' and the sentinels')
never appear in errors or reprs. Also the Sentinel write retry's progress accounting, with
plain callables standing in for a write that a failover interrupted.
"""

from __future__ import annotations

import ssl
import traceback

import pydantic
import pytest
from feast import RepoConfig
from feast.infra.online_stores.redis import RedisOnlineStoreConfig
from redis.sentinel import SentinelManagedSSLConnection

from feast_dragonfly import (
    DragonflyConfigError,
    DragonflyConnectionError,
    DragonflyDataError,
    DragonflyOnlineStoreConfig,
)
from feast_dragonfly._protocol import topology
from feast_dragonfly._protocol.topology import TopologySettings

SECRET = "t0p-s3cret"
SENTINEL_SECRET = "s3ntinel-pw"


def assert_no_secret(*things: object) -> None:
    for thing in things:
        if isinstance(thing, BaseException):
            text = "".join(traceback.format_exception(thing)) + repr(thing)
        else:
            text = repr(thing) + str(thing)
        assert SECRET not in text and SENTINEL_SECRET not in text, text


def test_redis_type_takes_feasts_three_values():
    for kind in ("redis", "redis_cluster", "redis_sentinel"):
        config = DragonflyOnlineStoreConfig(redis_type=kind, connection_string="h:1")
        assert config.redis_type == kind
        assert config.sentinel_master == "mymaster"  # Feast's default
    with pytest.raises(pydantic.ValidationError) as caught:
        DragonflyOnlineStoreConfig(redis_type="cluster", connection_string=f"h:1,password={SECRET}")
    assert "redis_type" in str(caught.value)
    assert_no_secret(caught.value)


def test_cluster_connection_string_lists_startup_nodes():
    config = DragonflyOnlineStoreConfig(
        redis_type="redis_cluster",
        connection_string=f"n1:7000, n2:7001,[::1]:7002,n1:7000,password={SECRET},ssl=true,"
        "skip_full_coverage_check=true",
    )
    settings = config.connection_settings()
    assert isinstance(settings, TopologySettings)
    assert settings.nodes == (("n1", 7000), ("n2", 7001), ("::1", 7002))
    assert settings.options["password"] == SECRET and settings.options["ssl"] is True
    assert settings.address == "n1:7000,n2:7001,[::1]:7002"
    assert "n2:7001" in repr(config)
    assert_no_secret(config, settings)

    url = DragonflyOnlineStoreConfig(
        redis_type="redis_cluster", connection_string=f"rediss://:{SECRET}@node:7000"
    ).connection_settings()
    assert url.nodes == (("node", 7000),) and url.options["ssl"] is True
    assert_no_secret(url)


@pytest.mark.parametrize(
    ("redis_type", "connection_string", "fragment"),
    [
        ("redis_cluster", "n1:7000,n2:7001,db=2", "database 0"),
        ("redis_cluster", "n1:7000,sentinel_password=x", "redis_sentinel"),
        ("redis_cluster", "password=x", "names no node"),
        ("redis_cluster", "n1:7000,n2", "'n2'"),
        ("redis_cluster", "n1:7000,bogus=1", "'bogus'"),
        ("redis_sentinel", "redis://s1:26379", "sentinels"),
        ("redis_sentinel", "", "empty"),
        ("redis", "n1:7000,n2:7001", "several servers"),
    ],
)
def test_topology_mistakes_are_named_at_config_time(redis_type, connection_string, fragment):
    text = f"{connection_string},password={SECRET}" if connection_string else ""
    if "://" in connection_string:
        text = connection_string.replace("://", f"://:{SECRET}@")
    with pytest.raises(DragonflyConfigError) as caught:
        DragonflyOnlineStoreConfig(redis_type=redis_type, connection_string=text)
    assert fragment.lower() in str(caught.value).lower(), str(caught.value)
    assert_no_secret(caught.value)


def test_sentinel_options_keep_the_two_passwords_apart():
    config = DragonflyOnlineStoreConfig(
        redis_type="redis_sentinel",
        sentinel_master="cache",
        connection_string=f"s1:26379,s2:26380,password={SECRET},db=3,"
        f"sentinel_username=watcher,sentinel_password={SENTINEL_SECRET}",
    )
    settings = config.connection_settings()
    assert isinstance(settings, TopologySettings)
    assert settings.nodes == (("s1", 26379), ("s2", 26380))
    assert settings.options == {"password": SECRET, "db": 3}
    assert settings.sentinel_options == {
        "sentinel_username": "watcher",
        "sentinel_password": SENTINEL_SECRET,
    }
    assert settings.address == "master 'cache' via sentinels s1:26379,s2:26380"
    assert "sentinel_password=***" in settings.redacted()
    assert_no_secret(config, settings)

    # The master's password for data connections, the sentinels' own for discovery; pools
    # that wait for a free connection; nothing connects yet.
    client = topology.sentinel_client(config.settings().client)
    try:
        pool = client.connection_pool
        assert isinstance(pool, topology.BlockingSentinelConnectionPool)
        assert pool.max_connections == config.max_connections
        assert pool.timeout == config.socket_timeout
        assert pool.connection_kwargs["password"] == SECRET
        assert pool.connection_kwargs["db"] == 3
        sentinel = pool.sentinel_manager.sentinels[0].connection_pool.connection_kwargs
        assert sentinel["password"] == SENTINEL_SECRET and sentinel["username"] == "watcher"
        assert pool.service_name == "cache"
    finally:
        topology.close_sync(client)


def test_sentinel_tls_uses_sentinel_managed_tls_connections():
    config = DragonflyOnlineStoreConfig(
        redis_type="redis_sentinel",
        connection_string="s1:26379,ssl=true,ssl_cert_reqs=none",
    )
    client = topology.sentinel_client(config.settings().client)
    try:
        pool = client.connection_pool
        assert pool.connection_class is SentinelManagedSSLConnection
        assert pool.connection_kwargs["ssl_cert_reqs"] == ssl.CERT_NONE
    finally:
        topology.close_sync(client)


def test_a_feast_cluster_or_sentinel_section_carries_over():
    """What a ``type: redis`` user has in feature_store.yaml loads unchanged once ``type``
    names this store (Feast's store itself accepts the same section)."""
    for section in (
        {
            "redis_type": "redis_cluster",
            "connection_string": f"c1:7000,c2:7000,skip_full_coverage_check=true,password={SECRET}",
        },
        {
            "redis_type": "redis_sentinel",
            "sentinel_master": "feast-master",
            "connection_string": f"s1:26379,s2:26379,password={SECRET},db=1",
        },
    ):
        RedisOnlineStoreConfig(type="redis", **section)  # valid for Feast
        config = RepoConfig(
            project="p",
            registry="registry.db",
            provider="local",
            online_store={"type": "feast_dragonfly.DragonflyOnlineStore", **section},
            entity_key_serialization_version=3,
        ).online_store
        assert isinstance(config, DragonflyOnlineStoreConfig)
        assert config.redis_type == section["redis_type"]
        assert config.sentinel_master == section.get("sentinel_master", "mymaster")
        assert len(config.connection_settings().nodes) == 2
        assert_no_secret(config)


# --------------------------------------------------------------------------- failover retry


def test_a_write_broken_by_a_failover_is_retried_once_with_exact_progress():
    class Client:
        class connection_pool:  # noqa: N801 - what the retry touches on a redis client
            dropped = 0

            @classmethod
            def disconnect(cls, inuse_connections: bool = True) -> None:
                assert inuse_connections is False
                cls.dropped += 1

    seen: list[int] = []
    attempts: list[int] = []

    def write(report):
        attempts.append(1)
        for rows in (10, 20, 30, 40):
            report(rows)
            if len(attempts) == 1 and rows == 20:
                raise DragonflyConnectionError("the master went away")
        return "done"

    assert topology.retry_after_failover(write, seen.append, Client()) == "done"
    assert len(attempts) == 2 and Client.connection_pool.dropped == 1
    assert sum(seen) == 100  # 30 reported before the failure, then only the 70 after it
    assert seen == [10, 20, 30, 40]

    readonly = [0]

    def demoted(report):
        readonly[0] += 1
        if readonly[0] == 1:
            raise DragonflyDataError("... -READONLY You can't write against a read only replica")
        report(5)

    topology.retry_after_failover(demoted, None, Client())
    assert readonly[0] == 2


def test_other_write_errors_and_a_second_failure_are_not_retried():
    class Client:
        class connection_pool:  # noqa: N801
            @staticmethod
            def disconnect(inuse_connections: bool = True) -> None:
                pass

    calls = [0]

    def bad_data(report):
        calls[0] += 1
        raise DragonflyDataError("WRONGTYPE")

    with pytest.raises(DragonflyDataError):
        topology.retry_after_failover(bad_data, None, Client())
    assert calls[0] == 1

    def always_down(report):
        calls[0] += 1
        raise DragonflyConnectionError("down")

    calls[0] = 0
    with pytest.raises(DragonflyConnectionError):
        topology.retry_after_failover(always_down, None, Client())
    assert calls[0] == 2


def test_the_failover_flow_asks_for_an_attempt_a_disconnect_and_one_more():
    """The decision itself, no client: each request is the reporter of an attempt, or
    ``_Disconnect`` between the two."""
    seen: list[int] = []
    steps = topology._failover_flow(seen.append)
    first = next(steps)
    first(3)
    assert steps.throw(DragonflyConnectionError("the master went away")) is topology._Disconnect
    second = steps.send(None)
    second(2)
    second(5)
    with pytest.raises(StopIteration) as done:
        steps.send("written")
    assert done.value.value == "written"
    assert seen == [3, 4]  # the second attempt's first 3 rows were reported already

    steps = topology._failover_flow(None)
    next(steps)
    with pytest.raises(DragonflyDataError):  # not a failover: raised, nothing retried
        steps.throw(DragonflyDataError("WRONGTYPE"))


async def test_the_async_driver_carries_the_same_flow():
    class Pool:
        dropped = 0

        async def disconnect(self, inuse_connections: bool = True) -> None:
            assert inuse_connections is False
            Pool.dropped += 1

    client = type("Client", (), {"connection_pool": Pool()})()
    seen: list[int] = []
    attempts: list[int] = []

    async def write(report):
        attempts.append(1)
        report(4)
        if len(attempts) == 1:
            raise DragonflyDataError("-READONLY You can't write against a read only replica.")
        report(6)
        return len(attempts)

    assert await topology.retry_after_failover_async(write, seen.append, client) == 2
    assert Pool.dropped == 1 and seen == [4, 6]
