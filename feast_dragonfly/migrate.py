"""``feast-dragonfly migrate``: copy Feast projects between Redis-protocol servers, merging.

The source is only read (SCAN, HGETALL, PTTL). Each SCAN page of a project's keys becomes a
batch: its hashes are read from the source master that holds them and merged into the target
per feature view with Feast's event-time rule (``migrate_merge.lua``: a view whose stored time
is newer or equal is kept), keeping each key's remaining TTL. Batches run on ``concurrency``
threads, each with its own connections; they are committed to the checkpoint in scan order,
so ``--resume`` continues exactly after the last batch the target confirmed.
"""

from __future__ import annotations

import hashlib
import random
import sys
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from feast_dragonfly import _migrate_checkpoint, _migrate_merge, _migrate_verify, _script
from feast_dragonfly._layout import belongs_to_project, describe_key
from feast_dragonfly._migrate_merge import KeyPlan
from feast_dragonfly._migrate_scan import (
    Deployment,
    Endpoint,
    ScriptRefused,
    memory_usage,
    project_pattern,
    read_hashes,
    scan_page,
)
from feast_dragonfly._registry_views import FieldOwners
from feast_dragonfly.errors import DragonflyConnectionError, DragonflyStoreError

#: Keys per merge call on one server (a cluster: one, since a script's keys share a slot).
KEYS_PER_CALL = 32
#: Problem keys named in the summary (the counters count them all).
MAX_REPORTED = 10


class MigrationError(DragonflyStoreError):
    """The migration stopped; the message says why and what to do next."""


@dataclass(frozen=True)
class MigrateOptions:
    projects: tuple[str, ...]
    checkpoint: Path
    resume: bool = False
    dry_run: bool = False
    verify_sample: int | None = None  # None: no verification; 0: every key
    concurrency: int = 4
    batch: int = 500
    owners: FieldOwners | None = None  # feature field -> view, from a registry


