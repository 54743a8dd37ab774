"""Our ``_build_feature_types`` override must return exactly Feast's map (it types to_dict)."""

from __future__ import annotations

import inspect

from feast import Entity, FeatureView, Field, FileSource, ValueType
from feast.infra.online_stores.online_store import OnlineStore
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

from feast_dragonfly import DragonflyOnlineStore

DTYPES = [Int32, Int64, Float32, Float64, String, Bytes, Bool, UnixTimestamp]
DTYPES += [Array(t) for t in DTYPES]


def _view(name: str, n: int, offset: int = 0) -> FeatureView:
    driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
    return FeatureView(
        name=name,
        entities=[driver],
        schema=[Field(name=f"f{i}", dtype=DTYPES[(i + offset) % len(DTYPES)]) for i in range(n)],
        source=FileSource(path="unused.parquet", timestamp_field="event_timestamp"),
    )


def test_feature_types_equal_feasts():
    a, b = _view("a", 40), _view("b", 40, offset=3)
    aliased = _view("c", 10).with_name("c_alias")
    grouped_refs = [
        (a, [f"f{i}" for i in range(0, 40, 2)]),
        (b, ["f1", "f39", "f7", "missing_feature"]),
        (aliased, ["f0", "f9"]),
        (_view("empty", 3), []),
    ]
    ours = DragonflyOnlineStore._build_feature_types(grouped_refs)
    assert ours == OnlineStore._build_feature_types(grouped_refs)
    assert list(ours) == list(OnlineStore._build_feature_types(grouped_refs))
    # Repeated calls (the memoized dtype path) give the same answer.
    assert DragonflyOnlineStore._build_feature_types(grouped_refs) == ours


def test_feast_still_builds_feature_types_through_the_hook_we_override():
    assert list(inspect.signature(OnlineStore._build_feature_types).parameters) == ["grouped_refs"]
    for method in (OnlineStore.get_online_features, OnlineStore.get_online_features_async):
        assert "self._build_feature_types(" in inspect.getsource(method)
