"""Event-time rule of online writes, against a real server.

A write never replaces a stored row whose event timestamp is newer or EQUAL (compared to the
microsecond, as Feast stores it), between batches, within one batch, across script calls of
one batch, under concurrent writers, and for any instant a ``datetime`` can hold.
"""

from __future__ import annotations

import inspect
import itertools
import random
import threading
from datetime import datetime, timedelta, timezone

import pytest
from feast.infra.online_stores.redis import RedisOnlineStore
from store_kit import (
    FEAST_REDIS,
    entity_key,
    feature_view,
    hash_key,
    repo_config,
    row,
    stored_values,
    value_of,
)

from feast_dragonfly import DragonflyDataError, DragonflyOnlineStore

UTC = timezone.utc
T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
US = timedelta(microseconds=1)


@pytest.fixture
def config(tmp_path, server_connection_string):
    return repo_config(tmp_path, server_connection_string)


@pytest.fixture
def small_calls_config(tmp_path, server_connection_string):
    """Three rows per script call, so one batch spans several calls."""
    return repo_config(tmp_path, server_connection_string, write_rows_per_call=3)


@pytest.fixture
def fv():
    return feature_view()


def write(store, config, fv, rows, progress=None):
    store.online_write_batch(config, fv, list(rows), progress)


# --------------------------------------------------------------------------- between batches


@pytest.mark.parametrize(
    ("delta", "accepted"),
    [
        (-timedelta(days=1), False),
        (-timedelta(seconds=1), False),
        (-US, False),
        (timedelta(0), False),
        (US, True),
        (timedelta(seconds=1), True),
    ],
    ids=["day-older", "second-older", "1us-older", "equal", "1us-newer", "second-newer"],
)
def test_second_write_is_applied_only_when_strictly_newer(store, config, fv, delta, accepted):
    write(store, config, fv, [row(1, T0, 100)])
    write(store, config, fv, [row(1, T0 + delta, 200)])

    [(when, values)] = stored_values(store, config, fv, [1])
    if accepted:
        assert values == {"a": 200, "b": 200}
        assert when == T0 + delta
    else:
        assert values == {"a": 100, "b": 100}
        assert when == T0


def test_a_rejected_row_leaves_every_stored_byte_alone(store, config, fv, redis_client):
    write(store, config, fv, [row(1, T0, 100)])
    before = redis_client.hgetall(hash_key(1))
    write(store, config, fv, [row(1, T0, 999), row(1, T0 - US, 998)])
    assert redis_client.hgetall(hash_key(1)) == before


def test_newest_wins_across_several_batches(store, config, fv):
    write(store, config, fv, [row(1, T0 + timedelta(minutes=5), 5)])
    write(store, config, fv, [row(1, T0 + timedelta(minutes=m), m) for m in (3, 7, 6)])
    assert value_of(store, config, fv, 1) == 7
    write(store, config, fv, [row(1, T0 + timedelta(minutes=7), 77)])  # equal: rejected
    write(store, config, fv, [row(1, T0 + timedelta(minutes=1), 1)])
    assert value_of(store, config, fv, 1) == 7
    write(store, config, fv, [row(1, T0 + timedelta(minutes=8), 8)])
    assert value_of(store, config, fv, 1) == 8


# --------------------------------------------------------------------------- within one batch


@pytest.mark.parametrize("rows_per_call", [100, 3, 1])
def test_within_one_batch_the_newest_row_wins_in_any_order(
    store, tmp_path, server_connection_string, fv, rows_per_call
):
    """24 entities, each receiving its 4 rows in a different permutation, interleaved."""
    config = repo_config(tmp_path, server_connection_string, write_rows_per_call=rows_per_call)
    minutes = [1, 2, 3, 4]
    per_entity = {
        e: [row(e, T0 + timedelta(minutes=m), 10 * e + m) for m in order]
        for e, order in enumerate(itertools.permutations(minutes))
    }
    interleaved = [rows[i] for i in range(4) for rows in per_entity.values()]
    random.Random(7).shuffle(interleaved)  # also mix entities' rows across script calls

    write(store, config, fv, interleaved)

    results = stored_values(store, config, fv, list(per_entity))
    for e, (when, values) in zip(per_entity, results):
        assert values == {"a": 10 * e + 4, "b": 10 * e + 4}, f"entity {e}"
        assert when == T0 + timedelta(minutes=4)


