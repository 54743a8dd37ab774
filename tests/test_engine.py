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
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from feast import Entity, FeatureStore, FeatureView, Field, FileSource, ValueType
from feast.types import (
    Array,
    Bool,
    Bytes,
    Float32,
    Float64,
    Int32,
    Int64,
    String,
    UnixTimestamp,
)
from feast_repo import assert_same_keyspace, dump_keyspace

from feast_dragonfly import DragonflyConfigError, DragonflyMaterializationEngine

UTC = timezone.utc
T0 = datetime(2024, 3, 1, tzinfo=UTC)
ENGINE = "feast_dragonfly.DragonflyMaterializationEngine"
OURS = "feast_dragonfly.DragonflyOnlineStore"
PROJECT = "engineproj"


# --------------------------------------------------------------------------- data


def typed_frame(n: int = 240, seed: int = 1) -> pd.DataFrame:
    """Every value type the engine converts, with nulls, NaN/inf, unicode, empties, ties."""
    rng = np.random.default_rng(seed)
    ts = pd.Timestamp(T0) + pd.to_timedelta(rng.integers(0, 5 * 86400, n), unit="s")
    ts = ts + pd.to_timedelta(rng.integers(0, 1000, n), unit="ns")  # nanoseconds, truncated
    frame = pd.DataFrame(
        {
            "driver_id": rng.integers(0, 60, n).astype("int64"),
            "city": rng.choice(["Zürich", "", "京都", "nyc"], n),
            "event_timestamp": ts,
            "created": pd.Timestamp(T0) + pd.to_timedelta(rng.integers(0, 50, n), unit="s"),
        }
    )
    ints = pd.array(rng.integers(-(2**40), 2**40, n), dtype="Int64")
    ints[::7] = pd.NA
    frame["i64"] = ints
    i32 = pd.array(rng.integers(-(2**31), 2**31 - 1, n), dtype="Int32")
    i32[::5] = pd.NA
    frame["i32"] = i32
    f32 = rng.standard_normal(n).astype("float32")
    f32[::9] = np.nan
    f32[1::11] = np.inf
    frame["f32"] = f32
    f64 = rng.standard_normal(n)
    f64[::8] = np.nan
    f64[2::13] = -np.inf
    frame["f64"] = f64
    frame["flag"] = pd.array(rng.random(n) > 0.5, dtype="boolean")
    frame.loc[::6, "flag"] = pd.NA
    text = np.array([f"välue-{i}" if i % 4 else "" for i in range(n)], dtype=object)
    text[::10] = None
    frame["text"] = text
    blobs = np.array([bytes([i % 256]) * (i % 5) for i in range(n)], dtype=object)
    blobs[3::10] = None
    frame["blob"] = blobs
    when = pd.Series(
        pd.Timestamp("2023-01-01", tz="UTC")
        + pd.to_timedelta(rng.integers(0, 10**15, n), unit="ns")
    )
    when[::12] = pd.NaT
    frame["when"] = when
    frame["ints"] = [None if i % 9 == 0 else list(range(i % 4)) for i in range(n)]
    frame["floats"] = [[float(i), 0.5] if i % 3 else [] for i in range(n)]
    frame["names"] = [[f"n{i}", ""] if i % 5 else None for i in range(n)]
    frame["flags"] = [[bool(i % 2)] * (i % 3) for i in range(n)]
    return frame


TYPED_SCHEMA = [
    Field(name="i64", dtype=Int64),
    Field(name="i32", dtype=Int32),
    Field(name="f32", dtype=Float32),
    Field(name="f64", dtype=Float64),
    Field(name="flag", dtype=Bool),
    Field(name="text", dtype=String),
    Field(name="blob", dtype=Bytes),
    Field(name="when", dtype=UnixTimestamp),
    Field(name="ints", dtype=Array(Int64)),
    Field(name="floats", dtype=Array(Float64)),
    Field(name="names", dtype=Array(String)),
    Field(name="flags", dtype=Array(Bool)),
]


class Repo:
    """A feature repo whose online store / engine can be switched between Feast's and ours."""

    def __init__(self, path: Path, connection_string: str, frame: pd.DataFrame, **view_kwargs):
        self.path = path
        self.connection_string = connection_string
        path.mkdir(parents=True, exist_ok=True)
        self.write_data(frame)
        self.driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
        self.city = Entity(name="city", join_keys=["city"], value_type=ValueType.STRING)
        self.source = FileSource(
            path=str(path / "data.parquet"),
            timestamp_field="event_timestamp",
            created_timestamp_column=view_kwargs.pop("created", "created") or "",
        )
        self.view = FeatureView(
            name=view_kwargs.pop("name", "typed"),
            entities=view_kwargs.pop("entities", [self.driver, self.city]),
            schema=view_kwargs.pop("schema", TYPED_SCHEMA),
            source=self.source,
            ttl=view_kwargs.pop("ttl", timedelta(days=3650)),
            **view_kwargs,
        )

    def write_data(self, frame: pd.DataFrame, row_group_size: int | None = None) -> None:
        table = pa.Table.from_pandas(frame, preserve_index=False)
        pq.write_table(table, self.path / "data.parquet", row_group_size=row_group_size)

    def store(self, kind: str, **engine: object) -> FeatureStore:
        settings: dict = {
            "project": PROJECT,
            "registry": str(self.path / f"registry-{kind}.db"),
            "provider": "local",
            "offline_store": {"type": "file"},
            "entity_key_serialization_version": 3,
        }
        store_options = engine.pop("store_options", {})
        if kind == "feast":
            settings["online_store"] = {
                "type": "redis",
                "connection_string": self.connection_string,
                **store_options,
            }
        else:
            settings["online_store"] = {
                "type": OURS,
                "connection_string": self.connection_string,
                **store_options,
            }
            settings["batch_engine"] = {"type": ENGINE, "show_progress": False, **engine}
        (self.path / "feature_store.yaml").write_text(yaml.safe_dump(settings))
        store = FeatureStore(repo_path=str(self.path))
        store.apply([e for e in (self.driver, self.city)] + [self.view])
        return store


def both(redis_client, repo: Repo, action, **engine) -> dict:
    """Run ``action(store)`` with Feast's engine + store, then ours; a keyspace dump of each."""
    dumps = {}
    for kind in ("feast", "ours"):
        redis_client.flushall()
        action(repo.store(kind, **dict(engine)))
        dumps[kind] = dump_keyspace(redis_client)
    return dumps


def window(store: FeatureStore, start=T0 - timedelta(days=1), end=T0 + timedelta(days=10)):
    store.materialize(start_date=start, end_date=end)


# --------------------------------------------------------------------------- byte identity


@pytest.mark.parametrize("batch_size", [100_000, 37], ids=["one-batch", "many-batches"])
def test_every_type_and_composite_keys_store_identical_bytes(
    tmp_path, redis_client, server_connection_string, batch_size
):
    repo = Repo(tmp_path, server_connection_string, typed_frame())
    dumps = both(redis_client, repo, window, batch_size=batch_size)
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
    repo.view.enable_validation = True
    assert "validation" in engine.delegation_reason(repo.view)


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
