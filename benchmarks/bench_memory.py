"""``make bench-memory``: server memory per stored feature value, by store and data layout.

Three stores, each given a FRESH server of every kind measured (redis-server, Dragonfly with
``--dragonfly-bin``, Valkey when one is found):

* ``feast`` — Feast's ``RedisOnlineStore`` (``type: redis``) with Feast's default ``local``
  materialization engine;
* ``ours_feast`` — ``feast_dragonfly.DragonflyOnlineStore``, ``layout: feast`` (Feast's hashes,
  byte for byte) with ``batch_engine: feast_dragonfly.DragonflyMaterializationEngine``;
* ``ours_compact`` — the same with ``layout: compact`` (one record per entity and view).

The data: one entity (``driver_id`` int64, 0..N-1) and feature views of 20, 50 and 250
features whose types cycle int64, double, float32, int32, bool, string (8 characters), one row
per entity in a local parquet file. Each view is applied and materialized through Feast's API
(``feast apply``'s ``apply_total``, then ``FeatureStore.materialize``) in a child process of
its own, one view after the other into that store's server; ``INFO memory``'s ``used_memory``
is read before and after each (the child gone, so its connections are no longer counted), and
``(after - before) / (N * features)`` is the view's bytes per stored value. By default each
view is its own Feast project, so each is stored as it would be on its own (Feast's layout
would otherwise put every view of an entity in one hash: ``--shared-project`` measures that,
where a view's delta then depends on the views stored before it). After each view, the child
reads a few entities back through ``get_online_features`` and checks them against the parquet.

    python benchmarks/bench_memory.py --dragonfly-bin ../shared/bin/dragonfly \\
        --json .benchmarks/memory.json --markdown docs/memory-benchmarks.md

Memory is deterministic enough for one run; the console summary prints the targets beside
the ratios (not asserted, and not written to the markdown).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import provenance

HERE = Path(__file__).resolve().parent
STORES = ("feast", "ours_feast", "ours_compact")
STORE_TITLES = {
    "feast": "Feast `RedisOnlineStore`",
    "ours_feast": "ours, `layout: feast`",
    "ours_compact": "ours, `layout: compact`",
}
WIDTHS = (20, 50, 250)
#: Feature types, cycled over a view's features: (Feast dtype name, parquet column maker key).
TYPES = ("Int64", "Float64", "Float32", "Int32", "Bool", "String")
#: ``layout: compact`` / Feast's store, at most (server kind -> width -> ratio); printed only.
TARGETS = {
    "dragonfly": {50: 0.5, 250: 0.2},
    "redis": {50: 0.7, 250: 0.45},
}
T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
SAMPLE_ENTITIES = 5


def feature_name(index: int) -> str:
    return f"f{index:03d}_{TYPES[index % len(TYPES)].lower()}"


# --------------------------------------------------------------------------- data + repos


def write_parquet(path: Path, entities: int, width: int, recent: bool) -> None:
    """``entities`` rows (one per driver) of ``width`` features of the cycled types."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(entities)
    base = datetime.now(timezone.utc) - timedelta(hours=1) if recent else T0
    span_us = 3_600_000_000 if recent else 86_400_000_000
    columns: dict[str, Any] = {
        "driver_id": pa.array(np.arange(entities, dtype=np.int64)),
        "event_timestamp": pa.array(
            (int(base.timestamp()) * 1_000_000 + rng.integers(0, span_us, entities)).astype(
                "int64"
            ),
            pa.timestamp("us", tz="UTC"),
        ),
    }
    for index in range(width):
        kind = TYPES[index % len(TYPES)]
        if kind == "Int64":
            values = pa.array(rng.integers(0, 10**9, entities, dtype=np.int64))
        elif kind == "Float64":
            values = pa.array(rng.standard_normal(entities))
        elif kind == "Float32":
            values = pa.array(rng.standard_normal(entities).astype(np.float32))
        elif kind == "Int32":
            values = pa.array(rng.integers(0, 10**6, entities, dtype=np.int32))
        elif kind == "Bool":
            values = pa.array(rng.integers(0, 2, entities).astype(bool))
        else:
            words = rng.integers(0, 16**8, entities)
            values = pa.array([f"{word:08x}" for word in words.tolist()], pa.string())
        columns[feature_name(index)] = values
    pq.write_table(pa.table(columns), path)


