"""The event-time write scripts: their calls, loading them, and what their replies mean.

Every write of the normal path is one ``EVALSHA`` of ``event_time_write.lua`` (Feast's hash
layout) or ``compact_write.lua`` (one record per entity and view): the comparison with the
stored event time runs on the server, atomically for the keys of one call. Standalone
servers, Sentinel masters and cluster nodes all speak to it through this module: how a call is
packed, how the script is (re)loaded on a server that lacks it (``NOSCRIPT``: after a restart
or a failover), and how a reply becomes rows written or an error that names the entity.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

from redis import exceptions as redis_exceptions

from feast_dragonfly._protocol import wire
from feast_dragonfly._protocol.keys import describe_key
from feast_dragonfly.errors import DragonflyDataError, DragonflyScriptingError


def script_source(
    name: str, *, package: str = "feast_dragonfly._protocol", shared: bool = True
) -> str:
    """A server-side script: ``event_time.lua`` (the shared timestamp helpers, unless
    ``shared`` is false) + ``name`` from the Lua files of ``package`` (the subpackage whose
    concern the script is). Redis has no ``require``, so the scripts share code by being sent
    together."""
    source = resources.files(package).joinpath(name).read_text()
    if not shared:
        return source
    return (
        resources.files("feast_dragonfly._protocol").joinpath("event_time.lua").read_text() + source
    )


@dataclass(frozen=True)
class Script:
    """A write script as the server knows it: its source, its SHA1, the packed head of every
    call (``EVALSHA <sha>``) and the packed ``SCRIPT LOAD`` that teaches it to a server."""

    source: str
    sha: str
    call_head: bytes
    load_command: bytes

    @classmethod
    def named(cls, name: str, *, shared: bool = True) -> Script:
        """The script in ``name`` (with the shared helpers unless ``shared`` is false)."""
        source = script_source(name, shared=shared)
        sha = hashlib.sha1(source.encode()).hexdigest()
        return cls(
            source=source,
            sha=sha,
            call_head=b"$7\r\nEVALSHA\r\n$40\r\n" + sha.encode() + wire.CRLF,
            load_command=wire.command(b"SCRIPT", b"LOAD", source.encode()),
        )


#: Rows into Feast's hash layout (``event_time_write.lua``).
EVENT_TIME_WRITE = Script.named("event_time_write.lua")
#: Records of the compact layout (``compact_write.lua``).
COMPACT_WRITE = Script.named("compact_write.lua", shared=False)

#: The hash-layout script's source, SHA1 and packed ``SCRIPT LOAD`` (the store's default).
SOURCE, SHA, LOAD_COMMAND = (
    EVENT_TIME_WRITE.source,
    EVENT_TIME_WRITE.sha,
    EVENT_TIME_WRITE.load_command,
)

#: A value this large may be over the server's argument limit (Redis accepts no lower
#: proto-max-bulk-len than 1 MiB).
LARGE_VALUE = 1 << 20


@dataclass
class ScriptCall:
    """One packed ``EVALSHA``: the rows' keys are what error messages name."""

    command: bytes
    keys: Sequence[Any]  # hash keys (bytes, or an Arrow binary array for the columnar path)
    progress_rows: int  # rows reported to ``progress`` once this call is done
    script: Script = EVENT_TIME_WRITE  # what a server lacking it must load (NOSCRIPT)

    @property
    def rows(self) -> int:
        return len(self.keys)

    def key(self, index: int) -> bytes:
        key = self.keys[index]
        return key if isinstance(key, bytes) else key.as_py()  # an Arrow binary scalar


def pack_call(
    keys_resp: bytes,
    n_keys: int,
    header: bytes,
    body: bytes,
    n_body_args: int,
    script: Script = EVENT_TIME_WRITE,
    n_header_args: int = 2,
) -> bytes:
    """``EVALSHA sha n_keys keys... header body``; ``keys_resp``, ``header`` (``n_header_args``
    arguments) and ``body`` already RESP."""
    total = 3 + n_keys + n_header_args + n_body_args
    return b"*%d\r\n%b%b%b%b%b" % (
        total,
        script.call_head,
        wire.bulk_int(n_keys),
        keys_resp,
        header,
        body,
    )


def header(ttl_seconds: int | None, ts_field: bytes) -> bytes:
    """The arguments every call starts with: the key TTL and the view's timestamp field."""
    return wire.bulk_int(int(ttl_seconds or 0)) + wire.bulk(ts_field)


# --------------------------------------------------------------------------- loading


def is_noscript(reply: Any) -> bool:
    """The server does not have the script (yet, or any more)."""
    return isinstance(reply, redis_exceptions.NoScriptError) or (
        isinstance(reply, redis_exceptions.ResponseError) and str(reply).startswith("NOSCRIPT")
    )


def scripts_to_load(calls: Sequence[ScriptCall], indices: Sequence[int]) -> list[Script]:
    """The distinct scripts of the calls at ``indices`` (those that met ``NOSCRIPT``)."""
    return list({calls[i].script.sha: calls[i].script for i in indices}.values())


def needs_load(replies: Sequence[Any]) -> list[int]:
    """Indices of the replies that ask for the script to be loaded and the call resent (safe:
    every call is event-time guarded, so one already applied is skipped the second time)."""
    return [index for index, reply in enumerate(replies) if is_noscript(reply)]


def check_loaded(reply: Any) -> None:
    """Raise if ``SCRIPT LOAD`` was refused."""
    if isinstance(reply, Exception):
        raise scripting_refused(reply)


