"""``make bench-migrate``: ``feast-dragonfly migrate`` against a plain DUMP/RESTORE copy.

Two throw-away local servers (redis-server by default; ``--server-bin`` for another binary,
``--target-bin`` for a target of another kind: redis-server -> Dragonfly).
The source gets ``--keys`` entity hashes of one project, 16 features each (one feature view),
half of them with a TTL. Then, on an emptied target each time (in shuffled order):

* ``baseline`` — plain redis-py: SCAN the project's pattern, pipeline ``DUMP`` + ``PTTL``,
  pipeline ``RESTORE ... REPLACE``; one thread, the same page size. It ignores event times
  (a newer value on the target is overwritten) and copies every key matching the glob;
* ``ours`` — ``feast-dragonfly migrate`` (the CLI, default concurrency), with the event-time
  rule and a checkpoint: keys the target lacks are copied whole (DUMP, RESTORE without
  REPLACE), the others merged per feature view, atomically per key;
* ``ours, merging`` — the same onto a target that already holds every key a year older: every
  key goes through the per-view merge (the worst case: a migration into a live target).

Each runs as its own process (wall time and peak RSS from ``wait4``); the copy is checked
(key count, and every sampled key identical to the source, TTL present where it should be).

    python benchmarks/bench_migrate.py --keys 200000
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import redis

PROJECT = "bench_shop"
VIEW = "driver_stats"
FEATURES = [f"f{i}" for i in range(16)]
BIN = Path(sys.executable).parent
#: The run whose target already holds every key, a year older (each one merged per view).
MERGE = "ours, merging"


def populate(client: redis.Redis, keys: int, year: int = 2026) -> None:
    """``keys`` hashes in Feast's layout: 16 int64 features, one view, every other with TTL,
    event time 1 January of ``year``. (Feast is imported here only: the baseline's process
    should not pay for importing it.)"""
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    from feast_dragonfly._protocol.keys import feature_fields
    from feast_dragonfly._store.layout import encode_event_time, entity_hash_key

    fields = feature_fields(VIEW, FEATURES)
    stamp = encode_event_time(datetime(year, 1, 1, tzinfo=timezone.utc))[0]
    pipe = client.pipeline(transaction=False)
    for i in range(keys):
        key = entity_hash_key(
            EntityKey(join_keys=["driver_id"], entity_values=[Value(int64_val=i)]),
            PROJECT.encode(),
            3,
        )
        mapping = {f"_ts:{VIEW}".encode(): stamp}
        for n, field in enumerate(fields):
            mapping[field] = Value(int64_val=i * 31 + n).SerializeToString()
        pipe.hset(key, mapping=mapping)
        if i % 2:
            pipe.pexpire(key, 86_400_000)
        if i % 2000 == 1999:
            pipe.execute()
    pipe.execute()


def baseline_child(source_port: int, target_port: int, batch: int) -> None:
    """The plain copy, run in its own process."""
    source = redis.Redis(port=source_port)
    target = redis.Redis(port=target_port)
    pattern = b"*" + PROJECT.encode()
    cursor = 0
    while True:
        cursor, keys = source.scan(cursor, match=pattern, count=batch)
        if keys:
            read = source.pipeline(transaction=False)
            for key in keys:
                read.dump(key)
                read.pttl(key)
            replies = read.execute()
            write = target.pipeline(transaction=False)
            for key, blob, ttl in zip(keys, replies[0::2], replies[1::2]):
                if blob is not None:
                    write.restore(key, max(int(ttl), 0), blob, replace=True)
            write.execute()
        if cursor == 0:
            break


def timed(argv: list[str]) -> tuple[float, float]:
    """Run ``argv``; (wall seconds, peak RSS in MiB) of that process. The RSS comes from GNU
    time when it is installed: a child forked from this (Feast-importing) process would count
    the memory it shared with it before exec in its own peak."""
    gnu_time = shutil.which("time") if Path("/usr/bin/time").exists() else None
    with tempfile.NamedTemporaryFile("r") as report:
        prefix = [gnu_time, "-f", "%M", "-o", report.name] if gnu_time else []
        start = time.perf_counter()
        process = subprocess.Popen(prefix + argv, stdout=subprocess.DEVNULL)
        _, status, usage = os.wait4(process.pid, 0)
        elapsed = time.perf_counter() - start
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"{argv[:3]} failed with status {status}")
        peak_kib = int(report.read().split()[-1]) if gnu_time else usage.ru_maxrss
    return elapsed, peak_kib / 1024


def check_copy(source: redis.Redis, target: redis.Redis, keys: int) -> None:
    """Same key count, and a sample of keys identical (fields and TTL presence)."""
    assert target.dbsize() == keys, (target.dbsize(), keys)
    sample = [source.randomkey() for _ in range(200)]
    for key in sample:
        assert source.hgetall(key) == target.hgetall(key), key
        assert (source.pttl(key) > 0) == (target.pttl(key) > 0), key


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--server-bin", default=None, help="server binary (default: discovery)")
    parser.add_argument(
        "--target-bin", default=None, help="the target's binary, if not --server-bin's"
    )
    parser.add_argument("--rounds", type=int, default=1, help="runs of each, best one kept")
    parser.add_argument("--baseline-child", nargs=2, type=int, help=argparse.SUPPRESS)
    parser.add_argument("--populate-child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--year", type=int, default=2026, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.baseline_child:
        baseline_child(*args.baseline_child, args.batch)
        return 0
    if args.populate_child:
        populate(redis.Redis(port=args.populate_child), args.keys, args.year)
        return 0

    # Imported here: importing feast_dragonfly imports Feast, which the baseline's process
    # (this file, run as a child) should not pay for.
    from feast_dragonfly.testing.local_server import start_server

    binary = args.server_bin or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
    )
    target_binary = args.target_bin or binary
    with start_server(binary) as source_server, start_server(target_binary) as target_server:
        source = source_server.client()
        target = target_server.client()
        print(f"servers: {source_server.describe()} -> {target_server.describe()}")
        # In a child: this process stays small, and a child's peak RSS (which counts the
        # memory it shared with this process before exec) measures only the copy.
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, __file__, "--populate-child", str(source_server.port)]
            + ["--keys", str(args.keys)],
            check=True,
        )
        print(
            f"source: {args.keys:,} keys x {len(FEATURES)} features in {time.perf_counter() - started:.1f} s"
        )
        results: dict[str, tuple[float, float]] = {}
        with tempfile.TemporaryDirectory() as scratch:
            ours = [
                str(BIN / "feast-dragonfly"), "migrate",
                "--source", source_server.connection_string,
                "--target", target_server.connection_string,
                "--project", PROJECT, "--batch", str(args.batch),
                "--concurrency", str(args.concurrency),
                "--checkpoint", str(Path(scratch) / "checkpoint.json"),
            ]  # fmt: skip
            runs = {
                "baseline": [
                    sys.executable, __file__, "--baseline-child",
                    str(source_server.port), str(target_server.port), "--batch", str(args.batch),
                ],
                "ours": ours,
                MERGE: ours,
            }  # fmt: skip
            order = [name for _ in range(args.rounds) for name in random.sample(list(runs), 3)]
            for name in order:
                target.flushall()
                if name == MERGE:  # every key on the target, a year older: all merged per view
                    subprocess.run(
                        [sys.executable, __file__, "--populate-child", str(target_server.port),
                         "--keys", str(args.keys), "--year", "2025"],
                        check=True,
                    )  # fmt: skip
                Path(scratch, "checkpoint.json").unlink(missing_ok=True)
                seconds, rss = timed(runs[name])
                check_copy(source, target, args.keys)
                best = results.get(name)
                if best is None or seconds < best[0]:
                    results[name] = (seconds, rss)
                print(
                    f"  {name:14s} {seconds:6.2f} s  {args.keys / seconds:9,.0f} keys/s  "
                    f"peak RSS {rss:6.1f} MiB"
                )
        print()
        print("| copy | keys/s | seconds | peak RSS (MiB) | / baseline |")
        print("|---|---:|---:|---:|---:|")
        for name in ("baseline", "ours", MERGE):
            seconds, rss = results[name]
            ratio = results["baseline"][0] / seconds
            print(
                f"| {name} | {args.keys / seconds:,.0f} | {seconds:.2f} | {rss:.0f} | {ratio:.2f}x |"
            )
        startup, _ = timed([str(BIN / "feast-dragonfly"), "migrate", "--help"])
        print(
            f"\nours / baseline (keys/s), empty target: {results['baseline'][0] / results['ours'][0]:.2f}x; "
            f"every key merged per view: {results['baseline'][0] / results[MERGE][0]:.2f}x "
            f"(start-up of the CLI: {startup:.2f} s, in both)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