@pytest.mark.parametrize("rows_per_call", [100, 1])
def test_within_one_batch_equal_timestamps_keep_the_first_row(
    store, tmp_path, server_connection_string, fv, rows_per_call
):
    config = repo_config(tmp_path, server_connection_string, write_rows_per_call=rows_per_call)
    later = T0 + timedelta(seconds=1)
    write(
        store,
        config,
        fv,
        [
            row(1, T0, 1),
            row(1, T0, 2),  # equal to the first: rejected, as in Feast
            row(2, T0, 1),
            row(2, later, 2),
            row(2, later, 3),  # equal to the newest so far: rejected
            row(2, T0, 4),
        ],
    )
    assert value_of(store, config, fv, 1) == 1
    assert value_of(store, config, fv, 2) == 2


def _feast_compares_rows_of_one_batch() -> bool:
    """Whether Feast's store checks a batch's rows against each other (0.67 on), not only
    against what was stored before the batch (before: the last row of an entity won)."""
    return "batch_latest" in inspect.getsource(RedisOnlineStore.online_write_batch)


def test_equal_timestamps_in_one_batch_match_feasts_store(
    tmp_path, server_connection_string, fv, redis_client
):
    """Feast's own store keeps the first of equal rows too: same bytes on the server. (An
    older Feast gets the rows one batch each: the rule it applies between batches.)"""
    rows = [row(1, T0, 1), row(1, T0, 2), row(2, T0 + US, 3), row(2, T0, 4), row(2, T0 + US, 5)]
    feast_config = repo_config(tmp_path, server_connection_string, store_type=FEAST_REDIS)
    batches = [rows] if _feast_compares_rows_of_one_batch() else [[one] for one in rows]
    for batch in batches:
        RedisOnlineStore().online_write_batch(feast_config, fv, batch, None)
    reference = {k: redis_client.hgetall(k) for k in (hash_key(1), hash_key(2))}
    redis_client.flushall()

    DragonflyOnlineStore().online_write_batch(
        repo_config(tmp_path, server_connection_string), fv, rows, None
    )
    assert {k: redis_client.hgetall(k) for k in (hash_key(1), hash_key(2))} == reference


# --------------------------------------------------------------------------- precision & range


def test_rows_one_microsecond_apart(store, small_calls_config, fv):
    config = small_calls_config
    write(store, config, fv, [row(1, T0 + US, 1)])
    write(store, config, fv, [row(1, T0, 2)])
    assert value_of(store, config, fv, 1) == 1
    write(store, config, fv, [row(1, T0 + US, 3)])
    assert value_of(store, config, fv, 1) == 1
    write(store, config, fv, [row(1, T0 + 2 * US, 4)])
    assert value_of(store, config, fv, 1) == 4

    # Within one batch, spread over several script calls.
    stamps = [T0 + k * US for k in range(10)]
    order = [3, 9, 0, 8, 1, 7, 2, 6, 5, 4]
    write(store, config, fv, [row(2, stamps[k], k) for k in order])
    [(when, values)] = stored_values(store, config, fv, [2])
    assert values["a"] == 9
    assert when == stamps[9]


PRE_1970 = [
    datetime(1969, 12, 31, 23, 59, 59, tzinfo=UTC),  # seconds = -1
    datetime(1969, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),  # seconds = -1, nanos > 0
    datetime(1969, 7, 20, 20, 17, 40, tzinfo=UTC),
    datetime(1966, 1, 1, tzinfo=UTC),
    datetime(1900, 1, 1, 0, 0, 0, 1, tzinfo=UTC),
    datetime(1, 1, 1, 0, 0, 10, tzinfo=UTC),
]


