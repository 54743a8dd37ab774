"""``_store.online_response``: ``FastOnlineResponse.to_dict`` equals Feast's ``to_dict``.

* ``python_values`` converts one feature column exactly as Feast's
  ``feast_value_type_to_python_type`` does: scalars, lists, unset values, and every other kind
  (timestamps, maps, sets, JSON, decimals, ...) through Feast's own function; strings declared
  as UUIDs become UUIDs, as with Feast.
* ``to_dict`` (with and without event timestamps) equals ``OnlineResponse.to_dict`` below and
  above ``COLUMNS_FROM_ROWS`` rows (value by value, then one parse of the whole response),
  for every value kind and for random columns (NaN-safe, type-exact comparison; a value
  Feast's conversion refuses is refused alike).
* ``wrap`` keeps the response's proto and feature types; ``to_df`` follows ``to_dict``.
"""

from __future__ import annotations

import uuid

import pytest
from differential_kit import SCALAR_VALUES, canonical, outcome, typed_values
from feast.online_response import OnlineResponse
from feast.protos.feast.serving.ServingService_pb2 import FieldStatus, GetOnlineFeaturesResponse
from feast.protos.feast.types.Value_pb2 import Value
from feast.type_map import feast_value_type_to_python_type
from feast.value_type import ValueType
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import given, settings
from hypothesis import strategies as st

from feast_dragonfly._store import online_response
from feast_dragonfly._store.online_response import FastOnlineResponse

#: The declared type of each ``typed_values`` feature (what Feast's conversion may look at).
DECLARED = {
    "f_int32": ValueType.INT32,
    "f_int64": ValueType.INT64,
    "f_float32": ValueType.FLOAT,
    "f_float64": ValueType.DOUBLE,
    "f_bool": ValueType.BOOL,
    "f_string": ValueType.STRING,
    "f_bytes": ValueType.BYTES,
    "f_unix_ts": ValueType.UNIX_TIMESTAMP,
    "f_int32_list": ValueType.INT32_LIST,
    "f_int64_list": ValueType.INT64_LIST,
    "f_float_list": ValueType.FLOAT_LIST,
    "f_double_list": ValueType.DOUBLE_LIST,
    "f_bool_list": ValueType.BOOL_LIST,
    "f_string_list": ValueType.STRING_LIST,
    "f_bytes_list": ValueType.BYTES_LIST,
    "f_unix_ts_list": ValueType.UNIX_TIMESTAMP_LIST,
    "f_extra": None,
}


def response(columns: dict[str, list[Value]]) -> GetOnlineFeaturesResponse:
    """A response with one result per column, every value PRESENT at its own event time."""
    proto = GetOnlineFeaturesResponse()
    proto.metadata.feature_names.val.extend(columns)
    for values in columns.values():
        vector = proto.results.add()
        vector.values.extend(values)
        vector.statuses.extend([FieldStatus.PRESENT] * len(values))
        vector.event_timestamps.extend(Timestamp(seconds=1000 + i) for i in range(len(values)))
    return proto


def assert_same_dicts(columns: dict[str, list[Value]], types: dict[str, ValueType]) -> None:
    """Equal dicts, keys in the same order; or the same error (Feast's conversion raises for
    timestamps a ``datetime`` cannot hold)."""
    for with_times in (False, True):
        feasts = outcome(
            lambda w=with_times: OnlineResponse(response(columns), feature_types=types).to_dict(w)
        )
        ours = outcome(
            lambda w=with_times: FastOnlineResponse(response(columns), feature_types=types).to_dict(
                w
            )
        )
        assert canonical(ours) == canonical(feasts)
        if feasts[0] == "ok":
            assert list(ours[1]) == list(feasts[1])


@pytest.mark.parametrize("name", sorted(DECLARED))
def test_python_values_equal_feasts_conversion_for_every_kind(name):
    values = [*typed_values()[name], Value()]
    declared = DECLARED[name]
    expected = [feast_value_type_to_python_type(v, declared) for v in values]
    assert canonical(online_response.python_values(values, declared)) == canonical(expected)


@pytest.mark.parametrize("rows", [1, online_response.COLUMNS_FROM_ROWS, 7])
def test_to_dict_equals_feasts_for_every_kind(rows):
    columns = {}
    for name, variants in typed_values().items():
        columns[name] = [variants[i % len(variants)] for i in range(rows)]
        columns[f"{name}_uniform"] = [variants[-1]] * rows  # one kind per column: one parse
        columns[f"{name}_unset"] = [variants[0]] * (rows - 1) + [Value()]
    types = {name: DECLARED[name.split("_uniform")[0].split("_unset")[0]] for name in columns}
    assert_same_dicts(columns, {k: v for k, v in types.items() if v is not None})


@pytest.mark.parametrize("rows", [1, 5])
def test_strings_declared_as_uuids_become_uuids(rows):
    ids = [str(uuid.UUID(int=i + 1)) for i in range(rows)]
    columns = {"id": [Value(string_val=s) for s in ids], "name": [Value(string_val="x")] * rows}
    types = {"id": ValueType.UUID, "name": ValueType.STRING}
    ours = FastOnlineResponse(response(columns), feature_types=types).to_dict()
    assert ours["id"] == [uuid.UUID(s) for s in ids]
    assert ours["name"] == ["x"] * rows
    assert_same_dicts(columns, types)


@settings(max_examples=150, deadline=None)
@given(
    rows=st.integers(0, 6),
    data=st.data(),
)
def test_random_columns_read_as_feasts(rows, data):
    count = data.draw(st.integers(0, 4))
    columns = {
        f"f{i}": data.draw(st.lists(SCALAR_VALUES, min_size=rows, max_size=rows))
        for i in range(count)
    }
    assert_same_dicts(columns, {})


def test_wrap_keeps_the_proto_and_the_feature_types():
    proto = response({"a": [Value(int64_val=1), Value(int64_val=2)]})
    feasts = OnlineResponse(proto, feature_types={"a": ValueType.INT64})
    fast = FastOnlineResponse.wrap(feasts)
    assert isinstance(fast, FastOnlineResponse) and isinstance(fast, OnlineResponse)
    assert fast.proto is proto
    assert fast._feature_types == {"a": ValueType.INT64}
    assert fast.to_dict(include_event_timestamps=True) == {"a": [1, 2], "a__ts": [1000, 1001]}
    assert fast.to_df().to_dict("list") == {"a": [1, 2]}
