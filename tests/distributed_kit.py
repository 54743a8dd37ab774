"""The tests ``test_spark_engine.py`` and ``test_ray_engine.py`` run on their engine.

Each module imports the ``test_*`` functions below (pytest collects them there) and provides
an ``engine`` fixture: its ``batch_engine`` settings.

Each engine must store exactly what our single-process engine stores (byte for byte, on the
same repo and data), pick exactly ``_latest``'s row on tie-heavy data spread over several
files and partitions, and fail loudly — naming the view, never the password — when the
server dies mid-job, then complete on a re-run.
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from engine_kit import Repo, typed_frame, window
from exactness_kit import T0, TieRepo, expected_rows, materialize, stored_rows
from feast_repo import assert_same_keyspace, dump_keyspace
from server_kit import ServerProcess

from feast_dragonfly import DragonflyStoreError

SINGLE = "feast_dragonfly.DragonflyMaterializationEngine"
PASSWORD = "distributed-s3cret-pw"


def engine_of(store: Any) -> str:
    """The class name of the batch engine ``store`` materializes with."""
    return type(store._get_provider().batch_engine).__name__


def expected_engine(engine: dict) -> str:
    return engine["type"].rsplit(".", 1)[1]


def single_engine_dump(redis_client: Any, run: Any) -> dict:
    """``run(engine settings)`` with our single-process engine on an emptied server; the dump."""
    redis_client.flushall()
    run({"type": SINGLE})
    return dump_keyspace(redis_client)


def test_same_bytes_as_the_single_process_engine(
    tmp_path: Path, redis_client: Any, server_connection_string: str, engine: dict
) -> None:
    """Every value type, composite keys, ties: the distributed engine's keyspace is the
    single-process engine's, byte for byte."""
    repo = Repo(tmp_path, server_connection_string, typed_frame(600, seed=11))
    engine = {**engine, "partitions": 3}
    expected = single_engine_dump(redis_client, lambda e: window(repo.store("ours", **e)))
    redis_client.flushall()
    store = repo.store("ours", **engine)
    assert engine_of(store) == expected_engine(engine)
    window(store)
    assert_same_keyspace(expected, dump_keyspace(redis_client))


def record_dump(client: Any) -> dict[bytes, tuple[Any, bool]]:
    """Every key: its string value (a compact record) or hash contents, and whether it
    expires."""
    out = {}
    for key in sorted(client.scan_iter(count=1000)):
        kind = client.type(key)
        value = client.get(key) if kind in (b"string", "string") else client.hgetall(key)
        out[key] = (value, client.pttl(key) > 0)
    return out


def test_compact_records_equal_the_single_process_engines(
    tmp_path: Path, redis_client: Any, server_connection_string: str, engine: dict
) -> None:
    """``layout: compact``: the distributed engine stores the single-process engine's records
    (and schema directory), byte for byte."""
    repo = Repo(tmp_path, server_connection_string, typed_frame(600, seed=11))
    compact = {"store_options": {"layout": "compact"}}
    redis_client.flushall()
    window(repo.store("ours", type=SINGLE, **compact))
    expected = record_dump(redis_client)
    assert sum(key.endswith(b":typed") for key in expected) > 100
    redis_client.flushall()
    store = repo.store("ours", **{**engine, "partitions": 3}, **compact)
    assert engine_of(store) == expected_engine(engine)
    window(store)
    assert record_dump(redis_client) == expected


def tie_frames(entities: int = 800, seed: int = 5) -> list[pd.DataFrame]:
    """Per entity 1-4 rows: equal event times with different created times, equal both
    (the digest decides), rows without a created time; shuffled over 4 files."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, 5, entities)
    drivers = np.repeat(np.arange(entities), counts)
    n = len(drivers)
    event = rng.integers(0, 2, n)
    created = rng.integers(0, 2, n).astype(float)
    created[rng.random(n) < 0.1] = np.nan
    frame = pd.DataFrame(
        {
            "driver_id": drivers.astype("int64"),
            "event_timestamp": pd.to_datetime(
                [T0 + timedelta(seconds=int(e)) for e in event], utc=True
            ),
            "created": pd.to_datetime(
                [None if np.isnan(c) else T0 + timedelta(minutes=int(c)) for c in created],
                utc=True,
            ),
            "row_id": pd.array(range(n), dtype="int64"),
            "label": [f"row-{i}" for i in range(n)],
        }
    ).sample(frac=1.0, random_state=seed)
    return [frame.iloc[i::4].reset_index(drop=True) for i in range(4)]


def test_ties_over_files_and_partitions_follow_the_rule(
    tmp_path: Path, redis_client: Any, server_connection_string: str, engine: dict
) -> None:
    """The rule's row for every entity (computed independently in pandas), and the same
    keyspace as the single-process engine, whatever the number of partitions."""
    repo = TieRepo(tmp_path, server_connection_string)
    frames = tie_frames()
    repo.write_files(frames, row_group_size=97)
    drivers = list(range(800))
    expected = single_engine_dump(redis_client, lambda e: materialize(repo.store(**e)))
    for partitions in (1, 3):
        redis_client.flushall()
        store = repo.store(partitions=partitions, **engine)
        assert engine_of(store) == expected_engine(engine)
        materialize(store)
        assert_same_keyspace(expected, dump_keyspace(redis_client))
    rule = expected_rows(frames)
    got = stored_rows(store, drivers)
    assert got == {d: rule[d] for d in drivers}


def test_a_server_killed_mid_job_fails_it_and_a_rerun_completes(
    tmp_path: Path,
    redis_client: Any,
    server_connection_string: str,
    server_binary: Any,
    engine: dict,
) -> None:
    """The server is SIGKILLed while the job writes: the job raises an error naming the view
    (no password anywhere in it); after a restart the same materialization completes."""
    repo = TieRepo(tmp_path, server_connection_string)
    frames = tie_frames(entities=6000, seed=8)
    repo.write_files(frames, row_group_size=5000)
    expected = single_engine_dump(redis_client, lambda e: materialize(repo.store(**e)))
    with ServerProcess(server_binary, password=PASSWORD).start() as server:
        repo.connection_string = f"{server.address},password={PASSWORD}"
        # Slow writes (one row per call, one connection per task) so the kill lands mid-job.
        store = repo.store(worker_write_concurrency=1, write_rows_per_call=1, **engine)
        killed = _kill_when_written(server)
        with pytest.raises(DragonflyStoreError) as failure:
            materialize(store)
        assert killed.wait(30), "the job failed before anything was written"
        message = f"{failure.value!s} {failure.value!r}"
        assert "'exact'" in message and "run the same materialization again" in message
        assert PASSWORD not in message
        server.start()
        materialize(store)
        client = server.client()
        try:
            assert_same_keyspace(expected, dump_keyspace(client))
        finally:
            client.close()


def _kill_when_written(server: ServerProcess) -> threading.Event:
    """SIGKILL ``server`` as soon as it holds a key; the event is set once it did."""
    killed = threading.Event()

    def watch() -> None:
        client = server.client(socket_timeout=2)
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                if client.dbsize() > 0:
                    server.kill()
                    killed.set()
                    return
                time.sleep(0.002)
        finally:
            client.close()

    threading.Thread(target=watch, daemon=True).start()
    return killed
