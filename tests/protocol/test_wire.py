"""``_protocol.wire``: RESP bytes built by hand must be exactly what redis-py would send.

* Encoding (``bulk``, ``bulk_int``, ``command``) is compared byte for byte with redis-py's own
  packers (its pure-Python one and the hiredis one it uses by default).
* Walking packed commands (``argument_spans``, ``arguments``) inverts encoding.
* Reading replies (``read_reply``, ``read_replies_async``) on real connections: every RESP2
  reply type, error replies returned in place, a protocol error standing for every later reply
  (and the connection dropped), one deadline for the whole batch.
"""

from __future__ import annotations

import time

import pytest
import redis
import redis.asyncio as redis_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis import exceptions as redis_exceptions
from redis.connection import Encoder, HiredisRespSerializer, PythonRespSerializer

from feast_dragonfly._protocol import wire

PY_PACKER = PythonRespSerializer(6000, Encoder("utf-8", "strict", False).encode)
HIREDIS_PACKER = HiredisRespSerializer()

# Binary arguments, RESP's own delimiters included; the first one (the command name) must not
# contain a space (redis-py splits "CONFIG GET" into two arguments, we never send such names).
args_strategy = st.lists(st.binary(max_size=40), max_size=8).flatmap(
    lambda rest: (
        st.binary(min_size=1, max_size=12)
        .filter(lambda name: b" " not in name)
        .map(lambda name: [name, *rest])
    )
)


def redis_py_bytes(packer, *args: bytes) -> bytes:
    return b"".join(packer.pack(*args))


@given(args_strategy)
def test_command_equals_redis_pys_packers(args):
    packed = wire.command(*args)
    assert packed == redis_py_bytes(PY_PACKER, *args)
    assert packed == redis_py_bytes(HIREDIS_PACKER, *args)


def test_command_equals_redis_py_for_values_past_its_buffer_cutoff():
    big = bytes(range(256)) * 100  # redis-py sends this one as a separate chunk
    args = (b"HSET", b"key", b"field", big, b"\r\n", b"")
    assert wire.command(*args) == redis_py_bytes(PY_PACKER, *args)


@given(st.binary(max_size=200))
def test_bulk_is_the_one_argument_encoding(data):
    assert wire.bulk(data) == redis_py_bytes(PY_PACKER, b"X", data)[len(b"*2\r\n$1\r\nX\r\n") :]


@given(st.integers(min_value=-(2**63), max_value=2**63 - 1))
def test_bulk_int_is_the_bulk_of_the_decimal_digits(value):
    assert wire.bulk_int(value) == wire.bulk(str(value).encode())
    assert wire.command(b"EXPIRE", b"k", str(value).encode()) == redis_py_bytes(
        PY_PACKER, b"EXPIRE", b"k", value
    )


@given(args_strategy)
def test_arguments_and_spans_invert_command(args):
    packed = wire.command(*args)
    assert wire.arguments(packed) == args
    spans = wire.argument_spans(packed)
    assert [length for _, length in spans] == [len(a) for a in args]
    for (start, length), arg in zip(spans, args):
        assert packed[start - 2 : start] == b"\r\n" and packed[start + length :][:2] == b"\r\n"
        assert packed[start : start + length] == arg


def test_arguments_of_a_command_packed_by_redis_py():
    args = (b"EVALSHA", b"a" * 40, b"1", b"key\r\n$3", b"x" * 7000)
    assert wire.arguments(redis_py_bytes(PY_PACKER, *args)) == list(args)


def test_protocol_error_detection_and_filling():
    error = redis_exceptions.ResponseError("Protocol error: invalid bulk length")
    other = redis_exceptions.ResponseError("WRONGTYPE Operation against a key")
    assert wire.is_protocol_error(error)
    assert not wire.is_protocol_error(other)
    assert not wire.is_protocol_error("Protocol error")  # a bulk reply is not an error
    assert not wire.is_protocol_error(redis_exceptions.ConnectionError("Protocol error"))

    replies: list = [b"OK", other]
    assert not wire.ends_in_protocol_error(replies, 5)
    assert replies == [b"OK", other]  # untouched
    assert not wire.ends_in_protocol_error([], 3)
    replies.append(error)
    assert wire.ends_in_protocol_error(replies, 5)
    assert replies == [b"OK", other, error, error, error]


def test_last_of_each():
    replies = [b"OK", 1, b"OK", 2, b"OK", 3]
    assert wire.last_of_each(replies, 2) == [1, 2, 3]
    assert wire.last_of_each(replies, 1) == replies
    assert wire.last_of_each(replies, 3) == [b"OK", 3]


# --------------------------------------------------------------------------- real replies


@pytest.fixture
def connection(redis_client):
    pool = redis.ConnectionPool(**redis_client.connection_pool.connection_kwargs)
    conn = pool.get_connection()
    yield conn
    pool.disconnect()


