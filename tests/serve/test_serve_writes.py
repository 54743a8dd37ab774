"""``POST /push`` and ``POST /write-to-online-store`` of ``feast-dragonfly serve``, beside
``feast serve``.

Two repos on one real server (separate projects, so their keys never meet): ours, served by
``feast-dragonfly serve``, and one with Feast's ``RedisOnlineStore``, served by ``feast serve``.
Every request goes to both; the answers must be the same, and so must what each stored, read
back through ``get_online_features``. An older push never replaces a newer row; Feast's own
remote client writes through our server; bad input gets a 4xx JSON error naming the problem,
and the server keeps serving.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pandas as pd
import pytest
import requests
import yaml
from feast import Entity, FeatureStore, FeatureView, Field, FileSource, PushSource, ValueType
from feast.types import Array, Float32, Float64, Int64, String
from feast_repo import online_store_settings, write_feature_repo
from server_kit import ServerProcess
from test_feature_server import ThreadedServer

from feast_dragonfly._serve import writes
from feast_dragonfly._serve.app import FeatureServer

T0 = datetime(2024, 6, 1, 12, tzinfo=timezone.utc)
FEATURES = ["driver_stats:conv_rate", "driver_stats:acc_rate", "driver_stats:trips"]
FEATURES += ["driver_stats:name", "driver_stats:tags"]


def _objects(data: Path) -> list[Any]:
    driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
    batch = FileSource(name="driver_file", path=str(data), timestamp_field="event_timestamp")
    pushed = PushSource(name="driver_push", batch_source=batch)
    view = FeatureView(
        name="driver_stats",
        entities=[driver],
        schema=[
            Field(name="driver_id", dtype=Int64),
            Field(name="conv_rate", dtype=Float32),
            Field(name="acc_rate", dtype=Float64),
            Field(name="trips", dtype=Int64),
            Field(name="name", dtype=String),
            Field(name="tags", dtype=Array(String)),
        ],
        source=pushed,
        ttl=timedelta(days=3650),
    )
    # Feast's file offline store cannot append list columns: offline pushes go to this one.
    counts_file = FileSource(
        name="counts_file", path=str(data.parent / "counts.parquet"), timestamp_field="ts"
    )
    counts = FeatureView(
        name="driver_counts",
        entities=[driver],
        schema=[Field(name="driver_id", dtype=Int64), Field(name="rides", dtype=Int64)],
        source=PushSource(name="counts_push", batch_source=counts_file),
        ttl=timedelta(days=3650),
    )
    return [driver, view, counts]


def _repo(base: Path, kind: str, connection_string: str) -> Path:
    """An applied repo of ``kind``'s store whose offline data is its own parquet file."""
    data = base / kind / "drivers.parquet"
    data.parent.mkdir(parents=True)
    pd.DataFrame(
        {
            "driver_id": [0],
            "event_timestamp": [T0],
            "conv_rate": pd.Series([0.5], dtype="float32"),
            "acc_rate": [0.5],
            "trips": [0],
            "name": ["seed"],
            "tags": [["seed"]],
        }
    ).to_parquet(data)
    pd.DataFrame({"driver_id": [0], "ts": [T0], "rides": [0]}).to_parquet(
        data.parent / "counts.parquet"
    )
    store = write_feature_repo(
        base / kind / "repo",
        project=f"pushes_{kind}",
        online_store=online_store_settings(kind, connection_string),
    )
    store.apply(_objects(data))
    return base / kind / "repo"


@pytest.fixture(scope="module")
def backing(server_binary) -> Iterator[ServerProcess]:
    server = ServerProcess(server_binary).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def repos(tmp_path_factory, backing) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("writes")
    return {kind: _repo(base, kind, backing.address) for kind in ("ours", "feast")}


@pytest.fixture(scope="module")
def servers(repos) -> Iterator[dict[str, ThreadedServer]]:
    from feast.feature_server import get_app

    ours = FeatureServer(FeatureStore(repo_path=str(repos["ours"])), registry_ttl_sec=0)
    theirs = get_app(FeatureStore(repo_path=str(repos["feast"])))
    with ThreadedServer(ours) as mine, ThreadedServer(theirs) as feasts:
        yield {"ours": mine, "feast": feasts}


