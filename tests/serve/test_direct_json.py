"""``feast-dragonfly serve``'s direct path: stored bytes → Feast's response JSON.

Every request shape of the differential tests is answered both ways on the same data: through
the direct path (``direct_json``) and through Feast's request handling followed by Feast's
own ``convert_response_to_dict`` (whose input the differential tests prove equal to Feast's
store's). The two documents must be equal, result for result and in the same order. Shapes the
direct path leaves to Feast (on-demand views, join-key maps, entity kinds JSON cannot carry,
...) must say so (``None``) instead of answering; and the shapes it claims must really take it,
so a path that silently always fell back would fail here.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from differential_kit import DIFFERENTIAL_MARKS, SCALAR_VALUES, same_json, typed_values
from differential_requests import REQUESTS, request_args
from feast.feature_server_utils import convert_response_to_dict
from feast.protos.feast.serving.ServingService_pb2 import GetOnlineFeaturesResponse
from feast.protos.feast.types.Value_pb2 import Value
from hypothesis import given, settings
from hypothesis import strategies as st

from feast_dragonfly._store import direct_json, direct_read

pytestmark = DIFFERENTIAL_MARKS

#: Shapes Feast's path must answer: what the direct path cannot express exactly.
LEFT_TO_FEAST = {
    "composite view, a join key absent from the rows": "a view's join key is not in the rows",
    "service: a view read through a join key map": "join-key map",
    "int32 + bytes composite entity keys": "bytes entity values",
    "unix-timestamp entity keys": "timestamp entity values",
    "stored on-demand view": "on-demand view",
    "on-demand view": "on-demand view with request data",
    "error: no entity rows": "no rows",
}
SKIPPED = {
    # The server sends version-metadata requests to Feast's path before planning.
    "view version metadata flag",
    # Feast raises while resolving the features: the plan raises the same error (below).
    "error: unknown feature",
}
DIRECT = [label for label in REQUESTS if label not in LEFT_TO_FEAST and label not in SKIPPED]


def _columnar(rows: Any) -> dict[str, list[Any]]:
    if isinstance(rows, dict):
        return {key: list(values) for key, values in rows.items()}
    return {key: [row[key] for row in rows] for key in rows[0]}


def _plan(store: Any, features: Any, full_names: bool = False) -> Any:
    return direct_read.plan_request(
        store.config, store.registry, store.project, features, full_names
    )


def _direct(store: Any, label: str) -> dict[str, Any] | None:
    args = request_args(store, REQUESTS[label])
    plan = _plan(store, args["features"], args["full_feature_names"])
    if plan is None:
        return None
    online_store = store._get_provider().online_store
    return asyncio.run(
        direct_json.answer(online_store, store.config, plan, _columnar(args["entity_rows"]))
    )


@pytest.mark.parametrize("label", DIRECT)
def test_the_direct_answer_equals_feasts_conversion(api_data, label):
    store = api_data.stores["ours"]
    direct = _direct(store, label)
    assert direct is not None, f"{label}: left to Feast's path"
    args = request_args(store, REQUESTS[label])
    expected = convert_response_to_dict(store.get_online_features(**args).proto)
    assert same_json(direct, expected)  # (NaN: a float before Feast 0.67, then "NaN")


@pytest.mark.parametrize("label", DIRECT)
def test_the_store_api_takes_the_direct_path_for_the_same_shapes(api_data, label):
    """``get_online_features[_async]`` of our store answers these from the stored bytes too
    (the differential tests prove those answers equal Feast's store's)."""
    store = api_data.stores["ours"]
    args = request_args(store, REQUESTS[label])
    online_store = store._get_provider().online_store
    prepared = online_store._direct_request(
        config=store.config, registry=store.registry, project=store.project, **args
    )
    assert prepared is not None


@pytest.mark.parametrize("label", sorted(LEFT_TO_FEAST))
def test_shapes_it_cannot_answer_exactly_go_to_feast(api_data, label):
    assert _direct(api_data.stores["ours"], label) is None, LEFT_TO_FEAST[label]


def test_an_unknown_feature_raises_feasts_error(api_data):
    store = api_data.stores["ours"]
    args = request_args(store, REQUESTS["error: unknown feature"])
    with pytest.raises(Exception) as ours:
        _plan(store, args["features"])
    with pytest.raises(Exception) as feasts:
        store.get_online_features(**args)
    assert type(ours.value) is type(feasts.value) and str(ours.value) == str(feasts.value)


@pytest.mark.parametrize(
    "values",
    [
        [True, 1],  # a JSON boolean is not an INT64 value to Feast's converter's taste
        [1.0, 2],
        ["1", 2],
        [None, 1],
        [2**63, 1],
    ],
)
def test_entity_values_outside_the_plain_shapes_go_to_feast(api_data, values):
    store = api_data.stores["ours"]
    plan = _plan(store, ["driver_stats:trips"])
    assert plan is not None
    online_store = store._get_provider().online_store
    entities = {"driver_id": values}
    assert asyncio.run(direct_json.answer(online_store, store.config, plan, entities)) is None


def test_unknown_request_keys_go_to_feast(api_data):
    store = api_data.stores["ours"]
    plan = _plan(store, ["driver_stats:trips"])
    online_store = store._get_provider().online_store
    entities = {"driver_id": [1], "something_else": [2]}
    assert asyncio.run(direct_json.answer(online_store, store.config, plan, entities)) is None


# --------------------------------------------------------------------------- value decoding

ALL_VALUES = st.one_of(
    SCALAR_VALUES,
    st.sampled_from([value for variants in typed_values().values() for value in variants]),
)


def _feast_values(values: list[Value]) -> list[Any]:
    response = GetOnlineFeaturesResponse()
    response.results.add().values.extend(values)
    return convert_response_to_dict(response)["results"][0]["values"]


def _raw(value: Value, unset_as_none: bool) -> bytes | None:
    raw = value.SerializeToString()
    return None if unset_as_none and not raw else raw


@settings(max_examples=300, deadline=None)
@given(
    columns=st.lists(st.lists(ALL_VALUES, min_size=3, max_size=3), min_size=1, max_size=6),
    unset_as_none=st.booleans(),
)
def test_block_values_equal_feasts_conversion(columns, unset_as_none):
    """Mixed kinds, unset values, NaN / inf, lists, bytes: the block and column decoders agree
    with Feast's converter value for value (NaN comes back as Feast's "NaN" string)."""
    raws = [[_raw(value, unset_as_none) for value in column] for column in columns]
    assert same_json(
        direct_json.block_values(raws, 3), [_feast_values(column) for column in columns]
    )


@settings(max_examples=200, deadline=None)
@given(
    kind=st.sampled_from(["int64_val", "string_val", "float_val", "double_val", "bool_val"]),
    data=st.data(),
)
def test_uniform_columns_take_the_one_parse_path_and_stay_exact(kind, data):
    strategy = {
        "int64_val": st.integers(-(2**63), 2**63 - 1),
        "string_val": st.text(),
        "float_val": st.floats(width=32, allow_nan=False, allow_infinity=False),
        "double_val": st.floats(allow_nan=False, allow_infinity=False),
        "bool_val": st.booleans(),
    }[kind]
    columns = data.draw(st.lists(st.lists(strategy, min_size=4, max_size=4), min_size=1))
    values = [[Value(**{kind: item}) for item in column] for column in columns]
    raws = [[value.SerializeToString() for value in column] for column in values]
    assert direct_json.block_values(raws, 4) == [_feast_values(column) for column in values]


def test_a_value_carrying_two_kinds_reads_as_feast_reads_it():
    """Feast keeps the last of two oneof members; the one-parse path must not keep the first."""
    two_kinds = Value(int32_val=5).SerializeToString() + Value(string_val="x").SerializeToString()
    plain = Value(int32_val=7).SerializeToString()
    assert direct_json.block_values([[two_kinds, plain]], 2) == [["x", 7]]
