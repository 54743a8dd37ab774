"""``make bench-serve``: feature servers under HTTP load, side by side, on one data set.

Servers (all running at once on one Redis-protocol server, measured in interleaved phases):

* ``floor`` — uvicorn + uvloop + httptools answering canned bytes of the same size and shape as
  a real answer, touching no store: what HTTP and this load generator cost on this machine;
* ``floor + store`` — the floor, plus the store round trip any store-backed server makes: the
  same HMGETs our server sends (one per entity row, pipelined), through redis-py's asyncio
  client, before the canned bytes go back — the floor a server that reads the store can reach;
* ``ours`` — ``feast-dragonfly serve`` (one worker; ``ours -w2``: two), with
  ``--max-in-flight 64``, as many as the phases below open connections, so they see no 503s;
* ``feast serve + ours`` — Feast's server over our store;
* ``feast serve + feast`` — Feast's server over Feast's ``RedisOnlineStore`` (the baseline).

Load: 1,000 drivers × 50 features; requests of 1, 10 and 100 entity rows × 50 features.

* **Open loop** at fixed rates: requests are *scheduled* at ``1/rate`` intervals and their
  latency is measured from the scheduled time, so a stall is charged for the queue it causes
  (no coordinated omission); 64 connections carry the schedule.
* **Closed loop** (saturation): 16 and 64 clients sending back to back; requests per second.
* **Push** (``POST /push``, after the reads): 8 clients pushing batches of 1 and of 100 rows
  × 50 features back to back, every batch newer than all before it (so every row is written);
  rows per second, ``feast-dragonfly serve`` against ``feast serve`` over each store.
* **Overload** (100×50): each server's saturated rate is measured (8 clients), then one open
  loop runs 5 s at a quarter of it, 20 s at twice it, and 10 s at a quarter again. Here the
  client opens a new connection whenever none is free, as a crowd of independent clients
  would, so every request scheduled reaches the server at its time (64 fixed connections
  would queue them in the client instead). Reported per server: the answered requests'
  latencies (from their scheduled time), the 503s, the server's RSS growth, and how long after
  the overload the p99 of one-second windows is back to normal. Ours runs twice here: with
  its default ``--max-in-flight`` and with ``--max-in-flight 0`` (no bound).

Every server's first answer per shape is compared, value by value and by feature name, with
the baseline's. Results: printed, as JSON (``--json``), and as a Markdown report with a
latency-percentile plot (``--markdown``, ``--plot``).

    python benchmarks/bench_serve.py --duration 5 --markdown docs/serving-benchmarks.md
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import yaml

from feast_dragonfly._serve.env import DEFAULT_MAX_IN_FLIGHT
from feast_dragonfly.testing.local_server import (
    detect_binary,
    find_server_binary,
    free_port,
    start_server,
)

T0 = datetime(2024, 6, 1, tzinfo=timezone.utc)
DRIVERS = 1_000
FEATURES = 50
SHAPES = {"1x50": 1, "10x50": 10, "100x50": 100}
PERCENTILES = (50, 90, 99, 99.9)
BIN = Path(sys.executable).parent
#: ``feast-dragonfly serve``'s bound for the read and push phases: no fewer than the most
#: connections they open, so that they measure answers, never 503s.
NO_503 = ("--max-in-flight", "64")


# --------------------------------------------------------------------------- data and repos


def _write_repos(base: Path, connection_string: str) -> dict[str, Path]:
    """One project, materialized once (by our engine); a repo per store type reading it."""
    from feast import Entity, FeatureStore, FeatureView, Field, FileSource, PushSource, ValueType
    from feast.types import Float32, Int64, String

    rng = np.random.default_rng(7)
    columns: dict[str, Any] = {
        "driver_id": np.arange(1000, 1000 + DRIVERS),
        "event_timestamp": [T0] * DRIVERS,
    }
    dtypes = []
    for i in range(FEATURES):
        kind = i % 3
        if kind == 0:
            columns[f"f{i:02d}"] = rng.standard_normal(DRIVERS).astype(np.float32)
            dtypes.append(Float32)
        elif kind == 1:
            columns[f"f{i:02d}"] = rng.integers(0, 10**9, DRIVERS)
            dtypes.append(Int64)
        else:
            columns[f"f{i:02d}"] = [f"v{j % 97}" for j in range(DRIVERS)]
            dtypes.append(String)
    data = base / "drivers.parquet"
    pd.DataFrame(columns).to_parquet(data)
    repos = {}
    for kind, store_type in (
        ("ours", "feast_dragonfly.DragonflyOnlineStore"),
        ("feast", "redis"),
    ):
        repo = base / kind
        repo.mkdir()
        settings = {
            "project": "servebench",
            "registry": str(base / f"registry-{kind}.db"),
            "provider": "local",
            "online_store": {"type": store_type, "connection_string": connection_string},
            "offline_store": {"type": "file"},
            "entity_key_serialization_version": 3,
        }
        (repo / "feature_store.yaml").write_text(yaml.safe_dump(settings))
        store = FeatureStore(repo_path=str(repo))
        driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
        view = FeatureView(
            name="stats",
            entities=[driver],
            ttl=timedelta(days=3650),
            schema=[Field(name="driver_id", dtype=Int64)]
            + [Field(name=f"f{i:02d}", dtype=dtypes[i]) for i in range(FEATURES)],
            source=FileSource(path=str(data), timestamp_field="event_timestamp"),
        )
        pushed = FeatureView(
            name="pushed",
            entities=[driver],
            ttl=timedelta(days=3650),
            schema=[Field(name="driver_id", dtype=Int64)]
            + [Field(name=f"f{i:02d}", dtype=dtypes[i]) for i in range(FEATURES)],
            source=PushSource(
                name="stats_push",
                batch_source=FileSource(path=str(data), timestamp_field="event_timestamp"),
            ),
        )
        store.apply([driver, view, pushed])
        if kind == "ours":
            store.materialize(T0 - timedelta(days=1), T0 + timedelta(days=1))
        repos[kind] = repo
    return repos


def request_body(rows: int) -> bytes:
    ids = [1000 + (i * 37) % DRIVERS for i in range(1, rows + 1)]
    return orjson.dumps(
        {
            "features": [f"stats:f{i:02d}" for i in range(FEATURES)],
            "entities": {"driver_id": ids},
        }
    )


def store_reads(rows: int) -> list[list[str]]:
    """The HMGETs (hex of key and fields) ``feast-dragonfly serve`` sends for a request of
    ``rows`` entity rows, planned by the store's own read planner: the floor + store
    reference sends the same."""
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    from feast_dragonfly._store import read as _read

    drivers = orjson.loads(request_body(rows))["entities"]["driver_id"]
    entity_keys = [
        EntityKey(join_keys=["driver_id"], entity_values=[Value(int64_val=d)]) for d in drivers
    ]
    view = _read.view_request("stats", [f"f{i:02d}" for i in range(FEATURES)], entity_keys)
    plan = _read.plan_read([view], project="servebench", key_version=3)
    return [
        [key.hex(), *(f.hex() for fieldset in fieldsets for f in fieldset.fields)]
        for key, fieldsets in zip(plan.keys, plan.key_fieldsets)
    ]


# --------------------------------------------------------------------------- servers


@dataclass
class Server:
    name: str
    command: list[str]
    port: int
    path: str = "/get-online-features"
    process: subprocess.Popen | None = None
    log: Path | None = None

    def start(self, workdir: Path) -> None:
        self.log = workdir / f"{self.name.replace(' ', '_')}.log"
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(
                self.command,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)


async def _wait_ready(server: Server, body: bytes, timeout: float = 90) -> bytes:
    deadline = time.monotonic() + timeout
    while True:
        assert server.process is not None
        if server.process.poll() is not None:
            raise RuntimeError(f"{server.name} exited: see {server.log}")
        try:
            client = await Connection.open(server.port)
            status, answer = await client.post(server.path, body)
            client.close()
            if status == 200:
                return answer
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{server.name} did not answer within {timeout:g} s")
        await asyncio.sleep(0.3)


# --------------------------------------------------------------------------- load


class Connection:
    """One keep-alive HTTP/1.1 connection (the least client code per request)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        self.writer.write(
            b"POST %b HTTP/1.1\r\nhost: bench\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n%b" % (path.encode(), len(body), body)
        )
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


