"""Sending a write's script calls: round trips planned once (no I/O), carried by a sync or an
async driver.

A *planner* (no I/O) turns the groups of calls a writer submits into *jobs*: one round trip
each, with the rows it reports and the flow (``_protocol/flow.py``) that performs it. On a
single server each group is one job (:class:`ServerPlanner`); a cluster routes calls to their
masters and makes a job of each full batch (``cluster_write.NodePlanner``). What a planner
still buffers is flushed at ``finish`` and dropped on ``abort``.

The scheduling is written once too (:class:`_Schedule`): at most ``window`` round trips queued
or in flight ahead of the caller, the caller waiting for the oldest when it is full, progress
reported from the caller in submission order, the first error raised once the others are
done. The drivers only carry its requests: :class:`RoundTrips` on an executor's threads
(inline without one), :class:`AsyncRoundTrips` as asyncio tasks, ``concurrency`` of them
talking to the server at once.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from functools import partial
from typing import Any, Generic, Protocol, TypeVar

from redis import exceptions as redis_exceptions

from feast_dragonfly._protocol import flow
from feast_dragonfly._protocol import script as _script
from feast_dragonfly._protocol import transport as _transport
from feast_dragonfly._protocol.flow import Flow
from feast_dragonfly._protocol.keys import Progress
from feast_dragonfly._protocol.script import ScriptCall
from feast_dragonfly._protocol.wire import out_of_memory
from feast_dragonfly._store.write import group_calls

H = TypeVar("H")


# --------------------------------------------------------------------------- planning (no I/O)


@dataclass(frozen=True)
class Job:
    """One round trip: the rows reported once it is done, and the flow that performs it
    (returning the rows written)."""

    rows: int
    flow: Flow[int]


class Planner(Protocol):
    """Which calls go together in one round trip, and when."""

    def jobs(self, group: Sequence[ScriptCall]) -> list[Job]:
        """The round trips ``group`` completes (calls may be kept for later ones)."""

    def drain(self) -> list[Job]:
        """Round trips for every call still kept, which are forgotten."""


def progress_rows(calls: Iterable[ScriptCall]) -> int:
    """The input rows ``calls`` stand for (what progress reports once they are written)."""
    return sum(call.progress_rows for call in calls)


class ServerPlanner:
    """A single server: each submitted group (``CALLS_PER_ROUND_TRIP`` calls, see
    ``write.group_calls``) is one round trip on one connection; nothing is kept."""

    def __init__(self, view_name: str) -> None:
        self._view_name = view_name

    def jobs(self, group: Sequence[ScriptCall]) -> list[Job]:
        sent = [call for call in group if call.rows]
        if not sent:
            return [Job(progress_rows(group), no_round_trip())]
        return [Job(progress_rows(group), _write_group(sent, self._view_name))]

    def drain(self) -> list[Job]:
        return []


def no_round_trip() -> Flow[int]:
    """The flow of a job with nothing to send (calls of no row that only report progress:
    rows a writer left out, e.g. already past their ttl)."""
    return 0
    yield  # a generator: a flow like every other


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
    that point ran, and resending them would count their rows as 0 (already written).

    A server out of memory stops the write with its own reply, raised as is: the deployment
    (``Deployment.errors``) knows which server that is and reads its limit for the message."""
    replies = list((yield from _send_calls(group)))
    again = _script.needs_load(replies)
    if again:
        for script in _script.scripts_to_load(group, again):
            [loaded] = yield _Exchange([script.load_command], 1)
            _raise_if_full([loaded])
            _script.check_loaded(loaded)
        answers = yield from _send_calls([group[i] for i in again])
        for i, reply in zip(again, answers):
            replies[i] = reply
    _raise_if_full(replies)
    return _script.rows_written(group, replies, view_name)


def _raise_if_full(replies: Sequence[Any]) -> None:
    """Raise the first reply that says the server is out of memory: no later call will fit
    either, and the caller's ``Deployment.errors`` turns it into one clear error."""
    for reply in replies:
        if out_of_memory(reply):
            raise reply


def _exchange(pool: Any, request: _Exchange) -> list[Any]:
    return _transport.exchange(pool, request.payloads, request.replies, check_health=False)


async def _exchange_async(pool: Any, request: _Exchange) -> list[Any]:
    return await _transport.exchange_async(
        pool, request.payloads, request.replies, check_health=False
    )


def run_group(pool: Any, group: Sequence[ScriptCall], view_name: str) -> int:
    """Send one group of calls on one connection; returns the number of rows written."""
    return flow.run(_write_group(group, view_name), partial(_exchange, pool))


async def run_group_async(pool: Any, group: Sequence[ScriptCall], view_name: str) -> int:
    return await flow.run_async(_write_group(group, view_name), partial(_exchange_async, pool))


# --------------------------------------------------------------------------- scheduling (no I/O)


class _Collect:
    """Request of a schedule: wait for the oldest round trip, count and report it."""


