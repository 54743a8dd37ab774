"""``_store.direct_path``: a plain ``get_online_features`` answered from the stored bytes.

* ``request_args`` passes on exactly ``get_online_features``'s parameters, by name.
* ``prepare`` leaves version-metadata requests and entity rows in no plain form to Feast's
  path (``None``) before looking anything up; plain requests on an applied repo (the
  differential ``api`` repos, real server) get their ``HMGET`` commands.
* ``respond`` wraps the message ``response_builder`` builds in a ``FastOnlineResponse`` typed
  by the request's features, whose answers equal Feast's own store's; it records Feast's
  read-latency metric only when metrics are on, and inside ``feast serve`` leaves the JSON
  document of the replies for ``feast_serve_hook``.
* The store's ``get_online_features`` takes this path for plain requests and Feast's for the
  rest, with equal answers either way.
* Replies come framed (``framing``) with compact records, except inside ``feast serve``,
  whose JSON is built from the same replies.
"""

from __future__ import annotations

import time
from collections import OrderedDict

import pytest
from differential_kit import DIFFERENTIAL_MARKS, assert_same_response
from differential_requests import REQUESTS, request_args
from feast import metrics as feast_metrics
from feast.feature_server_utils import convert_response_to_dict

from feast_dragonfly._store import (
    direct_json,
    direct_path,
    feast_serve_hook,
    feature_types,
    response_builder,
)
from feast_dragonfly._store.online_response import FastOnlineResponse


def test_replies_are_framed_for_compact_records_outside_feast_serve(monkeypatch):
    monkeypatch.setattr(feast_serve_hook, "_original", None)  # earlier tests may install it
    assert direct_path.framing(compact=True)
    assert not direct_path.framing(compact=False)
    monkeypatch.setattr(feast_serve_hook, "_original", convert_response_to_dict)
    assert not direct_path.framing(compact=True)


def test_request_args_pass_on_exactly_the_requests_parameters():
    scope = {name: f"<{name}>" for name in direct_path.REQUEST_ARGS}
    assert direct_path.request_args({**scope, "self": object(), "prepared": None}) == scope
    assert list(direct_path.request_args(scope)) == list(direct_path.REQUEST_ARGS)
    with pytest.raises(KeyError):
        direct_path.request_args({"config": None})


@pytest.mark.parametrize(
    ("entity_rows", "version_metadata"),
    [
        ([{"driver_id": 1}], True),
        ([], False),
        ([{"driver_id": 1}, {"other": 2}], False),
        ("driver_id=1", False),
    ],
)
def test_requests_that_need_feasts_path_are_left_to_it_unplanned(entity_rows, version_metadata):
    """Nothing is looked up: the config and registry given here would fail if touched."""
    assert (
        direct_path.prepare(
            config=None,
            features=None,
            entity_rows=entity_rows,
            registry=None,
            project="p",
            full_feature_names=False,
            include_feature_view_version_metadata=version_metadata,
        )
        is None
    )


class TestOnTheApiRepos:
    pytestmark = DIFFERENTIAL_MARKS

    @staticmethod
    def prepared_and_replies(store, label: str):
        online_store = store._get_provider().online_store
        args = request_args(store, REQUESTS[label])
        prepared = direct_path.prepare(
            config=store.config, registry=store.registry, project=store.project, **args
        )
        assert prepared is not None, f"{label}: not a direct-path shape"
        return prepared, online_store._fetch(store.config, prepared.read_plan)

    @pytest.mark.parametrize(
        "label",
        [
            "typed lists, bytes, timestamps, nulls",
            "exotic kinds, full names",
            "missing and duplicate entities",
            "composite with each entity alone",
            "columnar entity rows",
            "service: projection, full names",
        ],
    )
    def test_respond_answers_as_feasts_store(self, api_data, label):
        store = api_data.stores["ours"]
        prepared, replies = self.prepared_and_replies(store, label)
        answer = direct_path.respond(prepared, replies, time.monotonic())
        assert type(answer) is FastOnlineResponse
        built = response_builder.direct_response(prepared, replies)
        assert answer.proto.SerializeToString() == built.SerializeToString()
        assert answer._feature_types == feature_types.build(prepared.plan.grouped_refs)
        feast = api_data.stores["feast"]
        assert_same_response(
            feast.get_online_features(**request_args(feast, REQUESTS[label])), answer, label
        )

    @pytest.mark.parametrize("metrics_on", [False, True])
    def test_the_read_latency_is_recorded_only_with_metrics_on(
        self, api_data, monkeypatch, metrics_on
    ):
        recorded: list[float] = []
        monkeypatch.setattr(feast_metrics._config, "online_features", metrics_on)
        monkeypatch.setattr(feast_metrics, "track_online_store_read", recorded.append)
        monkeypatch.setattr(response_builder, "track_feature_statuses", lambda *args: None)
        prepared, replies = self.prepared_and_replies(api_data.stores["ours"], "single entity row")
        started = time.monotonic()
        direct_path.respond(prepared, replies, started)
        elapsed = time.monotonic() - started
        assert len(recorded) == int(metrics_on)
        assert all(0 <= seconds <= elapsed for seconds in recorded)

    def test_inside_feast_serve_the_json_comes_from_the_replies(self, api_data, monkeypatch):
        monkeypatch.setattr(feast_serve_hook, "_original", convert_response_to_dict)
        monkeypatch.setattr(feast_serve_hook, "_pending", OrderedDict())
        calls: list = []
        original = direct_json.document

        def document(prepared, replies):
            calls.append(prepared)
            return original(prepared, replies)

        monkeypatch.setattr(direct_json, "document", document)
        prepared, replies = self.prepared_and_replies(
            api_data.stores["ours"], "five views sharing the driver"
        )
        answer = direct_path.respond(prepared, replies, time.monotonic())
        assert calls == []  # built only when Feast's server converts the response
        converted = feast_serve_hook._convert(answer.proto)
        assert calls == [prepared]
        assert converted == convert_response_to_dict(answer.proto)

    @pytest.mark.parametrize(
        ("label", "direct"),
        [("missing and duplicate entities", True), ("on-demand view", False)],
    )
    def test_the_store_takes_this_path_for_plain_requests_only(
        self, api_data, monkeypatch, label, direct
    ):
        taken: list = []
        original = direct_path.respond
        monkeypatch.setattr(
            direct_path, "respond", lambda *args: taken.append(args) or original(*args)
        )
        ours, feast = api_data.stores["ours"], api_data.stores["feast"]
        answer = ours.get_online_features(**request_args(ours, REQUESTS[label]))
        assert isinstance(answer, FastOnlineResponse)
        assert len(taken) == int(direct)
        assert_same_response(
            feast.get_online_features(**request_args(feast, REQUESTS[label])), answer, label
        )