def _post(server: ThreadedServer, path: str, body: Any = None, raw: bytes | None = None):
    if raw is not None:
        return requests.post(server.url + path, data=raw, timeout=60)
    return requests.post(server.url + path, json=body, timeout=60)


def _read_back(repo: Path, drivers: list[int]) -> dict[str, Any]:
    store = FeatureStore(repo_path=str(repo))
    rows = [{"driver_id": d} for d in drivers]
    return store.get_online_features(features=FEATURES, entity_rows=rows).to_dict()


def _rows(drivers: list[int], at: datetime, salt: int = 0) -> dict[str, list[Any]]:
    return {
        "driver_id": drivers,
        "event_timestamp": [(at + timedelta(seconds=i)).isoformat() for i in range(len(drivers))],
        "conv_rate": [0.25 * (d % 7) + salt for d in drivers],
        "acc_rate": [1 / (d + salt + 3) for d in drivers],
        "trips": [d * 10 + salt for d in drivers],
        "name": [f"driver-{d}-{salt}-é" for d in drivers],
        "tags": [[f"t{d}", str(salt)] for d in drivers],
    }


# --------------------------------------------------------------------------- same as Feast


def _both(servers, path: str, body: dict[str, Any]) -> None:
    answers = {kind: _post(server, path, body) for kind, server in servers.items()}
    for kind, answer in answers.items():
        assert answer.status_code == 200, f"{kind}: {answer.text}"
    assert answers["ours"].content == answers["feast"].content
    assert answers["ours"].headers.get("content-type") == (
        answers["feast"].headers.get("content-type")
    )


def test_a_push_stores_what_feast_serve_stores(servers, repos):
    rows = _rows([1, 2], T0)
    rows["name"][1] = None  # a null feature value
    _both(servers, "/push", {"push_source_name": "driver_push", "df": rows})
    naive = {**_rows([3], T0), "event_timestamp": ["2024-06-01 12:30:00"]}  # Feast's example
    _both(servers, "/push", {"push_source_name": "driver_push", "df": naive})
    drivers = [1, 2, 3]
    ours, feasts = _read_back(repos["ours"], drivers), _read_back(repos["feast"], drivers)
    assert ours == feasts
    assert ours["trips"] == [10, 20, 30]


def test_write_to_online_store_stores_what_feast_serve_stores(servers, repos):
    drivers = [11, 12]
    body = {"feature_view_name": "driver_stats", "df": _rows(drivers, T0, salt=4)}
    _both(servers, "/write-to-online-store", body)
    uncached = {**body, "df": _rows([13], T0, salt=5), "allow_registry_cache": False}
    _both(servers, "/write-to-online-store", uncached)
    drivers.append(13)
    assert _read_back(repos["ours"], drivers) == _read_back(repos["feast"], drivers)
    assert _read_back(repos["ours"], drivers)["trips"] == [114, 124, 135]


@pytest.mark.parametrize("to", ["online_and_offline", "offline"])
def test_offline_pushes_go_through_feasts_path(servers, repos, to):
    driver = 21 if to == "offline" else 22
    rows = {"driver_id": [driver], "ts": [T0.isoformat()], "rides": [driver * 2]}
    _both(servers, "/push", {"push_source_name": "counts_push", "df": rows, "to": to})
    read = {}
    for kind, repo in repos.items():
        store = FeatureStore(repo_path=str(repo))
        read[kind] = store.get_online_features(
            features=["driver_counts:rides"], entity_rows=[{"driver_id": driver}]
        ).to_dict()
        offline = pd.read_parquet(repo.parent / "counts.parquet")
        assert list(offline["driver_id"]).count(driver) == 1, kind
    assert read["ours"] == read["feast"]
    assert read["ours"]["rides"] == ([None] if to == "offline" else [driver * 2])


# --------------------------------------------------------------------------- event time


def test_an_older_push_never_replaces_a_newer_row(servers, repos):
    newer = _rows([31, 32], T0 + timedelta(hours=1), salt=1)
    older = _rows([31, 32], T0, salt=2)
    fresher = _rows([32], T0 + timedelta(hours=2), salt=3)
    for kind, server in servers.items():
        for rows in (newer, older, fresher):
            answer = _post(server, "/push", {"push_source_name": "driver_push", "df": rows})
            assert answer.status_code == 200, f"{kind}: {answer.text}"
    ours = _read_back(repos["ours"], [31, 32])
    assert ours["trips"] == [311, 323]  # 31 keeps the newer push, 32 takes the freshest
    assert ours == _read_back(repos["feast"], [31, 32])


