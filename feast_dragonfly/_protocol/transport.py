"""Send pre-packed RESP commands on one pooled connection, retrying transient failures.

The read and write hot paths skip redis-py's command machinery (and with it redis-py's own
retry loop): they write packed bytes with ``send_packed_command`` and read the replies back.
This module puts the retry back, in one place, for both paths, sync and async.

Resending is safe for everything sent through here: reads are idempotent, and every write is
an event-time-guarded script call, so a call the server already applied is skipped the second
time (the stored row is then as new as the resent one).

The policy is the connections' own ``retry`` (set through the pool's connection kwargs), so
one ``Retry`` object governs our commands and redis-py's (PING, SCAN, HDEL) alike.
:func:`make_retry` builds it: exponential backoff, and only for *transient* failures — a
refused password, a certificate that does not verify or a full pool are reported at once.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable, Sequence
from typing import Any

import redis.asyncio.retry as redis_async_retry
from redis import exceptions as redis_exceptions
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.retry import Retry

from feast_dragonfly._protocol import flow, wire
from feast_dragonfly._protocol.flow import Flow

logger = logging.getLogger("feast_dragonfly")


def is_transient(error: BaseException) -> bool:
    """Whether trying again on a fresh connection can help."""
    if isinstance(error, redis_exceptions.AuthenticationError):
        return False  # a wrong password stays wrong
    context = error.__context__ or error.__cause__
    if isinstance(context, ssl.SSLCertVerificationError):
        return False  # so does a certificate that does not verify
    if isinstance(context, ssl.SSLError) and "CERTIFICATE" in str(context):
        return False  # ... or the server's refusal of ours (or of its absence)
    if isinstance(error, redis_exceptions.ConnectionError) and "No connection available" in str(
        error
    ):
        return False  # the pool already waited socket_timeout for a free connection
    return True


#: Set on an error a retry loop gave up on after spending every retry. A loop that meets it
#: again (ours around a checkout or an exchange, whose ``connect`` ran the same policy
#: inside) passes it on instead of multiplying the attempts the user configured.
_RETRIES_SPENT = "_feast_dragonfly_retries_spent"


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


_DO = "do"
_FAIL = "fail"
_SLEEP = "sleep"


def _retry_flow(
    retry: Any,
    is_retryable: Callable[[Exception], bool] | None,
    with_failure_count: bool,
) -> Flow[Any]:
    """redis-py's retry loop, minus its I/O: yields ``_DO`` (run the operation), ``(_FAIL,
    args)`` (redis-py's ``fail`` callback: drop the connection) and ``(_SLEEP, seconds)``."""
    retry._backoff.reset()
    failures = 0
    while True:
        try:
            return (yield _DO)
        except retry._supported_errors as error:
            if (
                not is_transient(error)
                or getattr(error, _RETRIES_SPENT, False)
                or (is_retryable and not is_retryable(error))
            ):
                raise
            failures += 1
            yield (_FAIL, (error, failures) if with_failure_count else (error,))
            if 0 <= retry._retries < failures:
                setattr(error, _RETRIES_SPENT, True)
                raise
            delay = retry._backoff.compute(failures)
            _log_retry(error, failures, retry._retries, delay)
            if delay > 0:
                yield (_SLEEP, delay)


class TransientRetry(Retry):
    """redis-py's ``Retry`` that gives up at once on non-transient errors (see
    :func:`is_transient`), logs each retry, and does not retry again what a loop inside it
    gave up on. Own loop, so it behaves the same on every supported redis-py."""

    def call_with_retry(  # type: ignore[override]
        self,
        do: Callable[[], Any],
        fail: Callable[..., Any],
        is_retryable: Callable[[Exception], bool] | None = None,
        with_failure_count: bool = False,
    ) -> Any:
        def send(request: Any) -> Any:
            if request == _DO:
                return do()
            if request[0] == _FAIL:
                return fail(*request[1])
            time.sleep(request[1])

        return flow.run(_retry_flow(self, is_retryable, with_failure_count), send)


class AsyncTransientRetry(redis_async_retry.Retry):
    """:class:`TransientRetry` for redis-py's asyncio connections (which take their own
    ``Retry`` class, whose ``do`` and ``fail`` are awaited)."""

    async def call_with_retry(  # type: ignore[override]
        self,
        do: Callable[[], Any],
        fail: Callable[..., Any],
        is_retryable: Callable[[Exception], bool] | None = None,
        with_failure_count: bool = False,
    ) -> Any:
        async def send(request: Any) -> Any:
            if request == _DO:
                return await do()
            if request[0] == _FAIL:
                return await fail(*request[1])
            await asyncio.sleep(request[1])

        return await flow.run_async(_retry_flow(self, is_retryable, with_failure_count), send)


def _log_retry(error: BaseException, failure: int, retries: int, delay: float) -> None:
    # redis-py's connection errors name host:port, never the password.
    logger.warning(
        "transient server error (%s); retry %d of %d in %.3f s",
        _describe(error),
        failure,
        retries,
        delay,
    )


def make_retry(
    attempts: int, backoff_base: float, backoff_cap: float, *, for_asyncio: bool
) -> Retry | redis_async_retry.Retry:
    """The retry policy of a pool's connections: ``attempts`` retries after the first try,
    waiting ``min(backoff_cap, backoff_base * 2**n)`` seconds before the n-th. Retried:
    connection errors (refused, reset, closed by the server, a server still loading its data)
    — timeouts too when the connection string sets ``retry_on_timeout=true``."""
    backoff = ExponentialBackoff(cap=backoff_cap, base=backoff_base) if attempts else NoBackoff()
    errors = (redis_exceptions.ConnectionError,)
    if for_asyncio:
        return AsyncTransientRetry(backoff, attempts, errors)
    return TransientRetry(backoff, attempts, errors)


# --------------------------------------------------------------------------- the exchange


def _retry_of(connection: Any) -> Any:
    return getattr(connection, "retry", None) or Retry(NoBackoff(), 0)


def _checkout(pool: Any) -> Any:
    """``pool.get_connection()`` under the pool's retry policy. redis-py's pool reconnects an
    idle connection it finds dropped, but when the fresh one is dropped too before the pool
    has checked it, the pool raises at once, outside any retry (a connection-dropping storm
    does that); a server that cannot be reached has already spent the policy in ``connect``
    and is reported at once."""
    retry = pool.connection_kwargs.get("retry") or Retry(NoBackoff(), 0)
    return retry.call_with_retry(pool.get_connection, lambda _error: None)


async def _checkout_async(pool: Any) -> Any:
    """The asyncio twin of :func:`_checkout`."""

    async def nothing_to_drop(_error: BaseException) -> None:
        return None

    retry = pool.connection_kwargs.get("retry") or redis_async_retry.Retry(NoBackoff(), 0)
    return await retry.call_with_retry(pool.get_connection, nothing_to_drop)


def exchange(
    pool: Any, payload: Sequence[bytes], replies: int, *, check_health: bool = True
) -> list[Any]:
    """Write ``payload`` (packed commands) on one pooled connection and read ``replies``
    replies; error replies come back as exception objects, in place (after a protocol
    error, that error stands for every later reply). A transient failure drops the
    connection and resends everything on a fresh one, per the connection's retry policy."""

    def attempt() -> list[Any]:
        connection.send_packed_command(payload, check_health=check_health)
        out: list[Any] = []
        while len(out) < replies:
            out.append(wire.read_reply(connection))
            if wire.ends_in_protocol_error(out, replies):
                connection.disconnect()
                break
        return out

    connection = _checkout(pool)
    try:
        return _retry_of(connection).call_with_retry(
            attempt, lambda _error: connection.disconnect()
        )
    except BaseException:
        connection.disconnect()  # replies may still be on the socket: never reuse it
        raise
    finally:
        pool.release(connection)


async def exchange_async(
    pool: Any, payload: Sequence[bytes], replies: int, *, check_health: bool = True
) -> list[Any]:
    """The asyncio twin of :func:`exchange`."""

    async def attempt() -> list[Any]:
        await connection.send_packed_command(payload, check_health=check_health)
        return await wire.read_replies_async(connection, replies)

    async def drop(_error: BaseException) -> None:
        await connection.disconnect()

    connection = await _checkout_async(pool)
    try:
        # redis-py's asyncio connections always carry a retry policy (no retries by default).
        return await connection.retry.call_with_retry(attempt, drop)
    except BaseException:
        await connection.disconnect()
        raise
    finally:
        await pool.release(connection)
