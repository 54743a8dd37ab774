"""``feast-dragonfly stats``: what a server holds, per Feast project and feature view, in each
layout.

One pass over the keyspace (SCAN on every master) finds both layouts: entity hashes
(``HKEYS`` + ``PTTL`` per key, pipelined) count keys and fields per view; compact records
(``GETRANGE`` of the header + ``PTTL``) count records, and their feature values through the
schema each names (the project's schema directory). ``MEMORY USAGE`` of a random sample of
each kind (reservoir sampling) gives the memory estimate — a hash's shared among its views in
proportion to their fields — and the bytes each feature value costs. On Dragonfly the sampled
hashes are also sized as listpacks: a hash over ``listpack_max_bytes`` becomes a hash table,
and the report says so (``stats_report``). With the feature repo (``-C``), fields of hashes
holding several views are attributed through the registry, and views stored on the server but
missing from the registry — leftovers of deleted views — are listed.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from feast_dragonfly._admin import records
from feast_dragonfly._admin.registry_views import FieldOwners
from feast_dragonfly._admin.scan import (
    by_endpoint,
    memory_usage,
    project_and_records_pattern,
    project_of,
    scan_all,
)
from feast_dragonfly._admin.stats_report import UNATTRIBUTED
from feast_dragonfly._protocol import record_format, wire
from feast_dragonfly._protocol.deployment import Deployment, Endpoint
from feast_dragonfly._protocol.keys import COMPACT_SEPARATOR, TIMESTAMP_PREFIX

#: Dragonfly's defaults for a hash kept as a listpack (``--listpack_max_bytes``,
#: ``--listpack_max_field_len``), used when the server does not report its own.
LISTPACK_MAX_BYTES = 1024
LISTPACK_MAX_FIELD_LEN = 64


@dataclass
class ViewStats:
    keys: int = 0  # hashes holding the view, or its records
    fields: int = 0  # hash fields (``_ts`` included); 0 for records
    values: int = 0  # feature values (of records whose schema the directory holds)
    memory_share: float = 0.0  # sampled bytes attributed to this view
    sampled_values: int = 0  # feature values of the sampled keys whose bytes are known
    value_bytes: float = 0.0  # the sampled bytes of those keys
    ttls_ms: list[int] = field(default_factory=list)
    no_ttl: int = 0
    #: Dragonfly: sampled hashes holding the view, those kept as hash tables (as ``DEBUG
    #: OBJECT`` says, else by their size against the limits), how many of those ``DEBUG
    #: OBJECT`` told, and the largest listpack size / longest field or value among them.
    listpack_sampled: int = 0
    listpack_over: int = 0
    listpack_measured: int = 0
    listpack_largest: int = 0
    listpack_longest: int = 0

    def count_ttl(self, ttl: int | None) -> None:
        if ttl is None:
            self.no_ttl += 1
        else:
            self.ttls_ms.append(ttl)


@dataclass
class Sample:
    """A reservoir of keys of one kind, and what measuring it gave."""

    items: list[tuple[Endpoint, bytes, Any]] = field(default_factory=list)
    seen: int = 0
    measured: int = 0
    measured_bytes: int = 0

    def offer(self, item: tuple[Endpoint, bytes, Any], size: int, rng: random.Random) -> None:
        self.seen += 1
        if len(self.items) < size:
            self.items.append(item)
        elif (slot := rng.randrange(self.seen)) < size:
            self.items[slot] = item


@dataclass
class ProjectStats:
    keys: int = 0
    not_hash: int = 0
    no_ttl: int = 0
    ttls_ms: list[int] = field(default_factory=list)
    views: dict[str, ViewStats] = field(default_factory=dict)
    sample: Sample = field(default_factory=Sample)
    records: int = 0
    unreadable_records: int = 0
    compact: dict[str, ViewStats] = field(default_factory=dict)
    record_sample: Sample = field(default_factory=Sample)
    #: (view, schema id) -> number of features, from the project's schema directory.
    schema_sizes: dict[tuple[str, int], int] | None = None
    directory_reread: bool = False

    def view(self, name: str) -> ViewStats:
        return self.views.setdefault(name, ViewStats())

    def compact_view(self, name: str) -> ViewStats:
        return self.compact.setdefault(name, ViewStats())

    def count_ttl(self, ttl: int | None) -> None:
        if ttl is None:
            self.no_ttl += 1
        else:
            self.ttls_ms.append(ttl)


def _fields_per_view(names: Sequence[bytes], owners: FieldOwners | None) -> dict[str, int]:
    """view name -> number of its fields (``_ts`` included) in one hash."""
    views = [n[len(TIMESTAMP_PREFIX) :] for n in names if n.startswith(TIMESTAMP_PREFIX)]
    counts = {v.decode(errors="replace"): 1 for v in views}
    features = [n for n in names if not n.startswith(TIMESTAMP_PREFIX)]
    if len(views) == 1:
        counts[views[0].decode(errors="replace")] += len(features)
        return counts
    for name in features:
        owner = owners.owner(name, views) if owners is not None else None
        view = owner.decode(errors="replace") if owner is not None else UNATTRIBUTED
        counts[view] = counts.get(view, 0) + 1
    return counts


def _values(view: str, fields: int) -> int:
    """Feature values among a view's fields in one hash (its ``_ts`` is not one)."""
    return fields if view == UNATTRIBUTED else fields - 1


