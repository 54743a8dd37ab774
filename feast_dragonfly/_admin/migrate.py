"""``feast-dragonfly migrate``: copy Feast projects between Redis-protocol servers, merging.

The source is only read (SCAN, then scripts that run HGETALL, DUMP and PTTL). Each SCAN page
of a project's keys becomes a batch. Keys the target does not hold yet are copied whole:
DUMP on the source, RESTORE without REPLACE on the target, which creates a key only while it
is still absent — the same outcome as a merge into an empty key, without a field crossing the
client. Every other key is read field by field and merged into the target per feature view
with Feast's event-time rule (``migrate_merge.lua``: a view whose stored time is newer or
equal is kept), atomically per key. Both keep each key's remaining TTL. Batches run on
``concurrency`` threads, each with its own connections; they are committed to the checkpoint
in scan order, so ``--resume`` continues after the last batch the checkpoint holds.

This module is the driver; a batch's key-level steps are in ``batch``, the counters and the
summary text in ``report``.
"""

from __future__ import annotations

import gc
import hashlib
import random
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from feast_dragonfly._admin import batch, scan
from feast_dragonfly._admin import checkpoint as _migrate_checkpoint
from feast_dragonfly._admin import merge as _migrate_merge
from feast_dragonfly._admin import verify as _migrate_verify
from feast_dragonfly._admin.registry_views import FieldOwners
from feast_dragonfly._admin.report import MAX_REPORTED, MigrationError, Report
from feast_dragonfly._admin.scan import (
    ScriptRefused,
    by_endpoint,
    present_on,
    project_pattern,
    read_dumps,
    read_hashes,
    scan_page,
)
from feast_dragonfly._protocol.deployment import Deployment, Endpoint
from feast_dragonfly._protocol.keys import belongs_to_project, describe_key
from feast_dragonfly.errors import DragonflyConnectionError

#: Keys per merge call on one Redis server. A cluster gets one (a script's keys must share a
#: slot), and so does Dragonfly: a script whose keys live on several of its threads is
#: coordinated across all of them, and one key per call measured 2x faster there (the calls
#: of different threads then run in parallel).
KEYS_PER_CALL = 32


@dataclass(frozen=True)
class MigrateOptions:
    projects: tuple[str, ...]
    checkpoint: Path
    resume: bool = False
    dry_run: bool = False
    verify_sample: int | None = None  # None: no verification; 0: every key
    concurrency: int = 8
    batch: int = 500
    owners: FieldOwners | None = None  # feature field -> view, from a registry


def checkpoint_path(source: Deployment, target: Deployment, projects: Sequence[str]) -> Path:
    """Default checkpoint file: one per (source, target, projects), in the current directory."""
    what = f"{source.address}/{source.db}->{target.address}/{target.db}:{','.join(projects)}"
    digest = hashlib.sha1(what.encode()).hexdigest()[:12]
    return Path(f".feast-dragonfly-migrate-{digest}.json")


def identity(source: Deployment, target: Deployment, projects: Sequence[str]) -> dict[str, Any]:
    return {
        "source": sorted(e.name for e in source.endpoints),
        "source_db": source.db,
        "target": sorted(e.name for e in target.endpoints),
        "target_db": target.db,
        "projects": list(projects),
    }


# --------------------------------------------------------------------------- the run


class _Collector:
    """Python's cyclic garbage collector, paused while keys stream through.

    Every batch allocates tens of thousands of short-lived containers (replies, field pairs),
    and the collector's passes over them cost a third of the client's time (measured: 11 of
    15 µs per key in building merge plans). None of them forms a reference cycle —
    reference counting frees them — so the run turns automatic collection off and collects
    explicitly every :data:`INTERVAL` seconds, to bound what a rare cycle (an exception's
    traceback) could hold on to."""

    INTERVAL = 2.0

    def __init__(self) -> None:
        self.last = time.monotonic()

    def tick(self) -> None:
        if time.monotonic() - self.last >= self.INTERVAL:
            gc.collect()
            self.last = time.monotonic()

    @staticmethod
    @contextmanager
    def paused() -> Iterator[_Collector]:
        if not gc.isenabled():  # someone else manages it
            yield _Collector()
            return
        gc.disable()
        try:
            yield _Collector()
        finally:
            gc.enable()


