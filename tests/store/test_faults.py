"""Faults, on real servers of our own on 127.0.0.1: a server SIGKILLed in the middle of a
materialization and restarted on the same port, connections dropped server-side during reads
and writes, a server restarting while a write waits in its retry backoff, and 16 concurrent
writers (threads and processes) racing with shuffled event times.

Every loop here is bounded in count and time; every process is stopped by its fixture.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import random
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from feast import Entity, FeatureStore, FeatureView, Field, FileSource, ValueType
from feast.types import Int64
from server_kit import ServerProcess, drop_client_connections
from store_kit import entity_key, feature_view, repo_config, row, stored_values

from feast_dragonfly import DragonflyConnectionError, DragonflyOnlineStore

UTC = timezone.utc
T0 = datetime(2024, 3, 1, tzinfo=UTC)


@pytest.fixture
def own_server(server_binary):
    """A server only this test uses (it gets killed, or its clients do)."""
    server = ServerProcess(server_binary).start()
    try:
        yield server
    finally:
        server.stop()


def retries_logged(caplog) -> int:
    return sum("transient server error" in r.getMessage() for r in caplog.records)


# --------------------------------------------------------------------------- materialization


ENTITIES = 30_000
ROWS_PER_ENTITY = 4


def shuffled_history(seed: int = 7) -> pd.DataFrame:
    """ROWS_PER_ENTITY rows per driver, all event times distinct, in random order, so the
    newest row per driver is scattered across batches."""
    rng = np.random.default_rng(seed)
    n = ENTITIES * ROWS_PER_ENTITY
    ranks = rng.permutation(n)  # distinct: no ties to argue about
    frame = pd.DataFrame(
        {
            "driver_id": np.repeat(np.arange(ENTITIES, dtype="int64"), ROWS_PER_ENTITY),
            "event_timestamp": pd.Timestamp(T0) + pd.to_timedelta(ranks, unit="s"),
            "value": ranks.astype("int64"),
        }
    )
    return frame.sample(frac=1, random_state=seed).reset_index(drop=True)


def materialize_repo(path: Path, connection_string: str, frame: pd.DataFrame) -> FeatureStore:
    path.mkdir(parents=True, exist_ok=True)
    pq.write_table(
        pa.Table.from_pandas(frame, preserve_index=False),
        path / "data.parquet",
        row_group_size=8000,
    )
    settings = {
        "project": "faults",
        "registry": str(path / "registry.db"),
        "provider": "local",
        "online_store": {
            "type": "feast_dragonfly.DragonflyOnlineStore",
            "connection_string": connection_string,
            "write_rows_per_call": 50,
            "retry_attempts": 2,
        },
        "batch_engine": {
            "type": "feast_dragonfly.DragonflyMaterializationEngine",
            "batch_size": 5000,
            "show_progress": False,
        },
        "offline_store": {"type": "file"},
        "entity_key_serialization_version": 3,
    }
    (path / "feature_store.yaml").write_text(yaml.safe_dump(settings))
    store = FeatureStore(repo_path=str(path))
    driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
    view = FeatureView(
        name="history",
        entities=[driver],
        schema=[Field(name="driver_id", dtype=Int64), Field(name="value", dtype=Int64)],
        source=FileSource(path=str(path / "data.parquet"), timestamp_field="event_timestamp"),
        ttl=timedelta(days=3650),
    )
    store.apply([driver, view])
    return store


def test_a_server_killed_mid_materialization_then_restarted_ends_with_the_newest_rows(
    tmp_path, server_binary
):
    frame = shuffled_history()
    newest = frame.loc[frame.groupby("driver_id")["event_timestamp"].idxmax()].set_index(
        "driver_id"
    )
    with ServerProcess(server_binary).start() as server:
        store = materialize_repo(tmp_path, f"127.0.0.1:{server.port}", frame)
        view = store.get_feature_view("history")
        watcher = server.client()
        killed_at: list[int] = []

        def kill_when_a_tenth_is_written() -> None:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                size = watcher.dbsize()
                if size >= ENTITIES // 10:
                    server.kill()
                    killed_at.append(size)
                    return
                time.sleep(0.002)

        killer = threading.Thread(target=kill_when_a_tenth_is_written)
        killer.start()
        started = time.monotonic()
        with pytest.raises(DragonflyConnectionError) as caught:
            store.materialize(start_date=T0 - timedelta(days=1), end_date=T0 + timedelta(days=30))
        killer.join(30)
        watcher.close()
        assert killed_at and killed_at[0] < ENTITIES, "the kill came after the last write"
        assert server.address in str(caught.value)
        assert time.monotonic() - started < 60

        # Back on the same port (empty: no persistence). Meanwhile other writers stored a newer
        # row for some drivers and an older one for others.
        server.restart()
        online = store._get_provider().online_store
        config = store.config
        seeded_newer = {d: 10_000_000 + d for d in range(0, ENTITIES, 997)}
        seeded_older = list(range(1, ENTITIES, 991))
        pushes = [row(d, T0 + timedelta(days=3650), v) for d, v in seeded_newer.items()]
        pushes += [row(d, T0 - timedelta(days=1), -1) for d in seeded_older]
        online.online_write_batch(config, view, _as_value_rows(pushes), None)

        # The same FeatureStore (its pools still point at the old connections) re-runs.
        store.materialize(start_date=T0 - timedelta(days=1), end_date=T0 + timedelta(days=30))

        keys = [entity_key(d) for d in range(ENTITIES)]
        results = online.online_read(config, view, keys)
    assert len(results) == ENTITIES
    for driver, (when, values) in enumerate(results):
        if driver in seeded_newer:
            assert values["value"].int64_val == seeded_newer[driver], driver
            continue
        expected = newest.loc[driver]
        assert values is not None, driver
        assert values["value"].int64_val == expected["value"], driver
        assert when == expected["event_timestamp"].to_pydatetime(), driver


def _as_value_rows(rows):
    """store_kit rows carry features a/b; this view's one feature is 'value'."""
    return [(ek, {"value": values["a"]}, when, created) for ek, values, when, created in rows]


