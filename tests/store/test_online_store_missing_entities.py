"""What ``get_online_features`` answers where nothing is stored, next to Feast's own store.

Feast's ``RedisOnlineStore`` is the reference: for an entity it finds nothing for, its
``online_read`` returns the Unix epoch and an empty ``Value`` per requested feature, and Feast
marks every value a store returns ``PRESENT``. So a missing entity comes back ``PRESENT``, value
``None``, event timestamp 0 — never ``NOT_FOUND``. Pinned here, on one server holding the same
data, for: an entity never written; an entity whose hash holds other views but not this one;
a feature added to a view after its row was written; and values past their view's ``ttl``.

* ``layout: feast`` (default settings) answers exactly as Feast's store: ``.proto`` (statuses,
  values, event times), ``to_dict``, ``to_df``, ``to_arrow``, sync and async, and ``online_read``.
* ``enforce_view_ttl: true`` and ``layout: compact`` differ by design for a value past its
  view's ``ttl`` only: it answers exactly like a never-written entity (``PRESENT``, ``None``,
  event timestamp 0) where Feast's store returns the old value. Everything else is Feast's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pandas as pd
import pytest
from differential_kit import DIFFERENTIAL_MARKS, assert_same_response, close_async, close_sync
from feast import Entity, FeatureStore, FeatureView, Field, FileSource, ValueType
from feast.protos.feast.serving.ServingService_pb2 import FieldStatus
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value
from feast.types import Float64, Int64, String
from feast_repo import online_store_settings, write_feature_repo
from google.protobuf.timestamp_pb2 import Timestamp

from feast_dragonfly.testing.local_server import ServerBinary, start_server

pytestmark = [*DIFFERENTIAL_MARKS, pytest.mark.valkey]

PROJECT = "missing_entities"
#: Each repo's online store: Feast's, ours as configured by default, ours with the view-ttl
#: read rule, ours with the compact layout (its own records, written by itself).
KINDS = ("feast", "ours", "enforce", "compact")
WRITERS = ("feast", "compact")  # "ours" and "enforce" read what Feast's store wrote
NOW = datetime.now(timezone.utc).replace(microsecond=0)
FRESH = NOW - timedelta(hours=1)
STALE = NOW - timedelta(days=3)  # past STATS's ttl of one day

DRIVER = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
SOURCE = FileSource(name="unused", path="unused.parquet", timestamp_field="event_timestamp")


def view(name: str, ttl: timedelta, **features) -> FeatureView:
    schema = [Field(name=feature, dtype=dtype) for feature, dtype in features.items()]
    return FeatureView(name=name, entities=[DRIVER], ttl=ttl, schema=schema, source=SOURCE)


STATS = view("stats", timedelta(days=1), a=Float64, b=String)
PROFILE = view("profile", timedelta(0), c=Int64)
GROWING_BEFORE = view("growing", timedelta(0), e=Int64)
GROWING_AFTER = view("growing", timedelta(0), e=Int64, f=String)  # f added after the write

# Stored: driver 1 in every view; 2 in profile only; 3 in profile and, past the ttl, in stats;
# 4 in growing only (before f existed); 999 nowhere.
WRITES = {
    "stats": {"driver_id": [1, 3], "a": [1.5, 3.5], "b": ["x", "z"], "ts": [FRESH, STALE]},
    "profile": {"driver_id": [1, 2, 3], "c": [10, 20, 30], "ts": [FRESH] * 3},
    "growing": {"driver_id": [1, 4], "e": [100, 400], "ts": [FRESH] * 2},
}
ALL = ["stats:a", "stats:b", "profile:c", "growing:e", "growing:f"]
NEVER_WRITTEN = 999

CASES = {
    "entity never written": (ALL, [NEVER_WRITTEN]),
    "hash holds other views only": (["stats:a", "stats:b", "growing:e"], [2]),
    "feature added after the write": (["growing:e", "growing:f"], [1, 4]),
    "value past the view's ttl": (["stats:b", "stats:a"], [3]),
    "all at once, duplicates": (ALL, [1, NEVER_WRITTEN, 2, 3, 4, NEVER_WRITTEN, 2]),
}
STALE_CELLS = {("stats", 3)}  # (view, driver) whose value is past the view's ttl


@pytest.fixture(scope="module")
def repos(server_binary: ServerBinary, tmp_path_factory) -> Iterator[SimpleNamespace]:
    """The four repos on one server of their own, data written through Feast's public API."""
    base = tmp_path_factory.mktemp("missing")
    with start_server(server_binary) as server:
        stores: dict[str, FeatureStore] = {}
        for kind in KINDS:
            options = {"enforce": {"enforce_view_ttl": True}, "compact": {"layout": "compact"}}
            stores[kind] = write_feature_repo(
                base / kind,
                project=PROJECT,
                online_store=online_store_settings(
                    "feast" if kind == "feast" else "ours",
                    server.connection_string,
                    **options.get(kind, {}),
                ),
            )
            stores[kind].apply([DRIVER, STATS, PROFILE, GROWING_BEFORE])
        for kind in WRITERS:
            for name, columns in WRITES.items():
                frame = pd.DataFrame(columns).rename(columns={"ts": "event_timestamp"})
                stores[kind].write_to_online_store(name, df=frame)
        for store in stores.values():
            store.apply([GROWING_AFTER])
        try:
            yield SimpleNamespace(stores=stores, base=base)
        finally:
            for store in stores.values():
                close_sync(store._get_provider().online_store)


