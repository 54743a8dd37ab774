"""``_protocol.keys``: hash keys and field names of Feast's Redis layout, without Feast.

* ``feature_field`` / ``feature_fields`` are Feast's murmur3 field names, for any view and
  feature names; ``timestamp_field`` is ``_ts:<view>``, starting with ``TIMESTAMP_PREFIX``.
* ``entity_part_length`` walks a serialized (v3) entity key to its end, and says ``None``
  for a key that is too short or cut off; ``belongs_to_project`` is exact (``proj`` is not
  ``myproj``).
* ``glob_escape``: a ``SCAN MATCH`` pattern built from escaped bytes matches exactly the keys
  that start with those bytes, on the real server, whatever glob characters they hold.
* ``describe_entity`` / ``describe_key`` name an entity for error messages, and fall back to
  the raw key when it is not an entity key.
"""

from __future__ import annotations

import pytest
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.helpers import _mmh3
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from hypothesis import given, settings
from hypothesis import strategies as st

from feast_dragonfly._protocol import keys

NAMES = st.text(min_size=1, max_size=30)


def _key(project: str, values: dict[str, int | str]) -> bytes:
    entity = EntityKeyProto(
        join_keys=list(values),
        entity_values=[
            ValueProto(int64_val=v) if isinstance(v, int) else ValueProto(string_val=v)
            for v in values.values()
        ],
    )
    return serialize_entity_key(entity, 3) + project.encode()


# --------------------------------------------------------------------------- field names


@settings(max_examples=200, deadline=None)
@given(view=NAMES, features=st.lists(NAMES, min_size=1, max_size=5))
def test_feature_fields_are_feasts_murmur3_field_names(view, features):
    assert [keys.feature_field(view, name) for name in features] == [
        _mmh3(f"{view}:{name}") for name in features
    ]
    assert keys.feature_fields(view, features) == [_mmh3(f"{view}:{n}") for n in features]


def test_timestamp_fields_name_their_view():
    assert keys.timestamp_field("driver_stats") == b"_ts:driver_stats"
    assert keys.timestamp_field("fv_v2") == b"_ts:fv_v2"
    assert keys.timestamp_field("vue_été") == "_ts:vue_été".encode()
    assert keys.timestamp_field("x").startswith(keys.TIMESTAMP_PREFIX)
    # A feature field is 4 bytes: it can never be mistaken for a view's timestamp field.
    assert len(keys.feature_field("x", "y")) == 4


# --------------------------------------------------------------------------- hash keys


@settings(max_examples=200, deadline=None)
@given(
    values=st.dictionaries(
        st.text(min_size=1, max_size=12),
        st.one_of(st.integers(-(2**63), 2**63 - 1), st.text(max_size=60)),
        min_size=1,
        max_size=3,
    ),
    project=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_-]{0,15}", fullmatch=True),
)
def test_entity_part_length_finds_where_the_project_starts(values, project):
    key = _key(project, values)
    length = keys.entity_part_length(key)
    assert length == len(key) - len(project.encode())
    assert keys.belongs_to_project(key, project.encode())
    assert not keys.belongs_to_project(key, b"x" + project.encode())
    assert keys.entity_part_length(key[: length - 1]) is None  # cut inside the entity key


@pytest.mark.parametrize("key", [b"", b"\x01\x00", b"\x01\x00\x00\x00", b"\xff\xff\xff\xff1234"])
def test_keys_that_are_no_entity_keys_have_no_entity_part(key):
    assert keys.entity_part_length(key) is None
    assert not keys.belongs_to_project(key, b"proj")


def test_a_project_is_matched_exactly_not_by_its_ending():
    key = _key("myproj", {"driver_id": 1})
    assert keys.belongs_to_project(key, b"myproj")
    assert not keys.belongs_to_project(key, b"proj")
    assert not keys.belongs_to_project(_key("proj", {"driver_id": 1}), b"myproj")
    assert not keys.belongs_to_project(_key("proj2", {"driver_id": 1}), b"proj")


def test_glob_escape_escapes_every_metacharacter_and_nothing_else():
    assert keys.glob_escape(b"a*b?c[d]e\\f") == b"a\\*b\\?c\\[d\\]e\\\\f"
    assert keys.glob_escape(bytes(range(40))) == bytes(range(40))


@pytest.mark.server
def test_an_escaped_prefix_matches_exactly_the_keys_that_start_with_it(redis_client):
    # Entity values 42, 63, 91, 92 put '*', '?', '[' and '\\' into the serialized key.
    stored = [_key("proj", {"driver_id": i}) for i in (1, 42, 63, 91, 92)]
    stored += [b"*", b"?x", b"[ab]", b"\\", _key("proj", {"customer_id": "*"})]
    for key in stored:
        redis_client.set(key, b"1")
    for raw in stored:
        pattern = keys.glob_escape(raw) + b"*"
        found = set(redis_client.scan_iter(match=pattern, count=1000))
        assert found == {key for key in stored if key.startswith(raw)}, raw


# --------------------------------------------------------------------------- messages


def test_describe_entity_names_each_join_key_and_value():
    entity = EntityKeyProto(
        join_keys=["driver_id", "city", "unset"],
        entity_values=[ValueProto(int64_val=1001), ValueProto(string_val="Oslo"), ValueProto()],
    )
    assert keys.describe_entity(entity) == "entity driver_id=1001, city='Oslo', unset=None"


def test_describe_key_decodes_an_entity_key_or_shows_the_raw_key():
    assert keys.describe_key(_key("proj", {"driver_id": 7})) == "entity driver_id=7"
    assert keys.describe_key(b"\x01") == "key b'\\x01'"
    assert keys.describe_key(b"plain") == "key b'plain'"
