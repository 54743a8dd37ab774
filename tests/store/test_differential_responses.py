"""Public API: ``get_online_features`` (sync and async) through a ``type: redis`` repo and a
``type: feast_dragonfly.DragonflyOnlineStore`` repo, same project, same server, same data,
gives equal ``.proto``, ``to_dict()``, ``to_df()`` and ``to_arrow()``.

This is what a Feast user observes, and equal stored bytes do not imply it: ours builds the
response straight from the stored bytes instead of going through Feast's conversion. So every
request shape (feature services, projections, aliases, join-key maps, on-demand views, full
feature names, missing and duplicate entities, TTL-expired rows, errors) and every stored
value Feast's code treats specially (foreign or corrupt hash contents, NaN / inf, random values
of every kind) must come out the same. Requests expected to find values are checked to find
some, so two empty answers cannot pass.
"""

from __future__ import annotations

import math
import struct
import uuid

import mmh3
import pytest
from differential_kit import (
    DIFFERENTIAL_MARKS,
    EVENT_TIME_STRATEGY,
    INF,
    SCALAR_VALUES,
    assert_same_response,
    close_async,
    int64_key,
    outcome,
    typed_values,
)
from differential_repos import (
    API_PROJECT,
    RANDOM_FEATURES,
    UUID_1,
    build_api_frames,
    exotic_values,
)
from differential_requests import (
    REQUESTS,
    SOME_VALUES_EXPECTED,
    STATS,
    Req,
    request_args,
)
from feast import FeatureStore
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.protos.feast.serving.ServingService_pb2 import FieldStatus
from feast.protos.feast.types.Value_pb2 import Value
from feast_repo import STORE_TYPES, restore_keyspace
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = DIFFERENTIAL_MARKS


def online_features(store: FeatureStore, request: Req):
    return store.get_online_features(**request_args(store, request))


def present_count(response) -> int:
    return sum(
        status == FieldStatus.PRESENT
        for vector in response.proto.results
        for status in vector.statuses
    )


@pytest.mark.parametrize("label", list(REQUESTS))
def test_get_online_features_equal(api_data, label):
    request = REQUESTS[label]
    if label.startswith("error:"):
        failures = {
            kind: outcome(lambda store=store: online_features(store, request))
            for kind, store in api_data.stores.items()
        }
        assert failures["feast"][0] == "raised", "the request was meant to fail"
        assert failures["ours"] == failures["feast"]
        return
    responses = {kind: online_features(store, request) for kind, store in api_data.stores.items()}
    assert_same_response(responses["feast"], responses["ours"], label)
    if label in SOME_VALUES_EXPECTED:
        # Guard against comparing two empty answers: real values came back.
        values = [v for vector in responses["feast"].proto.results for v in vector.values]
        assert any(v.WhichOneof("val") for v in values), label


def test_expected_values_come_back(api_data):
    """Spot-check the shared answer against the source data (both stores give it)."""
    frames = build_api_frames()
    for store in api_data.stores.values():
        result = store.get_online_features(
            features=[
                "driver_stats:rank",
                "driver_profile:tags",
                "driver_wide:w4",
                "driver_customer:note",
                "driver_exotic:e_uuid",
                "driver_exotic:e_long_string",
            ],
            entity_rows=[
                {"driver_id": 3, "customer_id": "🐉-3"},
                {"driver_id": 9999, "customer_id": "x"},
            ],
        ).to_dict()
        assert result["rank"] == [-3, None]
        assert result["tags"] == [["t0", "t1", "t2"], None]
        assert result["w4"] == [frames["driver_wide"]["w4"][2], None]
        assert result["note"] == ["3/🐉-3", None]
        assert result["e_uuid"] == [uuid.UUID(UUID_1), None]
        assert result["e_long_string"] == ["é" * 9000, None]


def test_feature_view_ttl_status_is_the_same(api_data):
    """Rows older than the view TTL: whatever Feast reports, ours reports the same."""
    rows = [{"driver_id": i} for i in range(1, 9)]
    responses = {
        kind: store.get_online_features(features=["driver_old:old_value"], entity_rows=rows)
        for kind, store in api_data.stores.items()
    }
    assert_same_response(responses["feast"], responses["ours"])
    statuses = {kind: list(r.proto.results[0].statuses) for kind, r in responses.items()}
    assert statuses["ours"] == statuses["feast"]


ASYNC_REQUESTS = [
    "missing and duplicate entities",
    "exotic kinds, long values, odd event times",
    "five views sharing the driver",
    "composite with each entity alone",
    "service: projection, full names",
    "300 entities x 60 features",
    "on-demand view",
]


async def test_get_online_features_async_equals_sync(api_data):
    """Fresh FeatureStore objects for this loop: Feast's async client binds to its first loop."""
    async_stores = {
        kind: FeatureStore(repo_path=str(path)) for kind, path in api_data.paths.items()
    }
    try:
        for label in ASYNC_REQUESTS:
            request = REQUESTS[label]
            sync_responses = {
                kind: online_features(store, request) for kind, store in api_data.stores.items()
            }
            async_responses = {
                kind: await store.get_online_features_async(**request_args(store, request))
                for kind, store in async_stores.items()
            }
            for kind in STORE_TYPES:
                assert_same_response(
                    sync_responses[kind], async_responses[kind], f"{kind}: {label}"
                )
            assert_same_response(async_responses["feast"], async_responses["ours"], label)
    finally:
        for store in async_stores.values():
            await close_async(store._get_provider().online_store)