@pytest.mark.parametrize("stored", PRE_1970, ids=lambda d: d.isoformat())
def test_timestamps_before_1970(store, config, fv, stored):
    """Negative seconds: older and equal writes are rejected, newer ones accepted."""
    assert stored.timestamp() < 0
    write(store, config, fv, [row(1, stored, 1)])
    [(when, _)] = stored_values(store, config, fv, [1])
    assert when == stored

    for older in (stored - timedelta(seconds=5), stored - timedelta(seconds=1), stored - US):
        write(store, config, fv, [row(1, older, 2)])
        assert value_of(store, config, fv, 1) == 1, f"older {older.isoformat()} replaced it"
    write(store, config, fv, [row(1, stored, 3)])
    assert value_of(store, config, fv, 1) == 1, "an equal pre-1970 timestamp replaced it"
    write(store, config, fv, [row(1, stored + US, 4)])
    assert value_of(store, config, fv, 1) == 4


def test_far_future_timestamps(store, config, fv):
    last = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)
    write(store, config, fv, [row(1, last - US, 1)])
    write(store, config, fv, [row(1, datetime(2262, 4, 12, tzinfo=UTC), 2)])  # past int64 ns
    write(store, config, fv, [row(1, last - 2 * US, 3)])
    assert value_of(store, config, fv, 1) == 1
    write(store, config, fv, [row(1, last, 4)])
    [(when, values)] = stored_values(store, config, fv, [1])
    assert values["a"] == 4
    assert when == last
    write(store, config, fv, [row(1, last, 5)])
    assert value_of(store, config, fv, 1) == 4


def test_naive_datetimes_are_utc_and_aware_ones_compare_by_instant(store, config, fv, redis_client):
    naive = datetime(2024, 1, 1, 12, 0, 0)
    plus2 = timezone(timedelta(hours=2))
    minus4 = timezone(timedelta(hours=-4))
    write(store, config, fv, [row(1, naive, 1)])
    stored_ts = redis_client.hget(hash_key(1), b"_ts:fv")

    same_instants = [
        datetime(2024, 1, 1, 14, 0, 0, tzinfo=plus2),
        datetime(2024, 1, 1, 8, 0, 0, tzinfo=minus4),
        datetime(2024, 1, 1, 12, 0, 0, tzinfo=UTC),
    ]
    for moment in same_instants:
        write(store, config, fv, [row(1, moment, 2)])
        assert value_of(store, config, fv, 1) == 1, f"{moment.isoformat()} is the same instant"
    # Same wall-clock digits, earlier instant (13:00+02:00 is 11:00 UTC).
    write(store, config, fv, [row(1, datetime(2024, 1, 1, 13, 0, 0, tzinfo=plus2), 3)])
    assert value_of(store, config, fv, 1) == 1
    # Later instant though the wall clock reads earlier (09:00-04:00 is 13:00 UTC).
    write(store, config, fv, [row(1, datetime(2024, 1, 1, 9, 0, 0, tzinfo=minus4), 4)])
    assert value_of(store, config, fv, 1) == 4

    # The stored timestamp bytes do not depend on how the instant was spelled.
    redis_client.flushall()
    write(store, config, fv, [row(1, same_instants[0], 1)])
    assert redis_client.hget(hash_key(1), b"_ts:fv") == stored_ts
    # ...and a naive datetime equal to a stored aware instant is rejected.
    write(store, config, fv, [row(1, naive, 5)])
    assert value_of(store, config, fv, 1) == 1


# --------------------------------------------------------------------------- views, async, TTL


def test_feature_views_on_one_hash_are_checked_independently(store, config, redis_client):
    view_a = feature_view("view_a", ("x",))
    view_b = feature_view("view_b", ("y",))
    write(store, config, view_a, [row(1, T0 + timedelta(hours=1), 1, ("x",))])
    write(store, config, view_b, [row(1, T0, 2, ("y",))])  # older than view_a's row: fine
    write(store, config, view_b, [row(1, T0 + timedelta(minutes=1), 3, ("y",))])
    write(store, config, view_a, [row(1, T0 + timedelta(minutes=30), 4, ("x",))])  # stale

    [(when_a, a)] = stored_values(store, config, view_a, [1])
    [(when_b, b)] = stored_values(store, config, view_b, [1])
    assert (a, when_a) == ({"x": 1}, T0 + timedelta(hours=1))
    assert (b, when_b) == ({"y": 3}, T0 + timedelta(minutes=1))
    fields = redis_client.hkeys(hash_key(1))
    assert {f for f in fields if f.startswith(b"_ts:")} == {b"_ts:view_a", b"_ts:view_b"}
    assert len(fields) == 4


