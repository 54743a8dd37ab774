"""Event-time-safe writes: one server-side script call per chunk of rows, no read round trip.

Feast's store reads every row's timestamp, compares in Python and writes in a second round
trip, so a concurrent writer can slip in between. Here the comparison runs inside a Lua
script on the server, atomically for the keys of one call, and the TTL is applied in the same
call. Sync and async paths share the encoding and differ only in how they send.

Encoding goes straight to RESP bytes (no redis-py command packing): each ``EVALSHA`` is built
from pre-encoded pieces, so the hot path is a handful of byte joins per row (per batch, for
the column-wise materialization path). Chunks are spread over several pooled connections —
threads for the sync API, ``asyncio.gather`` for the async one — ``write_concurrency`` at a
time. Within one batch only the row Feast would keep survives per entity key (the first row
with the newest event time), so chunks can run in any order and still give Feast's result.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from importlib import resources
from itertools import chain
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from feast.infra.key_encoding_utils import deserialize_entity_key
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from redis import exceptions as redis_exceptions

from feast_dragonfly import _layout, _transport
from feast_dragonfly.errors import DragonflyDataError, DragonflyScriptingError

Row = tuple[EntityKeyProto, dict[str, ValueProto], datetime, datetime | None]

SCRIPT_SOURCE = resources.files("feast_dragonfly").joinpath("event_time_write.lua").read_text()
SCRIPT_SHA = hashlib.sha1(SCRIPT_SOURCE.encode()).hexdigest()

#: Stay far below DragonflyDB's 65,536-argument command limit (and Redis's Lua stack).
MAX_ARGS_PER_CALL = 32_000

#: Script calls sent back to back on one connection before reading their replies.
CALLS_PER_ROUND_TRIP = 4

_CRLF = b"\r\n"
_COMMAND_HEAD = b"$7\r\nEVALSHA\r\n$40\r\n" + SCRIPT_SHA.encode() + _CRLF


def bulk(data: bytes) -> bytes:
    """One RESP bulk string."""
    return b"$%d\r\n%b\r\n" % (len(data), data)


def _bulk_int(value: int) -> bytes:
    text = b"%d" % value
    return b"$%d\r\n%b\r\n" % (len(text), text)


@dataclass
class ScriptCall:
    """One packed ``EVALSHA``: the rows' keys are what error messages name."""

    command: bytes
    keys: Sequence[Any]  # hash keys (bytes, or an Arrow binary array for the columnar path)
    progress_rows: int  # rows reported to ``progress`` once this call is done

    @property
    def rows(self) -> int:
        return len(self.keys)

    def key(self, index: int) -> bytes:
        key = self.keys[index]
        return key.as_py() if isinstance(key, pa.Scalar) else key


def _pack(keys_resp: bytes, n_keys: int, header: bytes, body: bytes, n_body_args: int) -> bytes:
    total = 3 + n_keys + 2 + n_body_args
    return b"*%d\r\n%b%b%b%b%b" % (total, _COMMAND_HEAD, _bulk_int(n_keys), keys_resp, header, body)


def _header(ttl_seconds: int | None, ts_field: bytes) -> bytes:
    return _bulk_int(int(ttl_seconds or 0)) + bulk(ts_field)


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
    ts_field = _layout.timestamp_field(view_name)
    ts_field_bulk = bulk(ts_field)
    header = _header(ttl_seconds, ts_field)

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
            _bulk_int(seconds)
            + _bulk_int(nanos)
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
        bulk(_layout.feature_field(view_name, name)).replace(b"%", b"%%") + b"$%d\r\n%b\r\n"
        for name in names
    ]
    return b"".join(pairs), _bulk_int(2 + 2 * len(names))


def _call(keys: list[bytes], header: bytes, body: list[bytes], n_args: int, progress: int):
    keys_resp = b"".join([b"$%d\r\n%b\r\n" % (len(k), k) for k in keys])
    return ScriptCall(_pack(keys_resp, len(keys), header, b"".join(body), n_args), keys, progress)


# --------------------------------------------------------------------------- columns (materialization)


def bulk_array(values: pa.Array) -> pa.BinaryArray:
    """RESP bulk string of each value of a binary (or string) array."""
    if not pa.types.is_binary(values.type):
        values = values.cast(pa.binary())
    lengths = pc.cast(pc.cast(pc.binary_length(values), pa.string()), pa.binary())
    return pc.binary_join_element_wise(b"$", lengths, _CRLF, values, _CRLF, b"")