def test_data_written_by_ours_reads_the_same_through_both(api, redis_client):
    """Ours wrote this keyspace (not Feast's): both stores still answer identically."""
    restore_keyspace(redis_client, api.dumps["ours"])
    for label in (
        "missing and duplicate entities",
        "exotic kinds, full names",
        "service: whole views",
        "full feature names",
    ):
        request = REQUESTS[label]
        responses = {kind: online_features(store, request) for kind, store in api.stores.items()}
        assert_same_response(responses["feast"], responses["ours"], label)
        assert present_count(responses["feast"]) > 0


RANDOM_ID_BASE = 20_000_000
RANDOM_VALUES = st.one_of(
    SCALAR_VALUES,
    st.sampled_from([value for variants in typed_values().values() for value in variants]),
    st.sampled_from([v for _, variants in exotic_values().values() for v in variants]),
    st.uuids().map(lambda u: Value(string_val=str(u))),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    writer=st.sampled_from(list(STORE_TYPES)),
    rows=st.lists(
        st.tuples(
            st.integers(0, 7),
            st.dictionaries(st.sampled_from(list(RANDOM_FEATURES)), RANDOM_VALUES),
            EVENT_TIME_STRATEGY,
        ),
        max_size=6,
    ),
    requested=st.lists(st.sampled_from(list(RANDOM_FEATURES)), min_size=1, unique=True),
    lookups=st.lists(st.integers(0, 9), min_size=1, max_size=8),
    full_names=st.booleans(),
)
def test_random_rows_answer_identically_through_the_api(
    api, redis_server, writer, rows, requested, lookups, full_names
):
    """Random stored values (every kind), event times, request shapes: same response."""
    store = api.stores[writer]
    view = store.get_feature_view("driver_random")
    batch = [
        (int64_key(RANDOM_ID_BASE + entity), values, moment, None)
        for entity, values, moment in rows
    ]
    client = redis_server.client(decode_responses=False)
    try:
        keys = [
            serialize_entity_key(int64_key(RANDOM_ID_BASE + i), 3) + API_PROJECT.encode()
            for i in range(10)
        ]
        client.delete(*keys)
        store._get_provider().online_store.online_write_batch(store.config, view, batch, None)
        request = Req(
            [f"driver_random:{name}" for name in requested],
            [{"driver_id": RANDOM_ID_BASE + i} for i in lookups],
            full_names,
        )
        responses = {kind: online_features(s, request) for kind, s in api.stores.items()}
        assert_same_response(responses["feast"], responses["ours"])
    finally:
        client.delete(*keys)
        client.close()


def _field(view: str, feature: str) -> bytes:
    return struct.pack("<I", mmh3.hash(f"{view}:{feature}", signed=False))


_STAMP = Timestamp(seconds=1_700_000_000, nanos=5000).SerializeToString()
_RANK = Value(int32_val=5).SerializeToString()
#: Hash contents another writer could have left: forward-compatible ones must read the same,
#: corrupt ones must fail in both stores (never come back as plausible values).
FOREIGN_HASHES = {
    "unknown field in a value": {_field("driver_stats", "rank"): _RANK + b"\xf8\x3f\x01"},
    "only an unknown field": {_field("driver_stats", "rank"): b"\xf8\x3f\x01"},
    "two oneof members (last wins)": {
        _field("driver_stats", "rank"): _RANK + Value(string_val="x").SerializeToString()
    },
    "non-canonical varint": {_field("driver_stats", "rank"): b"\x18\x85\x80\x00"},
    "timestamp with an unknown field": {b"_ts:driver_stats": _STAMP + b"\x18\x07"},
    "truncated value": {_field("driver_stats", "rank"): b"\x0a\x05ab"},
    "garbage value": {_field("driver_stats", "rank"): b"\xff\xff\xff"},
    "garbage timestamp": {b"_ts:driver_stats": b"\xff\xff"},
}


@pytest.mark.parametrize("case", list(FOREIGN_HASHES))
def test_foreign_hash_contents_read_alike(api_data, redis_client, case):
    key = serialize_entity_key(int64_key(1), 3) + API_PROJECT.encode()
    redis_client.hset(key, mapping={b"_ts:driver_stats": _STAMP, **FOREIGN_HASHES[case]})
    request = Req(STATS, [{"driver_id": 1}, {"driver_id": 2}])
    results = {
        kind: outcome(lambda s=store: online_features(s, request))
        for kind, store in api_data.stores.items()
    }
    if results["feast"][0] == "raised":
        assert results["ours"] == results["feast"]  # the same exception type
    else:
        assert results["ours"][0] == "ok", results["ours"]
        assert_same_response(results["feast"][1], results["ours"][1], case)


def test_float_special_values_survive_the_round_trip(api_data):
    """NaN / inf come back the same from both (checked by ``canonical``); lists keep NaN while
    Feast's materialization turns a scalar NaN into a null."""
    rows = [{"driver_id": i} for i in (3, 11, 22, 33)]
    responses = {
        kind: store.get_online_features(
            features=["driver_profile:scores", "driver_stats:acc_rate"], entity_rows=rows
        )
        for kind, store in api_data.stores.items()
    }
    assert_same_response(responses["feast"], responses["ours"])
    result = responses["ours"].to_dict()
    assert math.isnan(result["scores"][0][1]) and result["scores"][0][2] == INF
    assert result["acc_rate"][1] is None  # driver 11: NaN offline
