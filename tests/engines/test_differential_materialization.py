"""Materialization and the repo-level write path: ``FeatureStore.materialize`` and
``write_to_online_store`` through a ``type: redis`` repo and a
``type: feast_dragonfly.DragonflyOnlineStore`` repo store identical bytes.

These paths do what ``online_write_batch`` alone (``test_differential_bytes.py``) never sees:
Feast reads and converts the parquet data, keeps the latest row per entity inside the window,
runs on-demand views that write to the online store; and with our
``DragonflyMaterializationEngine`` our own code does the reading and batching instead. The
repos' data (``differential_repos.py``) is shaped to reach those corners, and ``conftest.py``'s
``api`` fixture materializes it through each store.
"""

from __future__ import annotations

import pytest
from differential_kit import DIFFERENTIAL_MARKS, close_sync
from differential_repos import (
    API_PROJECT,
    CUSTOMERS,
    MATERIALIZED_VIEWS,
    N_DRIVERS,
    WINDOW_END,
    WINDOW_START,
    build_api_frames,
)
from feast_repo import (
    STORE_TYPES,
    assert_same_keyspace,
    dump_keyspace,
    online_store_settings,
    write_feature_repo,
)

pytestmark = DIFFERENTIAL_MARKS


WALL_CLOCK_FIELD = b"_ts:stored_conv"


def without_wall_clock_stamps(dump):
    """Feast stamps rows written through an on-demand view with the wall clock (``now``), so
    that one field legitimately differs between the two writes: check presence, drop value."""
    masked = {}
    for key, (fields, pttl) in dump.items():
        fields = dict(fields)
        if WALL_CLOCK_FIELD in fields:
            assert len(fields.pop(WALL_CLOCK_FIELD)) > 0
            fields[WALL_CLOCK_FIELD] = b"<wall clock>"
        masked[key] = (fields, pttl)
    return masked


def test_materialize_writes_identical_bytes(api):
    feast_dump, ours_dump = (without_wall_clock_stamps(api.dumps[k]) for k in STORE_TYPES)
    assert_same_keyspace(feast_dump, ours_dump)
    assert sum(WALL_CLOCK_FIELD in fields for fields, _ in feast_dump.values()) == 3
    # 300 drivers (+2 pushed), 5 customers, 10 x 5 driver/customer pairs, 4 + 3 odd keys.
    # (Materializing the stored on-demand view would stamp rows with the wall clock, so it
    # is only pushed, with event times from the data.)
    assert len(api.dumps["feast"]) == N_DRIVERS + 2 + len(CUSTOMERS) + 50 + 4 + 3


ENGINE_VARIANTS = {
    "defaults": {},
    "batches of 7, 3 rows per call": {"batch_size": 7, "write_rows_per_call": 3},
    "through the offline store": {"stream_file_sources": False},
}


@pytest.mark.parametrize("variant", list(ENGINE_VARIANTS))
def test_our_materialization_engine_writes_what_feasts_local_engine_writes(
    api, redis_client, variant
):
    """``batch_engine: feast_dragonfly.DragonflyMaterializationEngine`` + our store vs Feast's
    local engine + Feast's store: same parquet data, same window, same bytes."""
    settings = ENGINE_VARIANTS[variant]
    views = list(MATERIALIZED_VIEWS)
    if "batch_size" in settings:
        # Documented: equal event times in *different* batches keep the first row written,
        # whatever its created time; Feast keeps the latest created. Not compared here.
        views.remove("driver_ties")
    engine_store = write_feature_repo(
        api.base / f"engine-{list(ENGINE_VARIANTS).index(variant)}",
        project=API_PROJECT,
        online_store=online_store_settings("ours", api.connection_string),
        batch_engine={
            "type": "feast_dragonfly.DragonflyMaterializationEngine",
            "show_progress": False,
            **settings,
        },
    )
    objects = api.objects
    engine_store.apply([*objects["entities"], *objects["views"].values(), objects["request"]])
    dumps = {}
    try:
        for kind, store in (("feast", api.stores["feast"]), ("engine", engine_store)):
            redis_client.flushall()
            store.materialize(WINDOW_START, WINDOW_END, views)
            dumps[kind] = dump_keyspace(redis_client)
    finally:
        close_sync(engine_store._get_provider().online_store)
    assert_same_keyspace(dumps["feast"], dumps["engine"])


def test_write_to_online_store_writes_identical_bytes(api, redis_client):
    """The public push-style write path, through each store on an empty server."""
    frame = build_api_frames()["driver_profile"].head(12)
    dumps = {}
    for kind, store in api.stores.items():
        redis_client.flushall()
        store.write_to_online_store("driver_profile", df=frame.copy())
        dumps[kind] = dump_keyspace(redis_client)
    assert_same_keyspace(dumps["feast"], dumps["ours"])
    assert len(dumps["ours"]) == 12