@dataclass(frozen=True)
class Limits:
    """Dragonfly's listpack limits (None: not Dragonfly, nothing to check)."""

    max_bytes: int
    max_field_len: int
    reported: bool  # False: the server does not report them; its defaults are assumed


def collect(
    deployment: Deployment,
    projects: Sequence[str] | None,
    owners: FieldOwners | None,
    *,
    sample_size: int = 1000,
    page: int = 1000,
) -> tuple[dict[str, ProjectStats], Limits | None]:
    """Scan the deployment; ``projects`` None: every project found on it. Also returns
    Dragonfly's listpack limits (None on other servers)."""
    wanted = {p.encode(): p for p in projects} if projects is not None else None
    patterns = (
        [project_and_records_pattern(p) for p in projects] if projects is not None else [b"*"]
    )
    out: dict[str, ProjectStats] = {p: ProjectStats() for p in projects or ()}
    rng = random.Random(0)
    for endpoint in deployment.endpoints:
        for pattern in patterns:
            for keys in scan_all(endpoint, pattern, page):
                with deployment.errors():
                    _page(deployment, endpoint, keys, wanted, owners, out, rng, sample_size)
    limits = listpack_limits(deployment) if deployment.dragonfly else None
    for stats in out.values():
        with deployment.errors():
            _measure_hashes(stats, deployment, limits)
            _measure_records(stats, deployment)
    return out, limits


def projects_on(deployment: Deployment, page: int = 1000) -> list[str]:
    """The names of the projects with keys on the deployment (keys only: one SCAN, nothing
    read), sorted; for the note on a project asked for that has none."""
    found: set[str] = set()
    for endpoint in deployment.endpoints:
        for keys in scan_all(endpoint, b"*", page):
            found.update(where[0] for key in keys if (where := _classify(key, None)))
    return sorted(found)


def _classify(key: bytes, wanted: Mapping[bytes, str] | None) -> tuple[str, str | None] | None:
    """(project, None) for an entity hash key, (project, view) for a compact record's key,
    None for any other key (or a project not asked for)."""
    suffix = project_of(key)
    if suffix is None:
        return None
    project, separator, view = suffix.partition(COMPACT_SEPARATOR)
    if separator and not view:
        return None
    if wanted is not None:
        name = wanted.get(project)
    else:
        try:
            name = project.decode("utf-8")
        except UnicodeDecodeError:
            return None
    if name is None:
        return None
    return name, view.decode("utf-8", errors="replace") if separator else None


def _page(
    deployment: Deployment,
    endpoint: Endpoint,
    keys: Iterable[bytes],
    wanted: Mapping[bytes, str] | None,
    owners: FieldOwners | None,
    out: dict[str, ProjectStats],
    rng: random.Random,
    sample_size: int,
) -> None:
    hashes: list[tuple[bytes, str]] = []
    found: list[tuple[bytes, str, str]] = []
    for key in keys:
        where = _classify(key, wanted)
        if where is None:
            continue
        project, view = where
        if view is None:
            hashes.append((key, project))
        else:
            found.append((key, project, view))
    if hashes:
        _hashes(endpoint, hashes, owners, out, rng, sample_size)
    if found:
        _records(deployment, endpoint, found, out, rng, sample_size)