def test_read_reply_gives_each_resp2_type_and_errors_in_place(connection):
    commands = [
        (b"SET", b"k", b"v\r\n\x00"),  # simple string
        (b"GET", b"k"),  # bulk string, binary-safe
        (b"GET", b"missing"),  # null bulk
        (b"INCR", b"n"),  # integer
        (b"HSET", b"k", b"f", b"v"),  # error (WRONGTYPE)
        (b"RPUSH", b"l", b"a", b""),  # integer
        (b"LRANGE", b"l", b"0", b"-1"),  # array, with an empty bulk
        (b"LRANGE", b"missing", b"0", b"-1"),  # empty array
        (b"SCAN", b"0", b"MATCH", b"l", b"COUNT", b"100"),  # nested array
        (b"NOSUCHCOMMAND",),  # error
        (b"PING",),  # still in step after two errors
    ]
    connection.send_packed_command([wire.command(*c) for c in commands])
    replies = [wire.read_reply(connection) for _ in commands]
    assert replies[:4] == [b"OK", b"v\r\n\x00", None, 1]
    assert isinstance(replies[4], redis_exceptions.ResponseError)
    assert "WRONGTYPE" in str(replies[4])
    assert replies[5:8] == [2, [b"a", b""], []]
    assert replies[8] == [b"0", [b"l"]]
    assert isinstance(replies[9], redis_exceptions.ResponseError)
    assert replies[10] == b"PONG"


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(max_size=64), min_size=1, max_size=5))
def test_values_round_trip_through_a_real_server(redis_server, values):
    conn = redis.Connection(
        host=redis_server.host,
        port=redis_server.port,
        db=redis_server.db,
        username=redis_server.username,
        password=redis_server.password,
    )
    try:
        keys = [b"wire-rt-%d" % i for i in range(len(values))]
        payload = [wire.command(b"SET", k, v) for k, v in zip(keys, values)]
        payload.append(wire.command(b"MGET", *keys))
        payload.append(wire.command(b"DEL", *keys))
        conn.send_packed_command(payload)
        replies = [wire.read_reply(conn) for _ in payload]
        assert replies == [b"OK"] * len(values) + [values, len(set(keys))]
    finally:
        conn.disconnect()


def async_connection(server, **kwargs) -> redis_asyncio.Connection:
    return redis_asyncio.Connection(
        host=server.host,
        port=server.port,
        db=server.db,
        username=server.username,
        password=server.password,
        **kwargs,
    )


async def test_read_replies_async_reads_count_replies_errors_in_place(redis_client, redis_server):
    conn = async_connection(redis_server, socket_timeout=5)
    try:
        commands = [(b"SET", b"k", b"v"), (b"LPUSH", b"k", b"x"), (b"GET", b"k"), (b"PING",)]
        await conn.send_packed_command([wire.command(*c) for c in commands])
        replies = await wire.read_replies_async(conn, len(commands))
        assert replies[0] == b"OK" and replies[2:] == [b"v", b"PONG"]
        assert isinstance(replies[1], redis_exceptions.ResponseError)
        assert conn.is_connected  # still usable
        await conn.send_packed_command(wire.command(b"GET", b"k"))
        assert await wire.read_replies_async(conn, 1) == [b"v"]
    finally:
        await conn.disconnect()


async def test_read_replies_async_after_a_protocol_error(redis_client, redis_server):
    conn = async_connection(redis_server, socket_timeout=5)
    try:
        bad_bulk_length = b"*1\r\n$abc\r\n"
        await conn.send_packed_command([wire.command(b"PING"), bad_bulk_length, b"*1\r\n"])
        replies = await wire.read_replies_async(conn, 4)
        assert len(replies) == 4
        # Redis answers the PING first; Dragonfly may reject the whole packet at once.
        first = 0 if wire.is_protocol_error(replies[0]) else 1
        assert replies[:first] == [b"PONG"] * first and wire.is_protocol_error(replies[first])
        assert all(reply is replies[first] for reply in replies[first:])
        assert not conn.is_connected  # dropped: the server closes it anyway
    finally:
        await conn.disconnect()


async def test_read_replies_async_has_one_deadline_for_the_batch(redis_client, redis_server):
    conn = async_connection(redis_server, socket_timeout=0.5)
    try:
        await conn.send_packed_command([wire.command(b"PING")])
        started = time.monotonic()
        with pytest.raises(redis_exceptions.TimeoutError, match=str(redis_server.port)):
            await wire.read_replies_async(conn, 2)  # the second reply never comes
        assert 0.4 < time.monotonic() - started < 5
        assert not conn.is_connected  # a late reply must never be read as another's
    finally:
        await conn.disconnect()
