"""The tie-heavy repo ``test_exactness.py`` materializes, shared with the distributed-engine
tests: ``TieRepo`` (one feature view ``exact`` over a directory of parquet files),
``materialize``, ``stored_rows`` (what the online store answers) and ``expected_rows``
(Feast's rule plus our documented tie-break, computed independently in pandas).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import mmh3
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from feast import Entity, FeatureStore, FeatureView, Field, FileSource, ValueType
from feast.type_map import python_values_to_proto_values
from feast.types import Int64, String
from feast_repo import online_store_settings

UTC = timezone.utc
T0 = datetime(2024, 3, 1, tzinfo=UTC)
PROJECT = "exactproj"
ENGINE = "feast_dragonfly.DragonflyMaterializationEngine"
SCHEMA = [Field(name="row_id", dtype=Int64), Field(name="label", dtype=String)]


class TieRepo:
    """A repo whose source is a directory of parquet files, one feature view ``exact``."""

    def __init__(self, path: Path, connection_string: str, created: bool = True) -> None:
        self.path = path
        self.connection_string = connection_string
        self.data = path / "data"
        self.data.mkdir(parents=True, exist_ok=True)
        self.driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
        self.view = FeatureView(
            name="exact",
            entities=[self.driver],
            schema=SCHEMA,
            source=FileSource(
                path=str(self.data),
                timestamp_field="event_timestamp",
                created_timestamp_column="created" if created else "",
            ),
            ttl=timedelta(days=3650),
        )
        self._applied: set[str] = set()

    def write_files(self, frames: list[pd.DataFrame], row_group_size: int) -> None:
        for old in self.data.glob("*.parquet"):
            old.unlink()
        for i, frame in enumerate(frames):
            table = pa.Table.from_pandas(frame, preserve_index=False)
            pq.write_table(
                table, self.data / f"part-{i:03d}.parquet", row_group_size=row_group_size
            )

    def store(self, kind: str = "ours", **engine: object) -> FeatureStore:
        settings: dict = {
            "project": PROJECT,
            "registry": str(self.path / f"registry-{kind}.db"),
            "provider": "local",
            "offline_store": {"type": "file"},
            "entity_key_serialization_version": 3,
        }
        settings["online_store"] = online_store_settings(kind, self.connection_string)
        if kind == "ours":
            settings["batch_engine"] = {"type": ENGINE, "show_progress": False, **engine}
        (self.path / "feature_store.yaml").write_text(yaml.safe_dump(settings))
        store = FeatureStore(repo_path=str(self.path))
        if kind not in self._applied:
            store.apply([self.driver, self.view])
            self._applied.add(kind)
        return store


def materialize(store: FeatureStore) -> None:
    store.materialize(start_date=T0 - timedelta(days=1), end_date=T0 + timedelta(days=10))


def stored_rows(store: FeatureStore, drivers: list[int]) -> dict[int, tuple]:
    """driver -> (row_id, event time) as the online store answers."""
    response = store.get_online_features(
        features=["exact:row_id"], entity_rows=[{"driver_id": d} for d in drivers]
    )
    got = response.to_dict()
    proto = response.proto.results
    stamps = [ts.ToMicroseconds() for ts in proto[-1].event_timestamps]
    return {d: (got["row_id"][i], stamps[i]) for i, d in enumerate(drivers)}


def stored_value_digest(row_id: int, label: str) -> bytes:
    """The documented tie-break, computed with Feast's own converter: MurmurHash3 x64 128 of
    each feature's serialized ValueProto, length-prefixed, in feature order."""
    parts = [
        python_values_to_proto_values([row_id], ValueType.INT64)[0].SerializeToString(),
        python_values_to_proto_values([label], ValueType.STRING)[0].SerializeToString(),
    ]
    return mmh3.hash_bytes(b"".join(len(p).to_bytes(4, "little") + p for p in parts))


def expected_rows(frames: list[pd.DataFrame]) -> dict[int, tuple]:
    """The rule, computed independently: per driver, max event time, then max created time
    (missing created last), then the highest value digest; as (row_id, event micros)."""
    source = pd.concat(frames, ignore_index=True)
    source = source[source["event_timestamp"].notna()]
    best: dict[int, tuple] = {}
    for row in source.itertuples(index=False):
        created = getattr(row, "created", pd.NaT)
        rank = (
            row.event_timestamp.value,
            0 if pd.isna(created) else 1,
            0 if pd.isna(created) else created.value,
            stored_value_digest(row.row_id, row.label),
        )
        if row.driver_id not in best or rank > best[row.driver_id][0]:
            best[row.driver_id] = (rank, row.row_id, row.event_timestamp.value // 1000)
    return {driver: (row_id, micros) for driver, (_, row_id, micros) in best.items()}