def _ttl(pttl: Any) -> int | None:
    return pttl if isinstance(pttl, int) and pttl >= 0 else None


def _hashes(
    endpoint: Endpoint,
    mine: Sequence[tuple[bytes, str]],
    owners: FieldOwners | None,
    out: dict[str, ProjectStats],
    rng: random.Random,
    sample_size: int,
) -> None:
    commands = []
    for key, _ in mine:
        commands.append(wire.command(b"HKEYS", key))
        commands.append(wire.command(b"PTTL", key))
    replies = endpoint.exchange(commands, 2 * len(mine))
    for (key, project), names, pttl in zip(mine, replies[0::2], replies[1::2]):
        stats = out.setdefault(project, ProjectStats())
        if isinstance(names, Exception):
            stats.not_hash += 1
            continue
        if not names:
            continue  # expired since the SCAN
        stats.keys += 1
        per_view = _fields_per_view(list(names), owners)
        ttl = _ttl(pttl)
        stats.count_ttl(ttl)
        for view, count in per_view.items():
            view_stats = stats.view(view)
            view_stats.fields += count
            view_stats.values += _values(view, count)
            if view != UNATTRIBUTED:
                view_stats.keys += 1
                view_stats.count_ttl(ttl)
        stats.sample.offer((endpoint, key, per_view), sample_size, rng)


def _records(
    deployment: Deployment,
    endpoint: Endpoint,
    found: Sequence[tuple[bytes, str, str]],
    out: dict[str, ProjectStats],
    rng: random.Random,
    sample_size: int,
) -> None:
    commands = []
    for key, _, _ in found:
        commands.append(
            wire.command(b"GETRANGE", key, b"0", b"%d" % (record_format.HEADER_SIZE - 1))
        )
        commands.append(wire.command(b"PTTL", key))
    replies = endpoint.exchange(commands, 2 * len(found))
    for (key, project, view), head, pttl in zip(found, replies[0::2], replies[1::2]):
        stats = out.setdefault(project, ProjectStats())
        if head == b"" and pttl == -2:
            continue  # expired since the SCAN
        if records.event_time(head) is None:
            stats.unreadable_records += 1
            continue
        stats.records += 1
        ttl = _ttl(pttl)
        stats.count_ttl(ttl)
        count = _schema_size(deployment, project, stats, view, record_format.schema_id(head))
        view_stats = stats.compact_view(view)
        view_stats.keys += 1
        view_stats.values += count or 0
        view_stats.count_ttl(ttl)
        stats.record_sample.offer((endpoint, key, (view, count)), sample_size, rng)


def _schema_size(
    deployment: Deployment, project: str, stats: ProjectStats, view: str, schema_id: int
) -> int | None:
    """The number of features of a record's schema (None: the directory does not hold it).
    The directory is read once per project, and once more on the first unknown id."""
    if stats.schema_sizes is None or (
        (view, schema_id) not in stats.schema_sizes and not stats.directory_reread
    ):
        stats.directory_reread = stats.schema_sizes is not None
        key = record_format.directory_key(project)
        stored = deployment.endpoint_for(key).client.hgetall(key) or {}
        stats.schema_sizes = {}
        for name, text in stored.items():
            view_name, _, hex_id = name.rpartition(b":")
            try:
                where = (view_name.decode("utf-8"), int(hex_id, 16))
            except (UnicodeDecodeError, ValueError):
                continue
            stats.schema_sizes[where] = text.count(b"|")  # "v1" then "|name:TYPE" each
    return stats.schema_sizes.get((view, schema_id))


def listpack_limits(deployment: Deployment) -> Limits:
    """Dragonfly's ``listpack_max_bytes`` / ``listpack_max_field_len``: asked with ``CONFIG
    GET`` (Dragonfly 1.40 does not report them: its defaults then)."""
    client = deployment.endpoints[0].client
    found: dict[str, int] = {}
    for name in ("listpack_max_bytes", "listpack_max_field_len"):
        try:
            reply = client.config_get(name)
        except Exception:  # noqa: BLE001 - CONFIG refused: the defaults
            continue
        for key, value in (reply or {}).items():
            text = key.decode() if isinstance(key, bytes) else str(key)
            if text == name:
                try:
                    found[name] = int(value)
                except (TypeError, ValueError):
                    pass
    return Limits(
        found.get("listpack_max_bytes", LISTPACK_MAX_BYTES),
        found.get("listpack_max_field_len", LISTPACK_MAX_FIELD_LEN),
        reported="listpack_max_bytes" in found,
    )


