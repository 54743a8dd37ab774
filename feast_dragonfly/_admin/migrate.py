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

Records of the compact layout (``<hash key>:<view>`` strings) are found by the same SCAN and
copied as they are with the store's ``compact_write.lua`` (``records``). With ``to_layout``
each kind is converted into the other layout instead (``convert``): hashes into records, or
records into hashes; the source and the target may then be one server, whose keys already in
the target layout stay as they are.

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

from feast_dragonfly._admin import batch, records, scan
from feast_dragonfly._admin import checkpoint as _migrate_checkpoint
from feast_dragonfly._admin import merge as _migrate_merge
from feast_dragonfly._admin import verify as _migrate_verify
from feast_dragonfly._admin.convert import Conversion
from feast_dragonfly._admin.registry_views import FieldOwners
from feast_dragonfly._admin.report import MigrationError, Report
from feast_dragonfly._admin.scan import (
    ScriptRefused,
    by_endpoint,
    memory_usage,
    present_on,
    project_and_records_pattern,
    read_dumps,
    read_hashes,
    scan_page,
)
from feast_dragonfly._protocol.deployment import Deployment, Endpoint
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
    #: Convert into this layout (None: copy every key in the layout it has).
    conversion: Conversion | None = None
    #: Source and target are one server (allowed only for a conversion): keys already in the
    #: target layout are left as they are.
    same_server: bool = False
    merge_whole_keys_losing_views: bool = False  # see batch.merge

    @property
    def to_layout(self) -> str | None:
        return self.conversion.to_layout if self.conversion is not None else None


def checkpoint_path(
    source: Deployment, target: Deployment, projects: Sequence[str], to_layout: str | None = None
) -> Path:
    """Default checkpoint file: one per (source, target, projects, conversion), in the current
    directory."""
    what = f"{source.address}/{source.db}->{target.address}/{target.db}:{','.join(projects)}"
    if to_layout:
        what += f"->{to_layout}"
    digest = hashlib.sha1(what.encode()).hexdigest()[:12]
    return Path(f".feast-dragonfly-migrate-{digest}.json")


