"""``_store.value_columns``: many serialized ``Value`` messages parsed at once, per kind.

* ``varint`` is protobuf's base-128 varint (checked against protobuf's own encoding), for the
  looked-up small values and the computed large ones.
* ``value_entries`` frames stored values (``None`` / empty: unset) so that ``parsed_values``
  gives exactly the ``Value`` messages parsed one by one, short and long values alike.
* A ``ValueColumn`` parsed from concatenated Values holds each kind's values in order;
  ``single_kind`` answers only for a column all of one kind with one entry per value.
* ``response_columns`` gives one column per result of a ``GetOnlineFeaturesResponse``.
"""

from __future__ import annotations

import pytest
from feast.protos.feast.serving.ServingService_pb2 import GetOnlineFeaturesResponse
from feast.protos.feast.types.Value_pb2 import Value
from hypothesis import given, settings
from hypothesis import strategies as st

from feast_dragonfly._store import value_columns as vc

_INT64_TAG = bytes([Value.DESCRIPTOR.fields_by_name["int64_val"].number << 3])

VALUES = st.one_of(
    st.builds(Value, int64_val=st.integers(-(2**63), 2**63 - 1)),
    st.builds(Value, int32_val=st.integers(-(2**31), 2**31 - 1)),
    st.builds(Value, double_val=st.floats(allow_nan=False)),
    st.builds(Value, bool_val=st.booleans()),
    st.builds(Value, string_val=st.text(max_size=300)),
    st.builds(Value, bytes_val=st.binary(max_size=20_000)),
    st.builds(Value, float_list_val=st.builds(lambda v: {"val": v}, st.lists(st.floats(width=32)))),
    st.just(Value()),
)


@pytest.mark.parametrize("value", [0, 1, 127, 128, 300, 16383, 16384, 2**21, 2**35, 2**63 - 1])
def test_varint_is_protobufs_encoding(value):
    assert _INT64_TAG + vc.varint(value) == Value(int64_val=value).SerializeToString()


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 2**63 - 1))
def test_varint_matches_protobuf_for_any_length(value):
    assert _INT64_TAG + vc.varint(value) == Value(int64_val=value).SerializeToString()


@settings(max_examples=200, deadline=None)
@given(values=st.lists(VALUES, max_size=12), unset_as_none=st.booleans())
def test_parsed_values_equal_parsing_each_value(values, unset_as_none):
    raws = [value.SerializeToString() for value in values]
    if unset_as_none:
        raws = [raw or None for raw in raws]
    parsed = vc.parsed_values(raws)
    assert list(parsed) == [Value.FromString(raw or b"") for raw in raws]


def test_a_column_of_one_kind_is_read_in_order():
    raws = [Value(int64_val=v).SerializeToString() for v in (5, -1, 2**40)]
    column = vc.ValueColumn.FromString(b"".join(raws))
    assert vc.single_kind(column, 3) == ("int64_val", [5, -1, 2**40])
    assert list(column.int64_val) == [5, -1, 2**40]
    strings = vc.ValueColumn.FromString(
        b"".join(Value(string_val=s).SerializeToString() for s in ("a", "", "ö"))
    )
    # A oneof member is serialized even when empty: "" is a value of its kind, not unset.
    assert vc.single_kind(strings, 3) == ("string_val", ["a", "", "ö"])
    assert vc.single_kind(strings, 2) is None  # a count that does not match is no answer


def test_mixed_kinds_or_unset_values_are_not_a_single_kind():
    mixed = vc.ValueColumn.FromString(
        Value(int64_val=1).SerializeToString() + Value(double_val=2.5).SerializeToString()
    )
    assert vc.single_kind(mixed, 2) is None
    assert (mixed.int64_val[:], mixed.double_val[:]) == ([1], [2.5])
    with_unset = vc.ValueColumn.FromString(Value(int64_val=1).SerializeToString())
    assert vc.single_kind(with_unset, 2) is None  # a second, unset value left no entry
    assert vc.single_kind(vc.ValueColumn(), 0) is None


def test_response_columns_give_each_results_values_by_kind():
    response = GetOnlineFeaturesResponse()
    response.results.add().values.extend([Value(int64_val=1), Value(int64_val=2)])
    response.results.add().values.extend([Value(string_val="x"), Value(double_val=0.5)])
    response.results.add()
    first, second, third = vc.response_columns(response)
    assert vc.single_kind(first, 2) == ("int64_val", [1, 2])
    assert (list(second.string_val), list(second.double_val)) == (["x"], [0.5])
    assert third.ListFields() == []
