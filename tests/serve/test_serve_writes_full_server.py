"""``POST /push`` of ``feast-dragonfly serve`` into a server out of memory: the answer is one
JSON error naming the server and its limit, never the password; reads keep being served; once
the limit is raised, the same push stores every row. How the servers differ:
``tests/full_server_kit.py``.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest
import requests
from feast import Entity, FeatureStore, FeatureView, Field, FileSource, PushSource, ValueType
from feast.types import Int64, String
from feast_repo import online_store_settings, write_feature_repo
from full_server_kit import SECRET, capped, limit_named
from test_feature_server import ThreadedServer

from feast_dragonfly._serve.app import FeatureServer

pytestmark = [pytest.mark.server, pytest.mark.valkey]

T0 = datetime(2024, 6, 1, 12, tzinfo=timezone.utc)
DRIVERS = list(range(1, 201))
FEATURES = ["pushed:trips", "pushed:name"]


def applied_repo(path, connection_string: str) -> FeatureStore:
    data = path / "drivers.parquet"
    path.mkdir(parents=True)
    pd.DataFrame(
        {"driver_id": [0], "event_timestamp": [T0], "trips": [0], "name": ["seed"]}
    ).to_parquet(data)
    driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
    source = FileSource(name="drivers", path=str(data), timestamp_field="event_timestamp")
    view = FeatureView(
        name="pushed",
        entities=[driver],
        schema=[
            Field(name="driver_id", dtype=Int64),
            Field(name="trips", dtype=Int64),
            Field(name="name", dtype=String),
        ],
        source=PushSource(name="driver_push", batch_source=source),
        ttl=timedelta(days=3650),
    )
    store = write_feature_repo(
        path / "repo", project="full", online_store=online_store_settings("ours", connection_string)
    )
    store.apply([driver, view])
    return store


def test_a_push_to_a_full_server_answers_one_clear_error_then_succeeds(small, tmp_path):
    store = applied_repo(tmp_path / "pushes", small.connection_string)
    client = small.client()
    df = {
        "driver_id": DRIVERS,
        "event_timestamp": [(T0 + timedelta(seconds=d)).isoformat() for d in DRIVERS],
        "trips": [d * 10 for d in DRIVERS],
        "name": [f"driver-{d}-é" for d in DRIVERS],
    }
    push = {"push_source_name": "driver_push", "df": df, "to": "online"}
    reads = {"features": FEATURES, "entities": {"driver_id": DRIVERS}}
    with ThreadedServer(FeatureServer(store, registry_ttl_sec=0)) as ours:
        with capped(client, limit=1):  # not one row fits
            refused = requests.post(ours.url + "/push", json=push, timeout=60)
            assert refused.status_code == 507, refused.text
            assert SECRET not in refused.text
            assert limit_named(refused.json()["detail"], small), refused.text
            assert requests.post(ours.url + "/get-online-features", json=reads).status_code == 200

        assert requests.post(ours.url + "/push", json=push, timeout=60).status_code == 200
    rows = [{"driver_id": d} for d in DRIVERS]
    stored = store.get_online_features(features=FEATURES, entity_rows=rows).to_dict()
    assert stored["trips"] == df["trips"] and stored["name"] == df["name"]
    client.close()