async def test_async_writes_follow_the_same_rule(store, small_calls_config, fv):
    config = small_calls_config

    async def awrite(rows, progress=None):
        await store.online_write_batch_async(config, fv, list(rows), progress)

    try:
        await awrite([row(1, T0, 100)])
        for delta, value in ((-US, 1), (timedelta(0), 2)):
            await awrite([row(1, T0 + delta, value)])
        assert value_of(store, config, fv, 1) == 100
        await awrite([row(1, T0 + US, 3)])
        assert value_of(store, config, fv, 1) == 3

        order = [2, 7, 0, 5, 9, 1, 8, 3, 6, 4]  # 10 rows over 4 script calls
        counts: list[int] = []
        await awrite([row(2, T0 + timedelta(seconds=k), k) for k in order], counts.append)
        [(when, values)] = await store.online_read_async(config, fv, [entity_key(2)])
        assert values["a"].int64_val == 9
        assert when == T0 + timedelta(seconds=9)
        assert sum(counts) == 10
    finally:
        await store.close()


def test_key_ttl_is_set_by_accepted_writes_only(
    store, tmp_path, server_connection_string, fv, redis_client
):
    config = repo_config(tmp_path, server_connection_string, key_ttl_seconds=1000)
    client = redis_client
    key = hash_key(1)
    write(store, config, fv, [row(1, T0, 1)])
    assert 990 <= client.ttl(key) <= 1000

    client.expire(key, 50)
    write(store, config, fv, [row(1, T0 - US, 2)])  # stale: Feast skips the EXPIRE too
    write(store, config, fv, [row(1, T0, 3)])  # equal: same
    assert client.ttl(key) <= 50
    assert value_of(store, config, fv, 1) == 1

    write(store, config, fv, [row(1, T0 + US, 4)])
    assert 990 <= client.ttl(key) <= 1000
    assert value_of(store, config, fv, 1) == 4

    # Without key_ttl_seconds nothing expires; 0 means the same, as in Feast's store.
    plain = repo_config(tmp_path / "plain", server_connection_string)
    write(store, plain, fv, [row(2, T0, 1)])
    assert client.ttl(hash_key(2)) == -1
    zero = repo_config(tmp_path / "zero", server_connection_string, key_ttl_seconds=0)
    write(store, zero, fv, [row(3, T0, 1)])
    assert client.ttl(hash_key(3)) == -1
    assert value_of(store, zero, fv, 3) == 1


def test_feasts_store_also_skips_expire_for_stale_rows(
    tmp_path, server_connection_string, fv, redis_client
):
    """The reference behaviour the previous test matches."""
    config = repo_config(
        tmp_path, server_connection_string, store_type=FEAST_REDIS, key_ttl_seconds=1000
    )
    client = redis_client
    feast_store = RedisOnlineStore()
    feast_store.online_write_batch(config, fv, [row(1, T0, 1)], None)
    client.expire(hash_key(1), 50)
    feast_store.online_write_batch(config, fv, [row(1, T0, 2)], None)
    assert client.ttl(hash_key(1)) <= 50


# --------------------------------------------------------------------------- progress


@pytest.mark.parametrize("rows_per_call", [100, 3])
def test_progress_counts_every_row_including_rejected_ones(
    store, tmp_path, server_connection_string, fv, rows_per_call
):
    config = repo_config(tmp_path, server_connection_string, write_rows_per_call=rows_per_call)
    write(store, config, fv, [row(e, T0, 0) for e in range(5)])
    rows = [row(e, T0 + timedelta(seconds=s), s) for e in range(5) for s in (-1, 0, 1, 2)]
    counts: list[int] = []
    write(store, config, fv, rows, counts.append)
    assert sum(counts) == len(rows) == 20
    assert all(c > 0 for c in counts)
    assert [value_of(store, config, fv, e) for e in range(5)] == [2] * 5


