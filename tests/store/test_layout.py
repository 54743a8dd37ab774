"""``_store.layout``: Feast's Redis byte layout, reproduced byte for byte.

* ``serialize_entity_key_v3`` / ``entity_hash_key`` produce exactly Feast's entity-key bytes
  (and Feast's errors) for any join keys and values; other key versions use Feast's encoding.
  ``entity_hash_keys`` gives ``entity_hash_key`` of every key of a batch, whether the batch
  takes its column-wise path (one int64 join key of one name) or not (any other mix).
* ``encode_event_time`` / ``decode_event_time`` / ``response_timestamp`` give the bytes and
  datetimes Feast stores and reads (naive datetimes are UTC, microseconds kept, epoch when
  absent).
* ``key_prefix_for_join_keys`` starts every hash key of those join keys; ``storage_view_name``
  follows the registry's versioning switch.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone, tzinfo
from types import SimpleNamespace

import pytest
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.redis import RedisOnlineStore
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import given, settings
from hypothesis import strategies as st

from feast_dragonfly._store import layout
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


single_int64_keys = st.tuples(join_key_names, st.lists(INT64, min_size=0, max_size=80)).map(
    lambda pair: [
        EntityKeyProto(join_keys=[pair[0]], entity_values=[ValueProto(int64_val=v)])
        for v in pair[1]
    ]
)


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(
        single_int64_keys,  # the column-wise path (from BATCH_KEYS_FROM keys on)
        st.lists(entity_keys(), max_size=40),  # any mix: key by key
        st.tuples(single_int64_keys, entity_keys()).map(lambda pair: pair[0] + [pair[1]]),
    ),
    st.sampled_from([b"proj", b"p", "projet_\u00e9".encode()]),
)
def test_batched_hash_keys_equal_one_by_one(keys, project):
    expected = [serialize_entity_key(key, 3) + project for key in keys]
    assert layout.entity_hash_keys(keys, project, 3) == expected


def test_batched_hash_keys_of_int64_edge_values_and_other_shapes(monkeypatch):
    values = [0, -1, 1, 127, 128, 2**63 - 1, -(2**63)] * 10
    keys = [
        EntityKeyProto(join_keys=["id"], entity_values=[ValueProto(int64_val=v)]) for v in values
    ]
    expected = [entity_hash_key(k, b"p", 3) for k in keys]
    with monkeypatch.context() as patch:  # the column-wise path: no key goes one by one
        patch.setattr(layout, "entity_hash_key", None)
        assert layout.entity_hash_keys(keys, b"p", 3) == expected
    renamed = keys[:-1] + [
        EntityKeyProto(join_keys=["other"], entity_values=[ValueProto(int64_val=1)])
    ]
    assert layout.entity_hash_keys(renamed, b"p", 3) == [
        entity_hash_key(k, b"p", 3) for k in renamed
    ]
    unset = keys[:-1] + [EntityKeyProto(join_keys=["id"], entity_values=[ValueProto()])]
    with pytest.raises(ValueError):  # Feast's error for a value without a type, as key by key
        layout.entity_hash_keys(unset, b"p", 3)
    with pytest.warns(UserWarning):  # other versions: Feast's encoding, key by key
        assert layout.entity_hash_keys(keys, b"p", 2)[0] == serialize_entity_key(keys[0], 2) + b"p"


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


# --------------------------------------------------------------------------- event times

MOMENTS = st.datetimes(
    min_value=datetime(1, 1, 2),
    max_value=datetime(9999, 12, 30),
    timezones=st.one_of(
        st.none(),  # naive: UTC for Feast
        st.just(timezone.utc),
        st.integers(-23 * 60, 23 * 60).map(lambda m: timezone(timedelta(minutes=m))),
    ),
)


class _NoOffset(tzinfo):
    """A tzinfo that gives no offset: Python treats such datetimes as naive."""

    def utcoffset(self, moment):
        return None


def _feasts_stored_timestamp(moment: datetime) -> bytes:
    """What Feast's ``RedisOnlineStore`` writes into ``_ts:<view>`` for an event time."""
    stamp = Timestamp()
    stamp.FromDatetime(moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc))
    return stamp.SerializeToString()


@settings(max_examples=300, deadline=None)
@given(MOMENTS)
def test_event_times_encode_to_feasts_bytes_and_decode_as_feasts_reader(moment):
    raw, seconds, nanos = layout.encode_event_time(moment)
    assert raw == _feasts_stored_timestamp(moment)
    assert seconds * 1_000_000_000 + nanos == (
        (layout.as_utc(moment) - datetime(1970, 1, 1, tzinfo=timezone.utc))
        // timedelta(microseconds=1)
        * 1000
    )
    feasts_time, _ = RedisOnlineStore()._get_features_for_entity([b"", raw], "fv", ["f", "_ts:fv"])
    assert layout.decode_event_time(raw) == feasts_time


def test_naive_datetimes_are_utc():
    naive = datetime(2024, 5, 1, 12, 30, 0, 123_456)
    aware = naive.replace(tzinfo=timezone.utc)
    assert layout.as_utc(naive) == aware and layout.as_utc(naive).tzinfo is timezone.utc
    other_zone = aware.astimezone(timezone(timedelta(hours=5)))
    assert layout.as_utc(other_zone) is other_zone  # aware ones are kept as they are
    assert layout.encode_event_time(naive) == layout.encode_event_time(aware)
    assert layout.encode_event_time(other_zone) == layout.encode_event_time(aware)


def test_a_zone_without_offset_is_utc_as_in_protobuf():
    moment = datetime(2024, 5, 1, 12, 30, 0, 123_456, tzinfo=_NoOffset())
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    assert layout.encode_event_time(moment) == (
        stamp.SerializeToString(),
        stamp.seconds,
        stamp.nanos,
    )


def test_an_absent_timestamp_reads_as_the_epoch():
    epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
    assert layout.decode_event_time(None) == layout.decode_event_time(b"") == epoch
    assert layout.response_timestamp(None) == Timestamp()


def test_response_timestamps_round_to_whole_microseconds_as_feasts_response_does():
    stored = Timestamp(seconds=1_700_000_000, nanos=123_456_789).SerializeToString()
    expected = Timestamp()
    expected.FromDatetime(layout.decode_event_time(stored))
    assert layout.response_timestamp(stored) == expected
    assert layout.response_timestamp(stored).nanos % 1000 == 0
    assert layout.response_timestamp(stored).seconds == 1_700_000_000


# --------------------------------------------------------------------------- names and prefixes


@settings(max_examples=200, deadline=None)
@given(entity_keys())
def test_every_hash_key_starts_with_the_prefix_of_its_join_keys(entity_key):
    key = entity_hash_key(entity_key, b"proj", 3)
    assert key.startswith(layout.key_prefix_for_join_keys(sorted(entity_key.join_keys)))


@pytest.mark.parametrize(
    ("versioning", "current", "tag", "expected"),
    [
        (True, 3, None, "fv_v3"),
        (True, 3, 1, "fv_v1"),
        (True, 0, None, "fv"),
        (False, 3, None, "fv"),
    ],
)
def test_storage_view_name_follows_the_versioning_switch(versioning, current, tag, expected):
    table = SimpleNamespace(
        name="fv", current_version_number=current, projection=SimpleNamespace(version_tag=tag)
    )
    config = SimpleNamespace(
        registry=SimpleNamespace(enable_online_feature_view_versioning=versioning)
    )
    assert layout.storage_view_name(table, config) == expected