def _listpack_entry(length: int) -> int:
    """Bytes of one string element in a listpack: encoding header, data, back-length."""
    size = length + (1 if length < 64 else 2 if length < 4096 else 5)
    return size + (1 if size < 128 else 2 if size < 16384 else 3 if size < 1 << 21 else 5)


def listpack_size(flat: Any) -> tuple[int, int]:
    """(bytes the hash would take as a listpack, its longest field or value) from its HGETALL
    reply. Strings that look like integers take less in a real listpack: an upper bound."""
    total, longest = 7, 0  # 6 bytes of header, 1 end byte
    for name, value in flat.items() if isinstance(flat, dict) else zip(flat[0::2], flat[1::2]):
        total += _listpack_entry(len(name)) + _listpack_entry(len(value))
        longest = max(longest, len(name), len(value))
    return total, longest


def _measure_hashes(stats: ProjectStats, deployment: Deployment, limits: Limits | None) -> None:
    """MEMORY USAGE of the sampled hashes, shared among each key's views by field count; on
    Dragonfly also their encoding (``DEBUG OBJECT``) and listpack size (``HGETALL``)."""
    sample = stats.sample
    grouped = ((endpoint, (key, per_view)) for endpoint, key, per_view in sample.items)
    for endpoint, items in by_endpoint(grouped):
        keys = [key for key, _ in items]
        sizes = memory_usage(endpoint, keys)
        contents: list[Any] = [(None, None)] * len(keys)
        if limits is not None:
            commands = []
            for key in keys:
                commands.append(wire.command(b"HGETALL", key))
                commands.append(wire.command(b"DEBUG", b"OBJECT", key))
            replies = endpoint.exchange(commands, 2 * len(keys))
            contents = list(zip(replies[0::2], replies[1::2]))
        for (_, per_view), size, (flat, described) in zip(items, sizes, contents):
            if size is None:
                continue
            sample.measured += 1
            sample.measured_bytes += size
            total_fields = sum(per_view.values()) or 1
            for view, count in per_view.items():
                share = size * count / total_fields
                view_stats = stats.view(view)
                view_stats.memory_share += share
                view_stats.value_bytes += share
                view_stats.sampled_values += _values(view, count)
            if limits is not None and flat and not isinstance(flat, Exception):
                _count_listpack(stats, per_view, flat, described, limits)
    sample.items = []


def _count_listpack(
    stats: ProjectStats, per_view: Mapping[str, int], flat: Any, described: Any, limits: Limits
) -> None:
    """Whether one sampled hash is a hash table: what ``DEBUG OBJECT`` says (``encoding:``),
    else (refused) its size against the limits (which Dragonfly 1.40 does not report)."""
    size, longest = listpack_size(flat)
    measured = isinstance(described, bytes) and b"encoding:" in described
    if measured:
        over = b"encoding:listpack" not in described
    else:
        over = size > limits.max_bytes or longest > limits.max_field_len
    for view in per_view:
        if view == UNATTRIBUTED:
            continue
        view_stats = stats.view(view)
        view_stats.listpack_sampled += 1
        if over:
            view_stats.listpack_over += 1
            view_stats.listpack_measured += measured
            view_stats.listpack_largest = max(view_stats.listpack_largest, size)
            view_stats.listpack_longest = max(view_stats.listpack_longest, longest)


def _measure_records(stats: ProjectStats, deployment: Deployment) -> None:
    """MEMORY USAGE of the sampled records: each is its view's alone."""
    sample = stats.record_sample
    grouped = ((endpoint, (key, info)) for endpoint, key, info in sample.items)
    for endpoint, items in by_endpoint(grouped):
        sizes = memory_usage(endpoint, [key for key, _ in items])
        for (_, (view, count)), size in zip(items, sizes):
            if size is None:
                continue
            sample.measured += 1
            sample.measured_bytes += size
            view_stats = stats.compact_view(view)
            view_stats.memory_share += size
            if count:
                view_stats.value_bytes += size
                view_stats.sampled_values += count
    sample.items = []
