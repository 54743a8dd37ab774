"""``_store.feast_hooks``: the private Feast hooks, detected, each with a fallback that answers
the same.

Each hook's absence is simulated on the installed Feast (its attribute removed, or replaced by
one taking other parameters: a Feast that renamed or changed it), then detection re-run:

* ``detect`` finds every hook on this Feast's own attributes, and misses each one removed.
* ``present`` logs a missing hook's fallback once, at WARNING when it is slower (INFO when it
  is what this Feast does anyway), and never for a present hook.
* Without the request-context hook, or with a context of another shape, the direct path
  steps aside; without the batched-read hook, Feast's view-by-view path runs through our
  ``online_read``; without ``OnlineResponse._feature_types``, Feast's ``to_dict`` runs. Each
  way every request of the differential ``api`` repos answers as Feast's own store (real
  server), sync and async.
* The others: ``_build_feature_types`` falls back to Feast's, the read metric is not recorded,
  ``feast serve``'s conversion stays Feast's, the engines hand views to Feast's engine (no
  ``_get_column_names``) or skip the vector check (none in that Feast), and serve's metric
  labels are the raw count (no bins) or Feast's defaults (no counts), and uvicorn gets a
  worker health-check timeout only when it has one (older Feasts pin an older uvicorn).

``make test-compat`` runs the suite on every Feast minor of the declared range, where the
real older Feasts lack some of these hooks.
"""

from __future__ import annotations

import inspect
import logging
from types import SimpleNamespace
from typing import Any

import feast.feature_server as feast_server
import feast.metrics as feast_metrics
import feast.utils as feast_utils
import pyarrow as pa
import pytest
from differential_kit import DIFFERENTIAL_MARKS, assert_same_response, canonical, outcome
from differential_requests import REQUESTS, request_args
from feast import FeatureStore
from feast.infra.online_stores.online_store import OnlineStore
from feast.online_response import OnlineResponse

from feast_dragonfly import DragonflyOnlineStore
from feast_dragonfly._engines import plan as engine_plan
from feast_dragonfly._serve import app as serve_app
from feast_dragonfly._serve import run as serve_run
from feast_dragonfly._store import direct_path, direct_read, feast_hooks, feast_serve_hook
from feast_dragonfly._store.online_response import FastOnlineResponse

#: Where each hook lives in Feast: removing that attribute makes the hook absent.
FEAST_ATTRIBUTES: dict[str, tuple[Any, str]] = {
    feast_hooks.READ_METRICS: (feast_metrics, "_config"),
    feast_hooks.SERVE_CONVERSION: (feast_server, "convert_response_to_dict"),
    feast_hooks.COLUMN_NAMES: (feast_utils, "_get_column_names"),
    feast_hooks.VECTOR_LENGTHS: (feast_utils, "_validate_vector_field_lengths"),
    feast_hooks.FEATURE_COUNT_BINS: (feast_server, "bin_feature_count"),
    feast_hooks.FEATURE_COUNTS: (feast_server, "_resolve_feature_counts"),
}


def _redetect(monkeypatch) -> None:
    monkeypatch.setattr(feast_hooks, "HOOKS", feast_hooks.detect())
    monkeypatch.setattr(feast_hooks, "_logged", set())


@pytest.fixture
def without(monkeypatch):
    """``without(name)``: hook ``name`` gone from Feast, and detection re-run."""

    def remove(name: str) -> None:
        if name == feast_hooks.REQUEST_CONTEXT:  # Feast uses it too: changed, not removed
            original = feast_utils._get_cached_request_context

            def changed(registry, project, features, full_feature_names, extra=None):
                return original(registry, project, features, full_feature_names)

            monkeypatch.setattr(feast_utils, "_get_cached_request_context", changed)
        elif name == feast_hooks.READ_PER_VIEW:
            _change_read_hook(monkeypatch)
        elif name == feast_hooks.FEATURE_TYPES:
            original = OnlineStore._build_feature_types

            def other(grouped_refs, extra=None):
                return original(grouped_refs)

            monkeypatch.setattr(OnlineStore, "_build_feature_types", staticmethod(other))
        elif name == feast_hooks.RESPONSE_TYPES:
            _rename_response_types(monkeypatch)
        else:
            owner, attribute = FEAST_ATTRIBUTES[name]
            if hasattr(owner, attribute):
                monkeypatch.delattr(owner, attribute)
        _redetect(monkeypatch)
        assert not feast_hooks.HOOKS[name].present

    return remove


def _change_read_hook(monkeypatch) -> None:
    """A Feast whose read hooks take other parameters."""
    sync, async_ = OnlineStore._read_features_per_fv, OnlineStore._read_features_per_fv_async

    def other(self, *args, extra=None):
        return sync(self, *args)

    async def other_async(self, *args, extra=None):
        return await async_(self, *args)

    monkeypatch.setattr(OnlineStore, "_read_features_per_fv", other)
    monkeypatch.setattr(OnlineStore, "_read_features_per_fv_async", other_async)