def _offsets(array: pa.BinaryArray) -> np.ndarray:
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
    ts_field = _layout.timestamp_field(view_name)
    header = _header(ttl_seconds, ts_field)
    row_args = 5 + 2 * len(values)
    per_call = max(1, min(rows_per_call, MAX_ARGS_PER_CALL // row_args))

    pieces: list[Any] = [
        bulk_array(pc.cast(pa.array(seconds, pa.int64()), pa.string())),
        bulk_array(pc.cast(pa.array(nanos, pa.int64()), pa.string())),
        _bulk_int(row_args - 3) + bulk(ts_field),
        bulk_array(stamps),
    ]
    for field, column in values:
        pieces.append(bulk(field))
        pieces.append(bulk_array(column))
    body = pc.binary_join_element_wise(*pieces, b"")
    keys_resp = bulk_array(keys)
    body_offsets, key_offsets = _offsets(body), _offsets(keys_resp)
    body_data, key_data = body.buffers()[2], keys_resp.buffers()[2]
    for start in range(0, n, per_call):
        stop = min(start + per_call, n)
        command = _pack(
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


def _send_group(pool: Any, group: Sequence[ScriptCall]) -> list[Any]:
    # Resent whole on a fresh connection after a transient failure: every call is
    # event-time guarded, so one the server already applied is skipped the second time.
    try:
        return _transport.exchange(
            pool, [call.command for call in group], len(group), check_health=False
        )
    except redis_exceptions.ConnectionError as exc:
        raise _with_size_hint(exc, group) from exc.__context__


async def _send_group_async(pool: Any, group: Sequence[ScriptCall]) -> list[Any]:
    try:
        return await _transport.exchange_async(
            pool, [call.command for call in group], len(group), check_health=False
        )
    except redis_exceptions.ConnectionError as exc:
        raise _with_size_hint(exc, group) from exc.__context__


#: A value this large may be over the server's argument limit (Redis accepts no lower
#: proto-max-bulk-len than 1 MiB).
_LARGE_VALUE = 1 << 20


def _with_size_hint(
    exc: redis_exceptions.ConnectionError, group: Sequence[ScriptCall]
) -> redis_exceptions.ConnectionError:
    """A server that refuses an oversized argument may reset the connection before its error
    reply arrives: when the calls carried a large value, say so next to the socket error."""
    if isinstance(exc, redis_exceptions.AuthenticationError):
        return exc
    size, where = _largest_in(group)
    if size < _LARGE_VALUE:
        return exc
    return type(exc)(
        f"{exc} — while sending a value of {size:,} bytes for {where}: if the server is up, "
        "that value may be more than it accepts in one argument (Redis: proto-max-bulk-len, "
        "Dragonfly: --max_bulk_len)"
    )


def _script_load_command() -> bytes:
    source = SCRIPT_SOURCE.encode()
    return b"*3\r\n$6\r\nSCRIPT\r\n$4\r\nLOAD\r\n" + bulk(source)


def _check_load_reply(reply: Any) -> None:
    if isinstance(reply, Exception):
        raise _scripting_refused(reply)


def run_group(pool: Any, group: Sequence[ScriptCall], view_name: str) -> int:
    """Send one group of calls on one connection; load the script once if the server lacks it.
    Returns the number of rows the server wrote."""
    replies = _send_group(pool, group)
    if any(_is_noscript(reply) for reply in replies):
        [loaded] = _transport.exchange(pool, [_script_load_command()], 1, check_health=False)
        _check_load_reply(loaded)
        # Every call is idempotent (event-time guarded), so resending the group is safe.
        replies = _send_group(pool, group)
    return _check_replies(group, replies, view_name)


async def run_group_async(pool: Any, group: Sequence[ScriptCall], view_name: str) -> int:
    replies = await _send_group_async(pool, group)
    if any(_is_noscript(reply) for reply in replies):
        [loaded] = await _transport.exchange_async(
            pool, [_script_load_command()], 1, check_health=False
        )
        _check_load_reply(loaded)
        replies = await _send_group_async(pool, group)
    return _check_replies(group, replies, view_name)


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
        progress: Callable[[int], Any] | None,
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


class Sender(RoundTrips):
    """Sends groups of calls (one group: one round trip on one connection) to one server."""

    def __init__(
        self,
        pool: Any,
        view_name: str,
        *,
        executor: Executor | None,
        concurrency: int,
        progress: Callable[[int], Any] | None,
        window: int | None = None,
    ) -> None:
        super().__init__(
            executor=executor, concurrency=concurrency, progress=progress, window=window
        )
        self._pool = pool
        self._view_name = view_name

    def submit(self, group: Sequence[ScriptCall]) -> None:
        rows = sum(call.progress_rows for call in group)
        self._start(rows, run_group, self._pool, group, self._view_name)


def run_calls(
    pool: Any,
    calls: Iterable[ScriptCall],
    view_name: str,
    progress: Callable[[int], Any] | None,
    *,
    executor: Executor | None = None,
    concurrency: int = 1,
) -> int:
    """Send every call; returns the number of rows the server wrote."""
    sender = Sender(pool, view_name, executor=executor, concurrency=concurrency, progress=progress)
    try:
        for group in group_calls(calls):
            sender.submit(group)
    except BaseException:
        sender.abort()
        raise
    return sender.finish()


async def run_calls_async(
    pool: Any,
    calls: Iterable[ScriptCall],
    view_name: str,
    progress: Callable[[int], Any] | None,
    *,
    concurrency: int = 1,
) -> int:
    """Send every call, up to ``concurrency`` round trips at once on separate connections."""
    groups = list(group_calls(calls))
    if not groups:
        return 0
    semaphore = asyncio.Semaphore(max(1, concurrency))

    async def one(group: Sequence[ScriptCall]) -> int:
        async with semaphore:
            written = await run_group_async(pool, group, view_name)
        if progress:
            progress(sum(call.progress_rows for call in group))
        return written

    results = await asyncio.gather(*(one(group) for group in groups), return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return sum(results)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- errors


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
            if _transport.is_protocol_error(reply):
                raise _oversized_error(batch, str(reply), view_name)
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
            entity = describe_key(call.key(int(index_text) - 1))
        except (ValueError, IndexError):
            entity = "an entity of this batch"
        hint = ""
        if "WRONGTYPE" in reason:
            hint = " — the key holds a non-hash value written by something other than Feast"
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
    if denied or _is_noscript(reply) or "unknown command" in lowered or "permission" in lowered:
        return _scripting_refused(reply)
    return DragonflyDataError(f"writing feature view '{view_name}' failed: {text}")


def _largest_in(group: Sequence[ScriptCall]) -> tuple[int, str]:
    """Size of the largest argument of these calls, and whose row it belongs to."""
    best: tuple[int, ScriptCall, int | None] | None = None
    for call in group:
        size, row = _largest_argument(call.command)
        if best is None or size > best[0]:
            best = (size, call, row)
    assert best is not None
    size, call, row = best
    return size, describe_key(call.key(row)) if row is not None else "a row of this batch"


def _oversized_error(group: Sequence[ScriptCall], text: str, view_name: str) -> DragonflyDataError:
    """A command the server could not parse: in practice a value over its bulk-length limit.
    Which reply carries the error is not reliable once the server gives up on the connection,
    so the message names the largest value of the round trip."""
    size, where = _largest_in(group)
    return DragonflyDataError(
        f"cannot write feature view '{view_name}': the server refused a command ({text}); the "
        f"largest value sent was {size:,} bytes, for {where} — more than the server accepts in "
        "one argument (Redis: proto-max-bulk-len, Dragonfly: --max_bulk_len)? Store smaller "
        "values or raise that limit. That row was not written and its stored data is unchanged"
    )


def _largest_argument(command: bytes) -> tuple[int, int | None]:
    """(size, row index) of the largest argument of a packed script call (row None when it
    is not a row's argument). Walks the RESP array: EVALSHA sha numkeys keys... ttl ts_field,
    then per row: seconds, nanos, m and m HSET arguments."""
    spans: list[tuple[int, int]] = []  # (offset, length) of each bulk string
    pos = command.index(b"\r\n") + 2
    while pos < len(command):
        end = command.index(b"\r\n", pos)
        length = int(command[pos + 1 : end])
        spans.append((end + 2, length))
        pos = end + 2 + length + 2

    def number(index: int) -> int:
        start, length = spans[index]
        return int(command[start : start + length])

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


def describe_key(key: bytes) -> str:
    """``entity driver_id=1001`` for a hash key (serialized entity key + project)."""
    length = _layout.entity_part_length(key)
    if length is None:
        return f"key {key!r}"
    try:
        return describe_entity(deserialize_entity_key(key[:length], 3))
    except Exception:  # noqa: BLE001 - best effort, for a message only
        return f"key {key!r}"


def describe_entity(entity_key: EntityKeyProto) -> str:
    """``driver_id=1001`` style text for error messages."""
    parts = []
    for name, value in zip(entity_key.join_keys, entity_key.entity_values):
        kind = value.WhichOneof("val")
        parts.append(f"{name}={getattr(value, kind) if kind else None!r}")
    return "entity " + ", ".join(parts)
