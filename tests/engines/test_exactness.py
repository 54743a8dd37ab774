"""The stored row per entity is exactly Feast's, whatever the batching and concurrency.

Feast's rule: newest event time, then newest created time (a row without one loses), and our
documented choice among rows equal on both: the highest digest of the values it would store. The property test below builds tie-heavy sources spread over several
parquet files with small row groups and materializes them with random batch sizes, write
concurrency and rows per call, on the streaming path and through the offline store, then
compares every entity's stored row with that rule computed independently in pandas.
"""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
from exactness_kit import T0, TieRepo, expected_rows, materialize, stored_rows
from feast import FeatureStore
from feast_repo import assert_same_keyspace, dump_keyspace
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feast_dragonfly import DragonflyDataError


@st.composite
def tie_heavy_sources(draw: st.DrawFn) -> tuple[list[pd.DataFrame], int]:
    """Few drivers, few distinct event / created times: exact ties on both are common."""
    n = draw(st.integers(1, 120))
    drivers = draw(st.lists(st.integers(0, 15), min_size=n, max_size=n))
    events = draw(st.lists(st.integers(0, 3), min_size=n, max_size=n))
    created = draw(st.lists(st.one_of(st.none(), st.integers(0, 3)), min_size=n, max_size=n))
    missing_event = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    files = draw(st.integers(1, 4))
    cuts = sorted(draw(st.lists(st.integers(0, n), min_size=files - 1, max_size=files - 1)))
    frame = pd.DataFrame(
        {
            "driver_id": pd.array(drivers, dtype="int64"),
            "event_timestamp": pd.to_datetime(
                [
                    None if gone else T0 + timedelta(seconds=e)
                    for e, gone in zip(events, missing_event)
                ],
                utc=True,
            ),
            "created": pd.to_datetime(
                [None if c is None else T0 + timedelta(minutes=c) for c in created], utc=True
            ),
            "row_id": pd.array(range(n), dtype="int64"),
            "label": [f"row-{i}" for i in range(n)],
        }
    )
    bounds = [0, *cuts, n]
    frames = [frame.iloc[a:b].reset_index(drop=True) for a, b in zip(bounds, bounds[1:])]
    frames = [f for f in frames if len(f)] or [frame.iloc[0:0]]
    return frames, draw(st.integers(1, 7))  # row-group size


@pytest.fixture(scope="module")
def tie_repo(tmp_path_factory, redis_server) -> TieRepo:
    return TieRepo(tmp_path_factory.mktemp("exact"), redis_server.connection_string)


def _store_of(tie_repo: TieRepo, redis_server, **engine: object) -> FeatureStore:
    client = redis_server.client()
    try:
        client.flushall()
    finally:
        client.close()
    return tie_repo.store(**engine)


@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    source=tie_heavy_sources(),
    batch_size=st.integers(1, 130),
    concurrency=st.integers(1, 8),
    rows_per_call=st.integers(1, 5),
    stream=st.booleans(),
)
def test_stored_row_is_feasts_under_any_batching(
    tie_repo, redis_server, source, batch_size, concurrency, rows_per_call, stream
):
    """Streaming parquet and the offline store's table (which Feast's file store re-sorts
    differently from run to run): exactly the rule's row, and the same under other batching."""
    frames, row_group_size = source
    if not stream:
        # Feast's file offline store (dask) cannot sort a file whose created column is all
        # null (its own error, Feast's local engine fails the same way): give every row one.
        frames = [f.assign(created=f["created"].fillna(pd.Timestamp(T0))) for f in frames]
    tie_repo.write_files(frames, row_group_size)
    drivers = list(range(16))
    store = _store_of(
        tie_repo,
        redis_server,
        batch_size=batch_size,
        write_concurrency=concurrency,
        write_rows_per_call=rows_per_call,
        stream_file_sources=stream,
    )
    materialize(store)
    got = stored_rows(store, drivers)
    expected = expected_rows(frames)
    for driver in drivers:
        assert got[driver] == expected.get(driver, (None, 0)), f"driver {driver}"
    materialize(store)  # a second run of the same window changes nothing
    assert stored_rows(store, drivers) == got
    # Other batching, concurrency and rows per call: the same rows.
    store = _store_of(
        tie_repo,
        redis_server,
        batch_size=1 + (batch_size * 7) % 130,
        write_concurrency=1 + concurrency % 8,
        write_rows_per_call=1 + rows_per_call % 5,
        stream_file_sources=stream,
    )
    materialize(store)
    assert stored_rows(store, drivers) == got


def _correction_frames() -> list[pd.DataFrame]:
    """300 drivers, each with 3 rows at one event time and distinct created times (the
    correction pattern), shuffled over 3 files; no two rows tie on both timestamps."""
    rng = np.random.default_rng(7)
    n = 300
    drivers = np.repeat(np.arange(n), 3)
    created = np.tile(np.arange(3), n) + 10 * rng.integers(0, 3, n).repeat(3)
    frame = pd.DataFrame(
        {
            "driver_id": drivers.astype("int64"),
            "event_timestamp": pd.to_datetime(
                [T0 + timedelta(seconds=int(d % 5)) for d in drivers], utc=True
            ),
            "created": pd.to_datetime([T0 + timedelta(seconds=int(c)) for c in created], utc=True),
            "row_id": pd.array(range(3 * n), dtype="int64"),
            "label": [f"row-{i}" for i in range(3 * n)],
        }
    ).sample(frac=1.0, random_state=3)
    return [frame.iloc[i::3].reset_index(drop=True) for i in range(3)]