@dataclass
class Phase:
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    unfinished: int = 0
    seconds: float = 0.0

    async def request(self, connection: Connection, path: str, body: bytes, since: float) -> bool:
        """One request; its latency counted from ``since``. False: the connection broke."""
        try:
            status, _ = await connection.post(path, body)
        except (OSError, asyncio.IncompleteReadError):
            self.errors += 1
            return False
        if status != 200:
            self.errors += 1
        self.latencies_ms.append((time.perf_counter() - since) * 1000)
        return True

    async def drive(self, connections: list[Connection], work: Any) -> None:
        """``work(connection)`` on every connection at once; then the connections close."""
        began = time.perf_counter()
        await asyncio.gather(*(work(c) for c in connections))
        self.seconds = time.perf_counter() - began
        for connection in connections:
            connection.close()

    def summary(self) -> dict[str, float]:
        values = np.array(self.latencies_ms) if self.latencies_ms else np.array([np.nan])
        out = {f"p{p:g}": float(np.percentile(values, p)) for p in PERCENTILES}
        out["max"] = float(values.max())
        out["req_per_s"] = len(self.latencies_ms) / self.seconds if self.seconds else 0.0
        out["errors"] = self.errors
        out["unfinished"] = self.unfinished
        return out


async def open_loop(server: Server, body: bytes, rate: float, duration: float) -> Phase:
    """Requests scheduled every ``1/rate`` s; latency counted from the scheduled time. A server
    that falls behind is given until ``2 × duration``; what it has not answered by then is
    counted as ``unfinished`` (the phase is overloaded)."""
    connections = [await Connection.open(server.port) for _ in range(64)]
    total = int(rate * duration)
    start = time.perf_counter() + 0.05
    hard_stop = start + 2 * duration
    phase = Phase()
    next_slot = 0

    async def carry(connection: Connection) -> None:
        nonlocal next_slot
        while next_slot < total and time.perf_counter() < hard_stop:
            slot = next_slot
            next_slot += 1
            scheduled = start + slot / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if not await phase.request(connection, server.path, body, since=scheduled):
                return

    await phase.drive(connections, carry)
    phase.unfinished = total - len(phase.latencies_ms) - phase.errors
    return phase


