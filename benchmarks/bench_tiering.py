"""``make bench-tiering``: Dragonfly SSD tiering with ``layout: compact`` — RAM, disk, latency.

``layout: compact`` stores one string per (entity, feature view); Dragonfly's
``--tiered_prefix`` keeps string values larger than ``--tiered_min_value_size`` (64 bytes) on
disk, keys and its index in RAM. This measures what that buys and costs, on throw-away
Dragonfly servers (``--dragonfly-bin``) bound to 127.0.0.1, the tiering files in a temporary
directory (``--tier-dir``'s, default the system's) removed afterwards:

* ``tiered`` — ``layout: compact``, ``--maxmemory`` (``--maxmemory-mb``, default 256 MiB;
  Dragonfly wants at least 256 MiB per proactor thread, so the default is one thread,
  ``--proactor-threads``, for every run) and ``--tiered_prefix``; N entities whose compact
  records total ``--data-factor`` (3) times ``--maxmemory``. Also
  ``--tiered_max_pending_stash_bytes=4mb`` (``--max-pending-stash``): with Dragonfly's
  256 KiB our materializer outran the disk writes and the server answered ``Out of memory``;
* ``headroom`` — the same data and flags with ``--headroom-maxmemory-mb`` (384): at 3x the
  keys alone fill ~95% of 256 MiB, leaving no room to bring a hot set back to RAM (Dragonfly
  stops when free memory is below ``--tiered_upload_threshold``, 10%);
* ``ram`` — the same data with no tiering and a ``--maxmemory`` that holds it all (the RAM
  baseline);
* ``feast`` — ``layout: feast`` (Feast's hashes, which tiering never offloads) without
  tiering, at ``--feast-entities`` (default 300,000) for reference.

The data: one feature view of ``--features`` (50) features whose types cycle int64, double,
float32, int32, bool and string (8 characters), one row per entity (``driver_id`` 0..N-1) in
a local parquet file, applied and materialized through Feast's API with our engine
(``feast_dragonfly.DragonflyMaterializationEngine``). Per run: ``INFO memory``'s
``used_memory`` and ``used_memory_rss`` once the server is idle, RAM bytes per stored feature
value, ``INFO tiered`` (entries and bytes on disk, and the size of the tiering files), then
read latency of 1 and 100 random entities per call (p50 / p99 / max) with two access
patterns: ``uniform`` over all entities (mostly cold with tiering) and ``hot``
(``--hot-share`` 90% of reads on a ``--hot-fraction`` 10% subset, the rest uniform; in tiered
runs the hot set is first read twice, as a service that keeps reading it would have —
Dragonfly moves a value back to RAM on its second read — or until 20,000 entities moved
nothing back), through three APIs: ``GET`` (compact runs: the raw records with redis-py, a
pipeline of 100, nothing decoded; ``--calls``), ``DragonflyOnlineStore.online_read``
(``--calls``) and ``FeatureStore.get_online_features`` (``--gof-calls``). ``INFO tiered``'s
hit counters say how many of those reads were served from RAM. A sample of entities is read
back and checked against the parquet.

    .venv/bin/python benchmarks/bench_tiering.py --json .benchmarks/tiering.json

Prints markdown tables (pasted into docs/tiering.md by hand).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import provenance

DEFAULT_BIN = "/work/shared/bin/dragonfly"
PROJECT = "tierbench"
VIEW = "fv"
#: Feature types, cycled over the view's features.
TYPES = ("Int64", "Float64", "Float32", "Int32", "Bool", "String")
#: Bytes each type takes in a compact record (a string: its varint length, then 8 bytes).
RECORD_BYTES = {"Int64": 8, "Float64": 8, "Float32": 4, "Int32": 4, "Bool": 1, "String": 9}
STRING_LEN = 8
T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
CHUNK_ROWS = 250_000
RUNS = ("tiered", "headroom", "ram", "feast")
SAMPLE_ENTITIES = 25
#: The ``INFO tiered`` counters reported per read pattern (their change over the pattern).
READ_COUNTERS = (
    "tiered_ram_hits",
    "tiered_ram_cool_hits",
    "tiered_ram_misses",
    "tiered_total_fetches",
    "tiered_total_uploads",
)


def feature_name(index: int) -> str:
    return f"f{index:03d}_{TYPES[index % len(TYPES)].lower()}"


def record_bytes(features: int) -> int:
    """A compact record's size (docs/data-layout.md): 17 header bytes, a 2-bit state per
    feature, then the values."""
    return (
        17
        + math.ceil(2 * features / 8)
        + sum(RECORD_BYTES[TYPES[i % len(TYPES)]] for i in range(features))
    )


# --------------------------------------------------------------------------- data


def write_parquet(
    files: dict[Path, int], features: int, seed: int, sample: Sequence[int]
) -> dict[int, dict[str, Any]]:
    """Write each file with its first ``rows`` entities (all files share the same rows), in
    chunks; return the rows of the ``sample`` entities, for checking what is read back."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    total = max(files.values())
    rng = np.random.default_rng(seed)
    hexdigits = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
    schema = pa.schema(
        [("driver_id", pa.int64()), ("event_timestamp", pa.timestamp("us", tz="UTC"))]
        + [
            (
                feature_name(i),
                {
                    "Int64": pa.int64(),
                    "Float64": pa.float64(),
                    "Float32": pa.float32(),
                    "Int32": pa.int32(),
                    "Bool": pa.bool_(),
                    "String": pa.string(),
                }[TYPES[i % len(TYPES)]],
            )
            for i in range(features)
        ]
    )
    writers = {path: pq.ParquetWriter(path, schema) for path in files}
    wanted = set(sample)
    rows: dict[int, dict[str, Any]] = {}
    base_us = int(T0.timestamp()) * 1_000_000
    try:
        for start in range(0, total, CHUNK_ROWS):
            n = min(CHUNK_ROWS, total - start)
            columns: list[Any] = [
                pa.array(np.arange(start, start + n, dtype=np.int64)),
                pa.array(
                    base_us + rng.integers(0, 86_400_000_000, n), pa.timestamp("us", tz="UTC")
                ),
            ]
            for index in range(features):
                kind = TYPES[index % len(TYPES)]
                if kind == "Int64":
                    columns.append(pa.array(rng.integers(0, 10**12, n, dtype=np.int64)))
                elif kind == "Float64":
                    columns.append(pa.array(rng.standard_normal(n)))
                elif kind == "Float32":
                    columns.append(pa.array(rng.standard_normal(n).astype(np.float32)))
                elif kind == "Int32":
                    columns.append(pa.array(rng.integers(0, 10**9, n, dtype=np.int32)))
                elif kind == "Bool":
                    columns.append(pa.array(rng.integers(0, 2, n).astype(bool)))
                else:
                    chars = hexdigits[rng.integers(0, 16, (n, STRING_LEN))]
                    offsets = np.arange(0, STRING_LEN * (n + 1), STRING_LEN, dtype=np.int32)
                    columns.append(
                        pa.StringArray.from_buffers(
                            n, pa.py_buffer(offsets.tobytes()), pa.py_buffer(chars.tobytes())
                        )
                    )
            table = pa.Table.from_arrays(columns, schema=schema)
            for path, limit in files.items():
                if start < limit:
                    writers[path].write_table(table.slice(0, min(n, limit - start)))
            for entity in sorted(e for e in wanted if start <= e < start + n):
                rows[entity] = {
                    name: table.column(name)[entity - start].as_py() for name in schema.names[2:]
                }
    finally:
        for writer in writers.values():
            writer.close()
    return rows