@pytest.mark.parametrize("stream", [True, False], ids=["streaming", "offline-store"])
def test_same_bytes_as_feasts_local_engine_when_feast_is_deterministic(
    tmp_path, redis_client, server_connection_string, stream
):
    repo = TieRepo(tmp_path, server_connection_string)
    frames = _correction_frames()
    repo.write_files(frames, row_group_size=17)
    dumps = {}
    for kind in ("feast", "ours"):
        redis_client.flushall()
        store = (
            repo.store(
                kind,
                batch_size=10,
                write_concurrency=8,
                write_rows_per_call=3,
                stream_file_sources=stream,
            )
            if kind == "ours"
            else repo.store(kind)
        )
        materialize(store)
        dumps[kind] = dump_keyspace(redis_client)
    assert len(dumps["ours"]) == 300
    assert_same_keyspace(dumps["feast"], dumps["ours"])
    store = repo.store("ours", batch_size=10, write_concurrency=8)
    assert stored_rows(store, [0, 1]) == {
        d: v for d, v in expected_rows(frames).items() if d in (0, 1)
    }


def test_a_later_run_replaces_only_a_strictly_newer_event_time(
    tmp_path, redis_client, server_connection_string
):
    """Across runs Feast's store rule holds: an equal event time with a newer created time
    does not replace the stored row; a newer event time does."""
    repo = TieRepo(tmp_path, server_connection_string)

    def frame(row_id: int, seconds: int, created_minutes: int) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "driver_id": pd.array([1], dtype="int64"),
                "event_timestamp": pd.to_datetime([T0 + timedelta(seconds=seconds)], utc=True),
                "created": pd.to_datetime([T0 + timedelta(minutes=created_minutes)], utc=True),
                "row_id": pd.array([row_id], dtype="int64"),
                "label": [str(row_id)],
            }
        )

    store = repo.store(batch_size=1)
    repo.write_files([frame(1, 0, 0)], 1)
    materialize(store)
    repo.write_files([frame(2, 0, 5)], 1)  # same event time, newer created time
    materialize(store)
    assert stored_rows(store, [1])[1][0] == 1
    repo.write_files([frame(3, 1, 0)], 1)  # newer event time
    materialize(store)
    assert stored_rows(store, [1])[1][0] == 3


def test_without_a_created_column_the_values_decide_whatever_the_file_order(
    tmp_path, redis_client, server_connection_string
):
    repo = TieRepo(tmp_path, server_connection_string, created=False)
    frames = [
        pd.DataFrame(
            {
                "driver_id": pd.array([1, 2, 1], dtype="int64"),
                "event_timestamp": pd.to_datetime([T0, T0, T0], utc=True),
                "row_id": pd.array([10 * part + i for i in range(3)], dtype="int64"),
                "label": ["a", "b", "c"],
            }
        )
        for part in range(2)
    ]
    expected = expected_rows(frames)
    assert {expected[1][0], expected[2][0]} != {0, 1}  # not simply the first rows
    for ordered in (frames, frames[::-1], [f[::-1] for f in frames]):
        redis_client.flushall()
        repo.write_files(ordered, row_group_size=1)
        store = repo.store(batch_size=1, write_concurrency=8, write_rows_per_call=1)
        materialize(store)
        assert stored_rows(store, [1, 2]) == expected


@pytest.mark.parametrize("stream", [True, False], ids=["streaming", "offline-store"])
def test_a_source_loaded_twice_stores_feasts_bytes(
    tmp_path, redis_client, server_connection_string, stream
):
    """Every row duplicated (a file that landed twice): each entity's best rows tie on both
    timestamps but hold the same values, so the result is Feast's, byte for byte."""
    repo = TieRepo(tmp_path, server_connection_string)
    frames = _correction_frames()
    repo.write_files(frames + frames, row_group_size=29)
    dumps = {}
    for kind in ("feast", "ours"):
        redis_client.flushall()
        if kind == "ours":
            store = repo.store(kind, batch_size=64, write_concurrency=4, stream_file_sources=stream)
        else:
            store = repo.store(kind)
        materialize(store)
        dumps[kind] = dump_keyspace(redis_client)
    assert len(dumps["ours"]) == 300
    assert_same_keyspace(dumps["feast"], dumps["ours"])


def test_a_created_column_that_is_not_a_timestamp_is_refused_before_any_write(
    tmp_path, redis_client, server_connection_string
):
    repo = TieRepo(tmp_path, server_connection_string)
    frame = pd.DataFrame(
        {
            "driver_id": pd.array([1, 2], dtype="int64"),
            "event_timestamp": pd.to_datetime([T0, T0], utc=True),
            "created": ["yesterday", "today"],
            "row_id": pd.array([1, 2], dtype="int64"),
            "label": ["a", "b"],
        }
    )
    repo.write_files([frame], row_group_size=1)
    store = repo.store(batch_size=1)
    with pytest.raises(DragonflyDataError, match="created timestamp column 'created'"):
        materialize(store)
    assert redis_client.dbsize() == 0


def test_rows_without_an_event_time_are_skipped(tmp_path, redis_client, server_connection_string):
    repo = TieRepo(tmp_path, server_connection_string)
    frame = pd.DataFrame(
        {
            "driver_id": pd.array([1, 1, 2], dtype="int64"),
            "event_timestamp": pd.to_datetime([T0, None, None], utc=True),
            "created": pd.to_datetime([T0, T0 + timedelta(minutes=9), T0], utc=True),
            "row_id": pd.array([1, 2, 3], dtype="int64"),
            "label": ["a", "b", "c"],
        }
    )
    repo.write_files([frame], row_group_size=1)
    store = repo.store(batch_size=1)
    materialize(store)
    assert {d: v[0] for d, v in stored_rows(store, [1, 2]).items()} == {1: 1, 2: None}