def _rename_response_types(monkeypatch) -> None:
    """A Feast whose ``OnlineResponse`` keeps its feature types under another name."""
    init, to_dict = OnlineResponse.__init__, OnlineResponse.to_dict

    def renamed_init(self, proto, feature_types=None):
        init(self, proto, feature_types)
        self._types_elsewhere = self.__dict__.pop("_feature_types")

    def renamed_to_dict(self, include_event_timestamps=False):
        self._feature_types = self._types_elsewhere
        try:
            return to_dict(self, include_event_timestamps)
        finally:
            del self._feature_types

    monkeypatch.setattr(OnlineResponse, "__init__", renamed_init)
    monkeypatch.setattr(OnlineResponse, "to_dict", renamed_to_dict)


# --------------------------------------------------------------------------- detection


def test_every_hook_of_this_feast_is_found():
    assert feast_hooks.detect() == feast_hooks.HOOKS
    for name, (owner, attribute) in FEAST_ATTRIBUTES.items():
        assert feast_hooks.HOOKS[name].present == hasattr(owner, attribute), name


@pytest.mark.parametrize("name", sorted(feast_hooks.HOOKS))
def test_a_hook_feast_lacks_is_detected_absent(without, name):
    before = {other: hook.present for other, hook in feast_hooks.HOOKS.items()}
    without(name)
    after = {other: hook.present for other, hook in feast_hooks.HOOKS.items()}
    assert after == {**before, name: False}
    assert feast_hooks.HOOKS[name] in feast_hooks.missing()


def test_a_fallback_is_logged_once_and_a_present_hook_never(without, caplog):
    caplog.set_level(logging.INFO, logger=feast_hooks.__name__)
    without(feast_hooks.REQUEST_CONTEXT)
    without(feast_hooks.VECTOR_LENGTHS)
    assert feast_hooks.present(feast_hooks.REQUEST_CONTEXT) is False
    assert feast_hooks.present(feast_hooks.REQUEST_CONTEXT) is False
    assert feast_hooks.present(feast_hooks.VECTOR_LENGTHS) is False
    feast_hooks.present(feast_hooks.READ_PER_VIEW)  # present on every Feast of the range
    records = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert [level for level, _ in records] == [logging.WARNING, logging.INFO]
    assert "_get_cached_request_context" in records[0][1] and "only slower" in records[0][1]
    assert "_validate_vector_field_lengths" in records[1][1]


# --------------------------------------------------------------------------- reads, real server


def _compare_every_request(api_data) -> None:
    for label, request in REQUESTS.items():
        stores = api_data.stores
        if label.startswith("error:"):
            failures = {
                kind: outcome(
                    lambda store=store, request=request: store.get_online_features(
                        **request_args(store, request)
                    )
                )
                for kind, store in stores.items()
            }
            assert failures["ours"] == failures["feast"], label
            continue
        answers = {
            kind: store.get_online_features(**request_args(store, request))
            for kind, store in stores.items()
        }
        assert_same_response(answers["feast"], answers["ours"], label)


class TestReadFallbacks:
    pytestmark = DIFFERENTIAL_MARKS

    def test_without_the_request_context_every_request_takes_feasts_path(self, api_data, without):
        without(feast_hooks.REQUEST_CONTEXT)
        store = api_data.stores["ours"]
        args = request_args(store, REQUESTS["one view, all features"])
        assert (
            direct_read.plan_request(
                store.config, store.registry, store.project, args["features"], False
            )
            is None
        )
        _compare_every_request(api_data)

    def test_a_request_context_of_another_shape_takes_feasts_path(
        self, api_data, monkeypatch, caplog
    ):
        original = feast_utils._get_cached_request_context
        longer = SimpleNamespace(_get_cached_request_context=lambda *a: (*original(*a), "more"))
        monkeypatch.setattr(direct_read, "feast_utils", longer)  # Feast's own callers unchanged
        monkeypatch.setattr(direct_read, "_PLANS_BY_CONTENT", {})
        monkeypatch.setattr(feast_hooks, "_logged", set())
        caplog.set_level(logging.WARNING, logger=feast_hooks.__name__)
        store = api_data.stores["ours"]
        args = request_args(store, REQUESTS["one view, all features"])
        assert (
            direct_read.plan_request(
                store.config, store.registry, store.project, args["features"], False
            )
            is None
        )
        assert "another shape" in caplog.text
        _compare_every_request(api_data)

    def test_without_the_batched_read_hook_feast_reads_view_by_view(
        self, api_data, without, monkeypatch
    ):
        without(feast_hooks.READ_PER_VIEW)
        without(feast_hooks.REQUEST_CONTEXT)  # every request through Feast's path
        batched = []
        monkeypatch.setattr(
            DragonflyOnlineStore, "_read_batched", lambda *a, **k: batched.append(a)
        )
        _compare_every_request(api_data)
        assert batched == []

    async def test_without_the_batched_read_hook_async_reads_answer_alike(self, api_data, without):
        without(feast_hooks.READ_PER_VIEW)
        without(feast_hooks.REQUEST_CONTEXT)
        stores = {kind: FeatureStore(repo_path=str(path)) for kind, path in api_data.paths.items()}
        for label in ("missing and duplicate entities", "five views sharing the driver"):
            request = REQUESTS[label]
            answers = {
                kind: await store.get_online_features_async(**request_args(store, request))
                for kind, store in stores.items()
            }
            assert_same_response(answers["feast"], answers["ours"], label)

    def test_without_response_types_feasts_to_dict_answers(self, api_data, without):
        without(feast_hooks.RESPONSE_TYPES)
        _compare_every_request(api_data)
        store = api_data.stores["ours"]
        response = store.get_online_features(
            **request_args(store, REQUESTS["typed lists, bytes, timestamps, nulls"])
        )
        assert isinstance(response, FastOnlineResponse)
        feast = api_data.stores["feast"]
        reference = feast.get_online_features(
            **request_args(feast, REQUESTS["typed lists, bytes, timestamps, nulls"])
        )
        assert canonical(response.to_dict()) == canonical(reference.to_dict())