class _Schedule(Generic[H]):
    """What both drivers decide alike, as flows: each yields a :class:`Job` to start, or
    :class:`_Collect` to wait for the oldest one (whose handle ``H``, a future or a task, the
    driver keeps in ``_in_flight`` with its rows).

    A window larger than ``concurrency`` lets a caller that encodes in large batches
    (materialization) queue a whole batch and convert the next one while the server works
    through it, instead of leaving the server idle during each conversion; the bound keeps
    memory bounded.
    """

    def __init__(
        self, planner: Planner, *, concurrency: int, progress: Progress, window: int | None
    ) -> None:
        self._planner = planner
        self._window = max(1, concurrency, window or 0)
        self._progress = progress
        self._in_flight: deque[tuple[H, int]] = deque()
        self.written = 0

    def _starting(self, jobs: Iterable[Job]) -> Flow[None]:
        for job in jobs:
            while len(self._in_flight) >= self._window:
                yield _Collect
            yield job

    def _submitting(self, group: Sequence[ScriptCall]) -> Flow[None]:
        yield from self._starting(self._planner.jobs(group))

    def _finishing(self) -> Flow[int]:
        yield from self._starting(self._planner.drain())
        while self._in_flight:
            yield _Collect
        return self.written

    def _oldest(self) -> tuple[H, int]:
        return self._in_flight.popleft()

    def _collected(self, written: int, rows: int) -> None:
        self.written += written
        if self._progress and rows:
            self._progress(rows)

    def _dropped(self) -> list[H]:
        """After an error: what is buffered forgotten; the handles still to cancel and wait."""
        self._planner.drain()
        handles = [handle for handle, _ in self._in_flight]
        self._in_flight.clear()
        return handles


class RoundTrips(_Schedule[Future[int]]):
    """Runs a planner's round trips on ``executor``, up to ``concurrency`` at once, each on
    its own pooled connection (inline, one at a time, without an executor or with
    ``concurrency`` 1); ``send`` carries one request of a job's flow.

    :meth:`submit` returns as soon as the round trips are queued, unless ``window`` (default:
    ``concurrency``) are already queued or in flight: then it first waits for the oldest, so
    the caller encodes the next chunk while the server executes the previous ones.
    """

    def __init__(
        self,
        planner: Planner,
        send: Callable[[Any], Any],
        *,
        executor: Executor | None,
        concurrency: int,
        progress: Progress,
        window: int | None = None,
    ) -> None:
        super().__init__(planner, concurrency=concurrency, progress=progress, window=window)
        self._send = send
        self._executor = executor if concurrency > 1 else None

    def submit(self, group: Sequence[ScriptCall]) -> None:
        """Start (or queue) the round trips ``group`` completes."""
        flow.run(self._submitting(group), self._carry)

    def finish(self) -> int:
        """Wait for every round trip; returns the rows written. On an error, waits for the
        others (without reporting them) and raises the first."""
        try:
            return flow.run(self._finishing(), self._carry)
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        """Drop what is buffered, wait for what is in flight without reporting (after an
        error elsewhere)."""
        futures = self._dropped()
        for future in futures:
            future.cancel()
        for future in futures:
            try:
                future.result()
            except BaseException:  # noqa: BLE001 - the first error is the one raised
                pass

    def _carry(self, request: Job | type[_Collect]) -> None:
        if isinstance(request, Job):
            if self._executor is None:
                self._collected(self._run(request), request.rows)
            else:
                future = self._executor.submit(self._run, request)
                self._in_flight.append((future, request.rows))
        else:
            future, rows = self._oldest()
            self._collected(future.result(), rows)

    def _run(self, job: Job) -> int:
        return flow.run(job.flow, self._send)


class AsyncRoundTrips(_Schedule[asyncio.Task[int]]):
    """:class:`RoundTrips` for asyncio: round trips are tasks, at most ``concurrency`` of them
    talking to the server at once and at most ``window`` started ahead of the caller, so an
    async write encodes as it sends instead of encoding everything first."""

    def __init__(
        self,
        planner: Planner,
        send: Callable[[Any], Awaitable[Any]],
        *,
        concurrency: int,
        progress: Progress,
        window: int | None = None,
    ) -> None:
        super().__init__(planner, concurrency=concurrency, progress=progress, window=window)
        self._send = send
        self._slots = asyncio.Semaphore(max(1, concurrency))

    async def submit(self, group: Sequence[ScriptCall]) -> None:
        """Start (or queue) the round trips ``group`` completes."""
        await flow.run_async(self._submitting(group), self._carry)

    async def finish(self) -> int:
        """Wait for every round trip; returns the rows written, or raises the first error
        once the others are done."""
        try:
            return await flow.run_async(self._finishing(), self._carry)
        except BaseException:
            await self.abort()
            raise

    async def abort(self) -> None:
        """Drop what is buffered, cancel what has not finished and wait for it, without
        reporting."""
        tasks = self._dropped()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _carry(self, request: Job | type[_Collect]) -> None:
        if isinstance(request, Job):
            task = asyncio.ensure_future(self._run(request))
            self._in_flight.append((task, request.rows))
        else:
            task, rows = self._oldest()
            self._collected(await task, rows)

    async def _run(self, job: Job) -> int:
        async with self._slots:
            return await flow.run_async(job.flow, self._send)


# --------------------------------------------------------------------------- single server


class Sender(RoundTrips):
    """Sends groups of calls (one group: one round trip on one connection) to one server."""

    def __init__(self, pool: Any, view_name: str, **options: Any) -> None:
        super().__init__(ServerPlanner(view_name), partial(_exchange, pool), **options)


class AsyncSender(AsyncRoundTrips):
    """:class:`Sender` for asyncio pools."""

    def __init__(self, pool: Any, view_name: str, **options: Any) -> None:
        super().__init__(ServerPlanner(view_name), partial(_exchange_async, pool), **options)


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
