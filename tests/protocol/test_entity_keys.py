"""Our entity-key serializer must produce exactly Feast's bytes (and Feast's errors)."""

from __future__ import annotations

import pytest
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from hypothesis import given, settings
from hypothesis import strategies as st

from feast_dragonfly._store.layout import entity_hash_key, serialize_entity_key_v3

INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
INT32 = st.integers(min_value=-(2**31), max_value=2**31 - 1)

entity_values = st.one_of(
    INT64.map(lambda v: ValueProto(int64_val=v)),
    INT32.map(lambda v: ValueProto(int32_val=v)),
    st.text().map(lambda v: ValueProto(string_val=v)),
    st.binary().map(lambda v: ValueProto(bytes_val=v)),
    INT64.map(lambda v: ValueProto(unix_timestamp_val=v)),
)
join_key_names = st.text(min_size=1, max_size=20)


@st.composite
def entity_keys(draw) -> EntityKeyProto:
    names = draw(st.lists(join_key_names, min_size=1, max_size=4, unique=True))
    values = [draw(entity_values) for _ in names]
    return EntityKeyProto(join_keys=names, entity_values=values)


@settings(max_examples=400, deadline=None)
@given(entity_keys())
def test_serialized_entity_keys_equal_feasts(entity_key):
    assert serialize_entity_key_v3(entity_key) == serialize_entity_key(entity_key, 3)
    assert entity_hash_key(entity_key, b"proj", 3) == serialize_entity_key(entity_key, 3) + b"proj"


def test_unsupported_values_raise_feasts_error():
    key = EntityKeyProto(join_keys=["driver_id"], entity_values=[ValueProto(double_val=1.5)])
    with pytest.raises(ValueError, match="Value type not supported"):
        serialize_entity_key_v3(key)


def test_repeated_join_key_names_follow_feast():
    key = EntityKeyProto(
        join_keys=["a", "a"], entity_values=[ValueProto(int64_val=2), ValueProto(int64_val=1)]
    )
    try:
        expected = serialize_entity_key(key, 3)
    except Exception as exc:  # noqa: BLE001 - whatever Feast raises, we raise the same
        with pytest.raises(type(exc)):
            serialize_entity_key_v3(key)
    else:
        assert serialize_entity_key_v3(key) == expected


def test_other_key_versions_still_use_feasts_encoding():
    key = EntityKeyProto(join_keys=["driver_id"], entity_values=[ValueProto(int64_val=7)])
    with pytest.warns(UserWarning):
        expected = serialize_entity_key(key, 2) + b"p"
    with pytest.warns(UserWarning):
        assert entity_hash_key(key, b"p", 2) == expected
