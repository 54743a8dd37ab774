"""``_store.compact.views``: what the compact layout needs of a feature view.

* ``schema_of``: the view's features in order with their value types; cached (the same
  object for the same features, another for changed features); a view with a type a record
  cannot hold is refused with a ``DragonflyConfigError`` naming the feature and the view.
* ``ttl_seconds``: the view's ``ttl`` in whole seconds, 0 for none / zero.
* ``now_ms``: the client's clock in Unix milliseconds.
* ``expire_at_ms``: the earlier of event time + view ttl and now + key ttl (0: never), event
  times truncated to the millisecond; ``expire_at_ms_array`` gives the same for columns.
* ``expired``: true from the expiry's millisecond on, never without a view ttl, and the same
  rule the writer applies (``0 < expire_at_ms <= now``).
* ``read_options``: the ttl only with ``layout: compact`` or ``enforce_view_ttl``, the record
  schema only with ``layout: compact``.

No server needed.
"""

from __future__ import annotations

import time
from datetime import timedelta
from types import SimpleNamespace

import numpy as np
import pytest
from feast import FeatureView
from feast.types import Float64, Int64, Invalid, String
from feast.value_type import ValueType
from hypothesis import given, settings
from hypothesis import strategies as st
from store_kit import typed_view

from feast_dragonfly._store.compact import views
from feast_dragonfly._store.compact.schema import Schema
from feast_dragonfly.errors import DragonflyConfigError

NOW = 1_714_566_615_123  # 2024-05-01 12:30:15.123 UTC, in ms


def view(name="fv", fields=(("a", Int64), ("b", Float64), ("c", String)), ttl=None) -> FeatureView:
    return typed_view(name, fields, ttl)


# --------------------------------------------------------------------------- schema_of


def test_the_schema_is_the_views_features_in_order_with_their_types():
    schema = views.schema_of(view())
    assert schema.features == (
        ("a", ValueType.INT64),
        ("b", ValueType.DOUBLE),
        ("c", ValueType.STRING),
    )
    assert schema == Schema(
        [("a", ValueType.INT64), ("b", ValueType.DOUBLE), ("c", ValueType.STRING)]
    )
    assert schema.canonical == "v1|a:INT64|b:DOUBLE|c:STRING"


def test_the_schema_is_cached_per_features_and_follows_a_changed_view():
    first = views.schema_of(view())
    assert views.schema_of(view()) is first  # another object of the same view: cached
    reordered = views.schema_of(view(fields=(("b", Float64), ("a", Int64), ("c", String))))
    retyped = views.schema_of(view(fields=(("a", String), ("b", Float64), ("c", String))))
    assert len({first.id, reordered.id, retyped.id}) == 3
    assert reordered.names == ("b", "a", "c")
    assert retyped.types[0] == ValueType.STRING
    other = views.schema_of(view(name="other"))
    assert other == first  # a schema does not depend on the view's name


def test_a_type_a_record_cannot_hold_is_refused_naming_feature_and_view():
    bad = view(name="drivers", fields=(("a", Int64), ("mystery", Invalid)))
    with pytest.raises(DragonflyConfigError, match=r"'drivers'.*'mystery' \(UNKNOWN\)"):
        views.schema_of(bad)
    with pytest.raises(DragonflyConfigError, match="'mystery'"):  # not cached as a success
        views.schema_of(bad)
    table = SimpleNamespace(
        name="stub",
        features=[
            SimpleNamespace(name="z", dtype=SimpleNamespace(to_value_type=lambda: ValueType.NULL))
        ],
    )
    with pytest.raises(DragonflyConfigError, match=r"'stub'.*'z' \(NULL\)"):
        views.schema_of(table)


# --------------------------------------------------------------------------- ttl, clock


@pytest.mark.parametrize(
    ("ttl", "seconds"),
    [
        (None, 0),
        (timedelta(0), 0),
        (timedelta(seconds=1), 1),
        (timedelta(seconds=90, milliseconds=700), 90),  # whole seconds
        (timedelta(days=2), 172_800),
    ],
)
def test_ttl_seconds(ttl, seconds):
    assert views.ttl_seconds(SimpleNamespace(ttl=ttl)) == seconds
    assert views.ttl_seconds(view(ttl=ttl)) == seconds


def test_a_table_without_a_ttl_lives_forever():
    assert views.ttl_seconds(SimpleNamespace()) == 0


def test_now_ms_is_the_clock_in_unix_milliseconds():
    before = time.time_ns() // 1_000_000
    now = views.now_ms()
    after = time.time_ns() // 1_000_000
    assert isinstance(now, int) and before <= now <= after


# --------------------------------------------------------------------------- expiry


