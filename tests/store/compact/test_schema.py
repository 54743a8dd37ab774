"""The compact layout's schema: canonical text, id, supported types, derived layout.

No server needed.
"""

from __future__ import annotations

import mmh3
import pytest
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.value_type import ValueType
from hypothesis import given
from hypothesis import strategies as st

from feast_dragonfly._store.compact.schema import (
    BOOL,
    HEADER_SIZE,
    LENGTH,
    PROTO,
    RAW,
    VARINT,
    Schema,
    require_supported,
    unsupported,
    value_field,
)
from feast_dragonfly.errors import DragonflyConfigError, DragonflyDataError

SUPPORTED = [kind for kind in ValueType if kind not in (ValueType.UNKNOWN, ValueType.NULL)]


def test_canonical_text_and_id():
    schema = Schema(
        [("age", ValueType.INT64), ("score", ValueType.DOUBLE), ("name", ValueType.STRING)]
    )
    assert schema.canonical == "v1|age:INT64|score:DOUBLE|name:STRING"
    assert schema.id == mmh3.hash(b"v1|age:INT64|score:DOUBLE|name:STRING", 0, signed=False)
    assert Schema([]).canonical == "v1"


def test_names_with_separators_are_escaped_and_round_trip():
    features = [("a|b", ValueType.INT64), ("100%", ValueType.STRING), ("x:y", ValueType.BOOL)]
    schema = Schema(features)
    assert schema.canonical == "v1|a%7Cb:INT64|100%25:STRING|x:y:BOOL"
    assert Schema.from_canonical(schema.canonical) == schema
    assert Schema.from_canonical(schema.canonical).features == tuple(features)


@given(
    st.lists(
        st.tuples(st.text(min_size=1, max_size=8), st.sampled_from(SUPPORTED)),
        max_size=12,
        unique_by=lambda pair: pair[0],
    )
)
def test_from_canonical_round_trips(features):
    schema = Schema(features)
    again = Schema.from_canonical(schema.canonical)
    assert again == schema
    assert again.id == schema.id
    assert hash(again) == hash(schema)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "v2|a:INT64",
        "v1|a",
        "v1|a:NOPE",
        "v1|a%7c:INT64",
        "v1|a%7:INT64",
        "v1|:INT64",
        "v1|a:INT64|a:BOOL",
        "v1|a:UNKNOWN",
    ],
)
def test_from_canonical_rejects_what_no_schema_writes(text):
    with pytest.raises(DragonflyDataError):
        Schema.from_canonical(text)


def test_any_change_to_the_features_changes_the_id():
    base = [("a", ValueType.INT64), ("b", ValueType.STRING)]
    variants = [
        base,
        [("b", ValueType.STRING), ("a", ValueType.INT64)],  # reordered
        [("a", ValueType.INT32), ("b", ValueType.STRING)],  # retyped
        [("a", ValueType.INT64), ("c", ValueType.STRING)],  # renamed
        [("a", ValueType.INT64)],  # removed
        [*base, ("c", ValueType.BOOL)],  # added
    ]
    assert len({Schema(v).id for v in variants}) == len(variants)


def test_every_feast_type_but_unknown_and_null_is_supported():
    assert unsupported((kind.name, kind) for kind in SUPPORTED) == []
    for kind in SUPPORTED:  # each has a ValueProto field of its own
        assert value_field(kind) in ValueProto.DESCRIPTOR.fields_by_name
    assert value_field(ValueType.PDF_BYTES) == "bytes_val"
    assert value_field(ValueType.VALUE_LIST) == "list_val"
    assert unsupported(
        [("u", ValueType.UNKNOWN), ("a", ValueType.INT64), ("n", ValueType.NULL)]
    ) == [
        ("u", ValueType.UNKNOWN),
        ("n", ValueType.NULL),
    ]


def test_unsupported_types_are_refused_naming_view_and_features():
    features = [("ok", ValueType.INT64), ("mystery", ValueType.UNKNOWN), ("void", ValueType.NULL)]
    with pytest.raises(DragonflyConfigError) as caught:
        require_supported(features, view="driver_stats")
    message = str(caught.value)
    assert "'driver_stats'" in message
    assert "'mystery' (UNKNOWN)" in message and "'void' (NULL)" in message
    assert "'ok'" not in message
    with pytest.raises(DragonflyConfigError, match="mystery"):
        Schema(features)
    require_supported(features[:1], view="driver_stats")  # no error


@pytest.mark.parametrize(
    "features",
    [[("a", ValueType.INT64), ("a", ValueType.STRING)], [("", ValueType.INT64)]],
)
def test_names_must_be_unique_and_non_empty(features):
    with pytest.raises(DragonflyConfigError):
        Schema(features)


def test_types_may_be_given_as_numbers():
    assert Schema([("a", 4)]) == Schema([("a", ValueType.INT64)])  # type: ignore[list-item]


def test_derived_layout():
    schema = Schema(
        [
            ("s", ValueType.STRING),  # variable
            ("b", ValueType.BOOL),  # slot 0, 1 byte
            ("i", ValueType.INT32),  # slot 1, 4 bytes
            ("f", ValueType.FLOAT),  # slot 5, 4 bytes
            ("l", ValueType.INT64_LIST),  # variable
            ("q", ValueType.INT64),  # slot 9, 8 bytes
            ("t", ValueType.UNIX_TIMESTAMP),  # slot 17, 8 bytes
            ("d", ValueType.DOUBLE),  # slot 25, 8 bytes
            ("y", ValueType.BYTES),  # variable
        ]
    )
    assert schema.slots == (-1, 0, 1, 5, -1, 9, 17, 25, -1)
    assert schema.kinds == (LENGTH, BOOL, VARINT, RAW, PROTO, VARINT, VARINT, RAW, LENGTH)
    assert schema.bitmap_size == 3  # ceil(2 * 9 / 8)
    assert schema.fixed_offset == HEADER_SIZE + 3
    assert schema.fixed.size == 33 == schema.var_offset - schema.fixed_offset
    assert schema.integers.size == 33
    for n, size in [(0, 0), (1, 1), (4, 1), (5, 2), (8, 2), (9, 3)]:
        assert Schema([(f"f{i}", ValueType.STRING) for i in range(n)]).bitmap_size == size
