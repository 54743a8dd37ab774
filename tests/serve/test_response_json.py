"""``_response_json.response_dict`` answers exactly what Feast's ``convert_response_to_dict``
answers (what ``feast serve`` sends), for any mix of value types, statuses and timestamps."""

from __future__ import annotations

import math

from feast.feature_server_utils import convert_response_to_dict
from feast.protos.feast.serving.ServingService_pb2 import GetOnlineFeaturesResponse
from feast.protos.feast.types.Value_pb2 import Value
from hypothesis import given, settings
from hypothesis import strategies as st

from feast_dragonfly._serve.response_json import response_dict

_INT64 = st.integers(-(2**63), 2**63 - 1)
_FLOAT = st.floats(allow_nan=True, allow_infinity=True, width=32)
_DOUBLE = st.floats(allow_nan=True, allow_infinity=True)
_TEXT = st.text(max_size=8)


def _value(draw) -> Value:
    kind = draw(
        st.sampled_from(
            [
                "unset",
                "null",
                "int64",
                "int32",
                "float",
                "double",
                "string",
                "bool",
                "bytes",
                "int64_list",
                "double_list",
                "string_list",
                "bool_list",
                "bytes_list",
            ]
        )
    )
    value = Value()
    if kind == "null":
        value.null_val = 0
    elif kind == "int64":
        value.int64_val = draw(_INT64)
    elif kind == "int32":
        value.int32_val = draw(st.integers(-(2**31), 2**31 - 1))
    elif kind == "float":
        value.float_val = draw(_FLOAT)
    elif kind == "double":
        value.double_val = draw(_DOUBLE)
    elif kind == "string":
        value.string_val = draw(_TEXT)
    elif kind == "bool":
        value.bool_val = draw(st.booleans())
    elif kind == "bytes":
        value.bytes_val = draw(st.binary(max_size=8))
    elif kind == "int64_list":
        value.int64_list_val.val.extend(draw(st.lists(_INT64, max_size=3)))
    elif kind == "double_list":
        value.double_list_val.val.extend(draw(st.lists(_DOUBLE, max_size=3)))
    elif kind == "string_list":
        value.string_list_val.val.extend(draw(st.lists(_TEXT, max_size=3)))
    elif kind == "bool_list":
        value.bool_list_val.val.extend(draw(st.lists(st.booleans(), max_size=3)))
    elif kind == "bytes_list":
        value.bytes_list_val.val.extend(draw(st.lists(st.binary(max_size=4), max_size=3)))
    return value


@st.composite
def responses(draw) -> GetOnlineFeaturesResponse:
    rows = draw(st.integers(0, 4))
    response = GetOnlineFeaturesResponse()
    names = draw(st.lists(st.text(min_size=1, max_size=6), max_size=4))
    if names or draw(st.booleans()):
        response.metadata.feature_names.val.extend(names)
    if draw(st.booleans()):
        entry = response.metadata.feature_view_metadata.add()
        entry.name = draw(_TEXT)
        entry.version = draw(st.integers(0, 5))
    response.status = draw(st.booleans())
    # A vector of one kind (the fast path) or mixed (Feast's path), with timestamps of every
    # precision Feast formats differently (none, ms, us, ns, the epoch).
    for _ in range(draw(st.integers(0, 4))):
        vector = response.results.add()
        same = draw(st.booleans())
        first = _value(draw)
        for _ in range(rows):
            vector.values.append(first if same else _value(draw))
            # every status, and numbers no status has (an open enum: Feast answers INVALID)
            vector.statuses.append(draw(st.integers(0, 9)))
            if draw(st.booleans()):
                stamp = vector.event_timestamps.add()
                stamp.seconds = draw(st.sampled_from([0, 1, 1717243200, 4102444800]))
                stamp.nanos = draw(st.sampled_from([0, 5_000_000, 123_000, 7, 999_999_999, 1_000]))
    return response


def _same(a, b) -> bool:
    """Equal, with NaN equal to NaN (Feast turns non-finite floats into strings, but a float
    list with only finite values stays a list of floats)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


@settings(max_examples=300, deadline=None)
@given(responses())
def test_the_same_answer_as_feasts_converter(response):
    assert _same(response_dict(response), convert_response_to_dict(response))
