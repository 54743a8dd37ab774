"""Distributed materialization: our Spark / Ray engines against Feast's, on one server.

Data (``--rows``, default 1M): ``--rows / 2`` entities with two rows each, 20 features
(``f00`` = the row's id, the rest floats), in 4 parquet files, rows shuffled. Half the entities
have both rows at the same event time with different created times (the newer created time
must win); the other half have two event times (the newer must win).

Runs, each in a fresh process (``materialize_child.py``) on the same throw-away server, the
server emptied before each: Feast's engine + Feast's ``RedisOnlineStore``, then ours + ours,
for Spark ``local[2]`` and Ray (2 CPUs); and our single-process engine once. For each: rows/s
(source rows / wall time of ``store.materialize``), wrong rows (entities whose stored ``f00``
or event time is not the expected row's, missing ones included), peak memory (the process
tree: driver, JVM, Python / Ray workers).

    python benchmarks/bench_distributed.py [--rows 1000000] [--server-bin PATH]
        [--engines spark,ray] [--json out.json] [--markdown out.md]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from feast import Entity, FeatureStore, FeatureView, Field, FileSource, ValueType
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.types import Float64, Int64

from feast_dragonfly._engines import arrow
from feast_dragonfly._protocol import keys as _keys
from feast_dragonfly.testing.local_server import start_server

HERE = Path(__file__).resolve().parent
UTC = timezone.utc
T0 = datetime(2024, 3, 1, tzinfo=UTC)
PROJECT = "distbench"
VIEW = "wide"
FEATURES = [f"f{i:02d}" for i in range(20)]
SPARK_CONF = {"spark.master": "local[2]", "spark.ui.enabled": "false"}

#: run name -> (batch_engine, online store type, needs a local Ray)
RUNS: dict[str, tuple[dict[str, Any], str, bool]] = {
    "spark: Feast's engine + Feast's store": (
        {"type": "spark.engine", "spark_conf": SPARK_CONF, "partitions": 2},
        "redis",
        False,
    ),
    "spark: DragonflySparkEngine + ours": (
        {"type": "feast_dragonfly.DragonflySparkEngine", "spark_conf": SPARK_CONF},
        "feast_dragonfly.DragonflyOnlineStore",
        False,
    ),
    "ray: Feast's engine + Feast's store": (
        {"type": "ray.engine", "write_concurrency": 2},
        "redis",
        True,
    ),
    "ray: DragonflyRayEngine + ours": (
        {"type": "feast_dragonfly.DragonflyRayEngine"},
        "feast_dragonfly.DragonflyOnlineStore",
        True,
    ),
    "single-process DragonflyMaterializationEngine + ours": (
        {"type": "feast_dragonfly.DragonflyMaterializationEngine", "show_progress": False},
        "feast_dragonfly.DragonflyOnlineStore",
        False,
    ),
}


def make_data(directory: Path, rows: int, seed: int = 1) -> np.ndarray:
    """Write the 4 parquet files; returns, per entity, the row id that must be stored."""
    rng = np.random.default_rng(seed)
    entities = rows // 2
    ids = np.arange(entities, dtype=np.int64)
    same_time = ids % 2 == 0
    base = rng.integers(0, 86_400 * 30, entities)
    # Row a: created +1 min; row b: created +2 min and, for odd entities, an event second later.
    event_a = base
    event_b = base + np.where(same_time, 0, 1)
    driver = np.concatenate([ids, ids])
    event = np.concatenate([event_a, event_b])
    created = np.concatenate([np.full(entities, 60), np.full(entities, 120)])
    row_id = np.arange(2 * entities, dtype=np.int64)
    expected = row_id[entities:]  # row b wins: newer created time, or newer event time
    order = rng.permutation(2 * entities)
    t0 = np.datetime64(T0.replace(tzinfo=None), "us")
    columns: dict[str, Any] = {
        "driver_id": pa.array(driver[order]),
        "event_timestamp": pa.array(
            t0 + event[order].astype("timedelta64[s]"), pa.timestamp("us", tz="UTC")
        ),
        "created": pa.array(
            t0 + created[order].astype("timedelta64[s]"), pa.timestamp("us", tz="UTC")
        ),
        "f00": pa.array(row_id[order]),
    }
    for name in FEATURES[1:]:
        columns[name] = pa.array(rng.standard_normal(2 * entities))
    table = pa.table(columns)
    directory.mkdir(parents=True, exist_ok=True)
    quarter = -(-table.num_rows // 4)
    for i in range(4):
        pq.write_table(table.slice(i * quarter, quarter), directory / f"part-{i}.parquet")
    return expected


def write_repo(path: Path, data: Path, connection: str, engine: dict, store_type: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    settings = {
        "project": PROJECT,
        "registry": str(path / "registry.db"),
        "provider": "local",
        "offline_store": {"type": "file"},
        "online_store": {"type": store_type, "connection_string": connection},
        "batch_engine": engine,
        "entity_key_serialization_version": 3,
    }
    (path / "feature_store.yaml").write_text(yaml.safe_dump(settings))
    driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
    view = FeatureView(
        name=VIEW,
        entities=[driver],
        schema=[Field(name="f00", dtype=Int64)]
        + [Field(name=name, dtype=Float64) for name in FEATURES[1:]],
        source=FileSource(
            path=str(data), timestamp_field="event_timestamp", created_timestamp_column="created"
        ),
        ttl=timedelta(days=3650),
    )
    FeatureStore(repo_path=str(path)).apply([driver, view])


def wrong_rows(client: Any, expected: np.ndarray) -> int:
    """Entities whose stored f00 is not the expected row id (missing ones included)."""
    entities = len(expected)
    keys = arrow.entity_key_bytes(
        {"driver_id": pa.array(np.arange(entities, dtype=np.int64))},
        {"driver_id": ValueType.INT64},
        PROJECT.encode(),
        3,
    ).to_pylist()
    field = _keys.feature_field(VIEW, "f00")
    wrong = 0
    value = ValueProto()
    for start in range(0, entities, 20_000):
        with client.pipeline(transaction=False) as pipe:
            for key in keys[start : start + 20_000]:
                pipe.hget(key, field)
            replies = pipe.execute()
        for offset, reply in enumerate(replies):
            if reply is None:
                wrong += 1
                continue
            value.ParseFromString(reply)
            wrong += int(value.int64_val != expected[start + offset])
    return wrong


def run_child(repo: Path, ray_cpus: int | None) -> dict[str, Any]:
    argv = [
        sys.executable,
        str(HERE / "materialize_child.py"),
        str(repo),
        (T0 - timedelta(days=1)).isoformat(),
        (T0 + timedelta(days=40)).isoformat(),
    ]
    if ray_cpus:
        argv += ["--ray-cpus", str(ray_cpus)]
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=3600)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1][:300] if done.stderr else "?"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--engines", default="spark,ray,single")
    parser.add_argument("--server-bin", default=None, help="default: redis-server discovery")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--markdown", type=Path, default=None)
    args = parser.parse_args()
    wanted = set(args.engines.split(","))
    runs = {
        name: run
        for name, run in RUNS.items()
        if name.split(":")[0] in wanted or ("single" in wanted and name.startswith("single"))
    }
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-distributed-") as tmp:
        base = Path(tmp)
        expected = make_data(base / "data", args.rows)
        with start_server(args.server_bin) as server:
            client = server.client()
            print(f"server: {server.kind} {server.version}; {args.rows} rows", flush=True)
            for index, (name, (engine, store_type, ray)) in enumerate(runs.items()):
                client.flushall()
                repo = base / f"repo-{index}"
                write_repo(repo, base / "data", server.connection_string, engine, store_type)
                result = run_child(repo, 2 if ray else None)
                if "seconds" in result:
                    result["rows_per_s"] = args.rows / result["seconds"]
                    result["wrong_rows"] = wrong_rows(client, expected)
                results[name] = result
                print(f"{name}: {json.dumps(result)}", flush=True)
            server_info = f"{server.kind} {server.version}"
            client.close()
    report = {
        "rows": args.rows,
        "entities": args.rows // 2,
        "features": len(FEATURES),
        "server": server_info,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "results": results,
    }
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    text = markdown(report)
    print(text)
    if args.markdown:
        args.markdown.write_text(text)


def markdown(report: dict[str, Any]) -> str:
    results = report["results"]
    lines = [
        "# Distributed materialization benchmark",
        "",
        f"`make bench-distributed` ({report['rows']:,} rows x {report['features']} features over "
        f"{report['entities']:,} entities, 4 parquet files; half the entities have two rows at "
        f"one event time with different created times; {report['server']}; "
        f"{report['machine']}; Spark `local[2]`, Ray with 2 CPUs).",
        "",
        "| run | seconds | rows/s | wrong rows | peak memory (process tree) |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, result in results.items():
        if "error" in result:
            lines.append(f"| {name} | failed: {result['error']} | | | |")
            continue
        lines.append(
            f"| {name} | {result['seconds']:.1f} | {result['rows_per_s']:,.0f} | "
            f"{result['wrong_rows']:,} | {result['peak_tree_rss_mb']:,.0f} MB |"
        )
    lines.append("")
    for kind, ours, feasts in (
        ("Spark", "spark: DragonflySparkEngine + ours", "spark: Feast's engine + Feast's store"),
        ("Ray", "ray: DragonflyRayEngine + ours", "ray: Feast's engine + Feast's store"),
    ):
        a, b = results.get(ours, {}), results.get(feasts, {})
        if "rows_per_s" in a and "rows_per_s" in b:
            lines.append(
                f"- {kind}: ours / Feast's rows/s = {a['rows_per_s'] / b['rows_per_s']:.1f}x"
            )
        single = results.get("single-process DragonflyMaterializationEngine + ours", {})
        if "rows_per_s" in a and "rows_per_s" in single:
            lines.append(
                f"- {kind}: ours / our single-process engine rows/s = "
                f"{a['rows_per_s'] / single['rows_per_s']:.2f}x"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