# --------------------------------------------------------------------------- store


def feature_store(
    repo: Path, conn: str, layout: str, data: Path, features: int, write_concurrency: int | None
) -> Any:
    """A FeatureStore (our store + engine) with the one view applied."""
    from feast import Entity, FeatureStore, FeatureView, Field, FileSource, RepoConfig, ValueType
    from feast.types import Bool, Float32, Float64, Int32, Int64, String

    dtypes = {
        "Int64": Int64,
        "Float64": Float64,
        "Float32": Float32,
        "Int32": Int32,
        "Bool": Bool,
        "String": String,
    }
    repo.mkdir(parents=True)
    config = RepoConfig(
        project=PROJECT,
        registry=str(repo / "registry.db"),
        provider="local",
        online_store={
            "type": "feast_dragonfly.DragonflyOnlineStore",
            "connection_string": conn,
            "layout": layout,
        },
        batch_engine={
            "type": "feast_dragonfly.DragonflyMaterializationEngine",
            "show_progress": False,
            **({"write_concurrency": write_concurrency} if write_concurrency else {}),
        },
        offline_store={"type": "file"},
        entity_key_serialization_version=3,
        repo_path=repo,
    )
    driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
    view = FeatureView(
        name=VIEW,
        entities=[driver],
        schema=[Field(name="driver_id", dtype=Int64)]
        + [
            Field(name=feature_name(i), dtype=dtypes[TYPES[i % len(TYPES)]])
            for i in range(features)
        ],
        source=FileSource(path=str(data), timestamp_field="event_timestamp"),
    )
    store = FeatureStore(config=config)
    store.apply([driver, view])
    return store


