"""``feast-dragonfly stats``: what a server holds, per Feast project and feature view.

One pass over the keyspace (SCAN on every master, ``HKEYS`` + ``PTTL`` per key, pipelined)
counts entity keys and fields per view and collects remaining TTLs; ``MEMORY USAGE`` of a
random sample of keys (reservoir sampling) gives the memory estimate, shared among a key's
views in proportion to their fields. With the feature repo (``-C``), fields of hashes holding
several views are attributed through the registry, and views stored on the server but
missing from the registry — leftovers of deleted views — are listed.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from feast_dragonfly._admin.registry_views import FieldOwners
from feast_dragonfly._admin.scan import (
    by_endpoint,
    memory_usage,
    project_of,
    project_pattern,
    scan_all,
)
from feast_dragonfly._protocol import wire
from feast_dragonfly._protocol.deployment import Deployment, Endpoint
from feast_dragonfly._protocol.keys import TIMESTAMP_PREFIX

#: Fields of a multi-view hash that no registry view claims (no -C given, or fields of a
#: deleted feature, or of several deleted views in one hash) are counted here.
UNATTRIBUTED = "(unattributed fields of multi-view hashes)"
PERCENTILES = (50, 90, 99)


@dataclass
class ViewStats:
    keys: int = 0
    fields: int = 0
    memory_share: float = 0.0  # sampled bytes attributed to this view
    ttls_ms: list[int] = field(default_factory=list)
    no_ttl: int = 0


@dataclass
class ProjectStats:
    keys: int = 0
    not_hash: int = 0
    no_ttl: int = 0
    ttls_ms: list[int] = field(default_factory=list)
    views: dict[str, ViewStats] = field(default_factory=dict)
    sample: list[tuple[Endpoint, bytes, dict[str, int]]] = field(default_factory=list)
    sampled_bytes: int = 0
    sampled_keys: int = 0

    def view(self, name: str) -> ViewStats:
        return self.views.setdefault(name, ViewStats())


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


def collect(
    deployment: Deployment,
    projects: Sequence[str] | None,
    owners: FieldOwners | None,
    *,
    sample_size: int = 1000,
    page: int = 1000,
) -> dict[str, ProjectStats]:
    """Scan the deployment; ``projects`` None: every project found on it."""
    wanted = {p.encode(): p for p in projects} if projects is not None else None
    patterns = [project_pattern(p) for p in projects] if projects is not None else [b"*"]
    out: dict[str, ProjectStats] = {p: ProjectStats() for p in projects or ()}
    rng = random.Random(0)
    for endpoint in deployment.endpoints:
        for pattern in patterns:
            for keys in scan_all(endpoint, pattern, page):
                with deployment.errors():
                    _page(endpoint, keys, wanted, owners, out, rng, sample_size)
    for stats in out.values():
        _measure_sample(stats, deployment)
    return out


def _page(
    endpoint: Endpoint,
    keys: Iterable[bytes],
    wanted: Mapping[bytes, str] | None,
    owners: FieldOwners | None,
    out: dict[str, ProjectStats],
    rng: random.Random,
    sample_size: int,
) -> None:
    mine: list[tuple[bytes, str]] = []
    for key in keys:
        suffix = project_of(key)
        if suffix is None:
            continue
        if wanted is not None:
            if suffix not in wanted:
                continue
            mine.append((key, wanted[suffix]))
        else:
            try:
                mine.append((key, suffix.decode("utf-8")))
            except UnicodeDecodeError:
                continue
    if not mine:
        return
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
        ttl = pttl if isinstance(pttl, int) and pttl >= 0 else None
        if ttl is None:
            stats.no_ttl += 1
        else:
            stats.ttls_ms.append(ttl)
        for view, count in per_view.items():
            view_stats = stats.view(view)
            view_stats.fields += count
            if view != UNATTRIBUTED:
                view_stats.keys += 1
                if ttl is None:
                    view_stats.no_ttl += 1
                else:
                    view_stats.ttls_ms.append(ttl)
        stats.sampled_keys += 1  # keys seen so far, for the reservoir
        if len(stats.sample) < sample_size:
            stats.sample.append((endpoint, key, per_view))
        elif (slot := rng.randrange(stats.sampled_keys)) < sample_size:
            stats.sample[slot] = (endpoint, key, per_view)


def _measure_sample(stats: ProjectStats, deployment: Deployment) -> None:
    """MEMORY USAGE of the sampled keys, shared among each key's views by field count."""
    measured = 0
    sample = ((endpoint, (key, per_view)) for endpoint, key, per_view in stats.sample)
    for endpoint, items in by_endpoint(sample):
        with deployment.errors():
            sizes = memory_usage(endpoint, [key for key, _ in items])
        for (_, per_view), size in zip(items, sizes):
            if size is None:
                continue
            measured += 1
            stats.sampled_bytes += size
            total_fields = sum(per_view.values()) or 1
            for view, count in per_view.items():
                stats.view(view).memory_share += size * count / total_fields
    stats.sampled_keys = measured
    stats.sample = []


