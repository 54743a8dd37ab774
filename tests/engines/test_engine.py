"""``DragonflyMaterializationEngine`` against Feast's ``local`` engine + ``RedisOnlineStore``.

Each comparison materializes the same parquet rows twice on one real server, in the same
project (the project is part of every key): first Feast's path, dump every key's hash and TTL,
FLUSHALL, then ours, dump, compare byte for byte.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from datetime import datetime, timedelta

import pandas as pd
import pytest
from engine_kit import ENGINE, T0, TYPED_SCHEMA, UTC, Repo, typed_frame, window
from feast import FeatureStore, FeatureView, Field
from feast.types import Int64
from feast_repo import assert_same_keyspace, dump_keyspace

from feast_dragonfly import DragonflyConfigError, DragonflyMaterializationEngine


def both(redis_client, repo: Repo, action, **engine) -> dict:
    """Run ``action(store)`` with Feast's engine + store, then ours; a keyspace dump of each."""
    dumps = {}
    for kind in ("feast", "ours"):
        redis_client.flushall()
        action(repo.store(kind, **dict(engine)))
        dumps[kind] = dump_keyspace(redis_client)
    return dumps


# --------------------------------------------------------------------------- byte identity


@pytest.mark.parametrize("batch_size", [100_000, 37], ids=["one-batch", "many-batches"])
def test_every_type_and_composite_keys_store_identical_bytes(
    tmp_path, redis_client, server_connection_string, batch_size
):
    repo = Repo(tmp_path, server_connection_string, typed_frame())
    dumps = both(redis_client, repo, window, batch_size=batch_size)
    assert_same_keyspace(dumps["feast"], dumps["ours"])


def test_rows_grouped_by_dragonfly_shard_store_identical_bytes(
    tmp_path, redis_client, server_connection_string, monkeypatch
):
    """Grouping a batch's rows by shard (what a Dragonfly shard map makes writers do; forced
    here on every server) reorders rows only: the same bytes are stored."""
    from feast_dragonfly._protocol.shards import ShardMap
    from feast_dragonfly._store.backends import Backend

    monkeypatch.setattr(Backend, "_detect_shards", lambda self: ShardMap(3))
    repo = Repo(tmp_path, server_connection_string, typed_frame())
    dumps = both(redis_client, repo, window, batch_size=37)
    assert_same_keyspace(dumps["feast"], dumps["ours"])


def test_multi_chunk_tables_through_the_offline_store_write_every_chunk(
    tmp_path, redis_client, server_connection_string
):
    """Many row groups, small batches, and the non-streaming path (offline store's Arrow
    table, re-batched): every chunk is written, not only the first."""
    frame = typed_frame(300, seed=2)
    repo = Repo(tmp_path, server_connection_string, frame)
    repo.write_data(frame, row_group_size=50)
    for streaming in (True, False):
        dumps = both(redis_client, repo, window, batch_size=40, stream_file_sources=streaming)
        assert_same_keyspace(dumps["feast"], dumps["ours"])
        assert len(dumps["ours"]) > 100


def test_integer_entity_keys_and_a_single_entity(tmp_path, redis_client, server_connection_string):
    frame = typed_frame(200, seed=3).drop(columns=["city"])
    frame = frame.drop_duplicates("driver_id", keep="first")  # exact-tie free
    repo = Repo(tmp_path, server_connection_string, frame, entities=None, name="single")
    repo.view = FeatureView(
        name="single",
        entities=[repo.driver],
        schema=TYPED_SCHEMA[:8],
        source=repo.source,
        ttl=timedelta(days=3650),
    )
    repo.city = repo.driver
    dumps = both(redis_client, repo, window)
    assert_same_keyspace(dumps["feast"], dumps["ours"])


def test_key_ttl_seconds_is_applied_like_feasts(tmp_path, redis_client, server_connection_string):
    repo = Repo(tmp_path, server_connection_string, typed_frame(80, seed=4))
    dumps = both(redis_client, repo, window, store_options={"key_ttl_seconds": 3600})
    assert_same_keyspace(dumps["feast"], dumps["ours"], ttl_seconds=3600)


