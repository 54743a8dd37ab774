"""Compact writes: rows or columns → one record per (entity, view) → ``compact_write.lua`` calls.

The same event-time rule as Feast's layout (a stored record is replaced only by a strictly
newer one; the zero epoch counts as nothing stored), checked on the server per call; the key
of a record is its entity's hash key, ``:``, the view's storage name
(``keys.compact_key``). Each row carries its absolute expiry (``views.expire_at_ms``); rows
already expired are counted as progress and not sent.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from feast_dragonfly._protocol import keys as _keys
from feast_dragonfly._protocol import script as _script
from feast_dragonfly._protocol import wire
from feast_dragonfly._protocol.script import COMPACT_WRITE, ScriptCall
from feast_dragonfly._store import write as _write
from feast_dragonfly._store.compact import views
from feast_dragonfly._store.compact.codec import encode_row
from feast_dragonfly._store.compact.schema import Schema
from feast_dragonfly._store.layout import Row

#: Script calls carry two arguments per row; stay far below the server's argument limit.
MAX_ROWS_PER_CALL = _write.MAX_ARGS_PER_CALL // 2


def _call(keys: list[bytes], body: list[bytes], progress: int) -> ScriptCall:
    keys_resp = b"".join([wire.bulk(k) for k in keys])
    command = _script.pack_call(
        keys_resp, len(keys), b"", b"".join(body), 2 * len(keys), COMPACT_WRITE, n_header_args=0
    )
    return ScriptCall(command, keys, progress, COMPACT_WRITE)


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
) -> Iterator[ScriptCall]:
    """Rows (``online_write_batch``) as compact records in script calls, lazily: per entity
    only the row Feast's store would keep (see ``write.newest_rows``); every input row counts
    once towards progress. Values named after ``join_keys`` are left out (Feast's push and
    ``write_to_online_store`` pass them along; the key holds them); any other name outside
    the schema is an error."""
    hash_keys, times, chosen = _write.newest_rows(rows, project.encode("utf-8"), key_version)
    if not hash_keys:
        return
    now = views.now_ms() if now is None else now
    skipped = len(hash_keys) - len(chosen)
    per_call = max(1, min(rows_per_call, MAX_ROWS_PER_CALL))
    call_keys: list[bytes] = []
    body: list[bytes] = []
    ignored = frozenset(join_keys) - set(schema.index)
    shape: tuple[str, ...] | None = None
    extra: list[str] = []
    for index in chosen:
        _stamp, seconds, nanos = times[index]
        expire_at = views.expire_at_ms(seconds, nanos, view_ttl=view_ttl, key_ttl=key_ttl, now=now)
        if 0 < expire_at <= now:
            skipped += 1  # already past its ttl: nothing to store
            continue
        values = rows[index][1]
        names = tuple(values)
        if names != shape:  # rows of one batch nearly always share their names
            shape, extra = names, [name for name in names if name in ignored]
        if extra:
            values = {name: value for name, value in values.items() if name not in ignored}
        record = encode_row(schema, values, rows[index][2])
        if len(call_keys) >= per_call:
            yield _call(call_keys, body, len(call_keys) + skipped)
            call_keys, body, skipped = [], [], 0
        call_keys.append(_keys.compact_key(hash_keys[index], view_name))
        body.append(wire.bulk(record) + wire.bulk_int(expire_at))
    if call_keys:
        yield _call(call_keys, body, len(call_keys) + skipped)
    elif skipped:
        yield _call([], [], skipped)


def plan_columnar_calls(
    hash_keys: pa.BinaryArray,
    records: pa.BinaryArray,
    expire_at: np.ndarray,
    *,
    view_name: str,
    rows_per_call: int,
    now: int,
) -> Iterator[ScriptCall]:
    """Script calls for records given column-wise (materialization): distinct entities' hash
    keys, their records and expiries (``views.expire_at_ms_array``). RESP encoding in Arrow
    kernels; each call is a slice of two contiguous buffers."""
    live = (expire_at == 0) | (expire_at > now)
    expired = int(len(live) - np.count_nonzero(live))
    if expired:
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
    suffix = _keys.COMPACT_SEPARATOR + view_name.encode("utf-8")
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
