"""Event-time-safe writes: one server-side script call per chunk of rows, no read round trip.

Feast's store reads every row's timestamp, compares in Python and writes in a second round
trip, so a concurrent writer can slip in between. Here the comparison runs inside a Lua
script on the server, atomically for the keys of one call, and the TTL is applied in the same
call. Sync and async paths share the encoding and differ only in how they send.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from typing import Any

from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from redis import exceptions as redis_exceptions

from feast_dragonfly import _layout
from feast_dragonfly.errors import DragonflyDataError, DragonflyScriptingError

Row = tuple[EntityKeyProto, dict[str, ValueProto], datetime, datetime | None]

SCRIPT_SOURCE = resources.files("feast_dragonfly").joinpath("event_time_write.lua").read_text()
SCRIPT_SHA = hashlib.sha1(SCRIPT_SOURCE.encode()).hexdigest()

#: Stay far below DragonflyDB's 65,536-argument command limit (and Redis's Lua stack).
MAX_ARGS_PER_CALL = 32_000


@dataclass
class ScriptCall:
    """One EVALSHA: the rows' keys and the flattened arguments the script reads."""

    keys: list[bytes]
    args: list[Any]
    entity_keys: list[EntityKeyProto]

    @property
    def rows(self) -> int:
        return len(self.keys)


def plan_calls(
    rows: Sequence[Row],
    *,
    view_name: str,
    project: str,
    key_version: int,
    ttl_seconds: int | None,
    rows_per_call: int,
) -> list[ScriptCall]:
    """Encode rows into Feast's layout and group them into script calls."""
    project_bytes = project.encode("utf-8")
    header: list[Any] = [int(ttl_seconds or 0), _layout.timestamp_field(view_name)]
    calls: list[ScriptCall] = []
    current = ScriptCall([], list(header), [])
    for entity_key, values, event_time, _created in rows:
        stamp, seconds, nanos = _layout.encode_event_time(event_time)
        row_args: list[Any] = [seconds, nanos, stamp, len(values)]
        for name, value in values.items():
            row_args.append(_layout.feature_field(view_name, name))
            row_args.append(value.SerializeToString())
        if current.keys and (
            current.rows >= rows_per_call or len(current.args) + len(row_args) > MAX_ARGS_PER_CALL
        ):
            calls.append(current)
            current = ScriptCall([], list(header), [])
        current.keys.append(_layout.entity_hash_key(entity_key, project_bytes, key_version))
        current.args.extend(row_args)
        current.entity_keys.append(entity_key)
    if current.keys:
        calls.append(current)
    return calls


def run_calls(
    client: Any,
    calls: Sequence[ScriptCall],
    view_name: str,
    progress: Callable[[int], Any] | None,
    calls_per_pipeline: int = 64,
) -> int:
    """Send calls in pipelines, loading the script once if the server's cache lacks it."""
    written = 0
    for start in range(0, len(calls), calls_per_pipeline):
        batch = calls[start : start + calls_per_pipeline]
        replies = _send(client, batch)
        if any(_is_noscript(reply) for reply in replies):
            _load_script(client)
            # Every call is idempotent (event-time guarded), so resending the batch is safe.
            replies = _send(client, batch)
        written += _check_replies(batch, replies, view_name)
        if progress:
            progress(sum(call.rows for call in batch))
    return written


async def run_calls_async(
    client: Any,
    calls: Sequence[ScriptCall],
    view_name: str,
    progress: Callable[[int], Any] | None,
    calls_per_pipeline: int = 64,
) -> int:
    written = 0
    for start in range(0, len(calls), calls_per_pipeline):
        batch = calls[start : start + calls_per_pipeline]
        replies = await _send_async(client, batch)
        if any(_is_noscript(reply) for reply in replies):
            try:
                await client.script_load(SCRIPT_SOURCE)
            except redis_exceptions.ResponseError as exc:
                raise _scripting_refused(exc) from None
            replies = await _send_async(client, batch)
        written += _check_replies(batch, replies, view_name)
        if progress:
            progress(sum(call.rows for call in batch))
    return written


def _send(client: Any, batch: Sequence[ScriptCall]) -> list[Any]:
    with client.pipeline(transaction=False) as pipe:
        for call in batch:
            pipe.evalsha(SCRIPT_SHA, len(call.keys), *call.keys, *call.args)
        return pipe.execute(raise_on_error=False)


async def _send_async(client: Any, batch: Sequence[ScriptCall]) -> list[Any]:
    async with client.pipeline(transaction=False) as pipe:
        for call in batch:
            pipe.evalsha(SCRIPT_SHA, len(call.keys), *call.keys, *call.args)
        return await pipe.execute(raise_on_error=False)


def _load_script(client: Any) -> None:
    try:
        client.script_load(SCRIPT_SOURCE)
    except redis_exceptions.ResponseError as exc:
        raise _scripting_refused(exc) from None


def _is_noscript(reply: Any) -> bool:
    return isinstance(reply, redis_exceptions.NoScriptError) or (
        isinstance(reply, redis_exceptions.ResponseError) and str(reply).startswith("NOSCRIPT")
    )


def _scripting_refused(exc: Exception) -> DragonflyScriptingError:
    return DragonflyScriptingError(
        f"the server refused the event-time-safe write script ({exc}); feast-dragonfly needs "
        "Lua scripting (EVALSHA / SCRIPT LOAD) enabled and allowed for this user"
    )


def _check_replies(batch: Sequence[ScriptCall], replies: Sequence[Any], view_name: str) -> int:
    written = 0
    for call, reply in zip(batch, replies):
        if isinstance(reply, Exception):
            raise _reply_error(call, reply, view_name)
        written += int(reply)
    return written


def _reply_error(call: ScriptCall, reply: Exception, view_name: str) -> Exception:
    if isinstance(reply, (redis_exceptions.ConnectionError, redis_exceptions.TimeoutError)):
        return reply
    text = str(reply)
    marker = text.find("FEASTROW ")
    if marker >= 0:
        index_text, _, reason = text[marker + len("FEASTROW ") :].partition(" ")
        try:
            entity = describe_entity(call.entity_keys[int(index_text) - 1])
        except (ValueError, IndexError):
            entity = "an entity of this batch"
        hint = ""
        if "WRONGTYPE" in reason:
            hint = " — the key holds a non-hash value written by something other than Feast"
        return DragonflyDataError(
            f"cannot write feature view '{view_name}' for {entity}: {reason}{hint}; "
            "stored data for that key was left unchanged"
        )
    if _is_noscript(reply) or "unknown command" in text.lower() or "NOPERM" in text:
        return _scripting_refused(reply)
    return DragonflyDataError(f"writing feature view '{view_name}' failed: {text}")


def describe_entity(entity_key: EntityKeyProto) -> str:
    """``driver_id=1001`` style text for error messages."""
    parts = []
    for name, value in zip(entity_key.join_keys, entity_key.entity_values):
        kind = value.WhichOneof("val")
        parts.append(f"{name}={getattr(value, kind) if kind else None!r}")
    return "entity " + ", ".join(parts)