# --------------------------------------------------------------------------- server state


def idle_snapshot(client: Any, timeout: float = 90.0) -> dict[str, Any]:
    """``INFO memory`` / ``INFO tiered`` once used_memory and the tiered entries hold still
    (Dragonfly refreshes used_memory and stashes values in the background)."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        memory = client.info("memory")
        tiered = client.info("tiered")
        now = (
            int(memory["used_memory"]),
            int(tiered.get("tiered_entries", 0)),
            int(tiered.get("tiered_pending_stash_cnt", 0)),
        )
        if now == last or time.monotonic() > deadline:
            return {"memory": memory, "tiered": tiered, "dbsize": client.dbsize()}
        last = now
        time.sleep(1.0)


def files_bytes(root: Path | None) -> tuple[int, int]:
    """(apparent size, bytes allocated on disk) of the tiering files under ``root``."""
    if root is None:
        return 0, 0
    size = blocks = 0
    for path in root.iterdir():
        stat = path.stat()
        size += stat.st_size
        blocks += stat.st_blocks * 512
    return size, blocks


# --------------------------------------------------------------------------- reads


def percentiles(seconds: list[float]) -> dict[str, float]:
    ordered = sorted(seconds)
    return {
        "calls": len(ordered),
        "p50_ms": ordered[len(ordered) // 2] * 1e3,
        "p99_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1e3,
        "max_ms": ordered[-1] * 1e3,
        "mean_ms": statistics.fmean(ordered) * 1e3,
    }


def timed(call: Callable[[Any], Any], batches: list[Any]) -> list[float]:
    """Each of ``batches`` passed to ``call`` in turn, timed; the GC off meanwhile."""
    out: list[float] = []
    gc.collect()
    gc.disable()
    try:
        for batch in batches:
            started = time.perf_counter()
            call(batch)
            out.append(time.perf_counter() - started)
    finally:
        gc.enable()
    return out


@dataclass
class Picker:
    """Random entity ids: ``uniform`` over all, or ``hot`` (a share of picks on a subset)."""

    entities: int
    hot_fraction: float
    hot_share: float
    seed: int
    hot: Any = field(init=False)

    def __post_init__(self) -> None:
        import numpy as np

        self.rng = np.random.default_rng(self.seed)
        size = max(1, int(self.entities * self.hot_fraction))
        self.hot = self.rng.choice(self.entities, size=size, replace=False)

    def ids(self, pattern: str, calls: int, per_call: int) -> list[list[int]]:
        shape = (calls, per_call)
        picks = self.rng.integers(0, self.entities, shape)
        if pattern == "hot":
            on_hot = self.rng.random(shape) < self.hot_share
            picks[on_hot] = self.hot[self.rng.integers(0, len(self.hot), int(on_hot.sum()))]
        return [row.tolist() for row in picks]


def measure_reads(
    store: Any, client: Any, run: Run, args: argparse.Namespace
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """Latency per (API, pattern, entities per call), and how the hot set's warm-up went
    (tiered runs only: without tiering everything is in RAM anyway).

    APIs: ``GET`` (compact runs: the records fetched with redis-py, one GET or a pipeline of
    100, nothing decoded — the server's and the network's share), ``online_read``,
    ``get_online_features``."""
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    from feast_dragonfly import DragonflyOnlineStore
    from feast_dragonfly._protocol.keys import compact_key
    from feast_dragonfly._store.layout import entity_hash_key

    online = DragonflyOnlineStore()
    view = store.get_feature_view(VIEW)
    names = [f.name for f in view.features]
    refs = [f"{VIEW}:{name}" for name in names]
    picker = Picker(run.entities, args.hot_fraction, args.hot_share, args.seed + 1)

    def keys(ids: list[int]) -> list[Any]:
        return [EntityKey(join_keys=["driver_id"], entity_values=[Value(int64_val=i)]) for i in ids]

    def record_keys(ids: list[int]) -> list[bytes]:
        return [compact_key(entity_hash_key(k, PROJECT.encode(), 3), VIEW) for k in keys(ids)]

    def raw(batch: list[bytes]) -> None:
        if len(batch) == 1:
            assert client.get(batch[0]) is not None
            return
        pipe = client.pipeline(transaction=False)
        for key in batch:
            pipe.get(key)
        assert all(value is not None for value in pipe.execute())

    def read(batch: list[Any]) -> None:
        rows = online.online_read(store.config, view, batch, names)
        assert len(rows) == len(batch)

    def get(batch: list[dict[str, int]]) -> None:
        store.get_online_features(features=refs, entity_rows=batch)

    apis: list[tuple[str, int, Callable[[Any], None], Callable[[list[int]], Any]]] = [
        ("online_read", args.calls, read, keys),
        ("get_online_features", args.gof_calls, get, lambda ids: [{"driver_id": i} for i in ids]),
    ]
    if run.layout == "compact":
        apis.insert(0, ("GET", args.calls, raw, record_keys))

    # Connections and the registry cache first (not timed).
    for ids in picker.ids("uniform", 50, 10):
        for _name, _calls, call, batch_of in apis:
            call(batch_of(ids))

    results: list[dict[str, Any]] = []
    warmup: dict[str, Any] | None = None
    for api, calls, call, batch_of in apis:
        if not calls:
            continue
        for pattern in ("uniform", "hot"):
            if pattern == "hot" and run.tiered and warmup is None:
                warmup = warm_hot_set(picker.hot.tolist(), lambda ids: read(keys(ids)), client)
            for per_call in (1, 100):
                batches = [batch_of(ids) for ids in picker.ids(pattern, calls, per_call)]
                before = client.info("tiered")
                seconds = timed(call, batches)
                after = client.info("tiered")
                counters = {
                    name: int(after.get(name, 0)) - int(before.get(name, 0))
                    for name in READ_COUNTERS
                }
                row = {
                    "api": api,
                    "pattern": pattern,
                    "entities_per_call": per_call,
                    **percentiles(seconds),
                    "tiered": counters,
                }
                results.append(row)
                print(
                    f"    {api:19s} {pattern:7s} {per_call:3d}/call: p50 {row['p50_ms']:.2f} "
                    f"p99 {row['p99_ms']:.2f} max {row['max_ms']:.2f} ms  {hit_rate(row)}",
                    flush=True,
                )
    return results, warmup


def warm_hot_set(hot: list[int], read: Callable[[list[int]], None], client: Any) -> dict:
    """Read every hot entity twice, as a service that keeps reading them would have: Dragonfly
    moves a tiered value back into RAM on its second read (the first marks it touched) while
    its free memory stays above ``--tiered_upload_threshold``. Blocks of 20,000 entities, each
    read twice; when the first block moved nothing back (RAM full) the rest is skipped."""
    started = time.perf_counter()
    before = client.info("tiered")
    done = 0
    stopped = ""
    block = 20_000
    for first in range(0, len(hot), block):
        ids = hot[first : first + block]
        for _ in range(2):
            for index in range(0, len(ids), 500):
                read(ids[index : index + 500])
        done += len(ids)
        now = client.info("tiered")
        uploads = int(now.get("tiered_total_uploads", 0)) - int(
            before.get("tiered_total_uploads", 0)
        )
        if not uploads:
            misses = int(now.get("tiered_ram_misses", 0)) - int(before.get("tiered_ram_misses", 0))
            why = "none moved back to RAM" if misses else "all were in RAM already"
            stopped = f"stopped after {done:,}: {why}"
            break
    after = client.info("tiered")
    out = {
        "hot_entities": len(hot),
        "read": done,
        "seconds": time.perf_counter() - started,
        "uploads": int(after.get("tiered_total_uploads", 0))
        - int(before.get("tiered_total_uploads", 0)),
        "stopped": stopped,
    }
    print(
        f"    hot set ({len(hot):,} entities): {done:,} read twice in {out['seconds']:.1f} s, "
        f"{out['uploads']:,} moved to RAM{'; ' + stopped if stopped else ''}",
        flush=True,
    )
    return out


def hit_rate(row: dict[str, Any]) -> str:
    """Reads of tiered-eligible values served from RAM, per ``INFO tiered``'s counters."""
    counters = row["tiered"]
    hits = counters["tiered_ram_hits"] + counters["tiered_ram_cool_hits"]
    total = hits + counters["tiered_ram_misses"]
    return f"{100 * hits / total:.0f}% from RAM" if total else "–"


