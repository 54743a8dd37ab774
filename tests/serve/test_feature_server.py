"""``feast-dragonfly serve`` against a real server, beside ``feast serve``.

Both servers run in this process (uvicorn in a thread each) on one materialized repo; every
answer of ours is compared, parsed, with ``feast serve``'s for the same request. Feast's own
``online_store: type: remote`` client reads through ours. Bad input gets a 4xx JSON error and
the server keeps serving; a store that goes away gives a 503 without the password, and the
server recovers when it comes back. The CLI is started as users start it, in a subprocess.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import requests
import uvicorn
import yaml
from click.testing import CliRunner
from feast import Entity, FeatureService, FeatureStore, FeatureView, Field, FileSource, ValueType
from feast import utils as feast_utils
from feast.types import Array, Bool, Float32, Float64, Int64, String
from server_kit import ServerProcess
from store_kit import free_port

from feast_dragonfly._serve.app import FeatureServer, check_servable
from feast_dragonfly._store import direct_read
from feast_dragonfly.cli import cli

T0 = datetime(2024, 6, 1, 12, tzinfo=timezone.utc)
PASSWORD = "serve-s3cret-pw"


# --------------------------------------------------------------------------- a served repo


def _write_repo(path: Path, online_store: dict[str, Any], registry: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    settings = {
        "project": "serving",
        "registry": str(registry),
        "provider": "local",
        "online_store": online_store,
        "offline_store": {"type": "file"},
        "entity_key_serialization_version": 3,
    }
    (path / "feature_store.yaml").write_text(yaml.safe_dump(settings, sort_keys=False))


def _objects(data: Path) -> list[Any]:
    driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
    source = FileSource(path=str(data), timestamp_field="event_timestamp")
    stats = FeatureView(
        name="driver_stats",
        entities=[driver],
        schema=[
            Field(name="driver_id", dtype=Int64),
            Field(name="conv_rate", dtype=Float32),
            Field(name="acc_rate", dtype=Float64),
            Field(name="trips", dtype=Int64),
            Field(name="name", dtype=String),
            Field(name="active", dtype=Bool),
            Field(name="tags", dtype=Array(String)),
        ],
        source=source,
        ttl=timedelta(days=3650),
    )
    extra = FeatureView(
        name="driver_extra",
        entities=[driver],
        schema=[Field(name="driver_id", dtype=Int64), Field(name="rating", dtype=Float64)],
        source=source,
        ttl=timedelta(days=3650),
    )
    service = FeatureService(name="ranking", features=[stats[["conv_rate", "trips"]], extra])
    return [driver, stats, extra, service]


@pytest.fixture(scope="module")
def backing(server_binary) -> Iterator[ServerProcess]:
    """A password-protected server only this module uses (one test stops and restarts it)."""
    server = ServerProcess(server_binary, password=PASSWORD).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def repo(tmp_path_factory, backing) -> Path:
    base = tmp_path_factory.mktemp("serve")
    data = base / "drivers.parquet"
    drivers = list(range(1001, 1011))
    pd.DataFrame(
        {
            "driver_id": drivers,
            "event_timestamp": [T0 - timedelta(minutes=i) for i in range(len(drivers))],
            "conv_rate": [i / 7 for i in range(len(drivers))],
            "acc_rate": [1 / (i + 3) for i in range(len(drivers))],
            "trips": [i * 1000 for i in range(len(drivers))],
            "name": [f"driver-{i}-é" for i in range(len(drivers))],
            "active": [i % 2 == 0 for i in range(len(drivers))],
            "tags": [[f"t{i}", "x"] for i in range(len(drivers))],
            "rating": [4.5 + i / 100 for i in range(len(drivers))],
        }
    ).to_parquet(data)
    path = base / "repo"
    _write_repo(
        path,
        {
            "type": "feast_dragonfly.DragonflyOnlineStore",
            "connection_string": f"{backing.address},password={PASSWORD}",
            "retry_attempts": 1,
        },
        base / "registry.db",
    )
    store = FeatureStore(repo_path=str(path))
    store.apply(_objects(data))
    store.materialize(T0 - timedelta(days=1), T0 + timedelta(days=1))
    return path


class ThreadedServer:
    """uvicorn serving ``app`` on a free port in a thread, for as long as the block runs."""

    def __init__(self, app: Any) -> None:
        self.port = free_port()
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ThreadedServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


@pytest.fixture(scope="module")
def ours(repo) -> Iterator[ThreadedServer]:
    app = FeatureServer(FeatureStore(repo_path=str(repo)), max_entity_rows=50)
    with ThreadedServer(app) as server:
        yield server


@pytest.fixture(scope="module")
def feasts(repo) -> Iterator[ThreadedServer]:
    from feast.feature_server import get_app

    with ThreadedServer(get_app(FeatureStore(repo_path=str(repo)))) as server:
        yield server


def post(server: ThreadedServer, body: Any, raw: bytes | None = None) -> requests.Response:
    url = server.url + "/get-online-features"
    if raw is not None:
        return requests.post(url, data=raw, timeout=30)
    return requests.post(url, json=body, timeout=30)


# --------------------------------------------------------------------------- answers


REQUESTS = {
    "one view, some features": {
        "features": ["driver_stats:conv_rate", "driver_stats:trips", "driver_stats:name"],
        "entities": {"driver_id": [1001, 1005, 1010]},
    },
    "every type, full names, a missing driver and a repeat": {
        "features": [
            "driver_stats:conv_rate",
            "driver_stats:acc_rate",
            "driver_stats:trips",
            "driver_stats:name",
            "driver_stats:active",
            "driver_stats:tags",
            "driver_extra:rating",
        ],
        "entities": {"driver_id": [1002, 99999, 1002, 1009]},
        "full_feature_names": True,
    },
    "a feature service": {"feature_service": "ranking", "entities": {"driver_id": [1003, 1004]}},
    "version metadata": {
        "features": ["driver_extra:rating"],
        "entities": {"driver_id": [1001]},
        "include_feature_view_version_metadata": True,
    },
}


@pytest.mark.parametrize("name", list(REQUESTS))
def test_answers_equal_feast_serves(ours, feasts, name):
    body = REQUESTS[name]
    theirs = post(feasts, body)
    mine = post(ours, body)
    assert theirs.status_code == 200, theirs.text
    assert mine.status_code == 200, mine.text
    assert mine.headers["content-type"] == "application/json"
    assert mine.json() == theirs.json()


@pytest.fixture(scope="module")
def ours_compact(tmp_path_factory, repo, backing) -> Iterator[ThreadedServer]:
    """Ours serving the same data written with ``layout: compact`` (its records live beside
    the Feast-layout hashes on the same server: the keys never collide)."""
    base = tmp_path_factory.mktemp("serve-compact")
    path = base / "repo"
    _write_repo(
        path,
        {
            "type": "feast_dragonfly.DragonflyOnlineStore",
            "connection_string": f"{backing.address},password={PASSWORD}",
            "layout": "compact",
        },
        base / "registry.db",
    )
    store = FeatureStore(repo_path=str(path))
    store.apply(_objects(repo.parent / "drivers.parquet"))
    store.materialize(T0 - timedelta(days=1), T0 + timedelta(days=1))
    with ThreadedServer(FeatureServer(FeatureStore(repo_path=str(path)))) as server:
        yield server


@pytest.mark.parametrize("name", list(REQUESTS))
def test_compact_records_answer_as_feast_serve_does(ours_compact, feasts, name):
    theirs = post(feasts, REQUESTS[name])
    mine = post(ours_compact, REQUESTS[name])
    assert theirs.status_code == 200, theirs.text
    assert mine.status_code == 200, mine.text
    assert mine.json() == theirs.json()


def test_feast_serve_with_our_store_answers_from_the_stored_bytes(feasts, repo, monkeypatch):
    """Inside `feast serve`, our direct responses become JSON from the stored bytes
    (``feast_serve_hook``): the private Feast hook is in place, used, and its answers are Feast's
    own conversion of the same responses."""
    import feast.feature_server as feast_server

    from feast_dragonfly._store import direct_json, feast_serve_hook

    assert feast_server.convert_response_to_dict is feast_serve_hook._convert
    documents = []
    document = direct_json.document
    monkeypatch.setattr(
        direct_json, "document", lambda *args: documents.append(1) or document(*args)
    )
    store = FeatureStore(repo_path=str(repo))
    for body in REQUESTS.values():
        answer = post(feasts, body)
        assert answer.status_code == 200, answer.text
        features = body.get("features") or store.get_feature_service(body["feature_service"])
        response = store.get_online_features(
            features=features,
            entity_rows=body["entities"],
            full_feature_names=body.get("full_feature_names", False),
            include_feature_view_version_metadata=body.get(
                "include_feature_view_version_metadata", False
            ),
        )
        assert feast_serve_hook._original is not None
        feasts_conversion = feast_serve_hook._original(response.proto)
        assert answer.json() == json.loads(json.dumps(feasts_conversion))
    # The three plain requests took the stored-bytes way over HTTP (the responses built here
    # are never converted: they stay pending); version metadata took Feast's.
    assert len(documents) == 3
    assert len(feast_serve_hook._pending) <= feast_serve_hook.MAX_PENDING


def test_feasts_remote_client_reads_through_our_server(tmp_path, repo, ours):
    local = FeatureStore(repo_path=str(repo))
    remote_repo = tmp_path / "remote"
    registry = yaml.safe_load((repo / "feature_store.yaml").read_text())["registry"]
    _write_repo(remote_repo, {"type": "remote", "path": ours.url}, Path(registry))
    remote = FeatureStore(repo_path=str(remote_repo))
    request = {
        "features": ["driver_stats:conv_rate", "driver_stats:trips", "driver_extra:rating"],
        "entity_rows": [{"driver_id": d} for d in (1001, 1007, 424242)],
    }
    assert remote.get_online_features(**request).to_dict() == (
        local.get_online_features(**request).to_dict()
    )


def test_health_and_the_endpoints_we_leave_to_feast_serve(ours):
    assert requests.get(ours.url + "/health", timeout=10).status_code == 200
    for method, path in (("POST", "/materialize"), ("GET", "/docs")):
        answer = requests.request(method, ours.url + path, timeout=10)
        assert answer.status_code == 404
        assert "feast serve" in answer.json()["detail"]
    for path in ("/get-online-features", "/push", "/write-to-online-store"):
        wrong = requests.get(ours.url + path, timeout=10)
        assert wrong.status_code == 405
        assert f"POST {path}" in wrong.json()["detail"]


# --------------------------------------------------------------------------- bad input

GOOD = REQUESTS["one view, some features"]

BAD_REQUESTS = {
    "malformed JSON": (None, b'{"features": [', 400, "not valid JSON"),
    "not an object": ([1, 2], None, 422, "JSON object"),
    "no entities": ({"features": GOOD["features"]}, None, 422, "entities"),
    "ragged entities": (
        {"features": GOOD["features"], "entities": {"driver_id": [1], "other": [1, 2]}},
        None,
        422,
        "same length",
    ),
    "no features": ({"entities": {"driver_id": [1001]}}, None, 422, "feature_service"),
    "unknown field": ({**GOOD, "limit": 3}, None, 422, "unknown request field"),
    "too many rows": (
        {"features": GOOD["features"], "entities": {"driver_id": list(range(51))}},
        None,
        413,
        "at most 50",
    ),
    "unknown view": (
        {"features": ["no_such_view:x"], "entities": {"driver_id": [1001]}},
        None,
        404,
        "no_such_view",
    ),
    "unknown feature": (
        {"features": ["driver_stats:no_such_feature"], "entities": {"driver_id": [1001]}},
        None,
        400,
        "no_such_feature",
    ),
    "unknown service": (
        {"feature_service": "nope", "entities": {"driver_id": [1001]}},
        None,
        404,
        "nope",
    ),
    "missing join key": (
        {"features": GOOD["features"], "entities": {"rider_id": [1]}},
        None,
        400,
        "driver_id",
    ),
    "wrong entity type": (
        {"features": GOOD["features"], "entities": {"driver_id": ["abc"]}},
        None,
        400,
        "'abc'",
    ),
}


@pytest.mark.parametrize("name", list(BAD_REQUESTS))
def test_bad_input_gets_a_clear_4xx_and_the_server_keeps_serving(ours, name):
    body, raw, status, words = BAD_REQUESTS[name]
    answer = post(ours, body, raw)
    assert answer.status_code == status, answer.text
    assert words in answer.text
    assert post(ours, GOOD).status_code == 200


# --------------------------------------------------------------------------- failures


def test_a_store_outage_is_a_503_without_the_password_and_the_server_recovers(ours, backing):
    assert post(ours, GOOD).status_code == 200
    backing.kill()
    try:
        down = post(ours, GOOD)
        assert down.status_code == 503, down.text
        assert PASSWORD not in down.text
        assert backing.address in down.text
    finally:
        backing.restart()
    # The restarted server is empty (the test servers keep nothing on disk): what matters is
    # that the same server process answers again, on fresh connections.
    again = post(ours, GOOD)
    assert again.status_code == 200, again.text


def test_a_repo_with_auth_is_refused_rather_than_served_unprotected(tmp_path):
    path = tmp_path / "authrepo"
    _write_repo(path, {"type": "feast_dragonfly.DragonflyOnlineStore"}, tmp_path / "r.db")
    settings = yaml.safe_load((path / "feature_store.yaml").read_text())
    settings["auth"] = {"type": "kubernetes"}
    (path / "feature_store.yaml").write_text(yaml.safe_dump(settings))
    with pytest.raises(SystemExit, match="auth type 'kubernetes'"):
        check_servable(FeatureStore(repo_path=str(path)))
    result = CliRunner().invoke(cli, ["serve", "-C", str(path)])  # one line, like every error
    assert result.exit_code == 1
    assert result.stderr.startswith("error: feature_store.yaml configures auth type 'kubernetes'")
    assert "Traceback" not in result.output


# --------------------------------------------------------------------------- registry refreshes


def _plan(store: FeatureStore, features: Any) -> Any:
    return direct_read.plan_request(store.config, store.registry, store.project, features, False)


def test_a_refresh_that_changes_nothing_keeps_the_plans(repo, monkeypatch):
    """A server refreshes its registry every few seconds; Feast's own context cache is keyed
    by the refresh time, and re-resolving the features after each refresh stalled the next
    request by milliseconds. An unchanged registry must keep the plan, without asking Feast."""
    store = FeatureStore(repo_path=str(repo))
    features = GOOD["features"]
    plan = _plan(store, features)
    before = store.registry.cached_registry_proto
    store.refresh_registry()
    assert store.registry.cached_registry_proto is not before  # a fresh proto, same content

    def feast_resolution(*args: Any) -> Any:
        raise AssertionError("re-resolved an unchanged registry")

    monkeypatch.setattr(feast_utils, "_get_cached_request_context", feast_resolution)
    assert _plan(store, features) is plan
    service = store.get_feature_service("ranking", allow_cache=True)
    with pytest.raises(AssertionError, match="re-resolved"):
        _plan(store, service)  # a list never planned still goes through Feast


def test_an_expired_registry_cache_is_refreshed_by_feast_as_before(repo, monkeypatch):
    store = FeatureStore(repo_path=str(repo))
    features = GOOD["features"]
    assert _plan(store, features) is not None
    stale = datetime.now(timezone.utc) - timedelta(days=2)  # past the 600 s cache TTL
    store.registry.cached_registry_proto_created = stale
    resolved = []
    feasts = feast_utils._get_cached_request_context

    def counting(*args: Any) -> Any:
        resolved.append(args)
        return feasts(*args)

    monkeypatch.setattr(feast_utils, "_get_cached_request_context", counting)
    assert _plan(store, features) is not None
    assert len(resolved) == 1
    assert store.registry.cached_registry_proto_created > stale


def test_a_served_repo_answers_from_the_changed_registry_after_a_refresh(tmp_path, repo):
    """``feast apply`` elsewhere changes a feature service: the running server answers with
    the new definition once its registry refresh has run."""
    shutil.copy(repo.parent / "registry.db", tmp_path / "registry.db")
    settings = yaml.safe_load((repo / "feature_store.yaml").read_text())
    path = tmp_path / "repo"
    _write_repo(path, settings["online_store"], tmp_path / "registry.db")
    body = {"feature_service": "ranking", "entities": {"driver_id": [1003]}}
    app = FeatureServer(FeatureStore(repo_path=str(path)), registry_ttl_sec=1)
    with ThreadedServer(app) as server:
        names = post(server, body).json()["metadata"]["feature_names"]
        assert "name" not in names
        _, stats, extra, _ = _objects(repo.parent / "drivers.parquet")
        changed = FeatureService(name="ranking", features=[stats[["conv_rate", "name"]], extra])
        FeatureStore(repo_path=str(path)).apply([changed])
        deadline = time.monotonic() + 30
        while "name" not in names:
            assert time.monotonic() < deadline, f"still answering the old service: {names}"
            time.sleep(0.2)
            names = post(server, body).json()["metadata"]["feature_names"]
        feasts = FeatureStore(repo_path=str(path)).get_online_features(
            features=FeatureStore(repo_path=str(path)).get_feature_service("ranking"),
            entity_rows=[{"driver_id": 1003}],
        )
        assert names == list(feasts.to_dict()), names


# --------------------------------------------------------------------------- the CLI


@pytest.mark.parametrize(("workers", "metrics"), [(1, False), (2, True)], ids=["1", "2-metrics"])
def test_the_cli_serves_a_repo(repo, workers, metrics):
    port, metrics_port = free_port(), free_port()
    command = [
        sys.executable,
        "-m",
        "feast_dragonfly.cli",
        "serve",
        "-C",
        str(repo),
        "-p",
        str(port),
        "-w",
        str(workers),
        "--no-access-log",
        *(["--metrics", "--metrics-port", str(metrics_port)] if metrics else []),
    ]
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, process.communicate()[0].decode(errors="replace")
            try:
                if requests.get(url + "/health", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, "feast-dragonfly serve did not come up"
            time.sleep(0.2)
        answer = requests.post(url + "/get-online-features", json=GOOD, timeout=30)
        assert answer.status_code == 200, answer.text
        assert answer.json()["metadata"]["feature_names"][0] == "driver_id"
        if metrics:
            # Feast's status counters, counted in a spawned worker, scraped from its endpoint.
            for _ in range(4):  # reach both workers
                requests.post(url + "/get-online-features", json=GOOD, timeout=30)
            scraped = requests.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text
            assert 'feast_online_features_status_total{feature_view="driver_stats"' in scraped
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            output = process.communicate(timeout=30)[0].decode(errors="replace")
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            output = process.communicate()[0].decode(errors="replace")
    assert PASSWORD not in output
    # One log format, in the spawned workers too (`uvicorn.error: Started server process`).
    # (Feast < 0.67's metrics server also logs each scrape, in wsgiref's own format.)
    lines = [line for line in output.splitlines() if '"GET /metrics HTTP/1.1"' not in line]
    assert sum("Started server process" in line for line in lines) >= workers, output
    assert all(re.match(r"\d{4}-\d\d-\d\d [\d:,]+ [A-Z]+ [\w.]+: ", line) for line in lines), output


@pytest.mark.parametrize("half", [["--key", "key.pem"], ["--cert", "cert.pem"]])
def test_serve_refuses_half_a_tls_pair_before_loading_the_repo(tmp_path, half):
    """A usage error (exit 2) naming both flags; nothing is loaded from the empty folder."""
    from click.testing import CliRunner

    from feast_dragonfly.cli import cli

    result = CliRunner().invoke(cli, ["serve", "-C", str(tmp_path), *half])
    assert result.exit_code == 2
    assert "TLS needs both --key and --cert" in result.output
