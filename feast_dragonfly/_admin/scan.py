"""Where a migration reads and writes: every master of a deployment, its keys, its hashes.

``migrate`` and ``stats`` walk a whole keyspace. On a Redis Cluster each master holds its own
part of it, so SCAN runs on every master separately (one resumable cursor each) and every key
is read from — and written to — the master that serves its slot, on that master's own pool,
with the same packed-RESP round trips the store uses (``transport.exchange``).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable, Iterator, Sequence
from functools import cache
from typing import Any, NamedTuple, TypeVar

from feast_dragonfly._protocol import keys as _keys
from feast_dragonfly._protocol import script as _script
from feast_dragonfly._protocol import wire
from feast_dragonfly._protocol.deployment import Deployment, Endpoint, client_settings, connect

T = TypeVar("T")


def by_endpoint(items: Iterable[tuple[Endpoint, T]]) -> list[tuple[Endpoint, list[T]]]:
    """``(endpoint, item)`` pairs grouped per endpoint, in first-seen order (one round trip
    per master)."""
    groups: dict[str, tuple[Endpoint, list[T]]] = {}
    for endpoint, item in items:
        groups.setdefault(endpoint.name, (endpoint, []))[1].append(item)
    return list(groups.values())


def open_deployment(
    connection_string: str, redis_type: str, *, connections: int, sentinel_master: str
) -> Deployment:
    """Parse, connect and PING every master (errors say where, never the password): pools
    of ``connections`` (+1 for the scan), and a long socket timeout for big batches."""
    settings = client_settings(
        connection_string,
        redis_type,
        sentinel_master,
        max_connections=max(2, connections + 1),
        socket_timeout=60.0,
    )
    return connect(settings)


def same_server(source: Deployment, target: Deployment) -> bool:
    """Whether source and target are one database of one server (the copy would merge a key
    with itself). Asked of the servers themselves, since ``localhost`` and ``127.0.0.1`` — or
    a DNS alias — look different: a source connection is given a unique client name, and the
    target is asked whether it sees that client. Servers that hide CLIENT LIST fall back to
    comparing addresses."""
    if source.db != target.db:
        return False
    source_names = {e.name for e in source.endpoints}
    if source_names & {e.name for e in target.endpoints}:
        return True
    token = f"feast-dragonfly-migrate-{uuid.uuid4().hex}"
    for endpoint in source.endpoints:
        connection = endpoint.client.connection_pool.get_connection()
        try:
            connection.send_command("CLIENT", "SETNAME", token)
            connection.read_response()
            for other in target.endpoints:
                try:
                    listing = other.client.execute_command("CLIENT", "LIST")
                except Exception:  # noqa: BLE001 - not allowed there: addresses decide
                    continue
                text = listing.decode() if isinstance(listing, bytes) else str(listing)
                if token in text:
                    return True
        finally:
            connection.disconnect()  # never reuse a connection with our name on it
            endpoint.client.connection_pool.release(connection)
    return False


# --------------------------------------------------------------------------- keys


def project_pattern(project: str) -> bytes:
    """SCAN MATCH pattern for a project's keys (a superset: each key is checked after)."""
    return b"*" + _keys.glob_escape(project.encode("utf-8"))


def project_and_records_pattern(project: str) -> bytes:
    """SCAN MATCH pattern for a project's hash keys (``<entity><project>``) and its compact
    records (``<entity><project>:<view>``) at once: one pass over the keyspace finds both."""
    return b"*" + _keys.glob_escape(project.encode("utf-8")) + b"*"


def scan_page(endpoint: Endpoint, cursor: int, pattern: bytes, count: int) -> tuple[int, list]:
    """One SCAN call: the next cursor (0: done) and the keys it returned."""
    reply = endpoint.client.execute_command("SCAN", cursor, "MATCH", pattern, "COUNT", count)
    next_cursor, keys = reply
    return int(next_cursor), list(keys)


def scan_all(endpoint: Endpoint, pattern: bytes, count: int) -> Iterator[list[bytes]]:
    """Every page of a SCAN from the start, until the cursor comes back to 0."""
    cursor = 0
    while True:
        cursor, keys = scan_page(endpoint, cursor, pattern, count)
        yield keys
        if cursor == 0:
            return


def project_of(key: bytes) -> bytes | None:
    """The project suffix of a Feast hash key (None: not a serialized entity key + name)."""
    length = _keys.entity_part_length(key)
    if length is None or length >= len(key):
        return None
    return key[length:]