FEATURES_PY = """\
from datetime import timedelta

from feast import Entity, FeatureView, Field, FileSource, ValueType
from feast.types import Bool, Float32, Float64, Int32, Int64, String

driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
{views}
"""

VIEW_PY = """
view_{width} = FeatureView(
    name="w{width}",
    entities=[driver],
    schema=[
{fields}
    ],
    source=FileSource(path={data!r}, timestamp_field="event_timestamp"),
    ttl=timedelta(days={ttl_days}),
)
"""


def write_repo(
    repo: Path, project: str, store: str, conn: str, views: dict[int, Path], ttl_days: int
) -> None:
    """A feature repo: feature_store.yaml for ``store`` and a features.py of ``views``."""
    import yaml

    repo.mkdir(parents=True)
    text = ""
    for width, data in views.items():
        fields = "\n".join(
            f'        Field(name="{feature_name(i)}", dtype={TYPES[i % len(TYPES)]}),'
            for i in range(width)
        )
        text += VIEW_PY.format(width=width, fields=fields, data=str(data), ttl_days=ttl_days)
    (repo / "features.py").write_text(FEATURES_PY.format(views=text))
    settings: dict[str, Any] = {
        "project": project,
        "registry": "registry.db",
        "provider": "local",
        "offline_store": {"type": "file"},
        "entity_key_serialization_version": 3,
    }
    if store == "feast":
        settings["online_store"] = {"type": "redis", "connection_string": conn}
    else:
        settings["online_store"] = {
            "type": "feast_dragonfly.DragonflyOnlineStore",
            "connection_string": conn,
            "layout": "compact" if store == "ours_compact" else "feast",
        }
        settings["batch_engine"] = {
            "type": "feast_dragonfly.DragonflyMaterializationEngine",
            "show_progress": False,
        }
    (repo / "feature_store.yaml").write_text(yaml.safe_dump(settings, sort_keys=False))


# --------------------------------------------------------------------------- the child