@pytest.mark.parametrize(
    ("view_ttl", "key_ttl", "expected"),
    [
        pytest.param(0, None, 0, id="neither: never"),
        pytest.param(0, 0, 0, id="key ttl 0: never"),
        pytest.param(-5, None, 0, id="negative view ttl: never"),
        pytest.param(60, None, 1_714_566_600_987 + 60_000, id="view ttl: event time + ttl"),
        pytest.param(0, 30, NOW + 30_000, id="key ttl: now + ttl"),
        pytest.param(60, 3600, 1_714_566_600_987 + 60_000, id="both: the view's is earlier"),
        pytest.param(3600, 10, NOW + 10_000, id="both: the key's is earlier"),
    ],
)
def test_expire_at_is_the_earlier_of_the_views_and_the_keys(view_ttl, key_ttl, expected):
    # event time 2024-05-01 12:30:00.987654321: nanos truncated to the millisecond
    seconds, nanos = 1_714_566_600, 987_654_321
    got = views.expire_at_ms(seconds, nanos, view_ttl=view_ttl, key_ttl=key_ttl, now=NOW)
    assert got == expected
    array = views.expire_at_ms_array(
        np.array([seconds]), np.array([nanos]), view_ttl=view_ttl, key_ttl=key_ttl, now=NOW
    )
    assert array.dtype == np.int64 and array.tolist() == [expected]


@settings(deadline=None)
@given(
    times=st.lists(
        st.tuples(st.integers(-(2**33), 2**34), st.integers(0, 999_999_999)), max_size=20
    ),
    view_ttl=st.integers(-10, 10**9),
    key_ttl=st.one_of(st.none(), st.integers(0, 10**9)),
    now=st.integers(0, 2**45),
)
def test_the_array_form_matches_the_scalar_form(times, view_ttl, key_ttl, now):
    seconds = np.array([s for s, _ in times], dtype=np.int64)
    nanos = np.array([n for _, n in times], dtype=np.int32)
    got = views.expire_at_ms_array(seconds, nanos, view_ttl=view_ttl, key_ttl=key_ttl, now=now)
    assert got.dtype == np.int64 and len(got) == len(times)
    assert got.tolist() == [
        views.expire_at_ms(s, n, view_ttl=view_ttl, key_ttl=key_ttl, now=now) for s, n in times
    ]


def test_expired_from_the_expiry_millisecond_on():
    seconds, nanos = 1_714_566_600, 987_654_321
    expiry = 1_714_566_600_987 + 60_000
    assert not views.expired(seconds, nanos, 60, expiry - 1)
    assert views.expired(seconds, nanos, 60, expiry)
    assert views.expired(seconds, nanos, 60, expiry + 10**9)
    assert not views.expired(seconds, nanos, 0, 2**62)  # no view ttl: never
    assert not views.expired(0, 0, -1, 2**62)


@settings(deadline=None)
@given(
    seconds=st.integers(0, 2**34),
    nanos=st.integers(0, 999_999_999),
    view_ttl=st.integers(-2, 10**6),
    now=st.integers(0, 2**45),
)
def test_reads_and_writes_apply_the_same_rule(seconds, nanos, view_ttl, now):
    """Event times from the epoch on (before it, an expiry at or before the epoch reads as
    0 / negative: see ``test_write_records``'s pre-epoch test)."""
    expire_at = views.expire_at_ms(seconds, nanos, view_ttl=view_ttl, key_ttl=None, now=now)
    assert views.expired(seconds, nanos, view_ttl, now) == (0 < expire_at <= now)


# --------------------------------------------------------------------------- read_options


def test_read_options_per_layout():
    table = view(ttl=timedelta(minutes=5))
    compact = views.read_options(table, compact=True, enforce_ttl=False)
    assert compact == {"ttl": 300, "schema": views.schema_of(table)}
    assert views.read_options(table, compact=True, enforce_ttl=True) == compact
    assert views.read_options(table, compact=False, enforce_ttl=True) == {
        "ttl": 300,
        "schema": None,
    }
    assert views.read_options(table, compact=False, enforce_ttl=False) == {"ttl": 0, "schema": None}
    assert views.read_options(view(), compact=True, enforce_ttl=False)["ttl"] == 0


def test_read_options_refuse_a_type_only_with_the_compact_layout():
    bad = view(fields=(("x", Invalid),), ttl=timedelta(seconds=9))
    assert views.read_options(bad, compact=False, enforce_ttl=True) == {"ttl": 9, "schema": None}
    with pytest.raises(DragonflyConfigError, match="'x'"):
        views.read_options(bad, compact=True, enforce_ttl=False)