# --------------------------------------------------------------------------- dropped connections


STORM_BURST_S = 0.1  # connections are dropped every few milliseconds for this long (less
# than the 0.175 s the retries below back off in all, so a request's retries outlast it),
STORM_LULL_S = 0.1  # then left alone this long


def _storm(server: ServerProcess, stop: threading.Event, kills: list[int]) -> None:
    """Drop every client connection every few milliseconds, in bursts with lulls between
    them, until told to stop (bounded). Bursts, as a flapping proxy or a failover drops
    connections: an outage that never pauses would instead measure whether this machine
    finishes a handshake and a read within the killer's few milliseconds (on a loaded CI
    machine it often does not), not whether the store's retries carry requests across an
    outage."""
    admin = server.client()
    deadline = time.monotonic() + 30
    try:
        while not stop.is_set() and time.monotonic() < deadline:
            burst_ends = time.monotonic() + STORM_BURST_S
            while not stop.is_set() and time.monotonic() < burst_ends:
                kills.append(drop_client_connections(admin))
                time.sleep(0.005)
            stop.wait(STORM_LULL_S)
    finally:
        admin.close()


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
def test_connections_dropped_during_reads_and_writes_never_give_wrong_data(
    tmp_path, own_server, use_async, caplog
):
    caplog.set_level(logging.WARNING, logger="feast_dragonfly")
    config = repo_config(
        tmp_path,
        own_server.address,
        read_chunk_size=50,
        read_concurrency=4,
        write_rows_per_call=20,
        retry_attempts=6,
        retry_backoff_base=0.005,
        retry_backoff_cap=0.05,
    )
    store = DragonflyOnlineStore()
    view = feature_view()
    drivers = list(range(600))
    keys = [entity_key(d) for d in drivers]
    store.online_write_batch(config, view, [row(d, T0, d * 10) for d in drivers], None)

    outcomes = {"ok": 0, "failed": 0}
    errors: list[BaseException] = []

    def check(results, offset: int) -> None:
        for driver, (when, values) in zip(drivers, results):
            assert values["a"].int64_val == driver * 10 + offset, driver
            assert when == T0 + timedelta(seconds=offset)

    async def async_round(offset: int) -> None:
        try:
            check(await store.online_read_async(config, view, keys), offset)
        finally:
            await store.close()

    def one_round(offset: int) -> None:
        try:
            if use_async:
                asyncio.run(async_round(offset))
            else:
                check(store.online_read(config, view, keys), offset)
            outcomes["ok"] += 1
        except DragonflyConnectionError as exc:  # allowed: clear, names the server
            assert own_server.address in str(exc)
            outcomes["failed"] += 1
            errors.append(exc)

    stop, kills = threading.Event(), []
    storm = threading.Thread(target=_storm, args=(own_server, stop, kills))
    storm.start()
    try:
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            one_round(0)
        # A write during the storm either lands (exactly once in effect) or says why not.
        newer = [row(d, T0 + timedelta(seconds=1), d * 10 + 1) for d in drivers]
        try:
            store.online_write_batch(config, view, newer, None)
        except DragonflyConnectionError as exc:
            assert own_server.address in str(exc)
    finally:
        stop.set()
        storm.join(30)
    store.online_write_batch(config, view, newer, None)  # quiet now: idempotent re-run
    one_round(1)
    assert sum(kills) > 10, kills
    assert outcomes["ok"] > 1, (outcomes, errors[:3])
    assert retries_logged(caplog) > 0