def check_sample(store: Any, rows: dict[int, dict[str, Any]], entities: int) -> int:
    """Values of the sample entities read back that differ from the parquet."""
    ids = [e for e in sorted(rows) if e < entities]
    names = list(next(iter(rows.values())))
    got = store.get_online_features(
        features=[f"{VIEW}:{name}" for name in names],
        entity_rows=[{"driver_id": e} for e in ids],
    ).to_dict()
    wrong = 0
    for name in names:
        wrong += sum(got[name][n] != rows[e][name] for n, e in enumerate(ids))
    return wrong


# --------------------------------------------------------------------------- one run


@dataclass
class Run:
    name: str
    layout: str
    entities: int
    data: Path
    server_args: list[str]
    tier_root: Path | None = None

    @property
    def tiered(self) -> bool:
        return self.tier_root is not None


def measure_run(run: Run, binary: Any, base: Path, args: argparse.Namespace, sample: Any) -> dict:
    from feast_dragonfly.testing import start_server

    print(
        f"== {run.name}: layout {run.layout}, {run.entities:,} entities, "
        f"{' '.join(run.server_args)} ==",
        flush=True,
    )
    server = start_server(
        binary, extra_args=run.server_args, proactor_threads=args.proactor_threads
    )
    client = server.client(socket_timeout=120)
    out: dict[str, Any] = {
        "name": run.name,
        "layout": run.layout,
        "tiered_run": run.tiered,
        "entities": run.entities,
        "features": args.features,
        "server_args": run.server_args,
    }
    try:
        store = feature_store(
            base / f"repo-{run.name}",
            server.connection_string,
            run.layout,
            run.data,
            args.features,
            args.write_concurrency,
        )
        empty = idle_snapshot(client)
        out["used_memory_empty"] = int(empty["memory"]["used_memory"])
        started = time.perf_counter()
        try:
            store.materialize(
                start_date=T0 - timedelta(days=1),
                end_date=T0 + timedelta(days=2),
                feature_views=[VIEW],
            )
        except Exception as exc:  # noqa: BLE001 - reported, with the server's view of it
            out["write_error"] = f"{type(exc).__name__}: {exc}"[:2000]
            print(f"  materialize FAILED: {out['write_error']}", flush=True)
        out["write_seconds"] = time.perf_counter() - started
        state = idle_snapshot(client)
        memory, tiered = state["memory"], state["tiered"]
        out["dbsize"] = int(state["dbsize"])
        stored = out["dbsize"] - (1 if run.layout == "compact" else 0)  # the schema hash
        out["stored_entities"] = stored
        out["maxmemory"] = int(memory.get("maxmemory", 0))
        out["used_memory"] = int(memory["used_memory"])
        out["used_memory_rss"] = int(memory["used_memory_rss"])
        values = max(1, stored) * args.features
        out["bytes_per_value"] = (out["used_memory"] - out["used_memory_empty"]) / values
        out["rss_bytes_per_value"] = out["used_memory_rss"] / values
        out["bytes_per_entity"] = (out["used_memory"] - out["used_memory_empty"]) / max(1, stored)
        out["tiered"] = {k: v for k, v in tiered.items() if not k.endswith("_human")}
        out["tier_files"] = dict(zip(("size", "allocated"), files_bytes(run.tier_root)))
        if run.layout == "compact" and stored:
            lengths = [client.strlen(k) for k in client.scan(0, count=200, _type="string")[1]]
            lengths = [n for n in lengths if n > 64]
            out["record_bytes_sampled"] = statistics.fmean(lengths) if lengths else None
        print(
            f"  wrote {stored:,} entities in {out['write_seconds']:.1f} s; used_memory "
            f"{mib(out['used_memory'])}, RSS {mib(out['used_memory_rss'])}, "
            f"{out['bytes_per_value']:.1f} B/value; tiered entries "
            f"{int(tiered.get('tiered_entries', 0)):,} "
            f"({mib(int(tiered.get('tiered_entries_bytes', 0)))}), files "
            f"{mib(out['tier_files']['allocated'])} on disk",
            flush=True,
        )
        if "write_error" in out:
            out["log_tail"] = server.log_tail(40)
        if stored < run.entities:
            return out
        out["wrong_values"] = check_sample(store, sample, run.entities)
        if out["wrong_values"]:
            print(f"  {out['wrong_values']} values read back differ from the parquet")
        out["reads"], out["hot_warmup"] = measure_reads(store, client, run, args)
        after = idle_snapshot(client, timeout=20)
        out["after_reads"] = {
            "used_memory": int(after["memory"]["used_memory"]),
            "used_memory_rss": int(after["memory"]["used_memory_rss"]),
            "tiered_entries": int(after["tiered"].get("tiered_entries", 0)),
        }
        if not server.is_running():
            out["server_exited"] = server.log_tail(40)
    finally:
        client.close()
        server.stop()
    return out


