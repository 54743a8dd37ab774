"""``_protocol/shards.py``: where Dragonfly keeps a key, so script calls touch one shard."""

from __future__ import annotations

import pytest
import redis

from feast_dragonfly._protocol import shards
from feast_dragonfly._protocol.shards import ShardMap


def test_order_groups_keys_by_shard_keeping_their_order_within_a_shard():
    keys = [b"key-%d" % i for i in range(500)]
    shard_map = ShardMap(3)
    order = shard_map.order(keys)
    assert sorted(order) == list(range(500))  # a permutation: every key once
    placed = [shard_map.shard(keys[position]) for position in order]
    assert placed == sorted(placed)  # grouped
    for shard in range(3):
        mine = [position for position in order if shard_map.shard(keys[position]) == shard]
        assert mine == sorted(mine)  # in their own order
    assert {shard_map.shard(key) for key in keys} == {0, 1, 2}


def test_the_shard_count_is_read_from_debug_shards():
    assert shards._shard_count(b"num_shards: 3\nshard0_used_memory: 1\n") == 3
    assert shards._shard_count(b"something else\n") is None


@pytest.mark.server
def test_dragonfly_places_keys_where_the_map_says(redis_server, redis_client):
    found = shards.detect(redis_client)
    if redis_server.kind != "dragonfly":
        assert found is None  # Redis and Valkey: one thread runs every script, nothing to group
        return
    assert found is not None and found.count >= 2
    keys = [b"\x01\x00\x00\x00entity-%d:view" % i for i in range(64)]
    for key in keys:
        redis_client.set(key, b"1")
    for key in keys:
        reply = redis_client.execute_command("DEBUG", "OBJECT", key).decode()
        assert f"shard:{found.shard(key)}" in reply.split()
    assert not redis_client.keys(b"feast_dragonfly:shard_probe:*")  # the probes are gone


@pytest.mark.server
def test_a_server_placing_keys_otherwise_gets_no_map(redis_server, redis_client, monkeypatch):
    if redis_server.kind != "dragonfly":
        pytest.skip("only Dragonfly reports where it keeps a key")
    monkeypatch.setattr(shards, "SEED", 7)
    # Each probe agrees by chance with odds 1 / shards: 64 of them all agree about never.
    monkeypatch.setattr(shards, "PROBES", 64)
    assert shards.detect(redis_client) is None


class _RefusingDebug:
    """A Dragonfly ACL user without ``DEBUG``."""

    def __init__(self, info):
        self._info = info

    def info(self, section):
        return self._info

    def execute_command(self, *args):
        raise PermissionError("NOPERM this user has no permissions to run the 'debug' command")


def test_without_debug_the_map_assumes_one_shard_per_thread():
    info = {"dragonfly_version": "df-v1.40.1", "redis_mode": "standalone", "thread_count": 4}
    assert shards.detect(_RefusingDebug(info)) == ShardMap(4)
    assert shards.detect(_RefusingDebug({**info, "thread_count": 1})) is None
    assert shards.detect(_RefusingDebug({**info, "redis_mode": "cluster"})) is None
    assert shards.detect(_RefusingDebug({"redis_version": "7.0.15"})) is None


@pytest.mark.server
def test_an_acl_user_without_debug_gets_dragonflys_default_placement(redis_server, redis_client):
    if redis_server.kind != "dragonfly":
        pytest.skip("Dragonfly only")
    redis_client.execute_command(
        "ACL", "SETUSER", "nodebug", "on", ">secret-pw", "~*", "+@all", "-debug"
    )
    user = redis.Redis(
        host="127.0.0.1", port=redis_client.connection_pool.connection_kwargs["port"],
        username="nodebug", password="secret-pw",
    )  # fmt: skip
    try:
        with pytest.raises(redis.ResponseError):
            user.execute_command("DEBUG", "SHARDS")
        assert shards.detect(user) == shards.detect(redis_client)
    finally:
        user.close()
        redis_client.execute_command("ACL", "DELUSER", "nodebug")
