"""Compact writes: rows or columns → one record per (entity, view) → ``compact_write.lua`` calls.

The same event-time rule as Feast's layout (a stored record is replaced only by a strictly
newer one; the zero epoch counts as nothing stored), checked on the server per call; the key
of a record is its entity's hash key, ``:``, the view's storage name
(``keys.compact_key``). Each row carries its absolute expiry (``views.expire_at_ms``); rows
already expired are counted as progress and not sent.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from feast_dragonfly._protocol import keys as _keys
from feast_dragonfly._protocol import script as _script
from feast_dragonfly._protocol import wire
from feast_dragonfly._protocol.script import COMPACT_WRITE, ScriptCall
from feast_dragonfly._protocol.shards import ShardMap
from feast_dragonfly._store import write as _write
from feast_dragonfly._store.compact import views
from feast_dragonfly._store.compact.proto_columns import encode_rows
from feast_dragonfly._store.compact.schema import Schema
from feast_dragonfly._store.layout import Row, event_time_parts

#: Script calls carry two arguments per row; stay far below the server's argument limit.
MAX_ROWS_PER_CALL = _write.MAX_ARGS_PER_CALL // 2


def _call(keys: list[bytes], body: list[bytes], progress: int) -> ScriptCall:
    keys_resp = b"".join([wire.bulk(k) for k in keys])
    command = _script.pack_call(
        keys_resp, len(keys), b"", b"".join(body), 2 * len(keys), COMPACT_WRITE, n_header_args=0
    )
    return ScriptCall(command, keys, progress, COMPACT_WRITE)


#: Rows of ``online_write_batch`` encoded at a time: a bound on the columns held at once.
ROWS_PER_BATCH = 2048


def plan_calls(
    rows: Sequence[Row],
    *,
    schema: Schema,
    view_name: str,
    project: str,
    key_version: int,
    view_ttl: int,
    key_ttl: int | None,
    rows_per_call: int,
    join_keys: Sequence[str] = (),
    now: int | None = None,
    shards: ShardMap | None = None,
) -> Iterator[ScriptCall]:
    """Rows (``online_write_batch``) as compact records in script calls, lazily: per entity
    only the row Feast's store would keep (see ``write.newest_rows``), encoded a batch at a
    time (``proto_columns``); every input row counts once towards progress. Values named after
    ``join_keys`` are left out (Feast's push and ``write_to_online_store`` pass them along;
    the key holds them); any other name outside the schema is an error."""
    hash_keys, times, chosen = _write.newest_rows(
        rows, project.encode("utf-8"), key_version, _event_time
    )
    if not hash_keys:
        return
    now = views.now_ms() if now is None else now
    duplicates = len(hash_keys) - len(chosen)
    suffix = _keys.record_suffix(view_name)
    chosen = _write.by_shard(chosen, hash_keys, shards, suffix)  # see ``_protocol.shards``
    for start in range(0, len(chosen), ROWS_PER_BATCH):
        batch = chosen[start : start + ROWS_PER_BATCH]
        values = [rows[index][1] for index in batch]
        seconds = np.fromiter((times[index][1] for index in batch), np.int64, len(batch))
        nanos = np.fromiter((times[index][2] for index in batch), np.int64, len(batch))
        yield from plan_columnar_calls(
            pa.array([hash_keys[index] for index in batch], pa.binary()),
            encode_rows(schema, values, seconds, nanos, join_keys),
            views.expire_at_ms_array(seconds, nanos, view_ttl=view_ttl, key_ttl=key_ttl, now=now),
            view_name=view_name,
            rows_per_call=rows_per_call,
            now=now,
            skipped=duplicates if start == 0 else 0,
        )


def _event_time(moment: datetime) -> tuple[bytes, int, int]:
    """``newest_rows``' event time without the ``Timestamp`` bytes records do not hold."""
    return (b"", *event_time_parts(moment))


def plan_columnar_calls(
    hash_keys: pa.BinaryArray,
    records: pa.BinaryArray,
    expire_at: np.ndarray,
    *,
    view_name: str,
    rows_per_call: int,
    now: int,
    skipped: int = 0,
) -> Iterator[ScriptCall]:
    """Script calls for records given column-wise: distinct entities' hash keys, their
    records and expiries (``views.expire_at_ms_array``); ``skipped`` rows not written (e.g.
    an entity's older rows) count towards the first call's progress. RESP encoding in Arrow
    kernels; each call is a slice of two contiguous buffers."""
    live = (expire_at == 0) | (expire_at > now)
    dead = int(len(live) - np.count_nonzero(live))
    expired = dead + skipped
    if dead:
        mask = pa.array(live)
        hash_keys, records, expire_at = (
            hash_keys.filter(mask),
            records.filter(mask),
            expire_at[live],
        )
    n = len(hash_keys)
    if n == 0:
        if expired:
            yield _call([], [], expired)
        return
    suffix = _keys.record_suffix(view_name)
    keys = pc.binary_join_element_wise(hash_keys, pa.scalar(suffix, pa.binary()), b"")
    body = pc.binary_join_element_wise(
        _write.bulk_array(records),
        _write.bulk_array(pc.cast(pa.array(expire_at, pa.int64()), pa.string())),
        b"",
    )
    keys_resp = _write.bulk_array(keys)
    body_offsets, key_offsets = _write.offsets(body), _write.offsets(keys_resp)
    body_data, key_data = body.buffers()[2], keys_resp.buffers()[2]
    per_call = max(1, min(rows_per_call, MAX_ROWS_PER_CALL))
    for start in range(0, n, per_call):
        stop = min(start + per_call, n)
        command = _script.pack_call(
            key_data[key_offsets[start] : key_offsets[stop]].to_pybytes(),
            stop - start,
            b"",
            body_data[body_offsets[start] : body_offsets[stop]].to_pybytes(),
            2 * (stop - start),
            COMPACT_WRITE,
            n_header_args=0,
        )
        progress = stop - start + (expired if start == 0 else 0)
        yield ScriptCall(command, keys.slice(start, stop - start), progress, COMPACT_WRITE)