# --------------------------------------------------------------------------- Feast's client


def test_feasts_remote_client_writes_through_our_server(tmp_path, repos, servers):
    registry = yaml.safe_load((repos["ours"] / "feature_store.yaml").read_text())["registry"]
    remote = write_feature_repo(
        tmp_path / "remote",
        project="pushes_ours",
        online_store={"type": "remote", "path": servers["ours"].url},
    )
    settings = yaml.safe_load((tmp_path / "remote" / "feature_store.yaml").read_text())
    settings["registry"] = registry
    (tmp_path / "remote" / "feature_store.yaml").write_text(yaml.safe_dump(settings))
    remote = FeatureStore(repo_path=str(tmp_path / "remote"))
    rows = _rows([41, 42], T0, salt=6)
    frame = pd.DataFrame({**rows, "event_timestamp": pd.to_datetime(rows["event_timestamp"])})
    remote.write_to_online_store("driver_stats", frame)
    assert _read_back(repos["ours"], [41, 42])["trips"] == [416, 426]


# --------------------------------------------------------------------------- bad input

GOOD_PUSH = {"push_source_name": "driver_push", "df": _rows([51], T0)}
GOOD_WRITE = {"feature_view_name": "driver_stats", "df": _rows([52], T0)}


def _without(rows: dict[str, Any], column: str) -> dict[str, Any]:
    return {k: v for k, v in rows.items() if k != column}