def child(repo: Path, view: str, data: Path, start: str, end: str, apply: bool) -> None:
    """``feast apply`` (when asked), materialize one view, read a few entities back; prints
    one JSON line. Runs in its own process so its connections are gone when memory is read."""
    import warnings

    warnings.simplefilter("ignore")
    import logging

    logging.disable(logging.WARNING)
    import pyarrow.parquet as pq
    from feast import FeatureStore
    from feast.repo_config import load_repo_config
    from feast.repo_operations import apply_total

    os.chdir(repo)
    sys.path.insert(0, str(repo))  # as `feast apply` run in the repo has it: features.py
    applied = 0.0
    if apply:
        started = time.perf_counter()
        apply_total(load_repo_config(repo, repo / "feature_store.yaml"), repo, True)
        applied = time.perf_counter() - started
    store = FeatureStore(repo_path=str(repo))
    started = time.perf_counter()
    store.materialize(
        start_date=datetime.fromisoformat(start),
        end_date=datetime.fromisoformat(end),
        feature_views=[view],
    )
    seconds = time.perf_counter() - started

    table = pq.read_table(data)
    names = [n for n in table.column_names if n not in ("driver_id", "event_timestamp")]
    rows = table.num_rows
    sample = sorted({0, 1, rows // 2, rows - 2, rows - 1} & set(range(rows)))
    got = store.get_online_features(
        features=[f"{view}:{name}" for name in names],
        entity_rows=[{"driver_id": entity} for entity in sample],
    ).to_dict()
    wrong = 0
    for name in names:
        expected = [table.column(name)[entity].as_py() for entity in sample]
        wrong += sum(a != b for a, b in zip(got[name], expected, strict=True))
    print(json.dumps({"seconds": seconds, "apply_seconds": applied, "wrong_values": wrong}))


# --------------------------------------------------------------------------- measuring


@dataclass
class ServerSpec:
    kind: str  # redis, dragonfly, valkey
    binary: Any  # ServerBinary


def find_servers(args: argparse.Namespace) -> tuple[list[ServerSpec], list[str]]:
    from feast_dragonfly.testing import LocalServerError, detect_binary, find_server_binary

    found: list[ServerSpec] = []
    notes: list[str] = []
    for kind in args.servers:
        explicit = getattr(args, f"{kind}_bin")
        try:
            if explicit:
                path = explicit if os.sep in explicit else shutil.which(explicit) or explicit
                binary = detect_binary(os.path.abspath(path), source=f"--{kind}-bin")
            elif kind == "dragonfly":
                notes.append("Dragonfly: skipped (no --dragonfly-bin)")
                continue
            else:
                binary = find_server_binary(kind)
        except LocalServerError as exc:
            notes.append(f"{kind}: skipped ({exc})")
            continue
        if binary.kind != kind:
            notes.append(f"{kind}: skipped ({binary.path} is a {binary.kind} binary)")
            continue
        found.append(ServerSpec(kind, binary))
    return found, notes


def entity_key_bytes(driver_id: int, project: str) -> bytes:
    """The hash key of one driver in Feast's layout (a compact record's key adds ``:view``)."""
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    key = EntityKey(join_keys=["driver_id"], entity_values=[Value(int64_val=driver_id)])
    return serialize_entity_key(key, 3) + project.encode()


def key_encoding(client: Any, key: bytes) -> str | None:
    """``OBJECT ENCODING`` of ``key`` (Dragonfly, which lacks OBJECT: ``DEBUG OBJECT``'s)."""
    import redis

    try:
        found = client.object("encoding", key)
    except redis.ResponseError:
        try:
            reply = client.execute_command("DEBUG", "OBJECT", key)
        except redis.ResponseError:
            return None
        text = reply.decode() if isinstance(reply, bytes) else str(reply)
        fields = dict(part.split(":", 1) for part in text.split() if ":" in part)
        found = fields.get("encoding")
    return found.decode() if isinstance(found, bytes) else found


def used_memory(client: Any) -> int:
    """``used_memory`` once it holds still (Dragonfly refreshes it in the background)."""
    last = int(client.info("memory")["used_memory"])
    for _ in range(30):
        time.sleep(0.2)
        now = int(client.info("memory")["used_memory"])
        if now == last:
            return now
        last = now
    return last


def wait_for_clients(client: Any, timeout: float = 10.0) -> None:
    """Until only the measuring connection is left (the child's are closed server side)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if int(client.info("clients")["connected_clients"]) <= 1:
            return
        time.sleep(0.05)


def measure_store(
    spec: ServerSpec,
    store: str,
    base: Path,
    data: dict[int, Path],
    args: argparse.Namespace,
    window: tuple[str, str],
) -> dict[str, Any]:
    """One fresh server for ``store``: every view materialized in turn, memory around each."""
    from feast_dragonfly.testing import start_server

    server = start_server(spec.binary, proactor_threads=args.proactor_threads)
    client = server.client()
    out: dict[str, Any] = {"views": {}}
    try:
        try:
            out["config"] = {
                k: v for k, v in client.config_get("hash-max-*").items() if "ziplist" not in k
            }
        except Exception:  # a server without CONFIG GET of these
            out["config"] = {}
        repos: dict[int, tuple[Path, bool]] = {}
        if args.shared_project:
            repo = base / spec.kind / store / "shared"
            write_repo(repo, "mem_shared", store, server.connection_string, data, args.ttl_days)
            repos = {width: (repo, width == args.widths[0]) for width in args.widths}
        else:
            for width in args.widths:
                repo = base / spec.kind / store / f"w{width}"
                write_repo(
                    repo,
                    f"mem_w{width}",
                    store,
                    server.connection_string,
                    {width: data[width]},
                    args.ttl_days,
                )
                repos[width] = (repo, True)
        for width in args.widths:
            repo, apply = repos[width]
            wait_for_clients(client)
            before = used_memory(client)
            keys_before = client.dbsize()
            command = [
                sys.executable,
                str(Path(__file__).resolve()),
                "--child",
                str(repo),
                f"w{width}",
                str(data[width]),
                *window,
            ]
            if apply:
                command.append("--apply")
            done = subprocess.run(
                command,
                capture_output=True,
                text=True,
                env={**os.environ, "PYTHONWARNINGS": "ignore"},
            )
            if done.returncode:
                raise RuntimeError(
                    f"{spec.kind} {store} w{width}: the child failed:\n{done.stderr[-3000:]}"
                )
            result = json.loads(done.stdout.strip().splitlines()[-1])
            wait_for_clients(client)
            after = used_memory(client)
            keys = client.dbsize() - keys_before
            project = "mem_shared" if args.shared_project else f"mem_w{width}"
            sample_key = entity_key_bytes(0, project)
            if store == "ours_compact":
                sample_key += f":w{width}".encode()
            encoding = key_encoding(client, sample_key)
            values = args.entities * width
            out["views"][width] = {
                "used_memory_before": before,
                "used_memory_after": after,
                "bytes": after - before,
                "keys_added": keys,
                "bytes_per_value": (after - before) / values,
                "bytes_per_entity": (after - before) / args.entities,
                "encoding": encoding,
                **result,
            }
            print(
                f"  {spec.kind:9s} {store:12s} {width:3d} features: "
                f"{(after - before) / values:7.2f} B/value  "
                f"({(after - before) / 2**20:7.1f} MiB, {keys:,} keys, "
                f"materialize {result['seconds']:.1f}s, wrong {result['wrong_values']})",
                flush=True,
            )
    finally:
        client.close()
        server.stop()
    return out


# --------------------------------------------------------------------------- report


def target_for(kind: str, version: str, width: int) -> float | None:
    if kind == "redis" and not str(version).startswith("7.0"):
        return None  # the targets are stated for redis-server 7.0
    return TARGETS.get(kind, {}).get(width)


def server_title(kind: str, entry: dict[str, Any]) -> str:
    name = {"redis": "redis-server", "dragonfly": "Dragonfly", "valkey": "Valkey"}[kind]
    text = f"{name} {entry['version']}"
    if kind == "dragonfly":
        text += f" (--proactor_threads={entry['proactor_threads']})"
    return text


def _ratio_cell(view: dict[str, Any] | None, feast: dict[str, Any] | None, store: str) -> str:
    if view is None:
        return "–"
    text = f"{view['bytes_per_value']:.1f}"
    if feast and store != "feast":
        text += f" ({view['bytes_per_value'] / feast['bytes_per_value']:.2f}×)"
    if view.get("wrong_values"):
        text += f" **{view['wrong_values']} wrong values read back**"
    return text


def tables(doc: dict[str, Any]) -> str:
    parts: list[str] = []
    for kind, entry in doc["servers"].items():
        results = entry["stores"]
        stores = [s for s in STORES if s in results]
        config = entry.get("config") or {}
        listpack = (
            ", ".join(f"`{name} {value}`" for name, value in sorted(config.items()))
            if config
            else "no `hash-max-*` settings (CONFIG GET returns none)"
        )
        parts += [
            f"### {server_title(kind, entry)}",
            "",
            f"`{entry['binary']}` ({entry['source']}); {listpack}.",
            "",
            "Bytes per stored value (× Feast's store):",
            "",
            "| features per view | " + " | ".join(STORE_TITLES[s] for s in stores) + " |",
            "|---|" + "---|" * len(stores),
        ]
        for width in doc["widths"]:
            key = str(width)
            feast = results.get("feast", {}).get("views", {}).get(key)
            cells = [
                _ratio_cell(results[store]["views"].get(key), feast, store) for store in stores
            ]
            parts.append(f"| {width} | " + " | ".join(cells) + " |")
        parts += [
            "",
            "Bytes per entity and view (the encoding of driver 0's key: `OBJECT ENCODING`, "
            "on Dragonfly `DEBUG OBJECT`):",
            "",
            "| features per view | " + " | ".join(STORE_TITLES[s] for s in stores) + " |",
            "|---|" + "---|" * len(stores),
        ]
        for width in doc["widths"]:
            cells = []
            for store in stores:
                view = results[store]["views"].get(str(width))
                if view is None:
                    cells.append("–")
                else:
                    encoding = view.get("encoding") or "?"
                    cells.append(f"{view['bytes_per_entity']:,.0f} ({encoding})")
            parts.append(f"| {width} | " + " | ".join(cells) + " |")
        parts.append("")
    return "\n".join(parts)


def markdown(doc: dict[str, Any]) -> str:
    placement = (
        "all views in one project (Feast's layout: one hash per entity holding every view)"
        if doc["shared_project"]
        else "each view in its own Feast project (stored as it would be on its own)"
    )
    ttl = f"{doc['ttl_days']} days" if doc["ttl_days"] else "none (`ttl` 0)"
    versions = ", ".join(f"{name} {version}" for name, version in doc["versions"].items())
    lines = [
        "# Memory benchmarks",
        "",
        "Generated by `make bench-memory` (`benchmarks/bench_memory.py`); do not edit by hand.",
        "",
        f"- Date: {doc['date']} (UTC)",
        f"- Command: `{doc['command']}`",
        f"- Python {doc['python']}; {versions}; {doc['cpu_count']} cores, {doc['machine']}",
        f"- {doc['entities']:,} entities (`driver_id` int64); views of "
        f"{', '.join(str(w) for w in doc['widths'])} features; {placement}; view ttl: {ttl}",
        f"- Run time: {doc.get('seconds', 0):.0f} s (most of it Feast's `local` engine on the "
        "250-feature view, and one child process per store and view)",
        "",
        "How: for each server kind and each store, a fresh server; each view applied (Feast's "
        "`apply_total`, what `feast apply` runs) and materialized with "
        "`FeatureStore.materialize` in a child process of its own, one view after the other, "
        "with each store's own engine (Feast's: its default `local` engine; ours: "
        "`feast_dragonfly.DragonflyMaterializationEngine`). `INFO memory`'s `used_memory` is "
        "read before and after each view, once the child's connections are closed; B/value = "
        "(after − before) / (entities × features): the key, the hash or record, the server's "
        "per-key bookkeeping and (compact) the schema directory, per stored value. Feature "
        "types cycle int64 (0..10⁹), double, float32, int32 (0..10⁶), bool, string (8 hex "
        "characters); after each view, five entities are read back through "
        "`get_online_features` and checked against the parquet. (× Feast) is the ratio to Feast's store on the same server kind; below 1 is "
        "smaller. With "
        "`--shared-project` every view goes into one project instead, so Feast's layout keeps "
        "all of an entity's views in one hash (compact still has one record per view).",
        "",
        "Reading the numbers: Feast's layout stores, per entity, a hash of one 4-byte field "
        "name and one serialized `Value` per feature plus a `_ts:<view>` field; redis-server "
        "and Valkey keep a hash as one listpack while it has at most "
        "`hash-max-listpack-entries` fields of at most `hash-max-listpack-value` bytes (their "
        "values are given per server below), a hash table with allocations per field beyond. "
        "A compact record is one string per entity and view, whatever its width: its fixed "
        "costs (the key, about 50 bytes with the project and view names, and the server's "
        "per-key bookkeeping) weigh most on narrow views.",
        "",
        tables(doc),
    ]
    for note in doc["notes"]:
        lines.append(f"- {note}")
    return "\n".join(lines).rstrip() + "\n"


def summary(doc: dict[str, Any]) -> str:
    lines = []
    for kind, entry in doc["servers"].items():
        lines.append(f"\n== {server_title(kind, entry)} ==")
        results = entry["stores"]
        for width in doc["widths"]:
            key = str(width)
            feast = results.get("feast", {}).get("views", {}).get(key)
            row = [f"{width:3d} features:"]
            for store in STORES:
                view = results.get(store, {}).get("views", {}).get(key)
                if view is None:
                    continue
                text = f"{store} {view['bytes_per_value']:6.1f} B"
                if feast and store != "feast":
                    text += f" ({view['bytes_per_value'] / feast['bytes_per_value']:.2f}x)"
                row.append(text)
            goal = target_for(kind, entry["version"], width)
            if goal is not None:
                row.append(f"target compact <= {goal}x")
            lines.append("  ".join(row))
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entities", type=int, default=20_000, help="default 20,000")
    parser.add_argument(
        "--widths", type=int, nargs="+", default=list(WIDTHS), help="features per view"
    )
    parser.add_argument(
        "--servers",
        nargs="+",
        choices=("redis", "dragonfly", "valkey"),
        default=["redis", "dragonfly", "valkey"],
        help="server kinds to measure, each when found (default: all three)",
    )
    parser.add_argument("--redis-bin", default=None, help="default: redis-server discovery")
    parser.add_argument("--dragonfly-bin", default=None, help="Dragonfly (skipped without)")
    parser.add_argument("--valkey-bin", default=None, help="default: valkey discovery")
    parser.add_argument("--proactor-threads", type=int, default=2, help="Dragonfly's (2)")
    parser.add_argument(
        "--stores", nargs="+", choices=STORES, default=list(STORES), help="default: all"
    )
    parser.add_argument(
        "--shared-project",
        action="store_true",
        help="every view in one project (Feast's layout then shares one hash per entity)",
    )
    parser.add_argument(
        "--ttl-days",
        type=int,
        default=0,
        help="the views' ttl (default 0: none); with one, event times are within the last hour",
    )
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument("--markdown", type=Path, default=None, help="write the report here")
    parser.add_argument(
        "--report",
        type=Path,
        default=None,
        metavar="JSON",
        help="measure nothing: print (and with --markdown write) the report of a --json file",
    )
    parser.add_argument("--child", nargs=5, metavar="ARG", help=argparse.SUPPRESS)
    parser.add_argument("--apply", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        repo, view, data, start, end = args.child
        child(Path(repo), view, Path(data), start, end, args.apply)
        return 0

    if args.report:
        doc = json.loads(args.report.read_text())
        print(summary(doc))
        if args.markdown:
            args.markdown.parent.mkdir(parents=True, exist_ok=True)
            args.markdown.write_text(markdown(doc))
            print(f"wrote {args.markdown}")
        return 0

    specs, notes = find_servers(args)
    for note in notes:
        print(note)
    if not specs:
        print("no server to measure", file=sys.stderr)
        return 1
    base = Path(tempfile.mkdtemp(prefix="feast-dragonfly-membench-"))
    recent = args.ttl_days > 0
    if recent:
        now = datetime.now(timezone.utc)
        window = ((now - timedelta(hours=2)).isoformat(), (now + timedelta(hours=1)).isoformat())
    else:
        window = ((T0 - timedelta(days=1)).isoformat(), (T0 + timedelta(days=2)).isoformat())
    started = time.perf_counter()
    data: dict[int, Path] = {}
    for width in args.widths:
        data[width] = base / f"data_w{width}.parquet"
        write_parquet(data[width], args.entities, width, recent)

    doc: dict[str, Any] = {
        **provenance.run_info(__file__),
        "entities": args.entities,
        "widths": args.widths,
        "shared_project": args.shared_project,
        "ttl_days": args.ttl_days,
        "notes": notes,
        "servers": {},
    }
    try:
        for spec in specs:
            print(f"== {spec.binary.describe()} ==", flush=True)
            entry: dict[str, Any] = {
                "version": spec.binary.version,
                "binary": spec.binary.path,
                "source": spec.binary.source,
                "proactor_threads": args.proactor_threads,
                "stores": {},
            }
            try:
                entry["binary"] = str(Path(spec.binary.path).resolve().relative_to(Path.cwd()))
            except ValueError:
                pass
            doc["servers"][spec.kind] = entry
            for store in args.stores:
                result = measure_store(spec, store, base, data, args, window)
                result["views"] = {str(w): v for w, v in result["views"].items()}
                entry["config"] = result.pop("config", {})
                entry["stores"][store] = result
    finally:
        shutil.rmtree(base, ignore_errors=True)
    doc["seconds"] = time.perf_counter() - started
    print(summary(doc))
    print(f"\n({doc['seconds']:.0f} s)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"wrote {args.json}")
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(markdown(doc))
        print(f"wrote {args.markdown}")
    wrong = sum(
        view.get("wrong_values", 0)
        for entry in doc["servers"].values()
        for result in entry["stores"].values()
        for view in result["views"].values()
    )
    if wrong:
        print(f"{wrong} values read back differ from the parquet", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