# --------------------------------------------------------------------------- the other hooks


def test_without_the_feature_types_hook_feasts_own_map_is_built(without, monkeypatch):
    without(feast_hooks.FEATURE_TYPES)
    calls = []
    original = OnlineStore._build_feature_types

    def spy(grouped_refs, extra=None):
        calls.append(grouped_refs)
        return original(grouped_refs)

    monkeypatch.setattr(OnlineStore, "_build_feature_types", staticmethod(spy))
    assert DragonflyOnlineStore._build_feature_types([]) == {}
    assert calls == [[]]


def test_without_metrics_config_the_direct_path_records_no_read(without, monkeypatch):
    recorded = []
    monkeypatch.setattr(feast_metrics, "track_online_store_read", recorded.append)
    without(feast_hooks.READ_METRICS)
    monkeypatch.setattr(direct_path.response_builder, "direct_response", lambda *a: object())
    monkeypatch.setattr(direct_path.feature_types, "build", lambda refs: {})
    monkeypatch.setattr(direct_path, "FastOnlineResponse", lambda response, feature_types: response)
    prepared = SimpleNamespace(plan=SimpleNamespace(grouped_refs=[]))
    direct_path.respond(prepared, [], 0.0)  # type: ignore[arg-type]
    assert recorded == []


def test_without_feasts_conversion_name_feast_serve_converts_itself(without, monkeypatch):
    monkeypatch.setattr(feast_serve_hook, "_original", None)
    without(feast_hooks.SERVE_CONVERSION)
    assert feast_serve_hook.install() is False
    assert not feast_serve_hook.installed()
    assert not hasattr(feast_server, "convert_response_to_dict")


def test_without_column_names_our_engines_hand_every_view_to_feasts(without):
    without(feast_hooks.COLUMN_NAMES)
    reason = engine_plan.delegation_reason(DragonflyOnlineStore(), SimpleNamespace())
    assert reason == "this Feast has no feast.utils._get_column_names"


def test_without_the_vector_check_views_convert_unchecked(without, monkeypatch):
    without(feast_hooks.VECTOR_LENGTHS)
    view_plan = SimpleNamespace(rename=lambda batch: batch, view=None, features=[("a", None)])
    table = pa.table({"a": [1, 2]})
    assert engine_plan.ViewPlan.feature_table(view_plan, table).equals(table)  # type: ignore[arg-type]


def test_without_bins_serve_labels_the_raw_feature_count(without):
    without(feast_hooks.FEATURE_COUNT_BINS)
    metrics = serve_app.RequestMetrics([5, 10])
    assert metrics.feature_counts(["v:a"] * 12)[0] == "12"


def test_without_feature_counts_serve_leaves_feasts_default_labels(without):
    without(feast_hooks.FEATURE_COUNTS)
    assert serve_app.RequestMetrics([5]).feature_counts(["v:a"]) == ("", "")


def test_uvicorn_gets_a_worker_health_check_only_when_it_has_one():
    """Feast 0.64 and 0.65 pin a uvicorn (≤ 0.34) without it."""
    import uvicorn

    class OldConfig:
        def __init__(self, app, host="127.0.0.1", workers=None):
            pass

    assert serve_run._worker_healthcheck(SimpleNamespace(Config=OldConfig)) == {}
    has_it = "timeout_worker_healthcheck" in inspect.signature(uvicorn.Config).parameters
    expected = {"timeout_worker_healthcheck": serve_run.WORKER_HEALTHCHECK_SECONDS}
    assert serve_run._worker_healthcheck(uvicorn) == (expected if has_it else {})
