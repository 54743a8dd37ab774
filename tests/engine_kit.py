"""The feature repo and data ``test_engine.py`` materializes, shared with the cluster and
distributed-engine tests: ``Repo`` (a repo whose online store / engine switches between
Feast's and ours), ``typed_frame`` (every value type the engine converts) and ``window``.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
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


def window(store: FeatureStore, start=T0 - timedelta(days=1), end=T0 + timedelta(days=10)):
    store.materialize(start_date=start, end_date=end)
