"""``feast serve --metrics``: Feast's per-view PRESENT / NOT_FOUND counters move with our store
exactly as they move with Feast's own.

Feast feeds ``feast_online_features_status_total`` from its response builder
(``feast.utils._populate_response_from_feature_data``); ours builds the response from the
stored bytes instead, so it must feed the counters itself. The counters are switched on the
way ``feast serve --metrics`` does (``feast.metrics._config``, a private Feast hook: pinned by
``test_the_metrics_hook_we_rely_on_exists``).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest
from feast import Entity, FeatureView, Field, FileSource, ValueType
from feast import metrics as feast_metrics
from feast.protos.feast.serving.ServingService_pb2 import FieldStatus
from feast.types import Int64
from feast_repo import online_store_settings, write_feature_repo

from feast_dragonfly._store import feast_hooks

T0 = datetime(2024, 6, 1, 12, tzinfo=timezone.utc)


def test_the_metrics_hook_we_rely_on_exists():
    assert callable(feast_metrics.track_feature_statuses)
    assert hasattr(feast_metrics, "_config") and hasattr(feast_metrics, "build_metrics_flags")
    assert feast_metrics.online_features_status_total._labelnames == ("feature_view", "status")


def _counts(view: str) -> tuple[float, float]:
    counter = feast_metrics.online_features_status_total
    return (
        counter.labels(feature_view=view, status="present")._value.get(),
        counter.labels(feature_view=view, status="not_found")._value.get(),
    )


@pytest.fixture
def metrics_on():
    saved = feast_metrics._config
    feast_metrics._config = feast_metrics.build_metrics_flags()
    try:
        yield
    finally:
        feast_metrics._config = saved


def _materialized_repo(path, kind: str, connection_string: str, view_name: str, drivers: int):
    """A one-view repo (features ``a``, ``b``) of ``kind``'s store, drivers 1.. materialized."""
    data = path / "data.parquet"
    path.mkdir(parents=True, exist_ok=True)
    ids = list(range(1, drivers + 1))
    pd.DataFrame(
        {
            "driver_id": ids,
            "event_timestamp": [T0] * drivers,
            "a": [10 * i for i in ids],
            "b": ids,
        }
    ).to_parquet(data)
    store = write_feature_repo(
        path / "repo",
        project=f"metrics_{view_name}",
        online_store=online_store_settings(kind, connection_string),
    )
    driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
    view = FeatureView(
        name=view_name,
        entities=[driver],
        schema=[Field(name=n, dtype=Int64) for n in ("driver_id", "a", "b")],
        source=FileSource(path=str(data), timestamp_field="event_timestamp"),
        ttl=timedelta(days=3650),
    )
    store.apply([driver, view])
    store.materialize(T0 - timedelta(days=1), T0 + timedelta(days=1))
    return store


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
def test_feature_status_counters_match_feasts_store(
    tmp_path, server_connection_string, redis_client, metrics_on, use_async
):
    import asyncio

    deltas = {}
    statuses = {}
    for kind in ("feast", "ours"):
        redis_client.flushall()
        view_name = f"fv_{kind}_{'async' if use_async else 'sync'}"
        store = _materialized_repo(
            tmp_path / kind / view_name, kind, server_connection_string, view_name, 3
        )
        before = _counts(view_name)
        request = {
            "features": [f"{view_name}:a", f"{view_name}:b"],
            "entity_rows": [{"driver_id": d} for d in (1, 2, 99, 3)],
        }
        if use_async:
            response = asyncio.run(store.get_online_features_async(**request))
        else:
            response = store.get_online_features(**request)
        after = _counts(view_name)
        deltas[kind] = (after[0] - before[0], after[1] - before[1])
        statuses[kind] = _statuses(response.proto, ("a", "b"))
    # Ours counts exactly the statuses it answered; so does Feast, except that its Redis store
    # also counts its internal `_ts:<view>` field as one more NOT_FOUND feature per row (it
    # hands that field to Feast's builder in the requested-feature list).
    assert deltas["ours"] == statuses["ours"] == statuses["feast"] == (8, 0)
    assert deltas["feast"] == (8, 4)


def _statuses(proto, features) -> tuple[int, int]:
    present = not_found = 0
    for name, vector in zip(proto.metadata.feature_names.val, proto.results):
        if name in features:
            present += sum(s == FieldStatus.PRESENT for s in vector.statuses)
            not_found += sum(s == FieldStatus.NOT_FOUND for s in vector.statuses)
    return present, not_found


def test_feast_dragonfly_serve_feeds_feasts_request_metrics(
    tmp_path, server_connection_string, metrics_on
):
    """Under ``--metrics`` our server records what ``feast serve`` records per request: the
    latency histogram (endpoint, binned feature count, view count), the request counter and
    the entity-row histogram — on the direct path and on Feast's path alike."""
    import asyncio

    import orjson

    from feast_dragonfly._serve.app import FeatureServer

    store = _materialized_repo(tmp_path, "ours", server_connection_string, "served", 2)
    server = FeatureServer(store, registry_ttl_sec=0)
    # Feast's bin for 2 features (a Feast without bins labels the count itself).
    label = "1-10" if feast_hooks.HOOKS[feast_hooks.FEATURE_COUNT_BINS].present else "2"
    # Create the labelled series up front, so it can be read before the first request.
    feast_metrics.request_latency.labels(
        endpoint="/get-online-features", feature_count=label, feature_view_count="1"
    )
    requests_ok = feast_metrics.request_count.labels(
        endpoint="/get-online-features", status="success"
    )

    def sample_count() -> float:
        return next(
            s.value
            for metric in feast_metrics.request_latency.collect()
            for s in metric.samples
            if s.name.endswith("_count")
            and s.labels.get("endpoint") == "/get-online-features"
            and s.labels.get("feature_count") == label
        )

    async def serve() -> None:
        await server.startup()
        try:
            body = {"features": ["served:a", "served:b"], "entities": {"driver_id": [1, 2, 3]}}
            await server.get_online_features(orjson.dumps(body))  # the direct path
            body["include_feature_view_version_metadata"] = True  # Feast's path
            await server.get_online_features(orjson.dumps(body))
        finally:
            await server.shutdown()

    before = (sample_count(), requests_ok._value.get(), _entity_rows())
    asyncio.run(serve())
    after = (sample_count(), requests_ok._value.get(), _entity_rows())
    assert (after[0] - before[0], after[1] - before[1], after[2] - before[2]) == (2, 2, 6)


def _entity_rows() -> float:
    return next(
        s.value
        for metric in feast_metrics.online_features_entity_count.collect()
        for s in metric.samples
        if s.name.endswith("_sum")
    )