class Migration:
    """One run: scanning on the calling thread, batches on a pool of ``concurrency``."""

    def __init__(
        self,
        source: Deployment,
        target: Deployment,
        options: MigrateOptions,
        echo: Callable[[str], None] = lambda text: print(text, file=sys.stderr),
    ) -> None:
        self.echo = echo  # messages for the user (stderr)
        self.source = source
        self.target = target
        self.options = options
        one_per_call = target.settings.redis_type == "redis_cluster" or target.dragonfly
        self.per_call = 1 if one_per_call else KEYS_PER_CALL
        # A script's keys must share a slot: on a cluster source, plain reads
        self.scripted_reads = source.settings.redis_type != "redis_cluster"
        # Keys the target lacks are copied whole (DUMP / RESTORE) while both servers allow
        # it; off for good after the first refusal (an RDB version the target cannot read,
        # RESTORE denied by an ACL, ...): the per-view merge then copies every key. Not from
        # Dragonfly, whose DUMP is slow (measured: 5,800 keys/s against 106,000 read by the
        # read script, Dragonfly 1.40).
        self.whole_key_copies = not source.dragonfly
        self.dump_keys_per_call = 1 if not self.scripted_reads else scan.READ_KEYS_PER_CALL

    def streams(self) -> list[tuple[str, Endpoint, str]]:
        """(checkpoint name, source master, project): one resumable SCAN each."""
        return [
            (f"{endpoint.name}|{project}", endpoint, project)
            for project in self.options.projects
            for endpoint in self.source.endpoints
        ]

    def pages(self, checkpoint: _migrate_checkpoint.Checkpoint | None) -> Iterator[tuple]:
        """(stream, endpoint, project, next cursor, the page's keys of that project), in scan
        order."""
        for stream, endpoint, project in self.streams():
            cursor = checkpoint.cursor(stream) if checkpoint is not None else 0
            if cursor is None:
                continue
            project_bytes = project.encode("utf-8")
            pattern = project_pattern(project)
            while True:
                with self.source.errors():
                    cursor, keys = scan_page(endpoint, cursor, pattern, self.options.batch)
                yield (
                    stream,
                    endpoint,
                    project,
                    cursor,
                    [k for k in keys if belongs_to_project(k, project_bytes)],
                )
                if cursor == 0:
                    break

    def _read(self, endpoint: Endpoint, keys: Sequence[bytes]) -> list[tuple[Any, Any]]:
        """The source hashes, through the read script while the source runs it."""
        if self.scripted_reads:
            try:
                return read_hashes(endpoint, keys, scripted=True)
            except ScriptRefused as exc:
                self.scripted_reads = False
                self.echo(
                    f"note: the source does not run the read script "
                    f"({self.source.scrub(str(exc))}); reading key by key (slower)"
                )
        return read_hashes(endpoint, keys)

    def _batch(self, endpoint: Endpoint, project: str, keys: Sequence[bytes]) -> Report:
        out = Report()
        if not keys:
            return out
        out.add(f"project:{project}", len(keys))
        if self.options.dry_run:
            with self.source.errors():
                batch.dry_run_batch(endpoint, keys, out)
            return out
        out.add("keys_found", len(keys))
        if self.whole_key_copies:
            keys = self._copy_absent(endpoint, keys, out)
        self._merge_keys(endpoint, keys, out)
        return out

    def _merge_keys(self, endpoint: Endpoint, keys: Sequence[bytes], out: Report) -> None:
        """Read the keys' fields from the source and merge them per view into the target."""
        if not keys:
            return
        with self.source.errors():
            hashes = self._read(endpoint, keys)
        plans = batch.plans(keys, hashes, self.options.owners, out)
        with self.target.errors():
            batch.merge(plans, self.target, self.per_call, out)

    def _copy_absent(self, endpoint: Endpoint, keys: Sequence[bytes], out: Report) -> list[bytes]:
        """Copy the keys the target does not hold yet whole, with DUMP / RESTORE: the merge
        would write every field of such a key anyway, and RESTORE without REPLACE creates it
        only if it is still absent (atomic, like the merge). Returns the keys left to merge:
        those the target holds, and any a writer created meanwhile."""
        with self.target.errors():
            present = present_on(self.target, keys)
        absent = [key for key, there in zip(keys, present) if not there]
        if not absent:
            return list(keys)
        try:
            with self.source.errors():
                dumps = read_dumps(endpoint, absent, keys_per_call=self.dump_keys_per_call)
        except ScriptRefused as exc:
            self._stop_whole_key_copies(f"the source does not run the dump script ({exc})")
            return list(keys)
        with self.target.errors():
            copies = batch.restores(absent, dumps, out)
            refused = batch.restore(copies, self.target, out)
        others = [reply for _, reply in refused if not batch.is_busy(reply)]
        if others:
            self._stop_whole_key_copies(f"the target refused RESTORE ({others[0]})")
        left = {key for key, _ in refused}
        return [key for key, there in zip(keys, present) if there or key in left]

    def _stop_whole_key_copies(self, why: str) -> None:
        if self.whole_key_copies:
            self.whole_key_copies = False
            self.echo(
                f"note: {self.source.scrub(self.target.scrub(why))}; merging every key field "
                "by field instead (slower)"
            )

    def run(self, total: int | None) -> Report:
        """Copy (or, dry run, count) every key of the projects; returns the counters."""
        options = self.options
        ident = identity(self.source, self.target, options.projects)
        checkpoint = None
        if options.resume and not options.dry_run:
            checkpoint = _migrate_checkpoint.load(options.checkpoint, ident)
            self.echo(
                f"resuming from {options.checkpoint}"
                if checkpoint is not None
                else f"no checkpoint at {options.checkpoint}: starting from the beginning"
            )
        if checkpoint is None and not options.dry_run:
            checkpoint = _migrate_checkpoint.Checkpoint(options.checkpoint, ident)
            checkpoint.save()
        if not options.dry_run:
            for endpoint in self.target.endpoints:  # also: is scripting allowed at all?
                with self.target.errors():
                    reply = endpoint.exchange([_migrate_merge.LOAD_COMMAND], 1)[0]
                if isinstance(reply, Exception):
                    batch.fail_on(reply, self.target)
        report = Report(counters=dict(checkpoint.counters) if checkpoint else {})
        bar = tqdm(
            total=total,
            initial=report.counters.get("keys_found", 0),
            unit="keys",
            desc="dry run" if options.dry_run else "migrate",
            disable=not sys.stderr.isatty(),
            dynamic_ncols=True,
        )
        pending: deque[tuple[str, int, Future[Report]]] = deque()

        def commit_oldest() -> None:
            stream, cursor, future = pending.popleft()
            result = future.result()
            for name, value in result.counters.items():
                report.add(name, value)
            for problem in result.problems:
                report.note(problem)
            if checkpoint is not None:
                checkpoint.advance(stream, cursor, result.counters)
            bar.update(result.counters.get("keys_found", 0))

        try:
            self._drive(checkpoint, pending, commit_oldest)
        except DragonflyConnectionError as exc:
            if checkpoint is None:
                raise
            raise MigrationError(
                f"{exc}. Every batch the target confirmed is in the checkpoint: once the "
                "server is back, run the same command with --resume"
            ) from None
        finally:
            if checkpoint is not None:
                checkpoint.flush()  # every confirmed batch, also when stopping on an error
            bar.close()
        return report

    def _drive(
        self,
        checkpoint: _migrate_checkpoint.Checkpoint | None,
        pending: deque[tuple[str, int, Future[Report]]],
        commit_oldest: Callable[[], None],
    ) -> None:
        """Scan on this thread, merge on the pool, commit in scan order."""
        options = self.options
        with (
            ThreadPoolExecutor(options.concurrency, "feast-dragonfly-migrate") as pool,
            _Collector.paused() as collector,
        ):
            try:
                for stream, endpoint, project, cursor, keys in self.pages(checkpoint):
                    job = pool.submit(self._batch, endpoint, project, keys)
                    pending.append((stream, cursor, job))
                    while len(pending) > 2 * options.concurrency:
                        commit_oldest()
                    collector.tick()
                while pending:
                    commit_oldest()
            except BaseException:
                for _, _, future in pending:
                    future.cancel()
                raise

    # ------------------------------------------------------------------ verification

    def verify(self) -> Report:
        """Compare migrated keys with the source (all, or a random sample of N)."""
        with _Collector.paused() as collector:
            return self._verify(collector)

    def _verify(self, collector: _Collector) -> Report:
        options = self.options
        out = Report(verify=_migrate_verify.Verdict())
        sample_size = options.verify_sample or 0
        sample: list[tuple[Endpoint, bytes]] = []
        seen = 0
        rng = random.Random()
        for _, endpoint, _, _, keys in self.pages(None):
            collector.tick()
            if not sample_size:
                self._verify_keys(endpoint, keys, out)
                continue
            for key in keys:  # reservoir sampling over the whole scan
                seen += 1
                if len(sample) < sample_size:
                    sample.append((endpoint, key))
                elif (slot := rng.randrange(seen)) < sample_size:
                    sample[slot] = (endpoint, key)
        for endpoint, keys in by_endpoint(sample):
            for i in range(0, len(keys), options.batch):
                self._verify_keys(endpoint, keys[i : i + options.batch], out)
        return out

    def _verify_keys(self, endpoint: Endpoint, keys: Sequence[bytes], out: Report) -> None:
        if not keys:
            return
        with self.source.errors():
            hashes = self._read(endpoint, keys)
        plans = batch.plans(keys, hashes, self.options.owners, Report())
        assert out.verify is not None
        routed = ((self.target.endpoint_for(p.key), p) for p in plans)
        for target, mine in by_endpoint(routed):
            with self.target.errors():
                stored = read_hashes(target, [p.key for p in mine])
            for plan, (flat, _) in zip(mine, stored):
                out.verified_keys += 1
                if isinstance(flat, Exception):
                    flat = None
                verdict = _migrate_verify.verify_key(plan.groups, flat)
                out.verify.match += verdict.match
                out.verify.kept += verdict.kept
                out.verify.mismatch += verdict.mismatch
                if verdict.mismatch and len(out.mismatched) < MAX_REPORTED:
                    out.mismatched.append(describe_key(plan.key))
