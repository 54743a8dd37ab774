"""Event-time-safe writes: one server-side script call per chunk of rows, no read round trip.

Feast's store reads every row's timestamp, compares in Python and writes in a second round
trip, so a concurrent writer can slip in between. Here the comparison runs inside a Lua
script on the server, atomically for the keys of one call, and the TTL is applied in the same
call. This module encodes; ``send.py`` carries the calls, the same way for the sync and the
async API.

Encoding goes straight to RESP bytes (no redis-py command packing): each ``EVALSHA`` is built
from pre-encoded pieces, so the hot path is a handful of byte joins per row (per batch, for
the column-wise materialization path). Within one batch only the row Feast would keep
survives per entity key (the first row with the newest event time), so calls can run in any
order, over several connections at once, and still give Feast's result.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from functools import lru_cache
from itertools import chain
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from feast_dragonfly._protocol import keys as _keys
from feast_dragonfly._protocol import script as _script
from feast_dragonfly._protocol import wire
from feast_dragonfly._protocol.script import ScriptCall
from feast_dragonfly._protocol.shards import ShardMap
from feast_dragonfly._store import layout as _layout
from feast_dragonfly._store.layout import Row

#: Stay far below DragonflyDB's 65,536-argument command limit (and Redis's Lua stack).
MAX_ARGS_PER_CALL = 32_000

#: Script calls sent back to back on one connection before reading their replies.
CALLS_PER_ROUND_TRIP = 4


# --------------------------------------------------------------------------- rows (online_write_batch)


def plan_calls(
    rows: Sequence[Row],
    *,
    view_name: str,
    project: str,
    key_version: int,
    ttl_seconds: int | None,
    rows_per_call: int,
    shards: ShardMap | None = None,
) -> Iterator[ScriptCall]:
    """Encode rows into Feast's layout and pack them into script calls, lazily.

    Per entity key only the row Feast's store would end up with is sent: the first row
    carrying the batch's newest event time for that key (later rows with an equal time are
    rejected by Feast too). Every input row still counts once towards progress. With a
    Dragonfly ``shards`` map, rows go grouped by shard (see ``_protocol.shards``).
    """
    project_bytes = project.encode("utf-8")
    ts_field = _keys.timestamp_field(view_name)
    ts_field_bulk = wire.bulk(ts_field)
    header = _script.header(ttl_seconds, ts_field)

    keys, times, chosen = newest_rows(rows, project_bytes, key_version)
    if not keys:
        return
    dropped = len(keys) - len(chosen)
    chosen = by_shard(chosen, keys, shards)

    shape: tuple[str, ...] | None = None
    row_format = count_bulk = b""
    call_keys: list[bytes] = []
    body: list[bytes] = []
    n_args = 0
    for index in chosen:
        values = rows[index][1]
        stamp, seconds, nanos = times[index]
        names = tuple(values)
        if names != shape:  # rows of one batch nearly always share their feature names
            shape = names
            row_format, count_bulk = _row_format(view_name, names)
        data = [value.SerializeToString() for value in values.values()]
        row = (
            wire.bulk_int(seconds)
            + wire.bulk_int(nanos)
            + count_bulk
            + ts_field_bulk
            + b"$%d\r\n%b\r\n" % (len(stamp), stamp)
            + row_format % tuple(chain.from_iterable(zip(map(len, data), data)))
        )
        row_args = 5 + 2 * len(names)
        if call_keys and (len(call_keys) >= rows_per_call or n_args + row_args > MAX_ARGS_PER_CALL):
            yield _call(call_keys, header, body, n_args, len(call_keys))
            call_keys, body, n_args = [], [], 0
        call_keys.append(keys[index])
        body.append(row)
        n_args += row_args
    yield _call(call_keys, header, body, n_args, len(call_keys) + dropped)


def by_shard(
    chosen: Sequence[int], keys: Sequence[bytes], shards: ShardMap | None, suffix: bytes = b""
) -> Sequence[int]:
    """``chosen`` (indices into ``keys``) grouped by the Dragonfly shard of ``key + suffix``,
    in their order within each shard; as they are without a shard map."""
    if shards is None or len(chosen) < 2:
        return chosen
    order = shards.order([keys[index] + suffix for index in chosen])
    return [chosen[position] for position in order]


def newest_rows(
    rows: Sequence[Row],
    project_bytes: bytes,
    key_version: int,
    event_time: Callable[[datetime], tuple[bytes, int, int]] = _layout.encode_event_time,
) -> tuple[list[bytes], list[tuple[bytes, int, int]], Sequence[int]]:
    """Every row's hash key and event time (``event_time``'s serialized ``Timestamp``,
    seconds, nanos: a caller without a use for the bytes passes a cheaper function), and the
    indices, in input order, of the rows Feast's store would end up with: per key the first
    row carrying the batch's newest event time."""
    keys = _layout.entity_hash_keys([row[0] for row in rows], project_bytes, key_version)
    times = [event_time(row[2]) for row in rows]
    if len(set(keys)) == len(keys):  # one row per entity (the usual batch): every row stays
        return keys, times, range(len(keys))
    winner: dict[bytes, int] = {}
    for index, key in enumerate(keys):
        best = winner.get(key)
        if best is None or times[index][1:] > times[best][1:]:
            winner[key] = index
    return keys, times, sorted(winner.values())


