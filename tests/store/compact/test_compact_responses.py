"""``layout: compact`` through Feast's public API: every request shape of the differential
suite (``differential_requests.REQUESTS``) answers exactly as Feast's own ``RedisOnlineStore``
on the same data — ``.proto``, ``to_dict``, ``to_df``, ``to_arrow``, sync and async — with
records decoded one at a time and with every view decoded as one batch.

One server of the suite's kind; two repos with the same project and objects: Feast's store,
and ours with ``layout: compact`` materialized by our engine. Their keys never collide (hashes
``<entity><project>``, records ``<entity><project>:<view>``), so both live side by side. Every
view's ``ttl`` is set to 0 (forever) here: with a ttl, compact answers "not found" for values
past it where Feast's store answers with the value (``test_compact_store`` covers that rule).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from types import SimpleNamespace

import pytest
from differential_kit import DIFFERENTIAL_MARKS, assert_same_response, close_async, close_sync
from differential_repos import (
    API_PROJECT,
    MATERIALIZED_VIEWS,
    STORED_ODFV_PUSH,
    WINDOW_END,
    WINDOW_START,
    build_api_objects,
    exotic_rows,
)
from differential_requests import REQUESTS, SOME_VALUES_EXPECTED, request_args
from feast import FeatureStore, FeatureView
from feast_repo import online_store_settings, write_feature_repo

from feast_dragonfly._store.compact import read as compact_read
from feast_dragonfly.testing.local_server import ServerBinary, start_server

pytestmark = [*DIFFERENTIAL_MARKS, pytest.mark.valkey]

KINDS = ("feast", "compact")

#: Stored on-demand views are written with the time of the write as their event time: the two
#: repos write a moment apart, so only values and statuses can be compared.
WRITE_TIMED = {"stored on-demand view"}


def assert_same_answer(reference, ours, label: str) -> None:
    if label not in WRITE_TIMED:
        assert_same_response(reference, ours, label)
        return
    assert ours.to_dict() == reference.to_dict(), label
    for mine, theirs in zip(ours.proto.results, reference.proto.results):
        assert list(mine.statuses) == list(theirs.statuses), label
        assert list(mine.values) == list(theirs.values), label


@pytest.fixture(scope="module")
def both(server_binary: ServerBinary, tmp_path_factory) -> Iterator[SimpleNamespace]:
    base = tmp_path_factory.mktemp("compact-api")
    data_dir = base / "data"
    data_dir.mkdir()
    objects = build_api_objects(data_dir)
    for view in objects["views"].values():
        if isinstance(view, FeatureView):
            view.ttl = timedelta(0)
    with start_server(server_binary) as server:
        options = {
            "feast": online_store_settings("feast", server.connection_string),
            "compact": online_store_settings("ours", server.connection_string, layout="compact"),
        }
        engines = {
            "feast": None,
            "compact": {
                "type": "feast_dragonfly.DragonflyMaterializationEngine",
                "show_progress": False,
            },
        }
        stores: dict[str, FeatureStore] = {}
        for kind in KINDS:
            store = stores[kind] = write_feature_repo(
                base / kind,
                project=API_PROJECT,
                online_store=options[kind],
                batch_engine=engines[kind],
            )
            store.apply(
                [
                    *objects["entities"],
                    *objects["views"].values(),
                    *objects["odfvs"],
                    objects["request"],
                    *objects["services"],
                ]
            )
            store.materialize(WINDOW_START, WINDOW_END, MATERIALIZED_VIEWS)
            store._get_provider().online_store.online_write_batch(
                store.config, store.get_feature_view("driver_exotic"), exotic_rows(), None
            )
            store.write_to_online_store("stored_conv", df=STORED_ODFV_PUSH.copy())
        yield SimpleNamespace(stores=stores, paths={k: base / k for k in KINDS})
        for store in stores.values():
            close_sync(store._get_provider().online_store)


def answer(store: FeatureStore, request):
    return store.get_online_features(**request_args(store, request))


@pytest.fixture(params=["record by record", "in batches"])
def decoding(request, monkeypatch):
    """Compact records decoded one at a time (the suite's requests are small), or every view
    as one batch (``compact.batch_decode``, which large reads take)."""
    if request.param == "in batches":
        monkeypatch.setattr(compact_read, "BATCH_FROM", 1)
        monkeypatch.setattr(compact_read, "BATCH_VALUES", 1)
    return request.param


@pytest.mark.parametrize("label", [label for label in REQUESTS if not label.startswith("error:")])
def test_every_request_shape_answers_as_feasts_store(both, label, decoding):
    request = REQUESTS[label]
    responses = {kind: answer(store, request) for kind, store in both.stores.items()}
    assert_same_answer(responses["feast"], responses["compact"], label)
    if label in SOME_VALUES_EXPECTED:
        values = [v for vector in responses["feast"].proto.results for v in vector.values]
        assert any(v.WhichOneof("val") for v in values), label


async def test_async_reads_answer_as_feasts_store(both, decoding):
    stores = {kind: FeatureStore(repo_path=str(path)) for kind, path in both.paths.items()}
    try:
        for label, request in REQUESTS.items():
            if label.startswith("error:"):
                continue
            responses = {
                kind: await store.get_online_features_async(**request_args(store, request))
                for kind, store in stores.items()
            }
            assert_same_answer(responses["feast"], responses["compact"], label)
    finally:
        for store in stores.values():
            await close_async(store._get_provider().online_store)