# --------------------------------------------------------------------------- window and TTL


def simple_frame(stamps: list[datetime], drivers: list[int]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "driver_id": pd.array(drivers, dtype="int64"),
            "city": ["x"] * len(drivers),
            "event_timestamp": pd.to_datetime(stamps, utc=True),
            "created": pd.to_datetime(stamps, utc=True),
            "value": pd.array(range(len(drivers)), dtype="int64"),
        }
    )


VALUE_SCHEMA = [Field(name="value", dtype=Int64)]


def test_window_is_inclusive_and_rows_outside_are_not_written(
    tmp_path, redis_client, server_connection_string
):
    start, end = T0, T0 + timedelta(hours=1)
    stamps = [
        start - timedelta(microseconds=1),  # before: not written
        start,  # inclusive
        start + timedelta(minutes=30),
        end,  # inclusive
        end + timedelta(microseconds=1),  # after: not written
    ]
    frame = simple_frame(stamps, [1, 2, 3, 4, 5])
    repo = Repo(tmp_path, server_connection_string, frame, schema=VALUE_SCHEMA, name="win")
    dumps = both(redis_client, repo, lambda s: window(s, start, end))
    assert_same_keyspace(dumps["feast"], dumps["ours"])
    assert len(dumps["ours"]) == 3
    ours = repo.store("ours")
    got = ours.get_online_features(
        features=["win:value"], entity_rows=[{"driver_id": d, "city": "x"} for d in range(1, 6)]
    ).to_dict()["value"]
    assert got == [None, 1, 2, 3, None]


def test_materialize_incremental_picks_up_only_new_rows(
    tmp_path, redis_client, server_connection_string
):
    now = datetime.now(UTC).replace(microsecond=0)
    first = simple_frame([now - timedelta(hours=3), now - timedelta(hours=2)], [1, 2])
    repo = Repo(
        tmp_path,
        server_connection_string,
        first,
        schema=VALUE_SCHEMA,
        name="inc",
        ttl=timedelta(days=1),
    )
    later = simple_frame(
        [now - timedelta(hours=3), now - timedelta(hours=2), now - timedelta(minutes=5)],
        [1, 2, 3],
    )
    later.loc[0, "value"] = 100  # rewritten history inside the already-materialized window

    def run(store: FeatureStore) -> None:
        repo.write_data(first)
        store.materialize_incremental(end_date=now - timedelta(hours=1))
        repo.write_data(later)
        store.materialize_incremental(end_date=now)

    dumps = both(redis_client, repo, run)
    assert_same_keyspace(dumps["feast"], dumps["ours"])
    got = (
        repo.store("ours")
        .get_online_features(
            features=["inc:value"], entity_rows=[{"driver_id": d, "city": "x"} for d in (1, 2, 3)]
        )
        .to_dict()["value"]
    )
    assert got == [0, 1, 2]  # driver 1 keeps the first run's value: its row was not re-read


def test_a_ttl_view_starts_incremental_materialization_at_now_minus_ttl(
    tmp_path, redis_client, server_connection_string
):
    now = datetime.now(UTC).replace(microsecond=0)
    frame = simple_frame(
        [now - timedelta(days=3), now - timedelta(hours=20), now - timedelta(hours=1)], [1, 2, 3]
    )
    repo = Repo(
        tmp_path,
        server_connection_string,
        frame,
        schema=VALUE_SCHEMA,
        name="ttl",
        ttl=timedelta(days=1),
    )
    dumps = both(redis_client, repo, lambda s: s.materialize_incremental(end_date=now))
    assert_same_keyspace(dumps["feast"], dumps["ours"])
    assert len(dumps["ours"]) == 2  # the 3-day-old row is outside now - ttl


# --------------------------------------------------------------------------- latest row per entity