@lru_cache(maxsize=1024)
def _row_format(view_name: str, names: tuple[str, ...]) -> tuple[bytes, bytes]:
    """A ``%``-template of one row's field/value pairs (value lengths and bytes left open) and
    the bulk-encoded HSET argument count: per row only the values get formatted."""
    pairs = [
        wire.bulk(_keys.feature_field(view_name, name)).replace(b"%", b"%%") + b"$%d\r\n%b\r\n"
        for name in names
    ]
    return b"".join(pairs), wire.bulk_int(2 + 2 * len(names))


def _call(keys: list[bytes], header: bytes, body: list[bytes], n_args: int, progress: int):
    keys_resp = b"".join([b"$%d\r\n%b\r\n" % (len(k), k) for k in keys])
    return ScriptCall(
        _script.pack_call(keys_resp, len(keys), header, b"".join(body), n_args), keys, progress
    )


# --------------------------------------------------------------------------- columns (materialization)


def bulk_array(values: pa.Array) -> pa.BinaryArray:
    """The RESP bulk string of each value of a binary (or string) array, in Arrow kernels."""
    if not pa.types.is_binary(values.type):
        values = values.cast(pa.binary())
    lengths = pc.cast(pc.cast(pc.binary_length(values), pa.string()), pa.binary())
    return pc.binary_join_element_wise(b"$", lengths, wire.CRLF, values, wire.CRLF, b"")


def offsets(array: pa.BinaryArray) -> np.ndarray:
    """The value offsets of a binary array (where each value starts in its data buffer)."""
    return np.frombuffer(array.buffers()[1], dtype=np.int32)[
        array.offset : array.offset + len(array) + 1
    ]


def plan_columnar_calls(
    keys: pa.BinaryArray,
    seconds: np.ndarray,
    nanos: np.ndarray,
    stamps: pa.BinaryArray,
    values: Sequence[tuple[bytes, pa.BinaryArray]],
    *,
    view_name: str,
    ttl_seconds: int | None,
    rows_per_call: int,
) -> Iterator[ScriptCall]:
    """Script calls for rows given column-wise: hash keys, event times (seconds, nanos and
    serialized ``Timestamp``), and ``(field name bytes, serialized values)`` per feature.

    Rows must have distinct keys (the caller keeps Feast's one row per entity). All RESP
    encoding happens in Arrow kernels; each call is a slice of two contiguous buffers.
    """
    n = len(keys)
    if n == 0:
        return
    ts_field = _keys.timestamp_field(view_name)
    header = _script.header(ttl_seconds, ts_field)
    row_args = 5 + 2 * len(values)
    per_call = max(1, min(rows_per_call, MAX_ARGS_PER_CALL // row_args))

    pieces: list[Any] = [
        bulk_array(pc.cast(pa.array(seconds, pa.int64()), pa.string())),
        bulk_array(pc.cast(pa.array(nanos, pa.int64()), pa.string())),
        wire.bulk_int(row_args - 3) + wire.bulk(ts_field),
        bulk_array(stamps),
    ]
    for field, column in values:
        pieces.append(wire.bulk(field))
        pieces.append(bulk_array(column))
    body = pc.binary_join_element_wise(*pieces, b"")
    keys_resp = bulk_array(keys)
    body_offsets, key_offsets = offsets(body), offsets(keys_resp)
    body_data, key_data = body.buffers()[2], keys_resp.buffers()[2]
    for start in range(0, n, per_call):
        stop = min(start + per_call, n)
        command = _script.pack_call(
            key_data[key_offsets[start] : key_offsets[stop]].to_pybytes(),
            stop - start,
            header,
            body_data[body_offsets[start] : body_offsets[stop]].to_pybytes(),
            (stop - start) * row_args,
        )
        yield ScriptCall(command, keys.slice(start, stop - start), stop - start)


# --------------------------------------------------------------------------- round trips


def group_calls(
    calls: Iterable[ScriptCall], size: int = CALLS_PER_ROUND_TRIP
) -> Iterator[list[ScriptCall]]:
    """Consecutive calls in groups: on a single server one group is one round trip on one
    connection (``send.ServerPlanner``)."""
    group: list[ScriptCall] = []
    for call in calls:
        group.append(call)
        if len(group) >= size:
            yield group
            group = []
    if group:
        yield group
