"""``_store.send``: a write's round trips planned without I/O, run by a sync or async driver.

* The single-server planner, no server: one round trip of each submitted group (the
  cluster's, ``NodePlanner``, is in ``test_cluster_write.py``).
* Drivers, with stand-in planners and sends: progress in submission order whatever order the
  round trips end in; at most ``window`` round trips queued ahead of the caller (the caller
  collecting the oldest when it is full); at most ``concurrency`` talking at once (asyncio);
  inline without an executor; the first error raised once no round trip is still running;
  ``abort`` drops what the planner keeps and reports nothing.
* On the real server: ``send_all`` through ``Sender`` / ``AsyncSender`` and ``run_group``
  write Feast's layout (read back with HGETALL), load the script again after ``SCRIPT
  FLUSH``, and an error reply becomes an error naming the entity.
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

import pytest
import redis.asyncio as redis_asyncio
from store_kit import hash_key, row

from feast_dragonfly._protocol import flow, script, transport
from feast_dragonfly._protocol.keys import feature_field
from feast_dragonfly._store import send, write
from feast_dragonfly._store.layout import encode_event_time
from feast_dragonfly.errors import DragonflyDataError

VIEW = "drivers"
T0 = datetime(2024, 5, 1, 12, 0, 0, 123_456, tzinfo=timezone.utc)


def plan(rows, rows_per_call=100):
    return list(write.plan_calls(rows, view_name=VIEW, project="proj", key_version=3,
                                 ttl_seconds=None, rows_per_call=rows_per_call))  # fmt: skip


# --------------------------------------------------------------------------- planners


def test_a_single_server_makes_one_round_trip_of_each_group():
    calls = plan([row(k, T0, k) for k in range(10)], rows_per_call=3)  # 3, 3, 3, 1 rows
    planner = send.ServerPlanner(VIEW)
    [job] = planner.jobs(calls[:2])
    assert job.rows == 6
    request = next(job.flow)
    assert request.payloads == [calls[0].command, calls[1].command] and request.replies == 2
    assert [job.rows for job in planner.jobs(calls[2:])] == [4]
    assert planner.drain() == []


# --------------------------------------------------------------------------- drivers


class Boom(Exception):
    pass


class Planner:
    """Stand-in: each submitted item is one job (whose flow sends the item); ``kept`` items
    come out of ``drain`` only."""

    def __init__(self, kept=()) -> None:
        self.kept = list(kept)

    def jobs(self, group):
        return [make_job(item) for item in group]

    def drain(self):
        jobs, self.kept = [make_job(item) for item in self.kept], []
        return jobs


def make_job(item: int) -> send.Job:
    def steps():
        return (yield item)

    return send.Job(rows=10 + item, flow=steps())


class LazyFuture(Future):
    def __init__(self, fn, args) -> None:
        super().__init__()
        self._call = (fn, args)

    def result(self, timeout=None):
        if not self.done() and self.set_running_or_notify_cancel():
            fn, args = self._call
            try:
                self.set_result(fn(*args))
            except BaseException as exc:  # noqa: BLE001
                self.set_exception(exc)
        return super().result(timeout)


class LazyExecutor(Executor):
    """Runs a round trip only when the driver waits for it: the test sees what is queued."""

    def submit(self, fn, /, *args, **kwargs):
        return LazyFuture(fn, args)


def test_at_most_window_round_trips_are_queued_ahead_of_the_caller():
    sent, seen = [], []

    def carry(item):
        sent.append(item)
        return item

    trips = send.RoundTrips(Planner(kept=[9]), carry, executor=LazyExecutor(), concurrency=2,
                            progress=seen.append, window=3)  # fmt: skip
    trips.submit([0, 1])
    trips.submit([2])
    assert sent == [] and seen == []  # three queued: the window is full
    trips.submit([3])
    assert sent == [0] and seen == [10]  # the oldest collected first
    assert trips.finish() == 0 + 1 + 2 + 3 + 9  # what is kept goes at the end
    assert sent == [0, 1, 2, 3, 9] and seen == [10, 11, 12, 13, 19]


def test_progress_is_reported_in_submission_order_from_the_calling_thread():
    seen, threads = [], set()

    def carry(item):
        time.sleep(0.01 * (5 - item))  # the last round trip ends first
        return item

    def progress(rows):
        threads.add(threading.current_thread())
        seen.append(rows)

    with ThreadPoolExecutor(5) as executor:
        trips = send.RoundTrips(Planner(), carry, executor=executor, concurrency=5,
                                progress=progress, window=8)  # fmt: skip
        trips.submit(range(5))
        assert trips.finish() == 10
    assert seen == [10, 11, 12, 13, 14] and threads == {threading.current_thread()}


@pytest.mark.parametrize("executor", [None, "one worker"])
def test_without_an_executor_or_with_concurrency_1_round_trips_run_inline(executor):
    seen, threads = [], []

    def carry(item):
        threads.append(threading.current_thread())
        return item

    with ThreadPoolExecutor(1) as pool:
        trips = send.RoundTrips(Planner(), carry, executor=executor and pool,
                                concurrency=1 if executor else 4, progress=seen.append)  # fmt: skip
        trips.submit([0, 1])
        assert seen == [10, 11]  # reported at once
        assert trips.finish() == 1
    assert threads == [threading.current_thread()] * 2


def test_the_first_error_is_raised_once_no_round_trip_is_running():
    seen, ended = [], set()

    def carry(item):
        try:
            time.sleep({0: 0.05, 1: 0, 2: 0.15}[item])
            if item == 1:
                raise Boom(item)
            return item
        finally:
            ended.add(item)

    with ThreadPoolExecutor(3) as executor:
        trips = send.RoundTrips(Planner(), carry, executor=executor, concurrency=3,
                                progress=seen.append)  # fmt: skip
        trips.submit([0, 1, 2])
        with pytest.raises(Boom):
            trips.finish()
        assert ended == {0, 1, 2}
    assert seen == [10]  # nothing after the failure is reported


def test_abort_drops_what_is_kept_and_reports_nothing():
    sent, seen = [], []
    planner = Planner(kept=[7])
    trips = send.RoundTrips(planner, sent.append, executor=LazyExecutor(), concurrency=2,
                            progress=seen.append)  # fmt: skip
    trips.submit([0, 1])
    trips.abort()
    assert sent == [] and seen == [] and planner.kept == []

    def slow(item):
        time.sleep(0.05)
        sent.append(item)

    with ThreadPoolExecutor(2) as executor:
        trips = send.RoundTrips(Planner(), slow, executor=executor, concurrency=2,
                                progress=seen.append)  # fmt: skip
        trips.submit([0, 1])
        time.sleep(0.01)  # both running
        trips.abort()
        assert sorted(sent) == [0, 1] and seen == []  # waited for, not reported


async def test_the_async_driver_bounds_its_window_and_concurrency():
    seen, active, most = [], [0], [0]

    async def carry(item):
        active[0] += 1
        most[0] = max(most[0], active[0])
        await asyncio.sleep(0.01 * (6 - item))
        active[0] -= 1
        return item

    trips = send.AsyncRoundTrips(Planner(kept=[9]), carry, concurrency=2, progress=seen.append,
                                 window=4)  # fmt: skip
    await trips.submit([0, 1, 2, 3])
    assert seen == []  # four started ahead of the caller
    await trips.submit([4])
    assert seen == [10]  # the window was full: the oldest collected
    assert await trips.finish() == 0 + 1 + 2 + 3 + 4 + 9
    assert seen == [10, 11, 12, 13, 14, 19] and most[0] == 2


async def test_the_async_driver_raises_the_first_error_once_the_others_ended():
    seen, ended = [], set()

    async def carry(item):
        try:
            await asyncio.sleep({0: 0.02, 1: 0, 2: 0.2}[item])
            if item == 1:
                raise Boom(item)
            return item
        finally:
            ended.add(item)

    trips = send.AsyncRoundTrips(Planner(), carry, concurrency=3, progress=seen.append)
    await trips.submit([0, 1, 2])
    with pytest.raises(Boom):
        await trips.finish()
    assert ended == {0, 1, 2} and seen == [10]  # the slow one cancelled, and waited for

    planner = Planner(kept=[5])
    trips = send.AsyncRoundTrips(planner, carry, concurrency=3, progress=seen.append)
    ended.clear()
    await trips.submit([2])
    await asyncio.sleep(0)  # started
    await trips.abort()
    assert ended == {2} and seen == [10] and planner.kept == []


# --------------------------------------------------------------------------- on the server


def row_args(values, when: datetime) -> list[bytes]:
    stamp, seconds, nanos = encode_event_time(when)
    pairs = [p for n, v in values.items() for p in (feature_field(VIEW, n), v.SerializeToString())]
    return [b"%d" % seconds, b"%d" % nanos, b"%d" % (2 + len(pairs)), b"_ts:drivers", stamp, *pairs]


def expected_hash(r) -> dict[bytes, bytes]:
    args = row_args(r[1], r[2])
    return dict(zip(args[3::2], args[4::2]))


def async_pool(server) -> redis_asyncio.ConnectionPool:
    return redis_asyncio.ConnectionPool(
        host=server.host, port=server.port, db=server.db, username=server.username,
        password=server.password,
    )  # fmt: skip


@pytest.mark.parametrize("concurrency", [1, 3])
def test_send_all_writes_feasts_layout_and_reloads_the_script(redis_client, concurrency):
    rows = [row(k, T0, k, ("a", "b")) for k in range(23)]
    redis_client.script_flush()  # the first round trip meets NOSCRIPT and loads the script
    seen: list[int] = []
    with ThreadPoolExecutor(concurrency) as executor:
        sender = send.Sender(redis_client.connection_pool, VIEW, executor=executor,
                             concurrency=concurrency, progress=seen.append)  # fmt: skip
        assert send.send_all(sender, plan(rows, rows_per_call=2)) == 23
    assert seen == [8, 8, 7]  # per round trip: 4 calls of 2 rows
    for r in rows:
        assert redis_client.hgetall(hash_key(r[0])) == expected_hash(r)
    older = [row(k, T0 - timedelta(seconds=1), -1, ("a", "b")) for k in range(23)]
    for group in write.group_calls(plan(older, rows_per_call=5)):
        assert send.run_group(redis_client.connection_pool, group, VIEW) == 0  # guarded


def test_a_group_that_meets_the_script_loaded_midway_counts_every_row(redis_client):
    """Another connection can load the script while a group is on the wire: the calls before
    that point answer NOSCRIPT, the later ones run. Only the NOSCRIPT calls are resent, so
    the rows of the calls that ran are counted (a whole resend counted them as 0)."""
    rows = [row(k, T0, k, ("a", "b")) for k in range(8)]
    [group] = write.group_calls(plan(rows, rows_per_call=2))  # 4 calls of 2 rows
    pool = redis_client.connection_pool
    redis_client.script_flush()
    first = True

    def carry(request):
        nonlocal first
        if not first:
            return transport.exchange(pool, request.payloads, request.replies)
        first = False
        # The first exchange, split where "another connection" loads the script.
        head = transport.exchange(pool, [group[0].command, group[1].command], 2)
        redis_client.script_load(script.SOURCE)
        tail = transport.exchange(pool, [group[2].command, group[3].command], 2)
        return head + tail

    assert flow.run(send._write_group(group, VIEW), carry) == 8
    for r in rows:
        assert redis_client.hgetall(hash_key(r[0])) == expected_hash(r)


async def test_the_async_path_writes_the_same(redis_client, redis_server):
    rows = [row(k, T0, k, ("a",)) for k in range(9)] + [row(3, T0 + timedelta(hours=1), 33, ("a",))]
    redis_client.script_flush()
    pool = async_pool(redis_server)
    seen: list[int] = []
    try:
        [group] = write.group_calls(plan(rows[:2], rows_per_call=1))
        assert await send.run_group_async(pool, group, VIEW) == 2  # NOSCRIPT, load, resend
        sender = send.AsyncSender(pool, VIEW, concurrency=2, progress=seen.append)
        assert await send.send_all_async(sender, plan(rows, rows_per_call=2)) == 7
        assert await send.run_group_async(pool, group, VIEW) == 0  # already stored
    finally:
        await pool.disconnect()
    assert sum(seen) == 10
    assert redis_client.hgetall(hash_key(3)) == expected_hash(rows[-1])
    assert redis_client.hgetall(hash_key(8)) == expected_hash(rows[8])


def test_an_error_reply_names_the_entity_and_keeps_its_data(redis_client):
    redis_client.set(hash_key(4), b"not a hash")
    calls = plan([row(k, T0, k) for k in range(6)], rows_per_call=2)
    sender = send.Sender(redis_client.connection_pool, VIEW, executor=None, concurrency=1,
                         progress=None)  # fmt: skip
    with pytest.raises(DragonflyDataError, match=r"'drivers' for entity driver_id=4: .*WRONGTYPE"):
        send.send_all(sender, calls)
    assert redis_client.get(hash_key(4)) == b"not a hash"
    assert redis_client.exists(hash_key(1)) and not redis_client.exists(hash_key(5))