async def closed_loop(server: Server, body: bytes, clients: int, duration: float) -> Phase:
    """``clients`` connections sending back to back for ``duration`` seconds."""
    connections = [await Connection.open(server.port) for _ in range(clients)]
    stop = time.perf_counter() + duration
    phase = Phase()

    async def hammer(connection: Connection) -> None:
        while time.perf_counter() < stop:
            if not await phase.request(connection, server.path, body, since=time.perf_counter()):
                return

    await phase.drive(connections, hammer)
    return phase


# --------------------------------------------------------------------------- push


PUSH_SHAPES = {"1 row": 1, "100 rows": 100}
PUSH_CLIENTS = 8
#: The push bodies' event timestamp, replaced in every request by a newer one of equal width.
_STAMP = b"2000-01-01T00:00:00.000000+00:00"
_PUSH_T0 = datetime(2030, 1, 1, tzinfo=timezone.utc)


class PushBodies:
    """``/push`` bodies of ``rows`` rows × 50 features: one template per block of drivers, each
    request stamped with an event time newer than every earlier one (of any server), so that
    every pushed row is written, by ours and by Feast's store alike."""

    def __init__(self) -> None:
        self.sent = 0
        self._templates: dict[int, list[bytes]] = {}

    def template(self, rows: int, block: int) -> dict[str, Any]:
        rng = np.random.default_rng(block * 1_000 + rows)
        df: dict[str, list[Any]] = {
            "driver_id": [1000 + (block * rows + i) % DRIVERS for i in range(rows)],
            "event_timestamp": [_STAMP.decode()] * rows,
        }
        for i in range(FEATURES):
            kind = i % 3
            if kind == 0:
                df[f"f{i:02d}"] = [float(x) for x in rng.standard_normal(rows).astype(np.float32)]
            elif kind == 1:
                df[f"f{i:02d}"] = [int(x) for x in rng.integers(0, 10**9, rows)]
            else:
                df[f"f{i:02d}"] = [f"p{int(x)}" for x in rng.integers(0, 97, rows)]
        return {"push_source_name": "stats_push", "df": df}

    def body(self, rows: int, block: int | None = None) -> bytes:
        templates = self._templates.get(rows)
        if templates is None:
            templates = self._templates[rows] = [
                orjson.dumps(self.template(rows, b)) for b in range(DRIVERS // rows)
            ]
        self.sent += 1
        stamp = _PUSH_T0 + timedelta(microseconds=self.sent)
        chosen = templates[self.sent % len(templates) if block is None else block]
        return chosen.replace(_STAMP, stamp.strftime("%Y-%m-%dT%H:%M:%S.%f+00:00").encode())


async def push_loop(server: Server, bodies: PushBodies, rows: int, duration: float) -> Phase:
    """``PUSH_CLIENTS`` connections pushing ``rows``-row batches back to back."""
    connections = [await Connection.open(server.port) for _ in range(PUSH_CLIENTS)]
    stop = time.perf_counter() + duration
    phase = Phase()

    async def hammer(connection: Connection) -> None:
        while time.perf_counter() < stop:
            body = bodies.body(rows)
            if not await phase.request(connection, "/push", body, since=time.perf_counter()):
                return

    await phase.drive(connections, hammer)
    return phase


async def pushed_values_read_back(server: Server, bodies: PushBodies, rows: int) -> bool:
    """One more push (block 0), then its rows read back through ``server``: the values pushed."""
    body = bodies.body(rows, block=0)
    client = await Connection.open(server.port)
    try:
        status, _ = await client.post("/push", body)
        expected = bodies.template(rows, 0)["df"]
        request = orjson.dumps(
            {
                "features": [f"pushed:f{i:02d}" for i in range(FEATURES)],
                "entities": {"driver_id": expected["driver_id"]},
            }
        )
        answer_status, answer = await client.post("/get-online-features", request)
    finally:
        client.close()
    if status != 200 or answer_status != 200:
        return False
    stored = _by_feature(answer)
    return all(stored[name][0] == expected[name] for name in expected if name.startswith("f"))


# --------------------------------------------------------------------------- overload


@dataclass
class Answered:
    scheduled_s: float  # since the schedule began
    latency_ms: float
    status: int


def _tree_rss(pid: int) -> int:
    """Resident memory of a server process and its children (gunicorn's, uvicorn's workers)."""
    import psutil

    try:
        process = psutil.Process(pid)
        processes = [process, *process.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for one in processes:
        try:
            total += one.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


async def elastic_open_loop(
    server: Server, body: bytes, segments: list[tuple[float, float]], grace: float = 10.0
) -> tuple[list[Answered], dict[str, int], int]:
    """An open loop through ``segments`` of (rate, seconds), one after the other. A request is
    sent at its scheduled time on an idle connection, or on a new one when none is idle (up to
    ``MAX_CONNECTIONS``), so the server, not the client, decides how long it waits. What is not
    answered ``grace`` seconds after the schedule ends is counted ``unfinished``. Returns the
    answers, the failures, and the server's peak RSS over the run (bytes)."""
    assert server.process is not None
    slots = [
        begun + i / rate
        for begun, (rate, seconds) in zip(
            np.cumsum([0.0] + [seconds for _, seconds in segments[:-1]]), segments
        )
        for i in range(int(rate * seconds))
    ]
    end = sum(seconds for _, seconds in segments)
    idle: list[tuple[float, Connection]] = []  # (when it was last answered, the connection)
    gate = asyncio.Semaphore(MAX_CONNECTIONS)
    answers: list[Answered] = []
    failures = {"connection errors": 0, "unfinished": 0}
    start = time.perf_counter() + 0.05
    hard_stop = start + end + grace
    peak_rss = _tree_rss(server.process.pid)

    async def sample_rss() -> None:
        nonlocal peak_rss
        while time.perf_counter() < hard_stop:
            peak_rss = max(peak_rss, _tree_rss(server.process.pid))  # type: ignore[union-attr]
            await asyncio.sleep(0.25)

    async def one(at: float) -> None:
        scheduled = start + at
        try:
            async with gate:
                connection = _idle_connection(idle) or await Connection.open(server.port)
                left = hard_stop - time.perf_counter()
                status, _ = await asyncio.wait_for(connection.post(server.path, body), left)
        except (asyncio.TimeoutError, TimeoutError):
            failures["unfinished"] += 1
            return
        except (OSError, asyncio.IncompleteReadError):
            failures["connection errors"] += 1
            return
        answers.append(Answered(at, (time.perf_counter() - scheduled) * 1000, status))
        idle.append((time.perf_counter(), connection))

    sampler = asyncio.ensure_future(sample_rss())
    tasks = []
    for at in slots:
        delay = start + at - time.perf_counter()
        if delay > 0.0005:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(one(at)))
    await asyncio.gather(*tasks)
    sampler.cancel()
    for _, connection in idle:
        connection.close()
    return answers, failures, peak_rss


#: Idle connections older than this are closed, not reused: servers close keep-alive
#: connections idle for a few seconds (uvicorn after 5 s, gunicorn's default after 2 s), and a
#: request sent on one they just closed would fail through no fault of theirs.
IDLE_REUSE_SECONDS = 1.5


def _idle_connection(idle: list[tuple[float, Connection]]) -> Connection | None:
    """The most recently used idle connection still safe to reuse (older ones are closed)."""
    while idle:
        last_used, connection = idle.pop()
        if time.perf_counter() - last_used < IDLE_REUSE_SECONDS:
            return connection
        connection.close()
        for _, stale in idle:  # the rest are older still
            stale.close()
        idle.clear()
    return None


MAX_CONNECTIONS = 4_000
SATURATION_CLIENTS = 8
OVERLOAD_SHAPE = "100x50"
CALM_SECONDS, RECOVERY_SECONDS = 5.0, 10.0


def _p(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


async def overload(server: Server, body: bytes, seconds: float, duration: float) -> dict:
    """The overload phase for one server (see the module docstring)."""
    assert server.process is not None
    # Saturated: answered 200 per second, SATURATION_CLIENTS sending back to back (no more
    # than ours admits at once by default, so it is not measuring 503s).
    phase = await closed_loop(server, body, SATURATION_CLIENTS, duration)
    saturated = (len(phase.latencies_ms) - phase.errors) / phase.seconds
    calm, over = saturated / 4, saturated * 2
    rss_before = _tree_rss(server.process.pid)
    answers, failures, peak = await elastic_open_loop(
        server, body, [(calm, CALM_SECONDS), (over, seconds), (calm, RECOVERY_SECONDS)]
    )
    ok = [a for a in answers if a.status == 200]
    before = [a.latency_ms for a in ok if a.scheduled_s < CALM_SECONDS]
    during = [a for a in answers if CALM_SECONDS <= a.scheduled_s < CALM_SECONDS + seconds]
    answered = [a.latency_ms for a in during if a.status == 200]
    normal_p99 = _p(before, 99)
    normal = max(2 * normal_p99, normal_p99 + 5)
    # One-second windows after the overload: the first whose p99 is back to normal.
    after = CALM_SECONDS + seconds
    windows = []
    for w in range(int(RECOVERY_SECONDS)):
        inside = [a.latency_ms for a in ok if after + w <= a.scheduled_s < after + w + 1]
        windows.append(_p(inside, 99))
    recovered = next((w for w, p99 in enumerate(windows) if p99 <= normal), None)
    return {
        "saturated_req_per_s": saturated,
        "offered_req_per_s": over,
        "answered_req_per_s": len(answered) / seconds,
        "rejected_503": sum(a.status == 503 for a in during),
        "other_errors": sum(a.status not in (200, 503) for a in during),
        **failures,
        "p50": _p(answered, 50),
        "p99": _p(answered, 99),
        "max": max(answered, default=float("nan")),
        "slowest_answer_of_any_kind": max((a.latency_ms for a in during), default=float("nan")),
        "p99_before": normal_p99,
        "p99_windows_after": windows,
        "recovered_after_s": recovered,
        "rss_growth_mb": (peak - rss_before) / 2**20,
    }


# --------------------------------------------------------------------------- answers


def _by_feature(answer: bytes) -> dict[str, Any]:
    parsed = orjson.loads(answer)
    names = parsed["metadata"]["feature_names"]
    return {
        name: (result["values"], result["statuses"])
        for name, result in zip(names, parsed["results"])
    }


# --------------------------------------------------------------------------- the run


async def run(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="feast-dragonfly-servebench-"))
    binary = (
        detect_binary(os.path.abspath(args.server_bin)) if args.server_bin else find_server_binary()
    )
    store_server = start_server(binary)
    servers: list[Server] = []
    try:
        repos = _write_repos(workdir, store_server.connection_string)
        canned = workdir / "canned"
        canned.mkdir()
        cli = [str(BIN / "feast-dragonfly"), "serve", "--no-access-log"]
        servers = [
            Server("floor", [sys.executable, __file__, "--floor", str(canned)], free_port()),
            Server(
                "floor + store",
                [
                    *(sys.executable, __file__, "--floor", str(canned)),
                    *("--floor-store", store_server.connection_string),
                ],
                free_port(),
            ),
            # Without 503s in the read phases (at most 64 connections): the overload phase
            # runs ours with its default bound.
            Server("ours", [*cli, "-C", str(repos["ours"]), *NO_503], free_port()),
            Server("ours -w2", [*cli, "-C", str(repos["ours"]), "-w", "2", *NO_503], free_port()),
            Server(
                "feast serve + ours",
                [str(BIN / "feast"), "-c", str(repos["ours"]), "serve", "--no-access-log"],
                free_port(),
            ),
            Server(
                "feast serve + feast",
                [str(BIN / "feast"), "-c", str(repos["feast"]), "serve", "--no-access-log"],
                free_port(),
            ),
        ]
        for server in servers:
            flag = "--floor-port" if _is_floor(server) else "--port"
            server.command += [flag, str(server.port)]
        bodies = {shape: request_body(rows) for shape, rows in SHAPES.items()}
        # The baseline's answers, and the canned responses the floor sends back.
        baseline = next(s for s in servers if s.name == "feast serve + feast")
        for server in servers:
            if not _is_floor(server):
                server.start(workdir)
        answers: dict[str, dict[str, bytes]] = {}
        for server in servers[2:]:
            answers[server.name] = {
                shape: await _wait_ready(server, body) for shape, body in bodies.items()
            }
        for shape, answer in answers[baseline.name].items():
            (canned / f"{shape}.json").write_bytes(answer)
            (canned / f"{shape}.reads").write_bytes(orjson.dumps(store_reads(SHAPES[shape])))
        for floor in servers[:2]:
            floor.start(workdir)
            for shape in SHAPES:
                floor.path = f"/{shape}"
                await _wait_ready(floor, bodies[shape])
        checks = {}
        for name, by_shape in answers.items():
            checks[name] = all(
                _by_feature(by_shape[s]) == _by_feature(answers[baseline.name][s]) for s in SHAPES
            )
        results: dict[str, Any] = {"open": {}, "closed": {}, "answers_equal": checks}
        # Warm every server on every shape first (imports, caches, pools): the first measured
        # phase must not pay for them.
        for shape, body in bodies.items():
            for server in servers:
                server.path = f"/{shape}" if _is_floor(server) else "/get-online-features"
                await closed_loop(server, body, 4, 1.0)
        for shape, body in bodies.items() if "read" in args.phases else ():
            for rate in args.rates:
                for server in _rotated(servers, rate):
                    server.path = f"/{shape}" if _is_floor(server) else "/get-online-features"
                    phase = await open_loop(server, body, rate, args.duration)
                    results["open"].setdefault(shape, {}).setdefault(str(rate), {})[server.name] = (
                        phase.summary()
                    )
                    print(f"open  {shape:7s} {rate:5d}/s {server.name:22s} {_line(phase)}")
            for clients in args.clients:
                for server in _rotated(servers, clients):
                    server.path = f"/{shape}" if _is_floor(server) else "/get-online-features"
                    phase = await closed_loop(server, body, clients, args.duration)
                    results["closed"].setdefault(shape, {}).setdefault(str(clients), {})[
                        server.name
                    ] = phase.summary()
                    print(f"closed {shape:7s} {clients:3d} cl {server.name:22s} {_line(phase)}")
        by_name = {server.name: server for server in servers}
        if "push" in args.phases:
            results.update(await _push_phases(by_name, args.duration))
        if "overload" in args.phases:
            bounded = {
                f"ours, --max-in-flight {DEFAULT_MAX_IN_FLIGHT} (default)": [],
                "ours, no limit": ["--max-in-flight", "0"],
            }
            for name, flags in bounded.items():
                server = Server(name, [*cli, "-C", str(repos["ours"]), *flags], free_port())
                server.command += ["--port", str(server.port)]
                servers.append(server)
                by_name[name] = server
                server.start(workdir)
                await _wait_ready(server, bodies[OVERLOAD_SHAPE])
                await closed_loop(server, bodies[OVERLOAD_SHAPE], 4, 1.0)  # warm-up
            results["overload"] = {}
            for name in (*bounded, "feast serve + feast"):
                server = by_name[name]
                server.path = "/get-online-features"
                outcome = await overload(
                    server, bodies[OVERLOAD_SHAPE], args.overload_seconds, args.duration
                )
                results["overload"][name] = outcome
                print(f"overload {name:22s} {_overload_line(outcome)}")
                if name in bounded:
                    server.stop()
            results["overload_seconds"] = args.overload_seconds
        results["machine"] = {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "server": f"{binary.kind} {binary.version}",
            "duration_s": args.duration,
        }
        return results
    finally:
        for server in servers:
            server.stop()
        store_server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


PUSHERS = ("ours", "feast serve + ours", "feast serve + feast")


async def _push_phases(by_name: dict[str, Server], duration: float) -> dict[str, Any]:
    bodies = PushBodies()
    pushers = [by_name[name] for name in PUSHERS]
    for server in pushers:  # warm-up: Feast's conversion code, the write scripts
        await push_loop(server, bodies, 100, 1.0)
    out: dict[str, Any] = {"push": {}}
    for shape, rows in PUSH_SHAPES.items():
        for server in _rotated(pushers, rows):
            phase = await push_loop(server, bodies, rows, duration)
            summary = phase.summary()
            summary["rows_per_s"] = (len(phase.latencies_ms) - phase.errors) / phase.seconds * rows
            out["push"].setdefault(shape, {})[server.name] = summary
            print(
                f"push  {shape:8s} {server.name:22s} {summary['rows_per_s']:9.0f} rows/s  "
                f"p50 {summary['p50']:7.2f}  p99 {summary['p99']:7.2f} ms  "
                f"errors {summary['errors']}"
            )
    out["push_read_back"] = {
        server.name: await pushed_values_read_back(server, bodies, 100) for server in pushers
    }
    return out


def _overload_line(o: dict[str, Any]) -> str:
    return (
        f"saturated {o['saturated_req_per_s']:5.0f}/s offered {o['offered_req_per_s']:5.0f}/s "
        f"answered {o['answered_req_per_s']:5.0f}/s  503s {o['rejected_503']}  "
        f"p99 {o['p99']:8.1f}  max {o['max']:8.1f} ms  slowest answer "
        f"{o['slowest_answer_of_any_kind']:8.1f} ms  unfinished {o['unfinished']}  "
        f"RSS +{o['rss_growth_mb']:.0f} MB  recovered after {o['recovered_after_s']} s"
    )


def _is_floor(server: Server) -> bool:
    return server.name.startswith("floor")


def _rotated(servers: list[Server], seed: int) -> list[Server]:
    """Interleave: each phase starts with a different server, so none always goes first."""
    shift = seed % len(servers)
    return servers[shift:] + servers[:shift]


def _line(phase: Phase) -> str:
    s = phase.summary()
    return (
        f"{s['req_per_s']:8.0f} req/s  p50 {s['p50']:7.2f}  p99 {s['p99']:7.2f}  "
        f"p99.9 {s['p99.9']:7.2f}  max {s['max']:7.2f} ms  errors {s['errors']}  "
        f"unfinished {s['unfinished']}"
    )


# --------------------------------------------------------------------------- report


def markdown(results: dict[str, Any]) -> str:
    machine = results["machine"]
    lines = [
        "# Serving benchmarks",
        "",
        f"`make bench-serve` on {machine['cpus']} cores, {machine['server']}, Python "
        f"{machine['python']}, {machine['duration_s']:g} s per phase; 1,000 drivers × 50 features; "
        "all servers on loopback, one data set, interleaved phases. Latencies in ms, measured "
        "from each request's scheduled send time (open loop).",
        "",
        "Answers equal to `feast serve` + Feast's store, by feature name: "
        + ", ".join(f"{k}: {'yes' if v else 'NO'}" for k, v in results["answers_equal"].items()),
        "",
    ]
    lines += _latency_ratios(results)
    for shape, by_rate in results["open"].items():
        lines += [f"## {shape}, open loop", ""]
        lines += [
            "| rate | server | p50 | p90 | p99 | p99.9 | max | errors | unanswered in 2× the phase |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for rate, by_server in by_rate.items():
            for name, s in by_server.items():
                lines.append(
                    f"| {rate}/s | {name} | {s['p50']:.2f} | {s['p90']:.2f} | {s['p99']:.2f} | "
                    f"{s['p99.9']:.2f} | {s['max']:.2f} | {s['errors']} | {s['unfinished']} |"
                )
        lines.append("")
    lines += ["## Saturation (closed loop), requests per second", ""]
    lines += [
        "| shape | clients | server | req/s | vs feast serve + feast | p99 |",
        "|---|---|---|---|---|---|",
    ]
    for shape, by_clients in results["closed"].items():
        for clients, by_server in by_clients.items():
            base = by_server.get("feast serve + feast", {}).get("req_per_s") or float("nan")
            for name, s in by_server.items():
                lines.append(
                    f"| {shape} | {clients} | {name} | {s['req_per_s']:.0f} | "
                    f"{s['req_per_s'] / base:.2f}× | {s['p99']:.1f} |"
                )
    return "\n".join(lines + _push_report(results) + _overload_report(results)) + "\n"


def _push_report(results: dict[str, Any]) -> list[str]:
    if not results.get("push"):
        return []
    lines = [
        "",
        f"## Push ({PUSH_CLIENTS} clients, `POST /push`, 50 features a row)",
        "",
        "Stored values read back equal to the pushed ones: "
        + ", ".join(f"{k}: {'yes' if v else 'NO'}" for k, v in results["push_read_back"].items()),
        "",
        "| batch | server | rows/s | vs feast serve + feast | p50 | p99 | errors |",
        "|---|---|---|---|---|---|---|",
    ]
    for shape, by_server in results["push"].items():
        base = by_server.get("feast serve + feast", {}).get("rows_per_s") or float("nan")
        for name, s in by_server.items():
            lines.append(
                f"| {shape} | {name} | {s['rows_per_s']:.0f} | {s['rows_per_s'] / base:.2f}× | "
                f"{s['p50']:.1f} | {s['p99']:.1f} | {s['errors']} |"
            )
    return lines


def _overload_report(results: dict[str, Any]) -> list[str]:
    if not results.get("overload"):
        return []
    seconds = results.get("overload_seconds", 20)
    lines = [
        "",
        f"## Overload ({OVERLOAD_SHAPE}, {seconds:g} s at twice each server's saturated rate)",
        "",
        f"Open loop: {CALM_SECONDS:g} s at a quarter of the saturated rate, {seconds:g} s at "
        f"twice it, {RECOVERY_SECONDS:g} s at a quarter again; a new connection whenever none "
        "is free. Latencies (ms) of the requests answered 200 during the overload, from their "
        "scheduled time; *recovered*: seconds from the end of the overload to the first "
        "one-second window whose p99 is within 2× (or +5 ms of) the p99 before it.",
        "",
        "| server | saturated req/s | offered | answered 200/s | 503s | p50 | p99 | max | "
        "slowest answer (any status) | unanswered | RSS growth | recovered |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, o in results["overload"].items():
        unanswered = o["unfinished"] + o["connection errors"]
        recovered = (
            f"{o['recovered_after_s']} s"
            if o["recovered_after_s"] is not None
            else f"not in {RECOVERY_SECONDS:g} s"
        )
        lines.append(
            f"| {name} | {o['saturated_req_per_s']:.0f} | {o['offered_req_per_s']:.0f} | "
            f"{o['answered_req_per_s']:.0f} | {o['rejected_503']} | {o['p50']:.1f} | "
            f"{o['p99']:.1f} | {o['max']:.1f} | {o['slowest_answer_of_any_kind']:.1f} | "
            f"{unanswered} | {o['rss_growth_mb']:.0f} MB | {recovered} |"
        )
    return lines


def _latency_ratios(results: dict[str, Any]) -> list[str]:
    """p99 of ``ours`` against the floor (the issue's target) and against the floor + store
    (what is left once the store round trip every store-backed server makes is paid)."""
    lines = [
        "## p99 of `feast-dragonfly serve` (one worker) against the floors",
        "",
        "| shape | rate | ours | floor | ours / floor | floor + store | ours / floor + store |",
        "|---|---|---|---|---|---|---|",
    ]
    for shape, by_rate in results["open"].items():
        for rate, by_server in by_rate.items():
            ours, floor = by_server.get("ours"), by_server.get("floor")
            if not ours or not floor:
                continue
            if ours["unfinished"] or ours["req_per_s"] < 0.9 * int(rate):
                lines.append(
                    f"| {shape} | {rate}/s | overloaded | {floor['p99']:.2f} | – | – | – |"
                )
                continue
            store = by_server.get("floor + store")
            with_store = (
                f"{store['p99']:.2f} | {ours['p99'] / store['p99']:.2f}×" if store else "– | –"
            )
            lines.append(
                f"| {shape} | {rate}/s | {ours['p99']:.2f} | {floor['p99']:.2f} | "
                f"{ours['p99'] / floor['p99']:.2f}× | {with_store} |"
            )
    return [*lines, ""]


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shapes = list(results["open"])
    fig, axes = plt.subplots(1, len(shapes), figsize=(5 * len(shapes), 4), squeeze=False)
    for ax, shape in zip(axes[0], shapes):
        by_rate = results["open"][shape]
        rate = min(by_rate, key=int)
        for name, s in by_rate[rate].items():
            ax.plot(
                [str(p) for p in PERCENTILES], [s[f"p{p:g}"] for p in PERCENTILES], "o-", label=name
            )
        ax.set_title(f"{shape} at {rate} req/s")
        ax.set_xlabel("percentile")
        ax.set_ylabel("latency (ms)")
        ax.set_yscale("log")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


# --------------------------------------------------------------------------- the floor


def floor_app(canned: Path, store: str | None = None) -> Any:
    """Raw ASGI: POST /<shape> answers that shape's canned bytes — after that shape's HMGETs
    on the Redis-protocol server at ``store`` (host:port), when given."""
    answers = {f"/{p.stem}": p.read_bytes() for p in canned.glob("*.json")}
    reads = {
        f"/{p.stem}": [
            [bytes.fromhex(part) for part in hmget] for hmget in orjson.loads(p.read_bytes())
        ]
        for p in canned.glob("*.reads")
    }
    client: Any = None
    if store is not None:
        import redis.asyncio

        host, port = store.split(":")
        client = redis.asyncio.Redis(host=host, port=int(port))

    async def read_store(path: str) -> None:
        hmgets = reads[path]
        if len(hmgets) == 1:
            await client.execute_command("HMGET", *hmgets[0])
            return
        pipe = client.pipeline(transaction=False)
        for hmget in hmgets:
            pipe.execute_command("HMGET", *hmget)
        await pipe.execute()

    async def app(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        if client is not None:
            await read_store(scope["path"])
        body = answers.get(scope["path"], b"{}")
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", b"%d" % len(body)),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per phase")
    parser.add_argument("--rates", type=int, nargs="+", default=[100, 500, 1000])
    parser.add_argument("--clients", type=int, nargs="+", default=[16, 64])
    parser.add_argument(
        "--phases",
        nargs="+",
        choices=["read", "push", "overload"],
        default=["read", "push", "overload"],
        help="which phases to run (default: all)",
    )
    parser.add_argument(
        "--overload-seconds", type=float, default=20.0, help="seconds at twice saturation"
    )
    parser.add_argument("--server-bin", default=None, help="the Redis-protocol server binary")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--markdown", type=Path, default=None)
    parser.add_argument("--plot", type=Path, default=None)
    parser.add_argument(
        "--report", type=Path, default=None, help="only write the report of an earlier --json"
    )
    parser.add_argument("--floor", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--floor-port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--floor-store", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.floor is not None:
        import uvicorn

        uvicorn.run(
            floor_app(args.floor, args.floor_store),
            host="127.0.0.1",
            port=args.floor_port,
            loop="uvloop",
            http="httptools",
            access_log=False,
            log_level="warning",
        )
        return
    if args.report is not None:
        results = json.loads(args.report.read_text())
    else:
        import uvloop

        results = uvloop.run(run(args))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    if args.markdown:
        args.markdown.write_text(markdown(results))
    if args.plot:
        plot(results, args.plot)
    print(markdown(results))


if __name__ == "__main__":
    main()
