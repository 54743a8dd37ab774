"""Feature views too wide for one server command.

Dragonfly refuses a command of more than 65,536 arguments (``max_multi_bulk_len``) by closing
the connection. The normal paths put every field of a row in one command: one ``HMGET`` per
entity hash for reads, one script call per row (at least) for writes. A view with more than
about 16,000 features (32,000 field/value arguments) takes these paths instead:

* reads split each hash's ``HMGET`` into several, sent back to back on one connection, and
  stitch the replies together, so callers see one reply per hash as usual;
* writes go row by row through ``WATCH`` / ``MULTI`` / ``EXEC``: read the stored event time,
  compare it here, and write the row in several ``HSET`` commands inside one transaction. The
  transaction is atomic and aborts if anyone touched the hash in between (then the row is
  tried again), so the event-time rule holds exactly as with the script: a stored row whose
  event time is newer or equal is never replaced.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from google.protobuf.message import DecodeError
from google.protobuf.timestamp_pb2 import Timestamp
from redis import exceptions as redis_exceptions

from feast_dragonfly._protocol import flow as _flow
from feast_dragonfly._protocol import keys, transport, wire
from feast_dragonfly._protocol.flow import Call, Flow
from feast_dragonfly._protocol.keys import Progress, describe_entity
from feast_dragonfly._store import layout
from feast_dragonfly._store.layout import Row
from feast_dragonfly._store.write import MAX_ARGS_PER_CALL
from feast_dragonfly.errors import DragonflyDataError

#: Arguments per command on these paths: well below Dragonfly's 65,536 (the same budget as a
#: script call of the normal write path).
MAX_ARGS = MAX_ARGS_PER_CALL

#: Times a row is tried again after another client changed its hash mid-transaction.
MAX_CONTENTION_RETRIES = 100


def is_wide_view(feature_count: int) -> bool:
    """Whether one row of a view with this many features overflows one script call."""
    return 5 + 2 * feature_count > MAX_ARGS


# --------------------------------------------------------------------------- reads


def is_wide_plan(plan: Any) -> bool:
    """Whether some hash of a read plan may need more fields than one ``HMGET`` carries."""
    return sum(len(view.fieldset.fields) for view in plan.views) > MAX_ARGS - 2


def _split_hmgets(plan: Any, start: int, stop: int) -> tuple[list[bytes], list[int]]:
    """Packed HMGETs for hashes ``start:stop``, each at most ``MAX_ARGS`` arguments, and how
    many of them each hash got."""
    commands: list[bytes] = []
    pieces: list[int] = []
    per_command = MAX_ARGS - 2
    for key, fieldsets in zip(plan.keys[start:stop], plan.key_fieldsets[start:stop]):
        fields = [f for fieldset in fieldsets for f in fieldset.fields]
        count = 0
        for first in range(0, len(fields), per_command):
            part = fields[first : first + per_command]
            out = [b"*%d\r\n$5\r\nHMGET\r\n" % (2 + len(part)), wire.bulk(key)]
            out.extend(wire.bulk(f) for f in part)
            commands.append(b"".join(out))
            count += 1
        pieces.append(count)
    return commands, pieces


def _stitch(replies: Sequence[Any], pieces: Sequence[int]) -> list[Any]:
    """One reply per hash: the pieces' field lists end to end, or the first error."""
    out: list[Any] = []
    position = 0
    for count in pieces:
        parts = replies[position : position + count]
        position += count
        error = next((p for p in parts if isinstance(p, Exception)), None)
        out.append(error if error is not None else [v for part in parts for v in part])
    return out


def read_chunk(pool: Any, plan: Any, start: int, stop: int) -> list[Any]:
    commands, pieces = _split_hmgets(plan, start, stop)
    return _stitch(transport.exchange(pool, commands, len(commands)), pieces)


async def read_chunk_async(pool: Any, plan: Any, start: int, stop: int) -> list[Any]:
    commands, pieces = _split_hmgets(plan, start, stop)
    return _stitch(await transport.exchange_async(pool, commands, len(commands)), pieces)


# --------------------------------------------------------------------------- writes


class _WideRow:
    """One row ready to write: its hash key, event time and HSET argument chunks."""

    def __init__(
        self,
        entity_key: EntityKeyProto,
        key: bytes,
        args: list[bytes],
        when: tuple[bytes, int, int],
    ) -> None:
        self.entity_key = entity_key
        self.key = key
        self.seconds, self.nanos = when[1], when[2]
        self.chunks = [args[i : i + MAX_ARGS - 2] for i in range(0, len(args), MAX_ARGS - 2)]


