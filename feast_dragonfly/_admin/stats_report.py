"""What ``feast-dragonfly stats`` prints: the collected numbers (``stats``) as JSON or a table,
and the warnings they call for.

Per project and feature view, in each layout it is stored in: keys (hashes holding the view,
or its records), feature values, memory (``MEMORY USAGE`` of a sample, scaled), bytes per
feature value, and remaining TTLs. On Dragonfly, a view whose hashes are over its listpack
limits gets a warning naming the flag that fixes it, or ``layout: compact``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from feast_dragonfly._admin.stats import Limits, ProjectStats, ViewStats

#: Fields of a multi-view hash that no registry view claims (no -C given, or fields of a
#: deleted feature, or of several deleted views in one hash) are counted here.
UNATTRIBUTED = "(unattributed fields of multi-view hashes)"
PERCENTILES = (50, 90, 99)


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


def _power_of_two_above(size: int, value: int = 1024) -> int:
    """The smallest power of two, from ``value`` up, that holds ``size``."""
    while value < size:
        value *= 2
    return value


def _view(
    name: str, v: ViewStats, layout: str, scale: float, known: set[str] | None
) -> dict[str, Any]:
    out: dict[str, Any] = {"layout": layout, "keys": v.keys}
    if layout == "feast":
        out["fields"] = v.fields
    out["values"] = v.values
    out["memory_bytes"] = round(v.memory_share * scale)
    out["bytes_per_value"] = (
        round(v.value_bytes / v.sampled_values, 1) if v.sampled_values else None
    )
    out["ttl"] = ttl_summary(v.ttls_ms, v.no_ttl)
    out["in_registry"] = None if known is None or name == UNATTRIBUTED else name in known
    if v.listpack_sampled:
        out["listpack"] = {
            "sampled_hashes": v.listpack_sampled,
            "hash_tables": v.listpack_over,
            "measured": v.listpack_measured,  # of those, told by DEBUG OBJECT (else estimated)
            "largest_bytes": v.listpack_largest,
            "longest_field_or_value": v.listpack_longest,
        }
    return out


def listpack_warning(views: Mapping[str, Mapping[str, Any]], limits: Limits) -> str | None:
    """The warning for a project whose Feast-layout hashes Dragonfly keeps as hash tables
    rather than listpacks (one for all its views: views sharing a hash share its fate), or
    None. Names each view, its measured bytes per value, and what fixes it."""
    over = {n: v for n, v in views.items() if v.get("listpack") and v["listpack"]["hash_tables"]}
    if not over:
        return None
    largest = max(v["listpack"]["largest_bytes"] for v in over.values())
    longest = max(v["listpack"]["longest_field_or_value"] for v in over.values())
    default = "" if limits.reported else " by default"
    reasons, flags = [], []
    if largest > limits.max_bytes:
        reasons.append(
            f"hashes of up to ~{largest:,} bytes, over listpack_max_bytes "
            f"({limits.max_bytes:,}{default})"
        )
        flags.append(f"--listpack_max_bytes={_power_of_two_above(largest)}")
    if longest > limits.max_field_len:
        reasons.append(
            f"values of up to {longest:,} bytes, over listpack_max_field_len "
            f"({limits.max_field_len:,}{default})"
        )
        flags.append(f"--listpack_max_field_len={_power_of_two_above(longest, 64)}")
    if not flags:  # the server runs with lower limits than the defaults
        reasons.append(f"hashes of up to ~{largest:,} bytes")
        flags.append(f"--listpack_max_bytes={_power_of_two_above(largest)}")
    told = " (DEBUG OBJECT)" if any(v["listpack"]["measured"] for v in over.values()) else ""
    listed = []
    for name, view in over.items():
        lp, per_value = view["listpack"], view["bytes_per_value"]
        cost = f", {per_value:,.1f} bytes per feature value" if per_value else ""
        listed.append(f"{name} ({lp['hash_tables']:,} of {lp['sampled_hashes']:,}{cost})")
    return (
        f"warning: Dragonfly keeps sampled hashes of {', '.join(listed)} as hash tables{told}, "
        f"not listpacks: {'; '.join(reasons)}. A hash table takes roughly 2-3x the memory of a "
        f"listpack. Start Dragonfly with {' '.join(flags)} (a listpack is scanned on every "
        "read: check read latency), or store the project with `layout: compact` "
        "(feast-dragonfly migrate --to-layout compact)."
    )


def as_json(
    stats: Mapping[str, ProjectStats],
    server: str,
    registries: Mapping[str, Iterable[str]],
    limits: Limits | None = None,
) -> dict[str, Any]:
    """The report as plain data (what ``--json`` prints); ``registries``: project -> the
    views its registry has (projects without one get no leftover check)."""
    projects: dict[str, Any] = {}
    for project, s in sorted(stats.items()):
        known = set(registries[project]) if project in registries else None
        hashes, found = s.sample, s.record_sample
        hash_scale = s.keys / hashes.measured if hashes.measured else 0.0
        record_scale = s.records / found.measured if found.measured else 0.0
        views = {n: _view(n, v, "feast", hash_scale, known) for n, v in sorted(s.views.items())}
        compact = {
            n: _view(n, v, "compact", record_scale, known) for n, v in sorted(s.compact.items())
        }
        warning = listpack_warning(views, limits) if limits is not None else None
        stored = set(views) | set(compact)
        projects[project] = {
            "keys": s.keys,
            "records": s.records,
            "not_hash": s.not_hash,
            "unreadable_records": s.unreadable_records,
            "memory_bytes": round(
                hashes.measured_bytes * hash_scale + found.measured_bytes * record_scale
            ),
            "memory_sampled_keys": hashes.measured + found.measured,
            "ttl": ttl_summary(s.ttls_ms, s.no_ttl),
            "views": views,
            "compact_views": compact,
            "leftover_views": sorted(
                n for n in stored if known is not None and n != UNATTRIBUTED and n not in known
            ),
            "warnings": [warning] if warning else [],
        }
    listpack = None
    if limits is not None:
        listpack = {
            "max_bytes": limits.max_bytes,
            "max_field_len": limits.max_field_len,
            "reported_by_server": limits.reported,
        }
    return {"server": server, "dragonfly_listpack": listpack, "projects": projects}


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


def _headline(project: str, p: Mapping[str, Any]) -> str:
    records = f", {p['records']:,} compact records" if p["records"] else ""
    return (
        f"project {project}: {p['keys']:,} entity keys{records}, ~{_size(p['memory_bytes'])} "
        f"(MEMORY USAGE of {p['memory_sampled_keys']:,} sampled keys)"
        + (f", {p['not_hash']:,} keys that are not hashes" if p["not_hash"] else "")
        + (f", {p['unreadable_records']:,} unreadable records" if p["unreadable_records"] else "")
    )


def as_table(report: Mapping[str, Any]) -> str:
    """The report as text for a terminal."""
    lines = [f"server {report['server']}"]
    if not report["projects"]:
        lines.append("no Feast entity keys found")
    for project, p in report["projects"].items():
        lines += ["", _headline(project, p), f"  TTL: {_ttl_text(p['ttl'])}"]
        rows = [*p["views"].items(), *p["compact_views"].items()]
        if not rows:
            continue
        width = max(len("feature view"), *(len(n) + 2 for n, _ in rows))
        lines.append(
            f"  {'feature view':<{width}} {'layout':<8} {'keys':>10} {'values':>12} "
            f"{'~memory':>12} {'B/value':>8} {'no TTL':>10} {'TTL p50':>10} {'TTL p99':>10}"
        )
        for name, v in rows:
            mark = " *" if name in p["leftover_views"] else ""
            ttl = v["ttl"]
            p50 = f"{ttl['p50_s']:,.0f} s" if ttl["with_ttl"] else "-"
            p99 = f"{ttl['p99_s']:,.0f} s" if ttl["with_ttl"] else "-"
            per_value = f"{v['bytes_per_value']:,.1f}" if v["bytes_per_value"] else "-"
            lines.append(
                f"  {name + mark:<{width}} {v['layout']:<8} {v['keys']:>10,} {v['values']:>12,} "
                f"{_size(v['memory_bytes']):>12} {per_value:>8} {ttl['no_ttl']:>10,} "
                f"{p50:>10} {p99:>10}"
            )
        if p["leftover_views"]:
            lines.append(
                "  * not in the registry: a leftover of a deleted feature view (its data "
                "stays until the keys expire or are rewritten)"
            )
        lines += [f"  {warning}" for warning in p["warnings"]]
    return "\n".join(lines)