BAD = {
    "malformed JSON": ("/push", None, b'{"push_source_name": ', 400, "not valid JSON"),
    "not an object": ("/push", [1], None, 422, "JSON object"),
    "unknown push source": (
        "/push",
        {**GOOD_PUSH, "push_source_name": "nope"},
        None,
        422,
        "Unable to find push source 'nope'",
    ),
    "unknown view": (
        "/write-to-online-store",
        {**GOOD_WRITE, "feature_view_name": "nope"},
        None,
        404,
        "nope",
    ),
    "no name": ("/push", {"df": GOOD_PUSH["df"]}, None, 422, "push_source_name"),
    "unknown field": ("/push", {**GOOD_PUSH, "mode": "fast"}, None, 422, "unknown request field"),
    "bad to": ("/push", {**GOOD_PUSH, "to": "somewhere"}, None, 422, "online_and_offline"),
    "flag not a bool": (
        "/write-to-online-store",
        {**GOOD_WRITE, "allow_registry_cache": "yes"},
        None,
        422,
        "allow_registry_cache",
    ),
    "df not an object": ("/push", {**GOOD_PUSH, "df": [1, 2]}, None, 422, "'df' must be"),
    "ragged df": (
        "/push",
        {**GOOD_PUSH, "df": {**GOOD_PUSH["df"], "trips": [1, 2]}},
        None,
        422,
        "same length",
    ),
    "missing feature column": (
        "/push",
        {**GOOD_PUSH, "df": _without(GOOD_PUSH["df"], "trips")},
        None,
        422,
        "lacks column(s) trips",
    ),
    "missing timestamp": (
        "/write-to-online-store",
        {**GOOD_WRITE, "df": _without(GOOD_WRITE["df"], "event_timestamp")},
        None,
        422,
        "event_timestamp",
    ),
    "missing join key": (
        "/push",
        {**GOOD_PUSH, "df": _without(GOOD_PUSH["df"], "driver_id")},
        None,
        422,
        "driver_id",
    ),
    "wrong value type": (
        "/push",
        {**GOOD_PUSH, "df": {**GOOD_PUSH["df"], "trips": ["many"]}},
        None,
        400,
        "check the request's df",
    ),
    "unparsable timestamp": (
        "/push",
        {**GOOD_PUSH, "df": {**GOOD_PUSH["df"], "event_timestamp": ["yesterday-ish"]}},
        None,
        400,
        "yesterday-ish",
    ),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_writes_get_a_clear_4xx_and_the_server_keeps_serving(servers, repos, name):
    path, body, raw, status, words = BAD[name]
    answer = _post(servers["ours"], path, body, raw)
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/json"
    assert words in answer.text
    assert _post(servers["ours"], "/push", GOOD_PUSH).status_code == 200
    assert _post(servers["ours"], "/write-to-online-store", GOOD_WRITE).status_code == 200
    assert _read_back(repos["ours"], [51, 52])["trips"] == [510, 520]


def test_an_empty_push_is_accepted_and_writes_nothing(servers, repos):
    empty = {column: [] for column in GOOD_PUSH["df"]}
    _both(servers, "/push", {"push_source_name": "driver_push", "df": empty})


# --------------------------------------------------------------------------- registry lookups


def _registry_copy(tmp_path: Path, repo: Path) -> FeatureStore:
    """``repo`` with a registry of its own (same content), to change without touching it."""
    settings = yaml.safe_load((repo / "feature_store.yaml").read_text())
    copy = tmp_path / "registry.db"
    copy.write_bytes(Path(settings["registry"]).read_bytes())
    (tmp_path / "repo").mkdir()
    (tmp_path / "repo" / "feature_store.yaml").write_text(
        yaml.safe_dump({**settings, "registry": str(copy)})
    )
    return FeatureStore(repo_path=str(tmp_path / "repo"))


def test_precomputed_services_are_refreshed_after_a_push_only_when_there_are_any(
    tmp_path, repos, monkeypatch
):
    """Feast's push refreshes precomputed feature services; looking for them bypasses the
    registry cache (a reload per push), so we look in the cache first and call Feast's step
    only when some service is precomputed."""
    from feast import FeatureService

    store = _registry_copy(tmp_path, repos["ours"])
    refreshed = []
    monkeypatch.setattr(store, "_precompute_for_push", lambda *args: refreshed.append(args[0]))
    request = writes.parse_push(orjson.dumps(GOOD_PUSH))
    writes._push(store, request)
    assert refreshed == []
    _, view, _ = _objects(repos["ours"].parent / "drivers.parquet")
    service = FeatureService(name="vectors", features=[view], precompute_online=True)
    FeatureStore(repo_path=str(tmp_path / "repo")).apply([service])
    store.refresh_registry()
    writes._push(store, request)
    assert refreshed == ["driver_stats"]


def test_push_views_are_looked_up_once_per_registry_content(tmp_path, repos, monkeypatch):
    """Feast searches the whole registry on every push; we keep the answer per registry
    content, and see a view added by ``feast apply`` elsewhere once the registry refreshes."""
    store = _registry_copy(tmp_path, repos["ours"])
    first = writes.push_views(store, "driver_push", True)
    assert [view.name for view in first] == ["driver_stats"]
    searched = []
    monkeypatch.setattr(
        store, "list_feature_views", lambda **kw: searched.append(kw) or pytest.fail("searched")
    )
    assert writes.push_views(store, "driver_push", True) is first
    store.refresh_registry()  # same content: still no search
    assert writes.push_views(store, "driver_push", True) is first
    monkeypatch.undo()
    driver, view, _ = _objects(repos["ours"].parent / "drivers.parquet")
    twin = FeatureView(
        name="driver_twin",
        entities=[driver],
        schema=view.schema,
        source=view.stream_source,
        ttl=view.ttl,
    )
    FeatureStore(repo_path=str(tmp_path / "repo")).apply([twin])
    store.refresh_registry()
    names = sorted(view.name for view in writes.push_views(store, "driver_push", True))
    assert names == ["driver_stats", "driver_twin"]


def test_pushes_are_counted_in_feasts_metrics_as_feast_serve_counts_them(servers):
    """``feast serve --metrics`` counts a push per source and mode, and its request."""
    from feast import metrics as feast_metrics

    saved = feast_metrics._config
    feast_metrics._config = feast_metrics.build_metrics_flags()
    try:
        pushes = feast_metrics.push_request_count.labels(push_source="driver_push", mode="online")
        requests_ok = feast_metrics.request_count.labels(endpoint="/push", status="success")
        before = pushes._value.get(), requests_ok._value.get()
        assert _post(servers["ours"], "/push", GOOD_PUSH).status_code == 200
        assert _post(servers["ours"], "/push", {**GOOD_PUSH, "to": "nowhere"}).status_code == 422
        after = pushes._value.get(), requests_ok._value.get()
    finally:
        feast_metrics._config = saved
    assert (after[0] - before[0], after[1] - before[1]) == (1, 1)