@dataclass
class Report:
    """What a run did. Counters add up over resumed runs (they live in the checkpoint)."""

    counters: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    verify: _migrate_verify.Verdict | None = None
    verified_keys: int = 0
    mismatched: list[str] = field(default_factory=list)

    def add(self, name: str, amount: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + amount

    def note(self, problem: str) -> None:
        if len(self.problems) < MAX_REPORTED:
            self.problems.append(problem)


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


# --------------------------------------------------------------------------- one batch


def _plans(
    keys: Sequence[bytes], hashes: Sequence[tuple[Any, Any]], options: MigrateOptions, out: Report
) -> list[KeyPlan]:
    """The merge plans of one batch's source hashes; keys that cannot be merged are counted."""
    plans = []
    for key, (flat, pttl) in zip(keys, hashes):
        if isinstance(flat, Exception):
            out.add("skipped_not_hash")
            out.note(f"skipped {describe_key(key)}: the source key is not a hash ({flat})")
            continue
        if not flat:
            out.add("skipped_vanished")  # expired or deleted since the SCAN
            continue
        groups, whole_key = _migrate_merge.view_groups(flat, options.owners)
        if not groups:
            out.add("skipped_no_views")
            out.note(f"skipped {describe_key(key)}: the hash has no _ts:<view> field")
            continue
        if whole_key:
            out.add("whole_key_merges")
        plans.append(KeyPlan(key, groups, whole_key, int(pttl) if isinstance(pttl, int) else -1))
    return plans


def _fail_on(reply: Any, target: Deployment) -> None:
    """Errors that stop the whole migration (the checkpoint still holds every confirmed
    batch): out of memory, and anything that is not about one key."""
    text = target.scrub(str(reply))
    if "OOM" in text or "maxmemory" in text:
        raise MigrationError(
            f"the target {target.address} is out of memory ({text}); free memory there (or "
            "raise its maxmemory), then run the same command with --resume to continue"
        )
    raise MigrationError(f"the target {target.address} refused a merge: {text}")


def _merge(plans: Sequence[KeyPlan], target: Deployment, per_call: int, out: Report) -> None:
    by_endpoint: dict[str, tuple[Endpoint, list[KeyPlan]]] = {}
    for plan in plans:
        endpoint = target.endpoint_for(plan.key)
        by_endpoint.setdefault(endpoint.name, (endpoint, []))[1].append(plan)
    for endpoint, mine in by_endpoint.values():
        calls = [mine[i : i + per_call] for i in range(0, len(mine), per_call)]
        replies = endpoint.exchange([_migrate_merge.pack_call(c) for c in calls], len(calls))
        if any(_script.is_noscript(r) for r in replies):  # a restarted target: load and resend
            endpoint.exchange([_migrate_merge.LOAD_COMMAND], 1)
            replies = endpoint.exchange([_migrate_merge.pack_call(c) for c in calls], len(calls))
        for call, reply in zip(calls, replies):
            if isinstance(reply, Exception):
                _fail_on(reply, target)
            for plan, (written, kept, status) in zip(call, _migrate_merge.parse_reply(reply)):
                _count_merge(plan, written, kept, status, out)


def _count_merge(plan: KeyPlan, written: int, kept: int, status: int, out: Report) -> None:
    if status == _migrate_merge.NOT_A_HASH:
        out.add("errors")
        out.note(f"skipped {describe_key(plan.key)}: the target key is not a hash (WRONGTYPE)")
        return
    if status == _migrate_merge.MALFORMED_TIMESTAMP:
        out.add("errors")
        out.note(f"skipped {describe_key(plan.key)}: a _ts field is not a protobuf Timestamp")
        return
    out.add("keys_copied" if written else "keys_kept")
    out.add("views_written", written)
    out.add("views_kept_newer", kept)


def _dry_run_batch(endpoint: Endpoint, keys: Sequence[bytes], out: Report) -> None:
    sizes = memory_usage(endpoint, keys)
    out.add("keys_found", len(keys))
    out.add("bytes", sum(size or 0 for size in sizes))


# --------------------------------------------------------------------------- the run


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
        self.per_call = 1 if target.settings.redis_type == "redis_cluster" else KEYS_PER_CALL
        # A script's keys must share a slot: on a cluster source, plain reads
        self.scripted_reads = source.settings.redis_type != "redis_cluster"

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
                _dry_run_batch(endpoint, keys, out)
            return out
        with self.source.errors():
            hashes = self._read(endpoint, keys)
        out.add("keys_found", len(keys))
        plans = _plans(keys, hashes, self.options, out)
        with self.target.errors():
            _merge(plans, self.target, self.per_call, out)
        return out

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
                    _fail_on(reply, self.target)
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
                checkpoint.save()
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
        with ThreadPoolExecutor(options.concurrency, "feast-dragonfly-migrate") as pool:
            try:
                for stream, endpoint, project, cursor, keys in self.pages(checkpoint):
                    job = pool.submit(self._batch, endpoint, project, keys)
                    pending.append((stream, cursor, job))
                    while len(pending) > 2 * options.concurrency:
                        commit_oldest()
                while pending:
                    commit_oldest()
            except BaseException:
                for _, _, future in pending:
                    future.cancel()
                raise

    # ------------------------------------------------------------------ verification

    def verify(self) -> Report:
        """Compare migrated keys with the source (all, or a random sample of N)."""
        options = self.options
        out = Report(verify=_migrate_verify.Verdict())
        sample_size = options.verify_sample or 0
        sample: list[tuple[Endpoint, bytes]] = []
        seen = 0
        rng = random.Random()
        for _, endpoint, _, _, keys in self.pages(None):
            if not sample_size:
                self._verify_keys(endpoint, keys, out)
                continue
            for key in keys:  # reservoir sampling over the whole scan
                seen += 1
                if len(sample) < sample_size:
                    sample.append((endpoint, key))
                elif (slot := rng.randrange(seen)) < sample_size:
                    sample[slot] = (endpoint, key)
        by_endpoint: dict[str, tuple[Endpoint, list[bytes]]] = {}
        for endpoint, key in sample:
            by_endpoint.setdefault(endpoint.name, (endpoint, []))[1].append(key)
        for endpoint, keys in by_endpoint.values():
            for i in range(0, len(keys), options.batch):
                self._verify_keys(endpoint, keys[i : i + options.batch], out)
        return out

    def _verify_keys(self, endpoint: Endpoint, keys: Sequence[bytes], out: Report) -> None:
        if not keys:
            return
        with self.source.errors():
            hashes = self._read(endpoint, keys)
        plans = _plans(keys, hashes, self.options, Report())
        by_target: dict[str, tuple[Endpoint, list[KeyPlan]]] = {}
        for plan in plans:
            target = self.target.endpoint_for(plan.key)
            by_target.setdefault(target.name, (target, []))[1].append(plan)
        assert out.verify is not None
        for target, mine in by_target.values():
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


def empty_projects(report: Report, projects: Sequence[str]) -> list[str]:
    """The projects of which the source holds no key (a misspelt name, most likely)."""
    return [p for p in projects if not report.counters.get(f"project:{p}")]


def summary(report: Report, dry_run: bool) -> str:
    """The end-of-run summary, one line per counter that matters."""
    c = report.counters
    if dry_run:
        return (
            f"dry run: {c.get('keys_found', 0):,} keys, {c.get('bytes', 0):,} bytes "
            "(MEMORY USAGE) would be migrated; nothing was written"
        )
    lines = [
        f"keys found:              {c.get('keys_found', 0):,}",
        f"keys copied:             {c.get('keys_copied', 0):,} "
        f"({c.get('views_written', 0):,} feature-view rows written)",
        f"views kept (target newer or equal): {c.get('views_kept_newer', 0):,} "
        f"(in {c.get('keys_kept', 0):,} keys left entirely as they were)",
        "skipped:                 "
        f"{c.get('skipped_not_hash', 0):,} not a hash (WRONGTYPE), "
        f"{c.get('skipped_no_views', 0):,} without _ts fields, "
        f"{c.get('skipped_vanished', 0):,} expired or deleted meanwhile",
        f"errors:                  {c.get('errors', 0):,}",
    ]
    if c.get("whole_key_merges"):
        lines.append(
            f"warning: {c['whole_key_merges']:,} keys hold several feature views whose fields "
            "could not be told apart; each was merged as a whole (its newest event time "
            "decided for all its views). Give the feature repo with -C to merge per view."
        )
    lines.extend(f"  {p}" for p in report.problems)
    return "\n".join(lines)
