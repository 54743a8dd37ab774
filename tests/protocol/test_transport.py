"""``_protocol.transport``: one exchange of packed commands on one pooled connection, retried.

* ``exchange`` / ``exchange_async`` against the real server: every reply, error replies in
  place, a protocol error standing for the rest, the connection always given back to the pool.
* A connection the server killed (``CLIENT KILL ID`` from another client, while it waits in ``BLPOP``) is a transient
  failure: the whole payload is resent on a fresh connection when the pool's retry allows it,
  and the failure surfaces when it does not.
* The retry decision itself (``is_transient``, ``make_retry``'s policies, sync and asyncio):
  which errors are retried, how often, with which backoff, what the ``fail`` callback gets.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import threading
import time

import pytest
import redis
import redis.asyncio as redis_asyncio
from redis import exceptions as redis_exceptions

from feast_dragonfly._protocol import transport, wire

CLIENT_ID = wire.command(b"CLIENT", b"ID")
NAME = "transport-under-test"


def pool_kwargs(server) -> dict:
    return dict(
        host=server.host,
        port=server.port,
        db=server.db,
        username=server.username,
        password=server.password,
        client_name=NAME,
        max_connections=1,
        timeout=0.5,  # a connection that is never given back fails the next exchange
        socket_timeout=10,
    )


async def exchanges(server, use_async: bool, attempts: int, *requests) -> list:
    """Each ``(payload, replies)`` in turn through one pool (retrying ``attempts`` times):
    its replies, or the exception it raised."""
    retry = transport.make_retry(attempts, 0.001, 0.01, for_asyncio=use_async)
    pool_class = redis_asyncio.BlockingConnectionPool if use_async else redis.BlockingConnectionPool
    pool = pool_class(retry=retry, **pool_kwargs(server))
    out: list = []
    try:
        for payload, replies in requests:
            try:
                if use_async:
                    out.append(await transport.exchange_async(pool, payload, replies))
                else:
                    out.append(transport.exchange(pool, payload, replies))
            except redis_exceptions.RedisError as exc:
                out.append(exc)
    finally:
        await pool.disconnect() if use_async else pool.disconnect()
    return out


class Killer(threading.Thread):
    """Kills our pool's connection (``CLIENT KILL ID``) while it waits in ``BLPOP``, from
    another client, mid-exchange; with ``then_push``, waits for the resent ``BLPOP`` on a new
    connection and answers it."""

    def __init__(self, admin: redis.Redis, then_push: bool) -> None:
        super().__init__(daemon=True)
        self.admin, self.then_push = admin, then_push
        self.killed: str | None = None
        self.error: BaseException | None = None

    def blocked(self) -> list[str]:
        return [
            c["id"]
            for c in self.admin.client_list()
            if c.get("name") == NAME and "b" in c.get("flags", "") and c["id"] != self.killed
        ]

    def run(self) -> None:
        try:
            deadline = time.monotonic() + 5
            while self.killed is None or self.then_push:
                assert time.monotonic() < deadline, "no blocked connection to kill or answer"
                ids = self.blocked()
                if ids and self.killed is None:
                    assert self.admin.execute_command("CLIENT", "KILL", "ID", ids[0]) == 1
                    self.killed = ids[0]
                elif ids:
                    self.admin.rpush(b"queue", b"item")
                    return
                time.sleep(0.01)
        except BaseException as exc:  # noqa: BLE001 - re-raised by the test
            self.error = exc

    def check(self) -> None:
        self.join(10)
        if self.error is not None:
            raise self.error
        assert self.killed is not None


@pytest.mark.valkey
@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
async def test_exchange_reads_every_reply_in_order_with_errors_in_place(
    redis_client, redis_server, use_async
):
    payload = [
        wire.command(b"SET", b"k", b"v") + wire.command(b"HGET", b"k", b"f"),
        wire.command(b"GET", b"k"),
        wire.command(b"INCR", b"k"),
    ]
    get = ([wire.command(b"GET", b"k")], 1)
    # One connection in the pool: each later exchange proves it was given back.
    replies, *later = await exchanges(redis_server, use_async, 0, (payload, 4), get, get, get)
    assert replies[0] == b"OK" and replies[2] == b"v"
    assert isinstance(replies[1], redis_exceptions.ResponseError)
    assert "WRONGTYPE" in str(replies[1])
    assert isinstance(replies[3], redis_exceptions.ResponseError)
    assert later == [[b"v"]] * 3


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
async def test_a_protocol_error_stands_for_the_rest(redis_client, redis_server, use_async):
    payload = [wire.command(b"PING"), b"*1\r\n$abc\r\n", wire.command(b"PING")]
    ping = ([wire.command(b"PING")], 1)
    replies, after = await exchanges(redis_server, use_async, 0, (payload, 3), ping)
    assert len(replies) == 3
    first = 0 if wire.is_protocol_error(replies[0]) else 1  # Dragonfly may reject the packet
    assert replies[:first] == [b"PONG"] * first
    assert wire.is_protocol_error(replies[first]) and replies[-1] is replies[first]
    assert after == [b"PONG"]  # a fresh connection: the closed one was dropped, not reused


BLPOP = wire.command(b"BLPOP", b"queue", b"5")


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
async def test_a_killed_connection_is_retried_on_a_fresh_one(
    redis_client, redis_server, caplog, use_async
):
    killer = Killer(redis_client, then_push=True)
    payload = [wire.command(b"SET", b"k", b"1"), BLPOP, wire.command(b"INCR", b"k")]
    killer.start()
    with caplog.at_level(logging.WARNING, logger="feast_dragonfly"):
        [replies] = await exchanges(redis_server, use_async, 3, (payload, 3))
    killer.check()
    # Everything was resent on the fresh connection: SET ran again before INCR.
    assert replies == [b"OK", [b"queue", b"item"], 2]
    logged = [r.getMessage() for r in caplog.records if r.name == "feast_dragonfly"]
    assert len(logged) == 1 and "retry 1 of 3" in logged[0]


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
async def test_without_retries_the_failure_surfaces_and_the_pool_recovers(
    redis_client, redis_server, use_async
):
    killer = Killer(redis_client, then_push=False)
    killer.start()
    failed, after = await exchanges(redis_server, use_async, 0, ([BLPOP], 1), ([CLIENT_ID], 1))
    killer.check()
    assert isinstance(failed, redis_exceptions.ConnectionError)
    assert after[0] != int(killer.killed)  # given back, and reconnected


# --------------------------------------------------------------------------- the decision


def with_context(error: Exception, context: BaseException) -> Exception:
    error.__context__ = context
    return error


def test_is_transient():
    assert transport.is_transient(redis_exceptions.ConnectionError("Connection reset by peer"))
    assert transport.is_transient(redis_exceptions.TimeoutError("Timeout reading"))
    assert transport.is_transient(redis_exceptions.BusyLoadingError("loading the dataset"))
    assert not transport.is_transient(redis_exceptions.AuthenticationError("invalid password"))
    assert not transport.is_transient(redis_exceptions.ConnectionError("No connection available."))
    verify = ssl.SSLCertVerificationError("certificate verify failed")
    assert not transport.is_transient(with_context(redis_exceptions.ConnectionError("x"), verify))
    refused = ssl.SSLError("sslv3 alert CERTIFICATE_REQUIRED")
    assert not transport.is_transient(with_context(redis_exceptions.ConnectionError("x"), refused))
    other_tls = ssl.SSLError("EOF occurred in violation of protocol")
    assert transport.is_transient(with_context(redis_exceptions.ConnectionError("x"), other_tls))


def run_policy(policy, outcomes, **kwargs):
    """Call ``policy.call_with_retry`` with an operation that raises/returns ``outcomes`` in
    turn; returns (result or error, attempts made, fail() arguments)."""
    attempts: list[int] = []
    failed: list[tuple] = []

    def step():
        attempts.append(1)
        outcome = outcomes[len(attempts) - 1]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    async def astep():
        return step()

    async def afail(*args):
        failed.append(args)

    is_async = isinstance(policy, transport.AsyncTransientRetry)
    try:
        if is_async:
            result = asyncio.run(policy.call_with_retry(astep, afail, **kwargs))
        else:
            result = policy.call_with_retry(step, lambda *a: failed.append(a), **kwargs)
    except Exception as exc:  # noqa: BLE001 - compared by the caller
        result = exc
    return result, len(attempts), failed


@pytest.mark.parametrize("for_asyncio", [False, True], ids=["sync", "async"])
def test_retry_policies(for_asyncio, caplog):
    def policy(attempts):
        return transport.make_retry(attempts, 0.0001, 0.001, for_asyncio=for_asyncio)

    def resets():  # fresh errors: a loop that gives up marks its error as spent
        return [redis_exceptions.ConnectionError(f"reset {i}") for i in range(4)]

    reset = resets()
    with caplog.at_level(logging.WARNING, logger="feast_dragonfly"):
        assert run_policy(policy(3), [*reset[:2], "ok"]) == ("ok", 3, [(reset[0],), (reset[1],)])
    logged = [r.getMessage() for r in caplog.records if r.name == "feast_dragonfly"]
    assert ["retry 1 of 3" in m for m in logged] == [True, False] and "reset 0" in logged[0]
    result, tries, failed = run_policy(policy(2), reset)
    assert result is reset[2] and tries == 3 and len(failed) == 3  # 1 try + 2 retries
    assert run_policy(policy(3), [reset[2], "ok"]) == (reset[2], 1, [])  # spent: not again
    reset = resets()
    result, tries, failed = run_policy(policy(0), reset)
    assert result is reset[0] and tries == 1
    reset = resets()
    denied = redis_exceptions.AuthenticationError("WRONGPASS")
    assert run_policy(policy(3), [denied, "ok"]) == (denied, 1, [])
    timeout = redis_exceptions.TimeoutError("Timeout reading")  # not a retried error by default
    assert run_policy(policy(3), [timeout, "ok"]) == (timeout, 1, [])
    counted = run_policy(policy(3), [reset[0], "ok"], with_failure_count=True)
    assert counted == ("ok", 2, [(reset[0], 1)])
    vetoed = run_policy(policy(3), [reset[0], "ok"], is_retryable=lambda e: False)
    assert vetoed == (reset[0], 1, [])


@pytest.mark.parametrize("for_asyncio", [False, True], ids=["sync", "async"])
def test_an_error_a_retry_loop_gave_up_on_is_not_retried_again(for_asyncio):
    """redis-py's ``connect`` runs the connections' policy; our loop around a checkout or an
    exchange runs it again on what ``connect`` raised. 2 retries must mean 3 tries in all,
    not 3 x 3, or an unreachable server would take the backoff's time many times over."""
    inner = transport.make_retry(2, 0.0001, 0.001, for_asyncio=for_asyncio)
    outer = transport.make_retry(2, 0.0001, 0.001, for_asyncio=for_asyncio)
    refused = [redis_exceptions.ConnectionError(f"Error 111 connecting {i}") for i in range(9)]
    tries: list[int] = []

    def connect():
        tries.append(1)
        raise refused[len(tries) - 1]

    async def connect_async():
        connect()

    async def nothing(*_args):
        return None

    with pytest.raises(redis_exceptions.ConnectionError) as caught:
        if for_asyncio:
            asyncio.run(
                outer.call_with_retry(
                    lambda: inner.call_with_retry(connect_async, nothing), nothing
                )
            )
        else:
            outer.call_with_retry(
                lambda: inner.call_with_retry(connect, lambda _e: None), lambda _e: None
            )
    assert len(tries) == 3 and caught.value is refused[2]