# --------------------------------------------------------------------------- output


def _percentile(sorted_values: Sequence[int], percent: float) -> int:
    index = min(len(sorted_values) - 1, int(round(percent / 100 * (len(sorted_values) - 1))))
    return sorted_values[index]


def ttl_summary(ttls_ms: Sequence[int], no_ttl: int) -> dict[str, Any]:
    """Keys without expiry, and percentiles of the others' remaining TTL in seconds."""
    values = sorted(ttls_ms)
    out: dict[str, Any] = {"no_ttl": no_ttl, "with_ttl": len(values)}
    if values:
        out["min_s"] = values[0] / 1000
        for percent in PERCENTILES:
            out[f"p{percent}_s"] = _percentile(values, percent) / 1000
        out["max_s"] = values[-1] / 1000
    return out


def as_json(
    stats: Mapping[str, ProjectStats], server: str, registries: Mapping[str, Iterable[str]]
) -> dict[str, Any]:
    """The report as plain data (what ``--json`` prints); ``registries``: project -> the
    views its registry has (projects without one get no leftover check)."""
    projects: dict[str, Any] = {}
    for project, s in sorted(stats.items()):
        known = set(registries[project]) if project in registries else None
        scale = s.keys / s.sampled_keys if s.sampled_keys else 0.0
        views = {}
        for name, v in sorted(s.views.items()):
            views[name] = {
                "keys": v.keys,
                "fields": v.fields,
                "memory_bytes": round(v.memory_share * scale),
                "ttl": ttl_summary(v.ttls_ms, v.no_ttl),
                "in_registry": None if known is None or name == UNATTRIBUTED else name in known,
            }
        projects[project] = {
            "keys": s.keys,
            "not_hash": s.not_hash,
            "memory_bytes": round(s.sampled_bytes * scale),
            "memory_sampled_keys": s.sampled_keys,
            "ttl": ttl_summary(s.ttls_ms, s.no_ttl),
            "views": views,
            "leftover_views": sorted(
                n for n in views if known is not None and n != UNATTRIBUTED and n not in known
            ),
        }
    return {"server": server, "projects": projects}


def _size(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:,.0f} {unit}" if unit == "B" else f"{count:,.1f} {unit}"
        count /= 1024
    raise AssertionError  # pragma: no cover


def _ttl_text(ttl: Mapping[str, Any]) -> str:
    if not ttl["with_ttl"]:
        return "none expire"
    return (
        f"{ttl['no_ttl']:,} never expire; remaining p50 {ttl['p50_s']:,.0f} s, "
        f"p90 {ttl['p90_s']:,.0f} s, p99 {ttl['p99_s']:,.0f} s, max {ttl['max_s']:,.0f} s"
    )


def as_table(report: Mapping[str, Any]) -> str:
    """The report as text for a terminal."""
    lines = [f"server {report['server']}"]
    if not report["projects"]:
        lines.append("no Feast entity keys found")
    for project, p in report["projects"].items():
        lines.append("")
        lines.append(
            f"project {project}: {p['keys']:,} entity keys, ~{_size(p['memory_bytes'])} "
            f"(MEMORY USAGE of {p['memory_sampled_keys']:,} sampled keys)"
            + (f", {p['not_hash']:,} keys that are not hashes" if p["not_hash"] else "")
        )
        lines.append(f"  TTL: {_ttl_text(p['ttl'])}")
        if not p["views"]:
            continue
        width = max(len("feature view"), *(len(n) + 2 for n in p["views"]))
        lines.append(
            f"  {'feature view':<{width}} {'keys':>10} {'fields':>12} {'~memory':>12} "
            f"{'no TTL':>10} {'TTL p50':>10} {'TTL p99':>10}"
        )
        for name, v in p["views"].items():
            mark = " *" if name in p["leftover_views"] else ""
            ttl = v["ttl"]
            p50 = f"{ttl['p50_s']:,.0f} s" if ttl["with_ttl"] else "-"
            p99 = f"{ttl['p99_s']:,.0f} s" if ttl["with_ttl"] else "-"
            lines.append(
                f"  {name + mark:<{width}} {v['keys']:>10,} {v['fields']:>12,} "
                f"{_size(v['memory_bytes']):>12} {ttl['no_ttl']:>10,} {p50:>10} {p99:>10}"
            )
        if p["leftover_views"]:
            lines.append(
                "  * not in the registry: a leftover of a deleted feature view (its fields "
                "stay until the keys expire or are rewritten)"
            )
    return "\n".join(lines)