def test_latest_row_per_entity_by_event_then_created_time(
    tmp_path, redis_client, server_connection_string
):
    frame = pd.DataFrame(
        {
            "driver_id": pd.array([1, 1, 1, 2, 2], dtype="int64"),
            "city": ["x"] * 5,
            "event_timestamp": pd.to_datetime(
                [T0, T0 + timedelta(seconds=1), T0, T0, T0], utc=True
            ),
            "created": pd.to_datetime(
                [T0, T0, T0 + timedelta(seconds=9), T0 + timedelta(seconds=2), T0], utc=True
            ),
            "value": pd.array([10, 11, 12, 20, 21], dtype="int64"),
        }
    )
    repo = Repo(tmp_path, server_connection_string, frame, schema=VALUE_SCHEMA, name="dedup")
    dumps = both(redis_client, repo, window)
    assert_same_keyspace(dumps["feast"], dumps["ours"])


@pytest.mark.parametrize("batch_size", [1, 10])
def test_event_time_ties_are_broken_by_created_time_across_batches(
    tmp_path, redis_client, server_connection_string, batch_size
):
    """Equal event times: the newer created time wins, in one batch or in different ones
    (written concurrently), and whatever the rows' order in the file."""
    frame = pd.DataFrame(
        {
            "driver_id": pd.array([1, 1, 1, 2, 2], dtype="int64"),
            "city": ["x"] * 5,
            "event_timestamp": pd.to_datetime([T0] * 5, utc=True),
            "created": pd.to_datetime(
                [T0, T0 + timedelta(seconds=5), T0 + timedelta(seconds=1), None, T0], utc=True
            ),
            "value": pd.array([1, 2, 3, 4, 5], dtype="int64"),
        }
    )
    repo = Repo(tmp_path, server_connection_string, frame, schema=VALUE_SCHEMA, name="tie")
    store = repo.store("ours", batch_size=batch_size, write_concurrency=8, write_rows_per_call=1)
    window(store)
    got = store.get_online_features(
        features=["tie:value"],
        entity_rows=[{"driver_id": 1, "city": "x"}, {"driver_id": 2, "city": "x"}],
    ).to_dict()
    assert got["value"] == [2, 5]  # newest created; a row without one loses


# --------------------------------------------------------------------------- progress, config, CLI


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_silent_off_a_terminal_and_when_disabled(
    tmp_path, redis_client, server_connection_string, monkeypatch, capsys
):
    repo = Repo(tmp_path, server_connection_string, typed_frame(50), schema=TYPED_SCHEMA[:4])
    window(repo.store("ours", show_progress=True))  # stderr is captured: not a terminal
    assert "rows" not in capsys.readouterr().err

    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    window(repo.store("ours", show_progress=False))
    assert terminal.getvalue() == ""
    window(repo.store("ours", show_progress=True))
    shown = terminal.getvalue()
    assert "rows/s" in shown and "typed" in shown


def test_engine_config_rejects_unknown_settings():
    with pytest.raises(DragonflyConfigError, match="batch_sise"):
        DragonflyMaterializationEngine(
            repo_config=None, offline_store=None, online_store=None, type=ENGINE, batch_sise=5
        )


def test_views_needing_feasts_dag_are_delegated(tmp_path, server_connection_string):
    repo = Repo(tmp_path, server_connection_string, typed_frame(10), schema=TYPED_SCHEMA[:2])
    engine = repo.store("ours")._get_provider().batch_engine
    assert isinstance(engine, DragonflyMaterializationEngine)
    assert engine.delegation_reason(repo.view) is None
    repo.view.offline = True
    assert "offline store" in engine.delegation_reason(repo.view)


def test_feast_materialize_cli_uses_the_engine(tmp_path, redis_client, server_connection_string):
    frame = typed_frame(120, seed=5)
    repo = Repo(tmp_path, server_connection_string, frame, schema=TYPED_SCHEMA[:6])
    repo.store("ours")  # writes feature_store.yaml with our engine and applies
    (tmp_path / "features.py").write_text("")  # nothing else to apply
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "feast.cli.cli",
            "materialize",
            "2024-02-28T00:00:00",
            "2024-03-10T00:00:00",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    ours = dump_keyspace(redis_client)
    redis_client.flushall()
    window(repo.store("feast"))
    assert_same_keyspace(dump_keyspace(redis_client), ours)