def _plan_rows(
    rows: Sequence[Row], view_name: str, project: str, key_version: int
) -> list[_WideRow]:
    """Per entity key the row Feast's store keeps (the first with the newest event time)."""
    project_bytes = project.encode("utf-8")
    ts_field = keys.timestamp_field(view_name)
    best: dict[bytes, tuple[int, tuple[bytes, int, int]]] = {}
    for index, (entity_key, _values, event_time, _created) in enumerate(rows):
        key = layout.entity_hash_key(entity_key, project_bytes, key_version)
        when = layout.encode_event_time(event_time)
        kept = best.get(key)
        if kept is None or when[1:] > kept[1][1:]:
            best[key] = (index, when)
    planned = []
    for key, (index, when) in sorted(best.items(), key=lambda item: item[1][0]):
        entity_key, values, _, _ = rows[index]
        args = [ts_field, when[0]]
        for name, value in values.items():
            args.append(keys.feature_field(view_name, name))
            args.append(value.SerializeToString())
        planned.append(_WideRow(entity_key, key, args, when))
    return planned


def _is_fresh(stored: bytes | None, row: _WideRow, view_name: str) -> bool:
    """The event-time rule of the write script: write unless the stored time is newer or
    equal (an absent or zero-epoch stored time never blocks)."""
    if not stored:
        return True
    stamp = Timestamp()
    try:
        stamp.ParseFromString(stored)
        valid = stamp.SerializeToString() == stored  # as strict as the script's parser
    except DecodeError:
        valid = False
    if not valid:
        raise DragonflyDataError(
            f"cannot write feature view '{view_name}' for {_entity(row)}: malformed stored "
            f"timestamp in field {keys.timestamp_field(view_name).decode()}; stored data for "
            "that key was left unchanged"
        )
    if stamp.seconds == 0 and stamp.nanos == 0:
        return True
    return (row.seconds, row.nanos) > (stamp.seconds, stamp.nanos)


def _entity(row: _WideRow) -> str:
    return describe_entity(row.entity_key)


def _data_error(row: _WideRow, view_name: str, exc: Exception) -> DragonflyDataError:
    hint = ""
    if "WRONGTYPE" in str(exc):
        hint = " — the key holds a non-hash value written by something other than Feast"
    return DragonflyDataError(
        f"cannot write feature view '{view_name}' for {_entity(row)}: {exc}{hint}; stored data "
        "for that key was left unchanged"
    )


def _contention_error(row: _WideRow, view_name: str) -> DragonflyDataError:
    return DragonflyDataError(
        f"cannot write feature view '{view_name}' for {_entity(row)}: the hash changed under "
        f"{MAX_CONTENTION_RETRIES} transactions in a row (other writers); nothing was written"
    )


def _row_flow(row: _WideRow, ts_field: bytes, view_name: str, ttl: int) -> Flow[int]:
    """One row's ``WATCH`` / ``MULTI`` / ``EXEC`` on a transaction pipeline: 1 if written, 0 if
    the stored row is as new or newer; tried again while other clients change the hash."""
    for _ in range(MAX_CONTENTION_RETRIES):
        try:
            yield Call("watch", row.key)
            try:
                stored = yield Call("hget", row.key, ts_field)
            except redis_exceptions.ResponseError as exc:
                raise _data_error(row, view_name, exc) from None
            if not _is_fresh(stored, row, view_name):
                yield Call("reset")  # UNWATCH, and the connection back to the pool
                return 0
            yield Call("multi")
            for chunk in row.chunks:
                yield Call("execute_command", "HSET", row.key, *chunk)
            if ttl:
                yield Call("expire", row.key, ttl)
            yield Call("execute")
            return 1
        except redis_exceptions.WatchError:
            yield Call("reset")  # someone changed the hash (or the connection dropped): again
    raise _contention_error(row, view_name)


def writing(
    rows: Sequence[Row],
    *,
    view_name: str,
    project: str,
    key_version: int,
    ttl_seconds: int | None,
    progress: Progress,
) -> Flow[int]:
    """The flow that writes rows of a wide view, one transaction per row (run it with
    :func:`write_rows` or :func:`write_rows_async`); its result is the rows written."""
    planned = _plan_rows(rows, view_name, project, key_version)
    ts_field = keys.timestamp_field(view_name)
    written = 0
    for row in planned:
        written += yield from _row_flow(row, ts_field, view_name, int(ttl_seconds or 0))
        if progress:
            progress(1)
    if progress and len(rows) > len(planned):
        progress(len(rows) - len(planned))  # superseded within the batch: counted, not sent
    return written


def write_rows(client: Any, flow: Flow[int]) -> int:
    """Run a :func:`writing` flow on a transaction pipeline of ``client``."""
    with client.pipeline(transaction=True) as pipe:
        return _flow.run(flow, lambda call: call.on(pipe))


async def write_rows_async(client: Any, flow: Flow[int]) -> int:
    async with client.pipeline(transaction=True) as pipe:
        return await _flow.run_async(flow, lambda call: call.on_async(pipe))
