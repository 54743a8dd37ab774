"""``_protocol.script``: the event-time write script, its packed calls, loading, and replies.

* The source is ``event_time.lua`` + the named file (unless ``shared=False``), its ``SHA`` is
  the SHA-1 a server reports for ``LOAD_COMMAND``.
* ``pack_call`` / ``header`` lay out ``EVALSHA sha n keys... ttl ts_field rows...`` exactly as
  the Lua script reads it: sent to the real server, the rows land in the hashes, guarded by
  event time.
* After ``SCRIPT FLUSH`` the server answers ``NOSCRIPT``; ``needs_load`` finds those replies,
  ``LOAD_COMMAND`` restores the script and ``check_loaded`` accepts that.
* ``rows_written`` sums replies and turns the first error into an error naming the entity and
  the view (real ``WRONGTYPE`` and malformed-timestamp replies, and constructed ones for
  ACL, scripting and protocol errors); ``with_size_hint`` names an oversized value's row.
"""

from __future__ import annotations

import hashlib
from importlib import resources

import pyarrow as pa
import pytest
from redis import exceptions as redis_exceptions
from store_kit import hash_key

from feast_dragonfly._protocol import script, wire
from feast_dragonfly._protocol.keys import feature_field, timestamp_field
from feast_dragonfly.errors import DragonflyDataError, DragonflyScriptingError

VIEW = "drivers"
TS_FIELD = timestamp_field(VIEW)


def lua(name: str) -> str:
    return resources.files("feast_dragonfly._protocol").joinpath(name).read_text()


def stamp(seconds: int) -> bytes:
    """A serialized protobuf Timestamp with only ``seconds`` set (varint field 1)."""
    out, value = bytearray([0x08]), seconds
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def make_call(rows: list[tuple[bytes, int, dict[bytes, bytes]]], ttl: int | None = None):
    """A ScriptCall for ``(key, seconds, {field: value})`` rows, built with pack_call."""
    body_args: list[bytes] = []
    for _key, seconds, values in rows:
        pairs = [part for item in values.items() for part in item]
        body_args += [b"%d" % seconds, b"0", b"%d" % (2 + len(pairs)), TS_FIELD, stamp(seconds)]
        body_args += pairs
    keys = [key for key, _, _ in rows]
    command = script.pack_call(
        b"".join(wire.bulk(k) for k in keys),
        len(keys),
        script.header(ttl, TS_FIELD),
        b"".join(wire.bulk(a) for a in body_args),
        len(body_args),
    )
    return script.ScriptCall(command, keys, len(keys))


def send(client, *calls) -> list:
    """Each call's reply, errors returned in place (as the write path reads them)."""
    connection = client.connection_pool.get_connection()
    try:
        connection.send_packed_command([call.command for call in calls])
        return [wire.read_reply(connection) for _ in calls]
    finally:
        client.connection_pool.release(connection)


def test_source_is_the_shared_helpers_then_the_script():
    assert script.script_source("event_time_write.lua") == script.SOURCE
    assert script.SOURCE == lua("event_time.lua") + lua("event_time_write.lua")
    assert script.script_source("event_time_write.lua", shared=False) == lua("event_time_write.lua")
    own_package = script.script_source(
        "event_time.lua", package="feast_dragonfly._protocol", shared=False
    )
    assert own_package == lua("event_time.lua")
    with pytest.raises(FileNotFoundError):
        script.script_source("no_such_script.lua")


def test_sha_and_load_command_match_the_server(redis_client):
    assert script.SHA == hashlib.sha1(script.SOURCE.encode()).hexdigest()
    assert wire.arguments(script.LOAD_COMMAND) == [b"SCRIPT", b"LOAD", script.SOURCE.encode()]
    assert redis_client.script_load(script.SOURCE) == script.SHA


def test_pack_call_lays_out_what_the_script_reads(redis_client):
    one, two = hash_key(1), hash_key(2)
    f = feature_field(VIEW, "trips")
    call = make_call([(one, 100, {f: b"v1"}), (two, 100, {f: b"v2"})], ttl=3600)
    args = wire.arguments(call.command)
    assert args[:7] == [b"EVALSHA", script.SHA.encode(), b"2", one, two, b"3600", TS_FIELD]
    assert args[7:] == [b"100", b"0", b"4", TS_FIELD, stamp(100), f, b"v1"] + [
        b"100", b"0", b"4", TS_FIELD, stamp(100), f, b"v2",
    ]  # fmt: skip
    assert script.header(None, TS_FIELD) == wire.bulk(b"0") + wire.bulk(TS_FIELD)
    assert call.rows == 2 and call.key(1) == two

    redis_client.script_load(script.SOURCE)
    assert script.rows_written([call], send(redis_client, call), VIEW) == 2
    assert redis_client.hgetall(two) == {TS_FIELD: stamp(100), f: b"v2"}
    assert 3500 < redis_client.ttl(one) <= 3600
    older = make_call([(one, 99, {f: b"old"}), (two, 101, {f: b"new"})])
    assert script.rows_written([older], send(redis_client, older), VIEW) == 1
    assert redis_client.hget(one, f) == b"v1" and redis_client.hget(two, f) == b"new"


