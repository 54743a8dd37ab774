"""Event-time-safe writes: one server-side script call per chunk of rows, no read round trip.

Feast's store reads every row's timestamp, compares in Python and writes in a second round
trip, so a concurrent writer can slip in between. Here the comparison runs inside a Lua
script on the server, atomically for the keys of one call, and the TTL is applied in the same
call. Sync and async paths share the encoding and differ only in how they send.

Encoding goes straight to RESP bytes (no redis-py command packing): each ``EVALSHA`` is built
from pre-encoded pieces, so the hot path is a handful of byte joins per row (per batch, for
the column-wise materialization path). Chunks are spread over several pooled connections —
threads for the sync API, asyncio tasks for the async one — ``write_concurrency`` at a
time, and a bounded window ahead of the caller, so encoding and sending overlap. Within one batch only the row Feast would keep survives per entity key (the first row
with the newest event time), so chunks can run in any order and still give Feast's result.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from functools import lru_cache
from itertools import chain
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from redis import exceptions as redis_exceptions

from feast_dragonfly._protocol import flow, wire
from feast_dragonfly._protocol import keys as _keys
from feast_dragonfly._protocol import script as _script
from feast_dragonfly._protocol import transport as _transport
from feast_dragonfly._protocol.flow import Flow
from feast_dragonfly._protocol.keys import Progress
from feast_dragonfly._protocol.script import ScriptCall
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
) -> Iterator[ScriptCall]:
    """Encode rows into Feast's layout and pack them into script calls, lazily.

    Per entity key only the row Feast's store would end up with is sent: the first row
    carrying the batch's newest event time for that key (later rows with an equal time are
    rejected by Feast too). Every input row still counts once towards progress.
    """
    project_bytes = project.encode("utf-8")
    ts_field = _keys.timestamp_field(view_name)
    ts_field_bulk = wire.bulk(ts_field)
    header = _script.header(ttl_seconds, ts_field)

    keys: list[bytes] = []
    times: list[tuple[bytes, int, int]] = []
    winner: dict[bytes, int] = {}
    for index, (entity_key, _values, event_time, _created) in enumerate(rows):
        key = _layout.entity_hash_key(entity_key, project_bytes, key_version)
        stamp, seconds, nanos = _layout.encode_event_time(event_time)
        keys.append(key)
        times.append((stamp, seconds, nanos))
        best = winner.get(key)
        if best is None or (seconds, nanos) > times[best][1:]:
            winner[key] = index
    if not keys:
        return
    chosen = sorted(winner.values()) if len(winner) != len(keys) else range(len(keys))
    dropped = len(keys) - len(winner)

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


# --------------------------------------------------------------------------- sending


def group_calls(calls: Iterable[ScriptCall], size: int = CALLS_PER_ROUND_TRIP):
    """Consecutive calls in groups: one group is one round trip on one connection."""
    group: list[ScriptCall] = []
    for call in calls:
        group.append(call)
        if len(group) >= size:
            yield group
            group = []
    if group:
        yield group


def _progress_rows(calls: Iterable[ScriptCall]) -> int:
    return sum(call.progress_rows for call in calls)


class RoundTrips:
    """Runs round trips (a function returning the rows it wrote) on ``executor``, up to
    ``concurrency`` at once, each on its own pooled connection; shared by the single-server
    :class:`Sender` and the cluster's per-master sender.

    Starting one returns as soon as it is queued, unless ``window`` round trips (default:
    ``concurrency``) are already queued or in flight, in which case it first waits for the
    oldest — so the caller encodes the next chunk while the server executes the previous ones,
    and memory stays bounded. A window larger than ``concurrency`` lets a caller that encodes
    in large batches (materialization) queue a whole batch and convert the next one while the
    server works through it, instead of leaving the server idle during each conversion.
    Progress is reported from the calling thread, in rows, in submission order.
    """

    def __init__(
        self,
        *,
        executor: Executor | None,
        concurrency: int,
        progress: Progress,
        window: int | None = None,
    ) -> None:
        self._executor = executor if concurrency > 1 else None
        self._window = max(1, concurrency, window or 0)
        self._progress = progress
        self._in_flight: deque[tuple[Future, int]] = deque()
        self.written = 0

    def _start(self, rows: int, run: Callable[..., int], *args: Any) -> None:
        if self._executor is None:
            self.written += run(*args)
            self._report(rows)
            return
        while len(self._in_flight) >= self._window:
            self._collect_oldest()
        self._in_flight.append((self._executor.submit(run, *args), rows))

    def _collect_oldest(self) -> None:
        future, rows = self._in_flight.popleft()
        self.written += future.result()
        self._report(rows)

    def _report(self, rows: int) -> None:
        if self._progress and rows:
            self._progress(rows)

    def submit(self, group: Sequence[ScriptCall]) -> None:
        """Start (or queue) the round trips of ``group``."""
        raise NotImplementedError

    def _flush(self) -> None:
        """Start whatever a subclass still buffers (called by :meth:`finish`)."""

    def finish(self) -> int:
        """Wait for every round trip; returns the rows written. On an error, waits for the
        others (without reporting them) and raises the first."""
        try:
            self._flush()
            while self._in_flight:
                self._collect_oldest()
        except BaseException:
            self.abort()
            raise
        return self.written

    def abort(self) -> None:
        """Wait for what is in flight without reporting (after an error elsewhere)."""
        for future, _ in self._in_flight:
            future.cancel()
        for future, _ in self._in_flight:
            try:
                future.result()
            except BaseException:  # noqa: BLE001 - the first error is the one raised
                pass
        self._in_flight.clear()


class AsyncRoundTrips:
    """:class:`RoundTrips` for asyncio: round trips are tasks, at most ``concurrency`` of them
    talking to the server at once and at most ``window`` started ahead of the caller, so an
    async write encodes as it sends instead of encoding everything first."""

    def __init__(
        self,
        *,
        concurrency: int,
        progress: Progress,
        window: int | None = None,
    ) -> None:
        self._slots = asyncio.Semaphore(max(1, concurrency))
        self._window = max(1, concurrency, window or 0)
        self._progress = progress
        self._in_flight: deque[tuple[asyncio.Task, int]] = deque()
        self.written = 0

    async def _start(self, rows: int, run: Callable[..., Awaitable[int]], *args: Any) -> None:
        while len(self._in_flight) >= self._window:
            await self._collect_oldest()
        self._in_flight.append((asyncio.ensure_future(self._limited(run, *args)), rows))

    async def _limited(self, run: Callable[..., Awaitable[int]], *args: Any) -> int:
        async with self._slots:
            return await run(*args)

    async def _collect_oldest(self) -> None:
        task, rows = self._in_flight.popleft()
        self.written += await task
        if self._progress and rows:
            self._progress(rows)

    async def submit(self, group: Sequence[ScriptCall]) -> None:
        """Start (or queue) the round trips of ``group``."""
        raise NotImplementedError

    async def _flush(self) -> None:
        """Start whatever a subclass still buffers (called by :meth:`finish`)."""

    async def finish(self) -> int:
        """Wait for every round trip; returns the rows written, or raises the first error
        once the others are done."""
        try:
            await self._flush()
            while self._in_flight:
                await self._collect_oldest()
        except BaseException:
            await self.abort()
            raise
        return self.written

    async def abort(self) -> None:
        """Cancel what has not finished and wait for it, without reporting."""
        tasks = [task for task, _ in self._in_flight]
        self._in_flight.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class Sender(RoundTrips):
    """Sends groups of calls (one group: one round trip on one connection) to one server."""

    def __init__(
        self,
        pool: Any,
        view_name: str,
        *,
        executor: Executor | None,
        concurrency: int,
        progress: Progress,
        window: int | None = None,
    ) -> None:
        super().__init__(
            executor=executor, concurrency=concurrency, progress=progress, window=window
        )
        self._pool = pool
        self._view_name = view_name

    def submit(self, group: Sequence[ScriptCall]) -> None:
        self._start(_progress_rows(group), run_group, self._pool, group, self._view_name)


class AsyncSender(AsyncRoundTrips):
    """:class:`Sender` for asyncio pools."""

    def __init__(
        self,
        pool: Any,
        view_name: str,
        *,
        concurrency: int,
        progress: Progress,
        window: int | None = None,
    ) -> None:
        super().__init__(concurrency=concurrency, progress=progress, window=window)
        self._pool = pool
        self._view_name = view_name

    async def submit(self, group: Sequence[ScriptCall]) -> None:
        await self._start(
            _progress_rows(group), run_group_async, self._pool, group, self._view_name
        )


def send_all(sender: RoundTrips, calls: Iterable[ScriptCall]) -> int:
    """Every call through ``sender`` (a :class:`Sender` or the cluster's); rows written."""
    try:
        for group in group_calls(calls):
            sender.submit(group)
    except BaseException:
        sender.abort()
        raise
    return sender.finish()


async def send_all_async(sender: AsyncRoundTrips, calls: Iterable[ScriptCall]) -> int:
    """:func:`send_all` for an async sender."""
    try:
        for group in group_calls(calls):
            await sender.submit(group)
    except BaseException:
        await sender.abort()
        raise
    return await sender.finish()


# --------------------------------------------------------------------------- one round trip


@dataclass(frozen=True)
class _Exchange:
    """Packed commands for one pooled connection, and how many replies to read."""

    payloads: list[bytes]
    replies: int


def _send_calls(group: Sequence[ScriptCall]) -> Flow[list[Any]]:
    # Resent whole on a fresh connection after a transient failure (by the transport): every
    # call is event-time guarded, so one the server already applied is skipped the second time.
    try:
        return (yield _Exchange([call.command for call in group], len(group)))
    except redis_exceptions.ConnectionError as exc:
        raise _script.with_size_hint(exc, group) from exc.__context__


def _write_group(group: Sequence[ScriptCall], view_name: str) -> Flow[int]:
    """One round trip; the script loaded and the calls that met NOSCRIPT resent if the server
    lacks it. Only those: when another connection loads the script mid-group, the calls after
    that point ran, and resending them would count their rows as 0 (already written)."""
    replies = list((yield from _send_calls(group)))
    again = _script.needs_load(replies)
    if again:
        [loaded] = yield _Exchange([_script.LOAD_COMMAND], 1)
        _script.check_loaded(loaded)
        answers = yield from _send_calls([group[i] for i in again])
        for i, reply in zip(again, answers):
            replies[i] = reply
    return _script.rows_written(group, replies, view_name)


def run_group(pool: Any, group: Sequence[ScriptCall], view_name: str) -> int:
    """Send one group of calls on one connection; returns the number of rows written."""

    def send(request: _Exchange) -> list[Any]:
        return _transport.exchange(pool, request.payloads, request.replies, check_health=False)

    return flow.run(_write_group(group, view_name), send)


async def run_group_async(pool: Any, group: Sequence[ScriptCall], view_name: str) -> int:
    async def send(request: _Exchange) -> list[Any]:
        return await _transport.exchange_async(
            pool, request.payloads, request.replies, check_health=False
        )

    return await flow.run_async(_write_group(group, view_name), send)
