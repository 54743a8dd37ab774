"""``_store.response_builder``: Feast's ``GetOnlineFeaturesResponse`` from the stored bytes.

On the differential ``api`` repos (the same data written by Feast's ``RedisOnlineStore`` and by
ours, real server), request by request:

* ``direct_response`` (the direct path's builder, from a prepared request's ``HMGET``
  replies) gives byte for byte the message Feast's own store answers.
* ``fill_response`` (the hook Feast's request handling calls, ``_read_features_per_fv``) does
  too, for every request shape Feast's path handles — on-demand views, join-key maps, version
  metadata included.
* Both feed Feast's per-view PRESENT / NOT_FOUND counters alike: the views Feast's builder
  counts, one count per value answered; ``track_statuses`` never lets a failing metrics call
  fail a read.
"""

from __future__ import annotations

from collections import Counter

import pytest
from differential_kit import DIFFERENTIAL_MARKS
from differential_requests import REQUESTS, request_args
from feast import metrics as feast_metrics
from feast.infra.online_stores.online_store import OnlineStore

from feast_dragonfly._store import response_builder

pytestmark = DIFFERENTIAL_MARKS

#: Request shapes the direct path answers (``tests/serve/test_direct_json.py`` lists the rest).
DIRECT = [
    "one view, all features",
    "subset of a view, reordered",
    "typed lists, bytes, timestamps, nulls",
    "exotic kinds, long values, odd event times",
    "exotic kinds, full names",
    "missing and duplicate entities",
    "all entities missing",
    "single entity row",
    "five views sharing the driver",
    "composite keys only",
    "composite with each entity alone",
    "full feature names",
    "view ttl exceeded for even drivers",
    "columnar entity rows",
    "service: whole views",
    "service: projection subset",
    "service: projection, full names",
    "service: aliased view, full names",
    "service: one view under two names",
    "conversion quirks",
    "300 entities x 60 features",
]
#: Every shape Feast's request handling answers (errors aside).
ANSWERED = [label for label in REQUESTS if not label.startswith("error:")]


def _bytes(message) -> bytes:
    return message.SerializeToString(deterministic=True)


def _feasts(api, label: str):
    store = api.stores["feast"]
    return store.get_online_features(**request_args(store, REQUESTS[label])).proto


def _direct(api, label: str):
    store = api.stores["ours"]
    online_store = store._get_provider().online_store
    prepared = online_store._direct_request(
        config=store.config,
        registry=store.registry,
        project=store.project,
        **request_args(store, REQUESTS[label]),
    )
    assert prepared is not None, f"{label}: not a direct-path shape"
    replies = online_store._fetch(store.config, prepared.read_plan)
    return response_builder.direct_response(prepared, replies)


def _through_feasts_request_handling(api, label: str):
    """Feast's generic ``get_online_features`` on our store: its ``_read_features_per_fv``
    hook is ours, and builds the response with ``fill_response``."""
    store = api.stores["ours"]
    online_store = store._get_provider().online_store
    return OnlineStore.get_online_features(
        online_store,
        config=store.config,
        registry=store.registry,
        project=store.project,
        **request_args(store, REQUESTS[label]),
    ).proto


@pytest.mark.parametrize("label", DIRECT)
def test_direct_response_is_feasts_message(api_data, label):
    assert _bytes(_direct(api_data, label)) == _bytes(_feasts(api_data, label))


@pytest.mark.parametrize("label", ANSWERED)
def test_fill_response_is_feasts_message(api_data, label):
    ours = _through_feasts_request_handling(api_data, label)
    assert _bytes(ours) == _bytes(_feasts(api_data, label))


@pytest.fixture
def statuses(monkeypatch):
    """Feast's per-view status counters, recorded (metrics on) for Feast's and our builders."""
    calls: list[tuple[str, int, int]] = []

    def record(view: str, present: int, not_found: int) -> None:
        calls.append((view, present, not_found))

    monkeypatch.setattr(feast_metrics, "track_feature_statuses", record)
    monkeypatch.setattr(response_builder, "track_feature_statuses", record)
    return calls


@pytest.mark.parametrize(
    ("label", "rows", "join_keys"),
    [("missing and duplicate entities", 9, 1), ("five views sharing the driver", 6, 2)],
)
def test_both_builders_count_every_value_of_the_views_feast_counts(
    api_data, statuses, label, rows, join_keys
):
    """(Feast's own counts are off by one feature per row: its Redis store appends the
    ``_ts`` field to the requested features it is handed. Ours count the values answered.)"""
    _feasts(api_data, label)
    feasts_views = {view for view, _, _ in statuses}
    assert feasts_views, "Feast's builder recorded nothing: the comparison would prove nothing"
    statuses.clear()
    _through_feasts_request_handling(api_data, label)
    filled = list(statuses)
    statuses.clear()
    response = _direct(api_data, label)
    assert Counter(statuses) == Counter(filled)
    assert {view for view, _, _ in filled} == feasts_views
    assert sum(p + n for _, p, n in filled) == rows * (len(response.results) - join_keys)


def test_a_failing_metrics_call_never_fails_a_read(monkeypatch):
    def broken(*_args) -> None:
        raise RuntimeError("metrics backend down")

    monkeypatch.setattr(response_builder, "track_feature_statuses", broken)
    response_builder.track_statuses("driver_stats", 3, 1)  # does not raise