class FlakyCheckout:
    """Makes a real pool's next ``get_connection`` calls raise what redis-py's pool raises when
    the connection it has just reconnected is dropped before its check."""

    def __init__(self, pool, failures: int) -> None:
        self.pool, self.left, self.real = pool, failures, pool.get_connection
        pool.get_connection = self.get_connection

    def get_connection(self, *args, **kwargs):
        if self.left:
            self.left -= 1
            error = redis_exceptions.ConnectionError("Connection closed by server.")
            if isinstance(self.pool, redis_asyncio.ConnectionPool):
                return self._raise_async(error)
            raise error
        return self.real(*args, **kwargs)

    @staticmethod
    async def _raise_async(error):
        raise error


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
async def test_a_checkout_the_pool_fails_is_retried(redis_server, use_async, caplog):
    retry = transport.make_retry(3, 0.001, 0.01, for_asyncio=use_async)
    pool_class = redis_asyncio.BlockingConnectionPool if use_async else redis.BlockingConnectionPool
    pool = pool_class(retry=retry, **pool_kwargs(redis_server))
    ping = [wire.command(b"PING")]
    try:
        FlakyCheckout(pool, failures=2)
        with caplog.at_level(logging.WARNING, logger="feast_dragonfly"):
            if use_async:
                assert await transport.exchange_async(pool, ping, 1) == [b"PONG"]
            else:
                assert transport.exchange(pool, ping, 1) == [b"PONG"]
        logged = [r.getMessage() for r in caplog.records if r.name == "feast_dragonfly"]
        assert len(logged) == 2 and "retry 2 of 3" in logged[1]
        FlakyCheckout(pool, failures=4)  # more than the policy allows: reported
        with pytest.raises(redis_exceptions.ConnectionError, match="closed by server"):
            if use_async:
                await transport.exchange_async(pool, ping, 1)
            else:
                transport.exchange(pool, ping, 1)
    finally:
        await pool.disconnect() if use_async else pool.disconnect()


def test_backoff_doubles_up_to_the_cap():
    policy = transport.make_retry(5, 0.1, 0.5, for_asyncio=False)
    steps = transport._retry_flow(policy, None, False)
    assert next(steps) == transport._DO
    sleeps = []
    for failure in range(5):
        request = steps.throw(redis_exceptions.ConnectionError(f"reset {failure}"))
        assert request[0] == transport._FAIL
        request = steps.send(None)
        assert request[0] == transport._SLEEP
        sleeps.append(request[1])
        assert steps.send(None) == transport._DO
    assert sleeps == pytest.approx([0.2, 0.4, 0.5, 0.5, 0.5])
    with pytest.raises(StopIteration) as done:
        steps.send("reply")
    assert done.value.value == "reply"
