"""Live resharding: no acknowledged write is lost, and reads go back in time rarely if ever.

A real three-master cluster (``start_cluster``: redis-server on the redis pass, three
``dragonfly --cluster_mode=yes`` nodes configured by the fixture on the Dragonfly pass), our
store with ``redis_type: redis_cluster``, and Feast's public API only: a reader
(``get_online_features``, 20 entities a call) and a writer (``write_to_online_store``, 50
entities a call, each call a newer version) run while a third of one master's slots move to
another master (redis-server: slot by slot, as ``redis-cli --cluster reshard`` does;
Dragonfly: one migration, as its cluster manager runs it). Counted:

* **stale reads** — an entity read back with an older version than one whose write had
  already been acknowledged when the read started;
* **lost writes** — once everything settled, an entity whose stored version is older than
  the last one acknowledged for it;
* **errors** — calls that raised.

Lost writes (checked by a second store, as another process would see them) and errors must
be zero on both servers, stale reads too on Redis Cluster. On Dragonfly they are counted and
printed, not asserted: in rare runs (2 of 40) its old master kept answering with the
older version for up to a second after acknowledging the newer one, until it answered
``MOVED`` and the store replayed the write (docs/topologies.md). One run in ``make test``;
``FEAST_DRAGONFLY_RESHARD_RUNS=5`` runs it that many times (a fresh cluster each), printing
each run's counts (``-s`` to see them).
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest
import yaml
from feast import Entity, FeatureStore, FeatureView, Field, FileSource, ValueType
from feast.types import Int64
from local_topology import LocalCluster, start_cluster

from feast_dragonfly.testing.local_server import ServerBinary

UTC = timezone.utc
T0 = datetime(2026, 1, 1, tzinfo=UTC)
PROJECT = "reshard"
ENTITIES = 4000
WRITE_BATCH = 50
READ_BATCH = 20
RUNS_ENV = "FEAST_DRAGONFLY_RESHARD_RUNS"


def _repo(path: Path, cluster: LocalCluster) -> FeatureStore:
    path.mkdir(parents=True, exist_ok=True)
    settings = {
        "project": PROJECT,
        "registry": str(path / "registry.db"),
        "provider": "local",
        "online_store": {
            "type": "feast_dragonfly.DragonflyOnlineStore",
            "redis_type": "redis_cluster",
            "connection_string": cluster.connection_string,
        },
        "offline_store": {"type": "file"},
        "entity_key_serialization_version": 3,
    }
    (path / "feature_store.yaml").write_text(yaml.safe_dump(settings))
    store = FeatureStore(repo_path=str(path))
    driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
    view = FeatureView(
        name="versions",
        entities=[driver],
        schema=[Field(name="driver_id", dtype=Int64), Field(name="version", dtype=Int64)],
        source=FileSource(path=str(path / "unused.parquet"), timestamp_field="event_timestamp"),
        ttl=timedelta(days=3650),
    )
    store.apply([driver, view])
    return store


def _frame(ids: range | list[int], version: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "driver_id": list(ids),
            "version": [version] * len(ids),
            "event_timestamp": [T0 + timedelta(seconds=version)] * len(ids),
        }
    )


def _versions(store: FeatureStore, ids: list[int]) -> list[int | None]:
    answer = store.get_online_features(
        features=["versions:version"], entity_rows=[{"driver_id": i} for i in ids]
    ).to_dict()
    return answer["version"]


def _stored_versions(path: Path, cluster: LocalCluster) -> list[int | None]:
    checker = _repo(path, cluster)
    try:
        return _versions(checker, list(range(ENTITIES)))
    finally:
        asyncio.run(checker._get_provider().online_store.close())


@dataclass
class Counts:
    reads: int = 0
    writes: int = 0
    stale: int = 0
    lost: int = 0
    migration_s: float = 0.0
    #: (entity, version read, version acknowledged before the read) of the first stale reads
    samples: list[tuple[int, int | None, int]] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)

    def __str__(self) -> str:
        return (
            f"{self.reads} reads, {self.writes} writes: {self.stale} stale reads, "
            f"{self.lost} lost writes, {len(self.errors)} errors "
            f"(resharding took {self.migration_s:.1f} s)"
            + (
                f"; first stale reads (entity, read, acknowledged): {self.samples}"
                if self.samples
                else ""
            )
        )


class _Traffic:
    """The writer and the reader, each in its own thread, until :meth:`stop`."""

    def __init__(self, store: FeatureStore) -> None:
        self._store = store
        #: entity -> the newest version whose write was acknowledged
        self.acked = [0] * ENTITIES
        self._last_batch: list[int] = list(range(READ_BATCH))
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.counts = Counts()
        self._threads = [threading.Thread(target=self._write), threading.Thread(target=self._read)]

    def _write(self) -> None:
        version = 0
        while not self._stop.is_set():
            version += 1
            start = (version * WRITE_BATCH) % ENTITIES
            ids = list(range(start, start + WRITE_BATCH))
            try:
                self._store.write_to_online_store("versions", df=_frame(ids, version))
            except Exception as exc:  # noqa: BLE001 - counted, reported by the test
                self.counts.errors.append(exc)
                continue
            with self._lock:
                for i in ids:
                    self.acked[i] = version
                self._last_batch = ids
            self.counts.writes += 1

    def _read(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                # The entities written last: where a lost or misplaced write shows first.
                ids = self._last_batch[:READ_BATCH]
                expected = [self.acked[i] for i in ids]
            try:
                got = _versions(self._store, ids)
            except Exception as exc:  # noqa: BLE001
                self.counts.errors.append(exc)
                continue
            self.counts.reads += 1
            for entity, value, floor in zip(ids, got, expected):
                if value is None or value < floor:
                    self.counts.stale += 1
                    if len(self.counts.samples) < 5:
                        self.counts.samples.append((entity, value, floor))

    def __enter__(self) -> _Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)


def _a_third_of(cluster: LocalCluster, source: int) -> list[tuple[int, int]]:
    """The first third of the slots ``source`` serves, as inclusive ranges."""
    client = cluster.masters[0].client(decode_responses=False)
    try:
        owned = sorted(
            slot
            for start, end, primary, *_ in client.execute_command("CLUSTER SLOTS")
            if int(primary[1]) == cluster.masters[source].port
            for slot in range(int(start), int(end) + 1)
        )
    finally:
        client.close()
    moved = owned[: len(owned) // 3]
    return (
        [(moved[0], moved[-1])]
        if moved[-1] - moved[0] == len(moved) - 1
        else [(slot, slot) for slot in moved]
    )


def reshard_under_traffic(
    tmp_path: Path, server_binary: ServerBinary, *, settle: float = 0.5
) -> Counts:
    """One run on a fresh cluster: every entity written once, then reader and writer running
    while a third of master 0's slots move to master 1, then every entity checked."""
    with start_cluster(server_binary) as cluster:
        store = _repo(tmp_path, cluster)
        try:
            store.write_to_online_store("versions", df=_frame(range(ENTITIES), 0))
            switch = sys.getswitchinterval()
            # The resharding makes thousands of round trips (redis-server: several per slot);
            # with the traffic threads holding the GIL, each would wait out a 5 ms switch.
            sys.setswitchinterval(0.0002)
            try:
                with _Traffic(store) as traffic:
                    time.sleep(0.5)
                    started = time.monotonic()
                    cluster.migrate_slots(_a_third_of(cluster, 0), 1)
                    traffic.counts.migration_s = time.monotonic() - started
                    time.sleep(settle)
            finally:
                sys.setswitchinterval(switch)
            time.sleep(0.5)  # the source's sweep of the slots it gave away
            # Read by another store (another process, in effect): the writer's own later
            # requests would replay what they touch, and this must not depend on that.
            stored = _stored_versions(tmp_path / "checker", cluster)
            counts = traffic.counts
            counts.lost = sum(
                1 for value, floor in zip(stored, traffic.acked) if value is None or value < floor
            )
            return counts
        finally:
            asyncio.run(store._get_provider().online_store.close())


@pytest.fixture
def runs() -> int:
    return int(os.environ.get(RUNS_ENV, "1"))


def test_resharding_under_traffic_loses_no_acknowledged_write(
    tmp_path, server_binary: ServerBinary, runs: int
) -> None:
    results = []
    for run in range(runs):
        counts = reshard_under_traffic(tmp_path / f"run{run}", server_binary)
        print(f"{server_binary.kind} resharding run {run + 1}/{runs}: {counts}")
        results.append(counts)
    summary = [str(counts) for counts in results]
    for counts in results:
        assert counts.writes > 20 and counts.reads > 20, counts  # traffic really ran
        assert not counts.errors, counts.errors[:3]
        assert counts.lost == 0, summary
        if server_binary.kind != "dragonfly":
            assert counts.stale == 0, summary