def read_hashes(
    endpoint: Endpoint, keys: Sequence[bytes], *, scripted: bool = False
) -> list[tuple[Any, Any]]:
    """``(HGETALL reply, PTTL)`` per key in one round trip; a flat field/value list, or the
    error reply (WRONGTYPE) as an exception object. ``scripted``: through
    ``migrate_read.lua``, one reply per ``READ_KEYS_PER_CALL`` keys instead of two per key
    (:class:`ScriptRefused` when the server does not run it)."""
    if not keys:
        return []
    if scripted:
        return _read_scripted(endpoint, keys)
    commands = []
    for key in keys:
        commands.append(wire.command(b"HGETALL", key))
        commands.append(wire.command(b"PTTL", key))
    replies = endpoint.exchange(commands, 2 * len(keys))
    return [(replies[i], replies[i + 1]) for i in range(0, len(replies), 2)]


READ_SOURCE = _script.script_source(
    "migrate_read.lua", package="feast_dragonfly._admin", shared=False
)
READ_KEYS_PER_CALL = 64


class ScriptRefused(Exception):
    """The source does not run a read script (scripting disabled or denied by an ACL)."""


@cache
def _sha(source: str) -> bytes:
    return hashlib.sha1(source.encode()).hexdigest().encode()


def _run_read_script(
    endpoint: Endpoint, source: str, keys: Sequence[bytes], keys_per_call: int
) -> list[Any]:
    """One read-only script over ``keys``, ``keys_per_call`` per call, in one round trip
    (loaded and resent once on NOSCRIPT); the calls' replies, in order."""
    sha = _sha(source)
    step = keys_per_call
    calls = [
        wire.command(b"EVALSHA", sha, b"%d" % len(keys[i : i + step]), *keys[i : i + step])
        for i in range(0, len(keys), step)
    ]
    replies = endpoint.exchange(calls, len(calls))
    if any(_script.is_noscript(r) for r in replies):
        loaded = endpoint.exchange([wire.command(b"SCRIPT", b"LOAD", source.encode())], 1)
        if isinstance(loaded[0], Exception):
            raise ScriptRefused(str(loaded[0]))
        replies = endpoint.exchange(calls, len(calls))
    for reply in replies:
        if isinstance(reply, Exception):
            raise ScriptRefused(str(reply))
    return replies


def _read_scripted(endpoint: Endpoint, keys: Sequence[bytes]) -> list[tuple[Any, Any]]:
    out: list[tuple[Any, Any]] = []
    for reply in _run_read_script(endpoint, READ_SOURCE, keys, READ_KEYS_PER_CALL):
        out.extend((reply[i + 1], reply[i]) for i in range(0, len(reply), 2))
    return out


DUMP_SOURCE = _script.script_source("migrate_dump.lua", package="feast_dragonfly._admin")

#: Statuses of ``migrate_dump.lua`` besides 0 (copy it).
NOT_A_HASH, MALFORMED_TIMESTAMP, NO_VIEWS, GONE = 1, 2, 3, 4


class Dumped(NamedTuple):
    """One source key read for a whole-key copy: see ``migrate_dump.lua``."""

    pttl: int
    status: int
    views: int
    payload: bytes | None


def read_dumps(
    endpoint: Endpoint, keys: Sequence[bytes], *, keys_per_call: int = READ_KEYS_PER_CALL
) -> list[Dumped]:
    """``migrate_dump.lua`` over ``keys`` in one round trip (:class:`ScriptRefused` when the
    server does not run it). ``keys_per_call``: 1 on a cluster node, whose script keys must
    share a slot."""
    if not keys:
        return []
    out: list[Dumped] = []
    for reply in _run_read_script(endpoint, DUMP_SOURCE, keys, keys_per_call):
        out.extend(Dumped(*reply[i : i + 4]) for i in range(0, len(reply), 4))
    return out


def present_on(deployment: Deployment, keys: Sequence[bytes]) -> list[bool]:
    """Whether each key exists on ``deployment`` (one pipelined ``EXISTS`` per master)."""
    present = [False] * len(keys)
    routed = ((deployment.endpoint_for(key), index) for index, key in enumerate(keys))
    for endpoint, indices in by_endpoint(routed):
        replies = endpoint.exchange(
            [wire.command(b"EXISTS", keys[i]) for i in indices], len(indices)
        )
        for index, reply in zip(indices, replies):
            # an error reply (say, EXISTS denied): the merge path, which reports what it meets
            present[index] = isinstance(reply, Exception) or bool(reply)
    return present


def pairs(flat: Any) -> Iterator[tuple[bytes, bytes]]:
    """An HGETALL reply as (field, value) pairs: a flat list (RESP2) or a map (RESP3)."""
    if isinstance(flat, dict):
        return iter(flat.items())
    return zip(flat[0::2], flat[1::2])


def memory_usage(endpoint: Endpoint, keys: Sequence[bytes]) -> list[int | None]:
    """``MEMORY USAGE`` of each key (None when the server refuses or the key is gone)."""
    if not keys:
        return []
    replies = endpoint.exchange([wire.command(b"MEMORY", b"USAGE", k) for k in keys], len(keys))
    return [reply if isinstance(reply, int) else None for reply in replies]
