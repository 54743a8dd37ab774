"""RESP, the Redis wire format: encoding commands, walking packed ones, reading replies.

The hot paths skip redis-py's command packing (it re-encodes every field name of every
command) and write pre-encoded bytes instead; everything that builds or takes apart those
bytes lives here, once, for reads, writes, wide views and the cluster's fallback path.
"""

from __future__ import annotations

import asyncio
import math
import sys
from collections.abc import Sequence
from typing import Any

from redis import exceptions as redis_exceptions

if sys.version_info >= (3, 11):
    from asyncio import timeout as _deadline
else:  # redis-py depends on async-timeout there
    from async_timeout import timeout as _deadline

CRLF = b"\r\n"


def bulk(data: bytes) -> bytes:
    """One RESP bulk string."""
    return b"$%d\r\n%b\r\n" % (len(data), data)


def bulk_int(value: int) -> bytes:
    """An integer argument, as the bulk string of its decimal digits."""
    text = b"%d" % value
    return b"$%d\r\n%b\r\n" % (len(text), text)


def command(*args: bytes) -> bytes:
    """A whole command (array of bulk strings)."""
    return b"*%d\r\n" % len(args) + b"".join(bulk(arg) for arg in args)


def argument_spans(packed: bytes) -> list[tuple[int, int]]:
    """``(offset, length)`` of every argument of one packed command."""
    spans: list[tuple[int, int]] = []
    position = packed.index(CRLF) + 2
    while position < len(packed):
        end = packed.index(CRLF, position)
        length = int(packed[position + 1 : end])
        spans.append((end + 2, length))
        position = end + 2 + length + 2
    return spans


def arguments(packed: bytes) -> list[bytes]:
    """One packed command back into its arguments."""
    return [packed[start : start + length] for start, length in argument_spans(packed)]


# --------------------------------------------------------------------------- replies


def read_reply(connection: Any) -> Any:
    """One reply; an error reply is returned (as its exception), not raised, so the replies
    after it can still be read off the socket."""
    try:
        return connection.read_response()
    except redis_exceptions.ResponseError as exc:
        return exc


async def read_replies_async(connection: Any, count: int) -> list[Any]:
    """``count`` replies (error replies in place, as by :func:`read_reply`; after a protocol
    error, that error for every later one) under one deadline of the connection's
    ``socket_timeout`` for the whole batch. redis-py arms a timer per reply, which costs a
    100-row read a quarter of its time; a read with its own (infinite) timeout skips it."""
    out: list[Any] = []
    try:
        async with _deadline(connection.socket_timeout):
            while len(out) < count:
                try:
                    out.append(await connection.read_response(timeout=math.inf))
                except redis_exceptions.ResponseError as exc:
                    out.append(exc)
                if ends_in_protocol_error(out, count):
                    await connection.disconnect()
                    break
    except asyncio.TimeoutError:
        await connection.disconnect(nowait=True)
        raise redis_exceptions.TimeoutError(
            f"Timeout reading from {connection.host}:{connection.port}"
        ) from None
    return out


def is_protocol_error(reply: Any) -> bool:
    """The server could not parse a command (e.g. an argument over its size limit). It
    answers once and closes the connection: the commands after it are never run."""
    return isinstance(reply, redis_exceptions.ResponseError) and "Protocol error" in str(reply)


def ends_in_protocol_error(replies: list[Any], expected: int) -> bool:
    """Whether the last reply read is a protocol error; if so the replies that will never come
    are filled in with it (every later command is unanswered) and the caller must stop
    reading and drop the connection."""
    if not replies or not is_protocol_error(replies[-1]):
        return False
    replies.extend([replies[-1]] * (expected - len(replies)))
    return True


def last_of_each(replies: Sequence[Any], per: int) -> list[Any]:
    """Every ``per``-th reply: the answers of commands each sent after ``per - 1`` others
    (``ASKING`` before a redirected command)."""
    return list(replies[per - 1 :: per])


def out_of_memory(reply: Any) -> bool:
    """Whether an error reply says the server is full: Redis and Valkey answer ``OOM command
    not allowed when used memory > 'maxmemory'``, Dragonfly ``Out of memory`` (both also
    inside a script's error, which is how a write meets them)."""
    if isinstance(reply, redis_exceptions.OutOfMemoryError):
        return True
    if not isinstance(reply, redis_exceptions.ResponseError):
        return False
    text = str(reply)
    return "OOM command not allowed" in text or "Out of memory" in text
