"""``Deployment.errors`` on a server out of memory: the server's refusal, whatever command met
it, becomes one ``DragonflyServerFullError`` naming the server, its ``maxmemory`` and policy,
and never the password; ``out_of_memory`` knows each server's words for it (Redis and Valkey:
``OOM command not allowed …``, Dragonfly: ``Out of memory``), plain or inside a script's error.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from full_server_kit import SECRET, capped, limit_named
from redis import exceptions as redis_exceptions

from feast_dragonfly._protocol.deployment import Deployment, client_settings
from feast_dragonfly._protocol.wire import out_of_memory
from feast_dragonfly.errors import DragonflyConnectionError, DragonflyServerFullError

pytestmark = [pytest.mark.server, pytest.mark.valkey]

BIG = b"x" * 100_000


@pytest.fixture
def client(small_client: redis.Redis) -> redis.Redis:
    """The capped server's emptied client (``small_client``), under a short name."""
    return small_client


@pytest.fixture
def opened(small) -> Iterator[Deployment]:
    deployment = Deployment(client_settings(small.connection_string, "redis", "mymaster"))
    yield deployment
    deployment.close()


def refusals(client: redis.Redis) -> list[Exception]:
    """What a full server answers a plain write, and a write inside a script."""
    out: list[Exception] = []
    for attempt in (
        lambda: [client.set(f"k{i}", BIG) for i in range(200)],
        lambda: client.eval("return redis.call('SET', KEYS[1], ARGV[1])", 1, "s", BIG),
    ):
        with pytest.raises(redis_exceptions.ResponseError) as caught:
            attempt()
        out.append(caught.value)
    return out


def test_out_of_memory_knows_each_servers_refusal_and_nothing_else(client):
    with capped(client, limit=1):
        plain, scripted = refusals(client)
    assert out_of_memory(plain) and out_of_memory(scripted), (plain, scripted)
    client.set("text", "v")
    with pytest.raises(redis_exceptions.ResponseError) as wrong_type:
        client.hget("text", "f")
    others = [
        wrong_type.value,
        redis_exceptions.ResponseError("NOSCRIPT No matching script"),
        redis_exceptions.ConnectionError("Out of memory"),  # not a server's reply
        "OOM command not allowed",  # a value, not an error reply
        None,
    ]
    assert not any(out_of_memory(other) for other in others)


def test_errors_name_the_server_and_its_limit_never_the_password(small, client, opened):
    with capped(client, limit=1):
        for refusal in refusals(client):
            with pytest.raises(DragonflyServerFullError) as caught:
                with opened.errors():
                    raise refusal
            message = str(caught.value)
            assert limit_named(message, small), message
            assert "raise its maxmemory (or free memory there)" in message
            assert caught.value.__suppress_context__ and caught.value.__cause__ is None
            assert SECRET not in repr(caught.value)
    # Other errors pass as before: a reply about one key stays a ResponseError.
    with pytest.raises(redis_exceptions.ResponseError):
        with opened.errors():
            raise redis_exceptions.ResponseError("WRONGTYPE Operation against a key")


def test_the_limit_is_spelled_as_maxmemory_takes_it(client, opened):
    limit = str(client.config_get("maxmemory")["maxmemory"])
    try:
        client.config_set("maxmemory", "512mb")
        limits = opened.memory_limits()
        assert limits.startswith("maxmemory 512mb, policy "), limits
        assert limits.endswith("mb used"), limits
    finally:
        client.config_set("maxmemory", limit)


def test_a_server_that_will_not_say_its_limit_is_still_named(small, client):
    """A user the ACL denies INFO: the message names the server and its answer only."""
    client.execute_command("ACL", "SETUSER", "writer", "on", f">{SECRET}", "~*", "+@all", "-info")
    settings = client_settings(
        f"{small.address},username=writer,password={SECRET}", "redis", "mymaster"
    )
    denied = Deployment(settings)
    try:
        assert denied.memory_limits() == ""
        with pytest.raises(DragonflyServerFullError) as caught:
            with denied.errors():
                raise redis_exceptions.ResponseError("Out of memory")
        assert str(caught.value).startswith(
            f"the server at {small.address} is out of memory (it answered: Out of memory): "
        )
    finally:
        denied.close()
        client.execute_command("ACL", "DELUSER", "writer")


def test_a_server_gone_is_a_connection_error_not_a_full_one():
    """``memory_limits`` must not turn a refusal into another failure when the server is
    gone: it says nothing then."""
    from feast_dragonfly.testing.local_server import free_port

    settings = client_settings(f"127.0.0.1:{free_port()}", "redis", "mymaster", retry_attempts=0)
    gone = Deployment(settings)
    try:
        assert gone.memory_limits() == ""
        with pytest.raises(DragonflyConnectionError):
            with gone.errors():
                gone.client().ping()
    finally:
        gone.close()