def scripting_refused(exc: Exception) -> DragonflyScriptingError:
    return DragonflyScriptingError(
        f"the server refused the event-time-safe write script ({exc}); feast-dragonfly needs "
        "Lua scripting (EVALSHA / SCRIPT LOAD) enabled and allowed for this user"
    )


# --------------------------------------------------------------------------- replies


def rows_written(calls: Sequence[ScriptCall], replies: Sequence[Any], view_name: str) -> int:
    """Rows the server wrote for these calls; the first error reply raised as a clear error."""
    written = 0
    for call, reply in zip(calls, replies):
        if isinstance(reply, Exception):
            if wire.is_protocol_error(reply):
                raise _oversized_error(calls, str(reply), view_name)
            raise _reply_error(call, reply, view_name)
        written += int(reply)
    return written


def _reply_error(call: ScriptCall, reply: Exception, view_name: str) -> Exception:
    if isinstance(reply, (redis_exceptions.ConnectionError, redis_exceptions.TimeoutError)):
        return reply
    if wire.out_of_memory(reply):
        return reply  # a full server: Deployment.errors() names it and its limit
    text = str(reply)
    marker = text.find("FEASTROW ")
    if marker >= 0:
        index_text, _, reason = text[marker + len("FEASTROW ") :].partition(" ")
        try:
            entity = describe_key(call.key(int(index_text) - 1))
        except (ValueError, IndexError):
            entity = "an entity of this batch"
        hint = ""
        if "WRONGTYPE" in reason:
            hint = (
                " — the key holds a non-string value, not a compact record"
                if call.script is COMPACT_WRITE
                else " — the key holds a non-hash value written by something other than Feast"
            )
        return DragonflyDataError(
            f"cannot write feature view '{view_name}' for {entity}: {reason}{hint}; "
            "stored data for that key was left unchanged"
        )
    lowered = text.lower()
    denied = isinstance(reply, redis_exceptions.NoPermissionError) or "NOPERM" in text
    if denied and " key" in lowered:
        return DragonflyDataError(
            f"writing feature view '{view_name}' was denied by the server: {text} "
            "(check the ACL user's key patterns)"
        )
    if denied or is_noscript(reply) or "unknown command" in lowered or "permission" in lowered:
        return scripting_refused(reply)
    return DragonflyDataError(f"writing feature view '{view_name}' failed: {text}")


def with_size_hint(
    exc: redis_exceptions.ConnectionError, calls: Sequence[ScriptCall]
) -> redis_exceptions.ConnectionError:
    """A server that refuses an oversized argument may reset the connection before its error
    reply arrives: when the calls carried a large value, say so next to the socket error."""
    if isinstance(exc, redis_exceptions.AuthenticationError):
        return exc
    size, where = _largest_in(calls)
    if size < LARGE_VALUE:
        return exc
    return type(exc)(
        f"{exc} — while sending a value of {size:,} bytes for {where}: if the server is up, "
        "that value may be more than it accepts in one argument (Redis: proto-max-bulk-len, "
        "Dragonfly: --max_bulk_len)"
    )


def _oversized_error(calls: Sequence[ScriptCall], text: str, view_name: str) -> DragonflyDataError:
    """A command the server could not parse: in practice a value over its bulk-length limit.
    Which reply carries the error is not reliable once the server gives up on the connection,
    so the message names the largest value of the round trip."""
    size, where = _largest_in(calls)
    return DragonflyDataError(
        f"cannot write feature view '{view_name}': the server refused a command ({text}); the "
        f"largest value sent was {size:,} bytes, for {where} — more than the server accepts in "
        "one argument (Redis: proto-max-bulk-len, Dragonfly: --max_bulk_len)? Store smaller "
        "values or raise that limit. That row was not written and its stored data is unchanged"
    )


def _largest_in(calls: Sequence[ScriptCall]) -> tuple[int, str]:
    """Size of the largest argument of these calls, and whose row it belongs to."""
    best: tuple[int, ScriptCall, int | None] | None = None
    for call in calls:
        if call.script is COMPACT_WRITE:
            size, row = _largest_record(call.command)
        else:
            size, row = _largest_argument(call.command)
        if best is None or size > best[0]:
            best = (size, call, row)
    assert best is not None
    size, call, row = best
    return size, describe_key(call.key(row)) if row is not None else "a row of this batch"


def _largest_record(packed: bytes) -> tuple[int, int | None]:
    """:func:`_largest_argument` of a compact call: EVALSHA sha numkeys keys..., then per row
    its record and its expiry."""
    spans = wire.argument_spans(packed)
    largest = max(range(len(spans)), key=lambda i: spans[i][1])
    start, length = spans[2]
    first = 3 + int(packed[start : start + length])
    row = (largest - first) // 2 if largest >= first else None
    return spans[largest][1], row


def _largest_argument(packed: bytes) -> tuple[int, int | None]:
    """(size, row index) of the largest argument of a packed call (row None when it is not a
    row's argument). The call is: EVALSHA sha numkeys keys... ttl ts_field, then per row:
    seconds, nanos, m and m HSET arguments."""
    spans = wire.argument_spans(packed)

    def number(index: int) -> int:
        start, length = spans[index]
        return int(packed[start : start + length])

    largest = max(range(len(spans)), key=lambda i: spans[i][1])
    n_keys = number(2)
    index = 3 + n_keys + 2  # the first row's first argument
    for row in range(n_keys):
        if index + 2 >= len(spans):
            break
        width = 3 + number(index + 2)
        if index <= largest < index + width:
            return spans[largest][1], row
        index += width
    return spans[largest][1], None