def test_noscript_is_detected_and_loading_fixes_it(redis_client):
    f = feature_field(VIEW, "trips")
    call = make_call([(hash_key(5), 10, {f: b"x"})])
    redis_client.script_load(script.SOURCE)
    redis_client.script_flush()
    replies = send(redis_client, call, call)
    assert all(script.is_noscript(reply) for reply in replies)
    assert script.needs_load([1, *replies, b"OK"]) == [1, 2]
    assert script.needs_load([1, 0, redis_exceptions.ResponseError("WRONGTYPE")]) == []
    assert script.is_noscript(redis_exceptions.ResponseError("NOSCRIPT No matching script"))

    connection = redis_client.connection_pool.get_connection()
    try:
        connection.send_packed_command([script.LOAD_COMMAND])
        loaded = wire.read_reply(connection)
    finally:
        redis_client.connection_pool.release(connection)
    script.check_loaded(loaded)
    assert loaded == script.SHA.encode()
    assert send(redis_client, call, call) == [1, 0]  # resent: the second is event-time guarded
    with pytest.raises(DragonflyScriptingError, match="Lua scripting"):
        script.check_loaded(redis_exceptions.ResponseError("ERR scripting is disabled"))


def test_real_error_replies_name_the_entity_and_the_view(redis_client):
    f = feature_field(VIEW, "trips")
    redis_client.script_load(script.SOURCE)
    redis_client.set(hash_key(2), b"not a hash")
    call = make_call([(hash_key(1), 10, {f: b"a"}), (hash_key(2), 10, {f: b"b"})])
    replies = send(redis_client, call)
    with pytest.raises(DragonflyDataError) as caught:
        script.rows_written([call], replies, VIEW)
    message = str(caught.value)
    assert "'drivers'" in message and "driver_id=2" in message and "WRONGTYPE" in message
    assert "non-hash value" in message and "left unchanged" in message
    assert redis_client.get(hash_key(2)) == b"not a hash"

    redis_client.delete(hash_key(2))
    redis_client.hset(hash_key(3), TS_FIELD, b"\xff garbage")
    bad = make_call([(hash_key(3), 10, {f: b"c"})])
    with pytest.raises(DragonflyDataError, match=r"driver_id=3: malformed stored timestamp"):
        script.rows_written([bad], send(redis_client, bad), VIEW)


def test_constructed_error_replies_are_translated():
    call = make_call([(hash_key(1), 1, {b"f": b"v"})])

    def error_for(reply):
        with pytest.raises(Exception) as caught:
            script.rows_written([call, call], [1, reply], VIEW)
        return caught.value

    assert script.rows_written([call, call], [1, 0], VIEW) == 1
    reset = redis_exceptions.ConnectionError("Connection reset")
    assert error_for(reset) is reset
    stray = error_for(redis_exceptions.ResponseError("FEASTROW 9 WRONGTYPE x"))
    assert "an entity of this batch" in str(stray)
    acl_key = error_for(redis_exceptions.NoPermissionError("NOPERM No permissions to access a key"))
    assert isinstance(acl_key, DragonflyDataError) and "key patterns" in str(acl_key)
    for text in ("NOPERM this user has no permissions to run 'evalsha'", "NOSCRIPT gone",
                 "ERR unknown command 'EVALSHA'"):  # fmt: skip
        assert isinstance(error_for(redis_exceptions.ResponseError(text)), DragonflyScriptingError)
    other = error_for(redis_exceptions.ResponseError("ERR something else"))
    assert type(other) is DragonflyDataError
    assert str(other) == "writing feature view 'drivers' failed: ERR something else"
    # A full server's refusal goes back as it is: Deployment.errors() names the server's limit.
    full = redis_exceptions.ResponseError("OOM command not allowed when used memory > 'maxmemory'")
    assert error_for(full) is full
    dragonfly_full = redis_exceptions.ResponseError("Out of memory")
    assert error_for(dragonfly_full) is dragonfly_full


def test_oversized_values_are_named_by_their_row():
    big = b"x" * script.LARGE_VALUE
    small = make_call([(hash_key(1), 1, {b"f": b"v"})])
    large = make_call([(hash_key(1), 1, {b"f": b"v"}), (hash_key(2), 1, {b"f": big})])
    protocol = redis_exceptions.ResponseError("Protocol error: invalid bulk length")
    with pytest.raises(DragonflyDataError) as caught:
        script.rows_written([small, large], [protocol, protocol], VIEW)
    assert f"{script.LARGE_VALUE:,} bytes, for entity driver_id=2" in str(caught.value)

    reset = redis_exceptions.ConnectionError("Connection reset by peer")
    assert script.with_size_hint(reset, [small]) is reset
    hinted = script.with_size_hint(reset, [small, large])
    assert type(hinted) is redis_exceptions.ConnectionError
    assert str(hinted).startswith("Connection reset by peer — while sending a value of 1,048,576")
    assert "entity driver_id=2" in str(hinted) and "proto-max-bulk-len" in str(hinted)
    denied = redis_exceptions.AuthenticationError("WRONGPASS")
    assert script.with_size_hint(denied, [large]) is denied
    huge_key = make_call([(big, 1, {b"f": b"v"})])
    assert "a row of this batch" in str(script.with_size_hint(reset, [huge_key]))


def test_script_call_keys_from_an_arrow_array():
    keys = pa.array([hash_key(1), hash_key(2)], pa.binary())
    call = script.ScriptCall(b"", keys, progress_rows=5)
    assert call.rows == 2 and call.key(1) == hash_key(2) and isinstance(call.key(0), bytes)