def test_empty_batch_writes_nothing(store, config, fv, redis_client):
    counts: list[int] = []
    write(store, config, fv, [], counts.append)
    assert sum(counts) == 0
    assert redis_client.dbsize() == 0


# --------------------------------------------------------------------------- concurrency


def test_concurrent_writers_never_let_an_older_row_win(tmp_path, server_connection_string, fv):
    """8 threads write shuffled timestamps for the same 20 entities; the newest always wins."""
    config = repo_config(tmp_path, server_connection_string, write_rows_per_call=4)
    entities = list(range(20))
    stamps = [T0 + timedelta(milliseconds=k) for k in range(24)]
    shared = DragonflyOnlineStore()
    start = threading.Barrier(8)
    errors: list[BaseException] = []

    def writer(seed: int) -> None:
        rng = random.Random(seed)
        store = shared if seed % 2 else DragonflyOnlineStore()  # shared and private clients
        rows = [row(e, stamps[k], k) for e in entities for k in rng.sample(range(24), 12)]
        if seed == 0:
            rows += [row(e, stamps[23], 23) for e in entities]  # someone writes the newest
        rng.shuffle(rows)
        try:
            start.wait(timeout=10)
            for i in range(0, len(rows), 16):
                store.online_write_batch(config, fv, rows[i : i + 16], None)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(seed,)) for seed in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads)
    assert not errors, errors
    results = stored_values(shared, config, fv, entities)
    assert [values["a"] for _, values in results] == [23] * len(entities)
    assert {when for when, _ in results} == {stamps[23]}


# --------------------------------------------------------------------------- server state


def test_script_is_reloaded_after_script_flush(store, config, fv, redis_client):
    write(store, config, fv, [row(1, T0, 1)])
    redis_client.script_flush()
    write(store, config, fv, [row(1, T0 + US, 2)])
    assert value_of(store, config, fv, 1) == 2
    redis_client.script_flush()
    write(store, config, fv, [row(1, T0, 3)])  # the reloaded script still checks event time
    assert value_of(store, config, fv, 1) == 2


async def test_async_script_is_reloaded_after_script_flush(store, config, fv, redis_client):
    try:
        await store.online_write_batch_async(config, fv, [row(1, T0, 1)], None)
        redis_client.script_flush()
        await store.online_write_batch_async(config, fv, [row(1, T0 + US, 2)], None)
        redis_client.script_flush()
        await store.online_write_batch_async(config, fv, [row(1, T0, 3)], None)
    finally:
        await store.close()
    assert value_of(store, config, fv, 1) == 2


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
async def test_wrongtype_key_gives_a_data_error_naming_the_entity(
    store, config, fv, redis_client, use_async
):
    redis_client.set(hash_key(4242), b"not a hash")
    rows = [row(4242, T0, 1)]
    with pytest.raises(DragonflyDataError) as caught:
        if use_async:
            try:
                await store.online_write_batch_async(config, fv, rows, None)
            finally:
                await store.close()
        else:
            write(store, config, fv, rows)
    message = str(caught.value)
    assert "driver_id=4242" in message
    assert "fv" in message
    assert "WRONGTYPE" in message
    assert redis_client.get(hash_key(4242)) == b"not a hash"
    assert redis_client.type(hash_key(4242)) in (b"string", "string")


@pytest.mark.parametrize(
    "bad_ts",
    [b"garbage", b"\x08", b"\x08\xff\xff", b"\x18\x01"],
    ids=["text", "truncated-tag", "truncated-varint", "unknown-field"],
)
def test_malformed_stored_timestamp_gives_a_clear_error_and_changes_nothing(
    store, config, fv, redis_client, bad_ts
):
    key = hash_key(7)
    redis_client.hset(key, mapping={b"_ts:fv": bad_ts, b"\x01\x02\x03\x04": b"old"})
    before = redis_client.hgetall(key)
    with pytest.raises(DragonflyDataError) as caught:
        write(store, config, fv, [row(7, T0, 1)])
    message = str(caught.value)
    assert "driver_id=7" in message
    assert "timestamp" in message
    assert "_ts:fv" in message
    assert redis_client.hgetall(key) == before