# --------------------------------------------------------------------------- report


def mib(n: float) -> str:
    return f"{n / 2**20:,.0f} MiB"


def tables(doc: dict[str, Any]) -> str:
    lines = [
        "| run | layout | entities | `--maxmemory` | used_memory | RSS | RAM B/value "
        "(used / RSS) | RAM B/entity | tiered entries | on disk (entries / files) "
        "| write rows/s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in doc["runs"]:
        tiered = run.get("tiered", {})
        entries = int(tiered.get("tiered_entries", 0))
        disk = (
            f"{mib(int(tiered.get('tiered_entries_bytes', 0)))} / "
            f"{mib(run['tier_files']['allocated'])}"
            if run["tiered_run"]
            else "–"
        )
        rate = run["stored_entities"] / run["write_seconds"] if run["write_seconds"] else 0
        lines.append(
            f"| {run['name']} | {run['layout']} | {run['stored_entities']:,}"
            + (" **(write failed)**" if "write_error" in run else "")
            + f" | {mib(run['maxmemory'])} | {mib(run['used_memory'])}"
            + (f" ({run['used_memory'] / run['maxmemory']:.0%})" if run["tiered_run"] else "")
            + " | "
            f"{mib(run['used_memory_rss'])} | {run['bytes_per_value']:.1f} / "
            f"{run['rss_bytes_per_value']:.1f} | {run['bytes_per_entity']:.0f} | {entries:,} | "
            f"{disk} | {rate:,.0f} |"
        )
    # Latency: one row per (API, entities per call, pattern), one column per run.
    runs = [run for run in doc["runs"] if run.get("reads")]
    lines += [
        "",
        "p50 / p99 / max in ms; tiered runs: the share of reads served from RAM "
        "(`INFO tiered` hits).",
        "",
        "| API | entities/call | pattern | " + " | ".join(run["name"] for run in runs) + " |",
        "|---|---|---|" + "---|" * len(runs),
    ]
    cases: list[tuple[str, int, str]] = []
    for run in runs:
        for row in run["reads"]:
            case = (row["api"], row["entities_per_call"], row["pattern"])
            if case not in cases:
                cases.append(case)
    for api, per_call, pattern in cases:
        cells = []
        for run in runs:
            row = next(
                (
                    r
                    for r in run["reads"]
                    if (r["api"], r["entities_per_call"], r["pattern"]) == (api, per_call, pattern)
                ),
                None,
            )
            if row is None:
                cells.append("–")
                continue
            text = f"{row['p50_ms']:.2f} / {row['p99_ms']:.2f} / {row['max_ms']:.1f}"
            if run["tiered_run"]:
                text += f" ({hit_rate(row).replace(' from RAM', ' RAM')})"
            cells.append(text)
        lines.append(f"| `{api}` | {per_call} | {pattern} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dragonfly-bin", default=DEFAULT_BIN, help=f"default {DEFAULT_BIN}")
    parser.add_argument(
        "--proactor-threads", type=int, default=1, help="Dragonfly's threads, every run (1)"
    )
    parser.add_argument("--features", type=int, default=50, help="features in the view (50)")
    parser.add_argument(
        "--maxmemory-mb",
        type=int,
        default=256,
        help="the tiered run's --maxmemory in MiB (256; >= 256 per proactor thread)",
    )
    parser.add_argument(
        "--data-factor",
        type=float,
        default=3.0,
        help="compact records total this many times --maxmemory (3); sets the entity count",
    )
    parser.add_argument("--entities", type=int, default=None, help="override --data-factor")
    parser.add_argument(
        "--feast-entities", type=int, default=300_000, help="the feast run's (300,000)"
    )
    parser.add_argument(
        "--ram-maxmemory-mb",
        type=int,
        default=8192,
        help="--maxmemory of the untiered runs in MiB (8192: holds everything)",
    )
    parser.add_argument(
        "--offload-threshold",
        type=float,
        default=0.5,
        help="--tiered_offload_threshold (Dragonfly's default 0.5)",
    )
    parser.add_argument(
        "--min-value-size", type=int, default=64, help="--tiered_min_value_size (64)"
    )
    parser.add_argument(
        "--headroom-maxmemory-mb",
        type=int,
        default=384,
        help="the headroom run's --maxmemory in MiB (384: room for the hot set in RAM)",
    )
    parser.add_argument(
        "--max-pending-stash",
        default="4mb",
        help="--tiered_max_pending_stash_bytes of the tiered runs (4mb; '' for Dragonfly's "
        "256KiB, with which our materializer ran the server out of memory)",
    )
    parser.add_argument(
        "--tiered-arg",
        action="append",
        default=[],
        help="another flag for the tiered server, e.g. --tiered-arg=--pipeline_squash=0",
    )
    parser.add_argument(
        "--write-concurrency",
        type=int,
        default=None,
        help="the engine's write_concurrency (default: the store's, 8)",
    )
    parser.add_argument(
        "--tier-dir", default=None, help="where the tiering files go (default: system temp)"
    )
    parser.add_argument(
        "--runs",
        nargs="+",
        choices=RUNS,
        default=list(RUNS),
        help="tiered: records = --data-factor x --maxmemory-mb; headroom: the same data, "
        "--maxmemory = --headroom-maxmemory-mb; ram: no tiering; feast: layout feast",
    )
    parser.add_argument("--calls", type=int, default=2000, help="online_read calls per case")
    parser.add_argument(
        "--gof-calls", type=int, default=500, help="get_online_features calls per case (0: skip)"
    )
    parser.add_argument("--hot-fraction", type=float, default=0.1, help="hot set size (0.1)")
    parser.add_argument("--hot-share", type=float, default=0.9, help="reads on it (0.9)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    import warnings

    warnings.simplefilter("ignore")
    import logging

    logging.disable(logging.WARNING)
    from feast_dragonfly.testing import LocalServerError, detect_binary

    args = parse_args(argv)
    if args.maxmemory_mb < 256 * args.proactor_threads:
        print(
            f"--maxmemory-mb {args.maxmemory_mb}: Dragonfly needs at least 256 MiB per proactor "
            f"thread ({256 * args.proactor_threads} for {args.proactor_threads})",
            file=sys.stderr,
        )
        return 2
    try:
        binary = detect_binary(os.path.abspath(args.dragonfly_bin), source="--dragonfly-bin")
    except LocalServerError as exc:
        print(f"no Dragonfly: {exc}", file=sys.stderr)
        return 1
    if binary.kind != "dragonfly":
        print(f"{binary.path} is a {binary.kind} binary, not Dragonfly", file=sys.stderr)
        return 1

    record = record_bytes(args.features)
    maxmemory = args.maxmemory_mb * 2**20
    entities = args.entities or math.ceil(args.data_factor * maxmemory / record)
    feast_entities = min(entities, args.feast_entities)
    print(
        f"{binary.describe()}; {args.features} features -> {record}-byte records; "
        f"{entities:,} entities = {mib(entities * record)} of records "
        f"({entities * record / maxmemory:.2f}x --maxmemory {args.maxmemory_mb} MiB)",
        flush=True,
    )

    started = time.perf_counter()
    base = Path(tempfile.mkdtemp(prefix="feast-dragonfly-tierbench-"))
    tier_root = Path(tempfile.mkdtemp(prefix="feast-dragonfly-tiering-", dir=args.tier_dir))
    doc: dict[str, Any] = {
        **provenance.run_info(__file__),
        "dragonfly": binary.describe(),
        "proactor_threads": args.proactor_threads,
        "features": args.features,
        "record_bytes": record,
        "entities": entities,
        "loadavg_start": os.getloadavg(),
        "runs": [],
    }
    try:
        data = base / "data.parquet"
        feast_data = base / "data-feast.parquet"
        files = {data: entities}
        if "feast" in args.runs and feast_entities < entities:
            files[feast_data] = feast_entities
        else:
            feast_data = data
        sample_rng = __import__("random").Random(args.seed)
        sample = sorted(
            {0, entities - 1, feast_entities - 1}
            | {sample_rng.randrange(feast_entities) for _ in range(SAMPLE_ENTITIES)}
        )
        t = time.perf_counter()
        rows = write_parquet(files, args.features, args.seed, sample)
        print(f"parquet written in {time.perf_counter() - t:.1f} s", flush=True)

        def tiered_args(maxmemory_mb: int) -> list[str]:
            return [
                f"--maxmemory={maxmemory_mb}mb",
                f"--tiered_prefix={tier_root / 'tier'}",
                f"--tiered_offload_threshold={args.offload_threshold}",
                f"--tiered_min_value_size={args.min_value_size}",
                *(
                    [f"--tiered_max_pending_stash_bytes={args.max_pending_stash}"]
                    if args.max_pending_stash
                    else []
                ),
                *args.tiered_arg,
            ]

        ram_args = [f"--maxmemory={args.ram_maxmemory_mb}mb"]
        runs = {
            "tiered": Run(
                "tiered", "compact", entities, data, tiered_args(args.maxmemory_mb), tier_root
            ),
            "headroom": Run(
                "headroom",
                "compact",
                entities,
                data,
                tiered_args(args.headroom_maxmemory_mb),
                tier_root,
            ),
            "ram": Run("ram", "compact", entities, data, ram_args),
            "feast": Run("feast", "feast", feast_entities, feast_data, ram_args),
        }
        for name in args.runs:
            doc["runs"].append(measure_run(runs[name], binary, base, args, rows))
            for leftover in tier_root.iterdir():
                leftover.unlink()
    finally:
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(tier_root, ignore_errors=True)
    doc["seconds"] = time.perf_counter() - started
    doc["loadavg_end"] = os.getloadavg()
    print()
    print(tables(doc))
    for run in doc["runs"]:
        warm = run.get("hot_warmup")
        if warm:
            print(
                f"\n{run['name']}: hot set {warm['hot_entities']:,} entities, {warm['read']:,} "
                f"read twice before timing in {warm['seconds']:.1f} s, {warm['uploads']:,} moved to "
                f"RAM{'; ' + warm['stopped'] if warm['stopped'] else ''}"
            )
    print(
        f"\n({doc['seconds']:.0f} s; load average {doc['loadavg_start'][0]:.1f} at the start, "
        f"{doc['loadavg_end'][0]:.1f} at the end; command: {doc['command']})"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=2, default=str) + "\n")
        print(f"wrote {args.json}")
    failed = [r["name"] for r in doc["runs"] if "write_error" in r or r.get("wrong_values")]
    if failed:
        print(f"failed runs: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