def identity(
    source: Deployment, target: Deployment, projects: Sequence[str], to_layout: str | None = None
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "source": sorted(e.name for e in source.endpoints),
        "source_db": source.db,
        "target": sorted(e.name for e in target.endpoints),
        "target_db": target.db,
        "projects": list(projects),
    }
    if to_layout:
        out["to_layout"] = to_layout
    return out


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
        """(stream, endpoint, project, next cursor, the page's hash keys of that project, its
        records as (key, view)), in scan order."""
        for stream, endpoint, project in self.streams():
            cursor = checkpoint.cursor(stream) if checkpoint is not None else 0
            if cursor is None:
                continue
            project_bytes = project.encode("utf-8")
            pattern = project_and_records_pattern(project)
            while True:
                with self.source.errors():
                    cursor, keys = scan_page(endpoint, cursor, pattern, self.options.batch)
                hashes, found = records.split_page(keys, project_bytes)
                yield stream, endpoint, project, cursor, hashes, found
                if cursor == 0:
                    break

    def read_source(self, endpoint: Endpoint, keys: Sequence[bytes]) -> list[tuple[Any, Any]]:
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

    def _batch(
        self,
        endpoint: Endpoint,
        project: str,
        keys: Sequence[bytes],
        found: Sequence[tuple[bytes, str]] = (),
    ) -> Report:
        """One SCAN page: its entity hashes (``keys``) and its compact records (``found``)."""
        out = Report()
        if not keys and not found:
            return out
        out.add(f"project:{project}", len(keys) + len(found))
        if keys:
            self._hashes(endpoint, keys, out)
        if found:
            self._records(endpoint, project, found, out)
        return out

    def _hashes(self, endpoint: Endpoint, keys: Sequence[bytes], out: Report) -> None:
        options, conversion = self.options, self.options.conversion
        if conversion is not None and conversion.to_layout == "compact":
            out.add("keys_found", len(keys))
            with self.source.errors():
                converted = conversion.to_records(keys, self.read_source(endpoint, keys), out)
            if options.dry_run:
                out.add("views_to_convert", len(converted))
                out.add("record_bytes", sum(len(c.write.record) for c in converted))
                return
            with self.target.errors():
                records.write_records([c.write for c in converted], self.target, self.per_call,
                                      out, written="converted", kept="converted_kept")  # fmt: skip
            return
        if options.same_server:  # already in the target layout
            out.add("keys_in_place", len(keys))
            return
        if options.dry_run:
            with self.source.errors():
                batch.dry_run_batch(endpoint, keys, out)
            return
        out.add("keys_found", len(keys))
        if self.whole_key_copies:
            keys = self._copy_absent(endpoint, keys, out)
        self._merge_keys(endpoint, keys, out)

    def _records(
        self, endpoint: Endpoint, project: str, found: Sequence[tuple[bytes, str]], out: Report
    ) -> None:
        options, conversion = self.options, self.options.conversion
        keys = [key for key, _ in found]
        out.add("records_found", len(found))
        if conversion is not None and conversion.to_layout == "feast":
            with self.source.errors():
                replies = records.read_records(endpoint, keys)
            plans = conversion.to_hashes(self.source, project, found, replies, out)
            if options.dry_run:
                out.add("views_to_convert", len(plans))
                return
            with self.target.errors():
                conversion.merge(plans, self.target, self.per_call, out)
            return
        if options.same_server:  # already in the target layout
            out.add("records_in_place", len(found))
            return
        if options.dry_run:
            with self.source.errors():
                out.add("bytes", sum(size or 0 for size in memory_usage(endpoint, keys)))
            return
        with self.source.errors():
            writes = records.copy_plan(found, records.read_records(endpoint, keys), out)
        with self.target.errors():
            records.write_records(writes, self.target, self.per_call, out,
                                  written="records_copied", kept="records_kept_newer")  # fmt: skip

    def _merge_keys(self, endpoint: Endpoint, keys: Sequence[bytes], out: Report) -> None:
        """Read the keys' fields from the source and merge them per view into the target."""
        if not keys:
            return
        with self.source.errors():
            hashes = self.read_source(endpoint, keys)
        plans = batch.plans(keys, hashes, self.options.owners, out)
        with self.target.errors():
            batch.merge(plans, self.target, self.per_call, out, self.options)

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
        ident = identity(self.source, self.target, options.projects, options.to_layout)
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
        if not options.dry_run:
            self._directories(report)
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
            if not options.dry_run:
                self._directories(report)  # schemas registered while the run went on
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

    def _directories(self, report: Report) -> None:
        """The schema directories compact records need on the target: the source's, for records
        copied as they are, and the registry's current schemas, for records converted."""
        options = self.options
        if not options.same_server and options.to_layout != "feast":
            for project in options.projects:
                records.copy_directory(self.source, self.target, project, report)
        if options.conversion is not None and options.to_layout == "compact":
            options.conversion.register(self.target, options.projects)

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
                for stream, endpoint, project, cursor, keys, found in self.pages(checkpoint):
                    job = pool.submit(self._batch, endpoint, project, keys, found)
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
        sample: list[tuple[Endpoint, tuple[str, bytes, str | None]]] = []
        seen = 0
        rng = random.Random()
        for _, endpoint, project, _, keys, found in self.pages(None):
            collector.tick()
            items: list[tuple[str, bytes, str | None]] = [(project, key, None) for key in keys]
            items += [(project, key, view) for key, view in found]
            if not sample_size:
                self._verify_items(endpoint, items, out)
                continue
            for item in items:  # reservoir sampling over the whole scan
                seen += 1
                if len(sample) < sample_size:
                    sample.append((endpoint, item))
                elif (slot := rng.randrange(seen)) < sample_size:
                    sample[slot] = (endpoint, item)
        for endpoint, items in by_endpoint(sample):
            for i in range(0, len(items), options.batch):
                self._verify_items(endpoint, items[i : i + options.batch], out)
        return out

    def _verify_items(
        self, endpoint: Endpoint, items: Sequence[tuple[str, bytes, str | None]], out: Report
    ) -> None:
        """Verify (project, key, None) hashes and (project, key, view) records of one master."""
        for project in dict.fromkeys(project for project, _, _ in items):
            keys = [key for p, key, view in items if p == project and view is None]
            found = [(key, view) for p, key, view in items if p == project and view is not None]
            if keys:
                self._verify_hashes(endpoint, project, keys, out)
            if found:
                self._verify_records(endpoint, project, found, out)

    def _verify_hashes(
        self, endpoint: Endpoint, project: str, keys: Sequence[bytes], out: Report
    ) -> None:
        conversion = self.options.conversion
        if conversion is None and self.options.same_server:
            return
        with self.source.errors():
            hashes = self.read_source(endpoint, keys)
        if conversion is not None and conversion.to_layout == "compact":
            converted = conversion.to_records(keys, hashes, Report())
            conversion.verify_records(self.target, project, converted, out)
        elif not self.options.same_server:
            plans = batch.plans(keys, hashes, self.options.owners, Report())
            batch.verify_plans(plans, self.target, out)

    def _verify_records(
        self, endpoint: Endpoint, project: str, found: Sequence[tuple[bytes, str]], out: Report
    ) -> None:
        conversion = self.options.conversion
        if conversion is not None and conversion.to_layout == "feast":
            with self.source.errors():
                replies = records.read_records(endpoint, [key for key, _ in found])
            plans = conversion.to_hashes(self.source, project, found, replies, Report())
            batch.verify_plans(plans, self.target, out)
        elif not self.options.same_server:
            with self.source.errors():
                records.verify_copies(endpoint, found, self.target, out)