def test_a_write_waits_out_a_server_restart_in_its_retry_backoff(tmp_path, own_server):
    config = repo_config(
        tmp_path,
        own_server.address,
        retry_attempts=8,
        retry_backoff_base=0.05,
        retry_backoff_cap=0.4,
        socket_connect_timeout=1,
    )
    store = DragonflyOnlineStore()
    view = feature_view()
    store.online_write_batch(config, view, [row(1, T0, 1)], None)  # pool is warm
    own_server.kill()
    restarter = threading.Timer(0.4, own_server.start)
    restarter.start()
    try:
        store.online_write_batch(config, view, [row(2, T0, 2)], None)
    finally:
        restarter.join(30)
    assert stored_values(store, config, view, [2])[0][1]["a"] == 2


def test_without_retries_a_dead_server_fails_at_once(tmp_path, own_server, caplog):
    caplog.set_level(logging.WARNING, logger="feast_dragonfly")
    config = repo_config(tmp_path, own_server.address, retry_attempts=0)
    store = DragonflyOnlineStore()
    store.online_write_batch(config, feature_view(), [row(1, T0, 1)], None)
    own_server.kill()
    started = time.monotonic()
    with pytest.raises(DragonflyConnectionError, match=own_server.address.replace(".", r"\.")):
        store.online_read(config, feature_view(), [entity_key(1)])
    assert time.monotonic() - started < 1
    assert retries_logged(caplog) == 0


# --------------------------------------------------------------------------- concurrent writers

WRITERS_THREADS = 14
WRITERS_PROCESSES = 2
RACED = 300


def _plan(writer: int, seed: int = 11) -> list[tuple[int, int]]:
    """(driver, rank) pairs this writer sends, in its own shuffled order. Ranks are distinct
    over all writers, so the expected winner of every driver is unambiguous."""
    writers = WRITERS_THREADS + WRITERS_PROCESSES
    ranks = np.random.default_rng(seed).permutation(writers * RACED).reshape(writers, RACED)
    pairs = [(driver, int(ranks[writer, driver])) for driver in range(RACED)]
    random.Random(seed * 100 + writer).shuffle(pairs)
    return pairs


def _rows(pairs):
    return [row(driver, T0 + timedelta(milliseconds=rank), rank) for driver, rank in pairs]


def _process_writer(connection_string: str, repo: str, writer: int, go) -> None:
    """Runs in a spawned process: the async write path, 25 rows per batch."""
    config = repo_config(Path(repo), connection_string, write_rows_per_call=7)
    store = DragonflyOnlineStore()
    rows = _rows(_plan(writer))
    go.wait(60)

    async def run() -> None:
        try:
            for i in range(0, len(rows), 25):
                await store.online_write_batch_async(config, feature_view(), rows[i : i + 25], None)
        finally:
            await store.close()

    asyncio.run(run())


def test_sixteen_concurrent_writers_threads_and_processes_newest_always_wins(
    tmp_path, server_connection_string
):
    config = repo_config(tmp_path, server_connection_string, write_rows_per_call=7)
    view = feature_view()
    spawn = multiprocessing.get_context("spawn")
    go = spawn.Event()
    processes = [
        spawn.Process(
            target=_process_writer,
            args=(server_connection_string, str(tmp_path / f"p{w}"), w, go),
        )
        for w in range(WRITERS_THREADS, WRITERS_THREADS + WRITERS_PROCESSES)
    ]
    errors: list[BaseException] = []

    def thread_writer(writer: int) -> None:
        store = DragonflyOnlineStore()
        rows = _rows(_plan(writer))
        go.wait(60)
        try:
            for i in range(0, len(rows), 25):
                store.online_write_batch(config, view, rows[i : i + 25], None)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=thread_writer, args=(w,)) for w in range(WRITERS_THREADS)]
    try:
        for p in processes:
            p.start()
        for t in threads:
            t.start()
        time.sleep(0.2)
        go.set()  # processes still importing Feast join the race as they come
        for t in threads:
            t.join(60)
        for p in processes:
            p.join(120)
    finally:
        for p in processes:
            if p.is_alive():
                p.kill()
                p.join(10)
    assert not errors, errors
    assert [p.exitcode for p in processes] == [0] * WRITERS_PROCESSES
    writers = WRITERS_THREADS + WRITERS_PROCESSES
    ranks = np.random.default_rng(11).permutation(writers * RACED).reshape(writers, RACED)
    expected = ranks.max(axis=0)
    results = stored_values(DragonflyOnlineStore(), config, view, list(range(RACED)))
    assert [values["a"] for _, values in results] == expected.tolist()
    assert [when for when, _ in results] == [
        T0 + timedelta(milliseconds=int(rank)) for rank in expected
    ]