def read(store: FeatureStore, case: str, full_names: bool = False):
    features, drivers = CASES[case]
    return store.get_online_features(
        features=features,
        entity_rows=[{"driver_id": d} for d in drivers],
        full_feature_names=full_names,
    )


def feature_vectors(response, case: str):
    """(view, driver, value, status, event timestamp) of every feature cell (join keys left out)."""
    features, drivers = CASES[case]
    vectors = response.proto.results[1:]  # results[0]: the driver_id column
    assert len(vectors) == len(features)
    for ref, vector in zip(features, vectors):
        for driver, value, status, stamp in zip(
            drivers, vector.values, vector.statuses, vector.event_timestamps
        ):
            yield ref.split(":")[0], driver, value, status, stamp


def stored_driver(view_name: str, driver: int) -> bool:
    return driver in WRITES[view_name]["driver_id"]


@pytest.mark.parametrize("case", list(CASES))
def test_feast_layout_answers_as_feasts_store(repos, case):
    for full_names in (False, True):
        reference = read(repos.stores["feast"], case, full_names)
        assert_same_response(reference, read(repos.stores["ours"], case, full_names), case)


@pytest.mark.parametrize("case", list(CASES))
def test_missing_means_present_none_and_epoch(repos, case):
    """What both stores answer: never NOT_FOUND; nothing stored is None at event time 0."""
    response = read(repos.stores["ours"], case)
    assert set(response.proto.results[0].statuses) == {FieldStatus.PRESENT}
    for view_name, driver, value, status, stamp in feature_vectors(response, case):
        assert status == FieldStatus.PRESENT, (view_name, driver)
        if not stored_driver(view_name, driver):
            assert value == Value(), (view_name, driver)
            assert stamp == Timestamp(), (view_name, driver)
        else:
            assert stamp.seconds > 0, (view_name, driver)  # the row's own event time
    features, drivers = CASES[case]
    answer = response.to_dict()
    for ref in features:
        view_name, feature = ref.split(":")
        for driver, got in zip(drivers, answer[feature]):
            if not stored_driver(view_name, driver) or feature == "f":
                assert got is None, (ref, driver)


@pytest.mark.parametrize("kind", ["enforce", "compact"])
@pytest.mark.parametrize("case", list(CASES))
def test_past_the_ttl_reads_like_never_written(repos, kind, case):
    """Feast's answer, except a value past its view's ttl: PRESENT, empty, event time 0."""
    expected = read(repos.stores["feast"], case).proto
    features, drivers = CASES[case]
    for ref, vector in zip(features, expected.results[1:]):
        for row, driver in enumerate(drivers):
            if (ref.split(":")[0], driver) in STALE_CELLS:
                assert vector.values[row] != Value(), "Feast's store returns the old value"
                vector.values[row].Clear()
                vector.event_timestamps[row].Clear()
    answer = read(repos.stores[kind], case).proto
    assert answer == expected, case
    never = read(repos.stores[kind], "entity never written").to_dict()
    if "value past the view's ttl" == case:
        stale = read(repos.stores[kind], case).to_dict(include_event_timestamps=True)
        assert stale == {
            "driver_id": [3],
            "driver_id__ts": [0],
            "b": never["b"],
            "b__ts": [0],
            "a": never["a"],
            "a__ts": [0],
        }


def test_async_answers_as_sync(repos):
    """``get_online_features_async``: the same answers (fresh FeatureStores for this loop)."""

    async def answers() -> dict[str, list]:
        found: dict[str, list] = {}
        for kind in KINDS:
            store = FeatureStore(repo_path=str(repos.base / kind))
            try:
                for case in CASES:
                    features, drivers = CASES[case]
                    response = await store.get_online_features_async(
                        features=features, entity_rows=[{"driver_id": d} for d in drivers]
                    )
                    found.setdefault(kind, []).append(response)
            finally:
                await close_async(store._get_provider().online_store)
        return found

    found = asyncio.run(answers())
    for kind in KINDS:
        for case, response in zip(CASES, found[kind]):
            assert response.proto == read(repos.stores[kind], case).proto, (kind, case)
    for reference, ours in zip(found["feast"], found["ours"]):
        assert_same_response(reference, ours)


@pytest.mark.parametrize("kind", ["ours", "compact"])
def test_online_read_returns_the_epoch_and_empty_values(repos, kind):
    """Store level: Feast's tuple for nothing stored, ``(epoch, {feature: Value()})``."""
    keys = [
        EntityKey(join_keys=["driver_id"], entity_values=[Value(int64_val=d)]) for d in (2, 999)
    ]
    answers = {}
    for name in ("feast", kind):
        store = repos.stores[name]
        online = store._get_provider().online_store
        answers[name] = online.online_read(store.config, store.get_feature_view("stats"), keys)
    epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
    assert answers["feast"] == [(epoch, {"a": Value(), "b": Value()})] * 2
    assert answers[kind] == answers["feast"]
