"""Turn the benchmarks' pytest-benchmark JSON files into tables, a plot and README's headline.

    python benchmarks/report.py .benchmarks/redis.json .benchmarks/dragonfly.json \
        --markdown docs/benchmarks.md --plot docs/benchmarks.png --readme README.md

One JSON file per server (``make bench`` writes them). For every case it prints, per server,
the median and p99 of each implementation (p99 from the raw per-round timings stored in the
JSON), the ratios Feast/ours, glide/ours and floor/ours (above 1: ours is faster) and those of
``layout: compact`` (Feast/compact and ours/compact: above 1, compact is faster); the write
benchmarks' results (``online_write_batch`` and ``feast materialize``) follow each server's
read tables. The console output, for developers, also checks the project's performance
goals (PASS/FAIL); the documents get only the measurements.

``--markdown`` writes the report as a document with the environment; ``--plot`` draws the
Feast/ours speedups as grouped bars (matplotlib); ``--readme`` rewrites the headline table of
a README between its ``<!-- bench:start -->`` and ``<!-- bench:end -->`` lines, every server
side by side, so README quotes no number by hand. Exits 0 whatever the numbers (benchmarks
inform, they do not gate); 1 when there is nothing to report or the README lacks the markers.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

IMPLS = ("feast", "glide", "ours", "ours_compact", "floor")
IMPL_TITLES = {
    "feast": "Feast (redis-py)",
    "glide": "Feast (glide)",
    "ours": "ours",
    "ours_compact": "ours, compact",
    "floor": "raw floor",
}
COMPACT = "ours_compact"

API_ORDER = ("get_online_features", "online_read", "get_online_features_async", "concurrent_async")


# --------------------------------------------------------------------------- loading


@dataclass
class Timing:
    median: float  # seconds per round
    p99: float
    rounds: int
    requests_per_round: int = 1

    @property
    def rps(self) -> float:
        return self.requests_per_round / self.median


@dataclass(frozen=True, order=True)
class Case:
    api_rank: int
    views: int
    entities: int
    features: int
    api: str

    def label(self) -> str:
        shape = f"{self.entities}×{self.features}"
        views = "1 view" if self.views == 1 else f"{self.views} views"
        if self.api == "get_online_features":
            return f"{shape}, {views}"
        if self.api == "online_read":
            return f"online_read {shape}"
        if self.api == "get_online_features_async":
            return f"async {shape}"
        return f"concurrent async {shape}"

    def short(self) -> str:
        shape = f"{self.entities}×{self.features}"
        return {
            "get_online_features": f"{shape}\n{self.views}v",
            "online_read": f"online_read\n{shape}",
            "get_online_features_async": f"async\n{shape}",
            "concurrent_async": f"32×async\n{shape}",
        }[self.api]


@dataclass
class Run:
    """One server's results."""

    path: Path
    meta: dict[str, Any]
    machine: dict[str, Any]
    results: dict[Case, dict[str, Timing]] = field(default_factory=dict)
    # Write benchmarks (test_write_benchmarks.py): (write_api, impl) -> extra_info + median.
    writes: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)

    @property
    def server(self) -> str:
        name = self.meta.get("server_name") or self.meta.get("server_kind") or "server"
        text = f"{name} {self.meta.get('server_version') or ''}".strip()
        if self.meta.get("server_kind") == "dragonfly":
            text += f" (--proactor_threads={self.meta.get('proactor_threads')})"
        return text


def p99(data: list[float]) -> float:
    """Nearest-rank 99th percentile (with fewer than 100 rounds: the slowest round)."""
    ordered = sorted(data)
    return ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)]


def load(path: Path) -> Run:
    doc = json.loads(path.read_text())
    machine = doc.get("machine_info", {})
    run = Run(path, machine.get("feast_dragonfly_bench", {}), machine)
    missing_data = []
    for bench in doc.get("benchmarks", []):
        info = bench.get("extra_info", {})
        if "write_api" in info:
            data = bench["stats"].get("data") or [bench["stats"]["median"]]
            features = re.search(r"x(\d+) features", bench.get("group") or "")
            run.writes[info["write_api"], info["impl"]] = {
                **({"features": int(features.group(1))} if features else {}),
                **info,
                "median": statistics.median(data),
            }
            continue
        if "api" not in info:
            continue
        stats = bench["stats"]
        data = stats.get("data")
        if data:
            timing = Timing(statistics.median(data), p99(data), len(data))
        else:  # saved without raw data: p99 unknown, fall back to the max
            missing_data.append(bench["name"])
            timing = Timing(stats["median"], stats["max"], stats["rounds"])
        timing.requests_per_round = int(info.get("requests_per_round", 1))
        case = Case(
            API_ORDER.index(info["api"]),
            info["views"],
            info["entities"],
            info["features"],
            info["api"],
        )
        run.results.setdefault(case, {})[info["impl"]] = timing
    if missing_data:
        print(
            f"warning: {path} has no raw timings for {len(missing_data)} benchmarks; "
            "p99 shown is the max (use --benchmark-json, which stores them)",
            file=sys.stderr,
        )
    return run


# --------------------------------------------------------------------------- formatting


def fmt_time(seconds: float) -> str:
    ms = seconds * 1000
    if ms >= 100:
        return f"{ms:.0f} ms"
    if ms >= 10:
        return f"{ms:.1f} ms"
    return f"{ms:.2f} ms"


def fmt_ratio(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}×"


def fmt_goal_ratio(value: float | None, goal: float) -> str:
    """Like :func:`fmt_ratio`, with a third decimal when two would round onto the goal."""
    if value is not None and value != goal and round(value, 2) == goal:
        return f"{value:.3f}×"
    return fmt_ratio(value)


def ratio(results: dict[str, Timing], numerator: str, denominator: str = "ours") -> float | None:
    if numerator in results and denominator in results:
        return results[numerator].median / results[denominator].median
    return None


def cell(case: Case, timing: Timing | None) -> str:
    if timing is None:
        return "–"
    text = f"{fmt_time(timing.median)} / {fmt_time(timing.p99)}"
    if case.api == "concurrent_async":
        text += f" ({timing.rps:,.0f} req/s)"
    return text


def table(run: Run) -> str:
    impls = [i for i in IMPLS if any(i in r for r in run.results.values())]
    head = ["case"] + [f"{IMPL_TITLES[i]} median / p99" for i in impls]
    ratios = [(i, "ours") for i in ("feast", "glide", "floor") if i in impls]
    if COMPACT in impls:
        ratios += [("feast", COMPACT), ("ours", COMPACT)]
    head += [
        f"{IMPL_TITLES[n]} / {'compact' if d == COMPACT else IMPL_TITLES[d]}" for n, d in ratios
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for case in sorted(run.results):
        results = run.results[case]
        row = [case.label()] + [cell(case, results.get(i)) for i in impls]
        row += [fmt_ratio(ratio(results, n, d)) for n, d in ratios]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- targets


@dataclass
class Check:
    target: str
    measured: str
    passed: bool | None  # None: not measured


def _find(run: Run, api: str, entities: int, features: int, views: int) -> dict[str, Timing]:
    for case, results in run.results.items():
        if (case.api, case.entities, case.features, case.views) == (api, entities, features, views):
            return results
    return {}


def checks(run: Run) -> list[Check]:
    out: list[Check] = []
    for entities, features, goal in ((100, 250, 3.0), (100, 50, 2.5), (1, 50, 1.3)):
        for views in (1, 5):
            value = ratio(_find(run, "get_online_features", entities, features, views), "feast")
            out.append(
                Check(
                    f"get_online_features {entities}×{features} ({views} view"
                    f"{'s' if views > 1 else ''}): Feast/ours ≥ {goal}×",
                    fmt_goal_ratio(value, goal),
                    None if value is None else value >= goal,
                )
            )
    speedups = [(ratio(results, "feast"), case) for case, results in sorted(run.results.items())]
    speedups = [(value, case) for value, case in speedups if value is not None]
    if speedups:
        worst, worst_case = min(speedups, key=lambda item: item[0])
        out.append(
            Check(
                "no case slower than Feast: every Feast/ours ≥ 1.0×",
                f"lowest {fmt_goal_ratio(worst, 1.0)} ({worst_case.label()})",
                worst >= 1.0,
            )
        )
    store_level = _find(run, "online_read", 100, 50, 1)
    value = ratio(store_level, "ours", "floor")
    out.append(
        Check(
            "online_read 100×50 within 1.5× of the raw floor: ours/floor ≤ 1.5×",
            fmt_goal_ratio(value, 1.5),
            None if value is None else value <= 1.5,
        )
    )
    burst = _find(run, "concurrent_async", 1, 50, 1)
    if "feast" in burst and "ours" in burst:
        gain = burst["ours"].rps / burst["feast"].rps
        measured = (
            f"{burst['ours'].rps:,.0f} vs {burst['feast'].rps:,.0f} req/s = "
            f"{fmt_goal_ratio(gain, 2.0)}"
        )
        out.append(Check("32 concurrent async 1×50: ours ≥ 2× Feast req/s", measured, gain >= 2))
    else:
        out.append(Check("32 concurrent async 1×50: ours ≥ 2× Feast req/s", "–", None))
    return out


def compact_checks(run: Run) -> list[Check]:
    """The compact layout's read targets, against ours with Feast's layout."""
    out: list[Check] = []
    if not any(COMPACT in results for results in run.results.values()):
        return out
    speedups = [(ratio(r, "ours", COMPACT), case) for case, r in sorted(run.results.items())]
    speedups = [(value, case) for value, case in speedups if value is not None]
    if speedups:
        worst, worst_case = min(speedups, key=lambda item: item[0])
        out.append(
            Check(
                "compact: no case slower than ours with Feast's layout: every ours/compact ≥ 1.0×",
                f"lowest {fmt_goal_ratio(worst, 1.0)} ({worst_case.label()})",
                worst >= 1.0,
            )
        )
    for views in (1, 5):
        results = _find(run, "get_online_features", 100, 250, views)
        value = ratio(results, "ours", COMPACT)
        versus_feast = ratio(results, "feast", COMPACT)
        measured = fmt_goal_ratio(value, 1.3)
        if versus_feast is not None:
            measured += f" (Feast/compact {fmt_ratio(versus_feast)})"
        out.append(
            Check(
                f"compact: get_online_features 100×250 ({views} view{'s' if views > 1 else ''})"
                ": ours/compact ≥ 1.3×",
                measured,
                None if value is None else value >= 1.3,
            )
        )
    return out


def _check_rows(found: list[Check]) -> list[str]:
    rows = []
    for check in found:
        mark = {True: "PASS", False: "**FAIL**", None: "not measured"}[check.passed]
        rows.append(f"| {check.target} | {check.measured} | {mark} |")
    return rows


def checks_table(run: Run) -> str:
    lines = ["| target | measured | |", "|---|---|---|"]
    lines += _check_rows(checks(run))
    lines += _check_rows(compact_checks(run))
    return "\n".join(lines)


# --------------------------------------------------------------------------- writes

WRITE_TITLES = {
    "feast": "Feast `RedisOnlineStore` (default: read, compare, write)",
    "feast_skip_dedup": "Feast `RedisOnlineStore`, `skip_dedup: true` (no event-time check)",
    "ours": "ours (event-time checked on the server)",
    "ours_compact": "ours, `layout: compact` (one record per row, event-time checked)",
}
MATERIALIZE_TITLES = {
    "feast": "Feast `local` engine + `RedisOnlineStore`",
    "ours_at_feast_size": "ours, same rows as Feast's run",
    "ours_half": "ours, half the rows",
    "ours_full": "ours, all rows",
    "ours_compact_full": "ours, `layout: compact`, all rows",
    "ours_ties": "ours, all rows, every entity twice at one event time (created time decides)",
}


def write_tables(run: Run, with_checks: bool = True) -> str:
    """``online_write_batch`` and ``feast materialize`` results (and, for the console, the
    goals they are checked against)."""
    lines: list[str] = []
    batch = {impl: r for (api, impl), r in run.writes.items() if api == "online_write_batch"}
    if batch:
        sample = next(iter(batch.values()))
        lines += [
            f"`online_write_batch` of {sample['rows']:,} rows × {sample['features']} features "
            "into an emptied server (median of interleaved rounds):",
            "",
            "| implementation | median | rows/s | Feast default / this | ours / this |",
            "|---|---|---|---|---|",
        ]
        for impl in WRITE_TITLES:
            if impl in batch:
                median = batch[impl]["median"]
                versus = [
                    fmt_ratio(batch[base]["median"] / median if base in batch else None)
                    for base in ("feast", "ours")
                ]
                lines.append(
                    f"| {WRITE_TITLES[impl]} | {fmt_time(median)} | "
                    f"{batch[impl]['rows'] / median:,.0f} | {versus[0]} | {versus[1]} |"
                )
        lines.append("")
    mat = {impl: r for (api, impl), r in run.writes.items() if api == "materialize"}
    if mat:
        repeated = sorted({r.get("runs", 1) for r in mat.values()} - {1})
        lines += [
            "`feast materialize` from parquet, each run in its own process"
            + (
                f" (where runs > 1 — ours, all rows, with each layout — "
                f"{'/'.join(map(str, repeated))} runs alternating A B B A, the mean):"
                if repeated
                else ":"
            ),
            "",
            "| run | rows | seconds | rows/s | peak RSS | rows/s vs Feast | rows/s vs ours |",
            "|---|---|---|---|---|---|---|",
        ]
        for impl in MATERIALIZE_TITLES:
            if impl in mat:
                r = mat[impl]
                versus = [
                    fmt_ratio(r["rows_per_s"] / mat[base]["rows_per_s"] if base in mat else None)
                    for base in ("feast", "ours_full")
                ]
                lines.append(
                    f"| {MATERIALIZE_TITLES[impl]} | {r['rows']:,} | {r['median']:.1f} | "
                    f"{r['rows_per_s']:,.0f} | {r['peak_rss_mb']:,.0f} MB | "
                    f"{versus[0]} | {versus[1]} |"
                )
        lines.append("")
    checks_ = write_checks(run) if with_checks else []
    if checks_:
        lines += ["| target | measured | |", "|---|---|---|"]
        lines += _check_rows(checks_)
    return "\n".join(lines)


def write_checks(run: Run) -> list[Check]:
    out: list[Check] = []
    batch = {
        impl: r["median"] for (api, impl), r in run.writes.items() if api == "online_write_batch"
    }
    labels = {"feast": "Feast default", "feast_skip_dedup": "Feast skip_dedup"}
    for baseline, goal in (("feast", 4.0), ("feast_skip_dedup", 1.5)):
        if baseline in batch and "ours" in batch:
            value = batch[baseline] / batch["ours"]
            out.append(
                Check(
                    f"online_write_batch: ours ≥ {goal}× {labels[baseline]}",
                    fmt_goal_ratio(value, goal),
                    value >= goal,
                )
            )
    if COMPACT in batch and "ours" in batch:
        value = batch["ours"] / batch[COMPACT]
        measured = fmt_goal_ratio(value, 2.0)
        if "feast" in batch:
            measured += f" (Feast default/compact {fmt_ratio(batch['feast'] / batch[COMPACT])})"
        out.append(
            Check(
                "online_write_batch: compact ≥ 2× ours with Feast's layout",
                measured,
                value >= 2.0,
            )
        )
    mat = {impl: r for (api, impl), r in run.writes.items() if api == "materialize"}
    if "feast" in mat and "ours_full" in mat:
        value = mat["ours_full"]["rows_per_s"] / mat["feast"]["rows_per_s"]
        out.append(
            Check(
                "materialize rows/s: ours ≥ 10× local engine + Feast Redis",
                fmt_goal_ratio(value, 10.0),
                value >= 10,
            )
        )
    if "ours_compact_full" in mat and "ours_full" in mat:
        compact = mat["ours_compact_full"]["rows_per_s"]
        value = compact / mat["ours_full"]["rows_per_s"]
        measured = fmt_goal_ratio(value, 2.0)
        if "feast" in mat:
            measured += f" ({compact / mat['feast']['rows_per_s']:.1f}× Feast's)"
        out.append(
            Check(
                f"materialize {mat['ours_compact_full']['rows']:,} rows: compact rows/s ≥ 2× "
                "ours with Feast's layout",
                measured,
                value >= 2.0,
            )
        )
    if "ours_half" in mat and "ours_full" in mat:
        growth = mat["ours_full"]["peak_rss_mb"] / mat["ours_half"]["peak_rss_mb"]
        out.append(
            Check(
                "materialize peak RSS does not grow with rows: full / half ≤ 1.1",
                f"{growth:.2f} ({mat['ours_full']['peak_rss_mb']:,.0f} / "
                f"{mat['ours_half']['peak_rss_mb']:,.0f} MB)",
                growth <= 1.1,
            )
        )
    return out


# --------------------------------------------------------------------------- documents


def environment(runs: list[Run]) -> str:
    first = runs[0]
    meta = first.meta
    versions = meta.get("versions", {})
    cpu = first.machine.get("cpu", {})
    lines = [
        f"- Date: {meta.get('date', 'unknown')} (UTC)",
        f"- Machine: {meta.get('cpu_count')} cores ({cpu.get('brand_raw', 'unknown CPU')}), "
        f"{first.machine.get('system', '')} {first.machine.get('release', '')}; client and "
        "server on the same machine, over loopback",
        f"- Python {meta.get('python')}; "
        + ", ".join(f"{name} {version or 'not installed'}" for name, version in versions.items()),
    ]
    for run in runs:
        binary = run.meta.get("server_binary") or "external"
        try:
            binary = str(Path(binary).resolve().relative_to(Path.cwd()))
        except ValueError:
            pass
        lines.append(f"- Server: {run.server} — `{binary}` ({run.meta.get('server_source')})")
        if run.meta.get("glide_skip_reason"):
            lines.append(f"  - {run.meta['glide_skip_reason']}")
    return "\n".join(lines)


METHOD = """\
Every table comes from one pytest run against one server and one data set. The implementations
of a case are timed in interleaved rounds (one call of each per round, the order rotating), so a
burst of load from elsewhere on the machine hits all of them alike: compare ratios within a
table; absolute times on a shared 2-core machine drift between runs. A read case of N entities
reads the next N of the 1,000 loaded entities each round (every implementation the same
sequence): on Dragonfly a key lives on one thread, and a connection that thread serves reads
it without a hop, so timing one fixed entity would measure where its keys happen to sit.

- **Feast (redis-py)** — Feast 0.67's `RedisOnlineStore` (`type: redis`), default settings.
- **Feast (glide)** — the same with `client: glide` (valkey-glide-sync; `socket_timeout=10` in
  its connection string, which Feast turns into GLIDE's request timeout, default 250 ms). Its
  async reads use redis-py, so it only appears in the sync cases.
- **ours** — `feast_dragonfly.DragonflyOnlineStore`, default settings (Feast's layout).
- **ours, compact** — the same store with `layout: compact` (one record per entity and feature
  view, docs/data-layout.md), reading records it wrote itself; every other setting the same.
- **raw floor** — redis-py + hiredis, one pipelined `HMGET` per entity hash with the same keys
  and fields the stores read (features plus each view's `_ts:` field), replies left as raw bytes.

Data: 1,000 `driver_id` entities (int64, 0..999), a float32 / int64 / string mix of features,
written once per run with our `online_write_batch` (byte-identical to Feast's layout), and
once more as compact records by the compact store (beside the hashes: the keys differ). The
one-view cases read a 250-feature view; the five-view cases read five 50-feature views sharing
the entity (each layout in its own project, so a hash holds only that layout's fields). Cases
time `FeatureStore.get_online_features(...).to_dict()` (and `await
get_online_features_async(...)` + `.to_dict()`), or the store-level `online_read` of one view;
every answer is checked equal to Feast's. All stores share one registry object, as in a serving
process. "32 concurrent async" is one `asyncio.gather` of 32 requests per round; req/s = 32 /
median round time.

Cells are median / p99 of single-call rounds (each case sized to about a second per
implementation, at least 20 rounds; p99 is nearest-rank over the raw timings, so with fewer
than 100 rounds it is the slowest round). Ratios are of medians; above 1 means ours is faster.

Reading the numbers: the floor includes the server's own time, which differs between servers —
redis-server keeps a hash of up to 512 fields as a listpack (a ziplist before 7.0) that `HMGET`
scans linearly, so wide reads cost it more than Dragonfly. Feast's store builds one Python object per value; in large
cases that triggers full garbage collections (tens of ms in a process with Feast loaded) every
few calls, which shows in its p99 rather than its median. Server memory per stored value, by
layout: docs/memory-benchmarks.md (`make bench-memory`).
"""


def markdown(runs: list[Run], plot: Path | None, markdown_path: Path) -> str:
    parts = [
        "# Benchmarks",
        "",
        "Generated by `make bench` (`benchmarks/report.py`); do not edit by hand.",
        "",
        environment(runs),
        "",
        METHOD,
    ]
    if plot is not None:
        try:
            rel = plot.resolve().relative_to(markdown_path.resolve().parent)
        except ValueError:
            rel = plot
        parts += [f"![Speedup of ours over Feast per case and server]({rel.as_posix()})", ""]
    for run in runs:
        parts += [f"## {run.server}", ""]
        if run.results:  # a run of the write benchmarks alone has no read table
            parts += [table(run), ""]
        if run.writes:
            parts += [
                f"### Writes and materialization ({run.server})",
                "",
                write_tables(run, with_checks=False).rstrip("\n"),
                "",
            ]
    return "\n".join(parts)


def plot_speedups(runs: list[Run], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = sorted({case for run in runs for case in run.results})
    series = [
        (run, impl)
        for run in runs
        for impl in ("ours", COMPACT)
        if any(impl in results for results in run.results.values())
    ]
    width = 0.8 / max(1, len(series))
    fig, ax = plt.subplots(figsize=(max(10, 0.85 * len(cases) + 2), 5.5))
    for index, (run, impl) in enumerate(series):
        xs, ys = [], []
        for position, case in enumerate(cases):
            value = ratio(run.results.get(case, {}), "feast", impl)
            if value is not None:
                xs.append(position - 0.4 + width * (index + 0.5))
                ys.append(value)
        label = run.server if impl == "ours" else f"{run.server}, layout: compact"
        color = f"C{runs.index(run)}"  # one colour per server; compact hatched and lighter
        compact = impl == COMPACT
        bars = ax.bar(
            xs,
            ys,
            width,
            label=label,
            color=color,
            alpha=0.55 if compact else 1.0,
            hatch="//" if compact else None,
            edgecolor=color if compact else None,
        )
        ax.bar_label(bars, labels=[f"{y:.1f}" for y in ys], fontsize=6, padding=2)
    ax.axhline(1.0, color="black", linewidth=0.8, linestyle="--")
    ax.set_xticks(range(len(cases)))
    ax.set_xticklabels([case.short() for case in cases], fontsize=8)
    ax.set_ylabel("speedup vs Feast RedisOnlineStore (median Feast / median ours)")
    ax.set_title("feast-dragonfly read speedup over Feast 0.67 (higher is better; dashed = same)")
    ax.legend(ncol=2, loc="upper left", fontsize=8)
    ax.margins(y=0.25)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --------------------------------------------------------------------------- README

README_START = "<!-- bench:start -->"
README_END = "<!-- bench:end -->"
#: README's headline: get_online_features cases of one view, (entities, features).
HEADLINE_READS = ((1, 50), (100, 50), (100, 250), (1000, 50))


class ReadmeError(Exception):
    """The README cannot take the headline table (no markers, or more than one pair)."""


def server_title(run: Run) -> str:
    """A column's server: ``redis-server 7.0.15``, ``Dragonfly 1.40.1 (2 threads)``."""
    meta = run.meta
    version = meta.get("server_version") or ""
    if meta.get("server_kind") == "dragonfly":
        return f"Dragonfly {version} ({meta.get('proactor_threads')} threads)"
    return f"{meta.get('server_name') or meta.get('server_kind') or 'server'} {version}".strip()


def _first(columns: list[tuple[Run, str]], api: str, impl: str) -> dict[str, Any] | None:
    """The first server's write result of ``(api, impl)`` (row labels quote its sizes)."""
    return next((r.writes[api, impl] for r, _ in columns if (api, impl) in r.writes), None)


def _headline_rows(columns: list[tuple[Run, str]]) -> list[str]:
    def read(entities: int, features: int, api: str = "get_online_features") -> list[str]:
        return [
            fmt_ratio(ratio(_find(run, api, entities, features, 1), "feast", impl))
            for run, impl in columns
        ]

    def batch_ratio(run: Run, impl: str) -> float | None:
        feast, ours = (run.writes.get(("online_write_batch", i)) for i in ("feast", impl))
        return feast["median"] / ours["median"] if feast and ours else None

    def materialize_ratio(run: Run, impl: str) -> float | None:
        name = "ours_full" if impl == "ours" else "ours_compact_full"
        feast, ours = (run.writes.get(("materialize", i)) for i in ("feast", name))
        return ours["rows_per_s"] / feast["rows_per_s"] if feast and ours else None

    rows = []
    for entities, features in HEADLINE_READS:
        label = (
            f"`get_online_features(...).to_dict()`, {entities} entity × {features} features"
            if not rows
            else f"{entities} entities × {features} features"
        )
        rows.append([label, *read(entities, features)])
    rows.append(["32 concurrent async 1 × 50 (requests/s)", *read(1, 50, "concurrent_async")])
    sample = _first(columns, "online_write_batch", "ours")
    if sample:
        rows.append(
            [
                f"`online_write_batch`, {sample['rows']:,} rows × {sample['features']} features "
                "(ours event-time safe, Feast default)",
                *(fmt_ratio(batch_ratio(run, impl)) for run, impl in columns),
            ]
        )
    full = _first(columns, "materialize", "ours_full")
    feast = _first(columns, "materialize", "feast")
    if full and feast:
        shape = f"{full['rows']:,} rows" + (
            f" × {full['features']} features" if full.get("features") else ""
        )
        rows.append(
            [
                f"`feast materialize`, rows/s (our engine, {shape}, vs `local` engine, "
                f"{feast['rows']:,} rows)",
                *(fmt_ratio(materialize_ratio(run, impl)) for run, impl in columns),
            ]
        )
    return ["| " + " | ".join(row) + " |" for row in rows]


def readme_block(runs: list[Run]) -> str:
    """README's headline: Feast/ours per server side by side (and per layout, when measured)."""
    columns = [
        (run, impl)
        for run in runs
        for impl in ("ours", COMPACT)
        if impl == "ours"
        or any(COMPACT in r for r in run.results.values())
        or any(i == COMPACT for _, i in run.writes)
    ]
    dates = sorted({str(run.meta.get("date", "unknown"))[:10] for run in runs})
    meta = runs[0].meta
    feast = meta.get("versions", {}).get("feast") or ""
    head = ["Feast / ours (higher: ours faster)"] + [
        server_title(run) + (", `layout: compact`" if impl == COMPACT else "")
        for run, impl in columns
    ]
    lines = [
        README_START,
        "<!-- Generated by `make bench` (benchmarks/report.py --readme): do not edit by hand. -->",
        "",
        _wrap(
            f"Measured with `make bench` ({', '.join(dates)}, a {meta.get('cpu_count')}-core "
            "machine shared by client and server, over loopback): medians of ours against Feast "
            f"{feast}'s `RedisOnlineStore` on the same server, in the same run, with identical "
            "answers checked. Full tables, p99s, the raw redis-py floor and the method: "
            "[docs/benchmarks.md](docs/benchmarks.md)."
        ),
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
        *_headline_rows(columns),
    ]
    memory = next((run for run in runs if ("materialize", "ours_full") in run.writes), None)
    if memory is not None:
        mat = {impl: r for (api, impl), r in memory.writes.items() if api == "materialize"}
        full = mat["ours_full"]
        text = (
            f"Materializing {full['rows']:,} rows peaks at {full['peak_rss_mb']:,.0f} MB of RSS "
            f"with our engine on {server_title(memory)}"
        )
        if "ours_half" in mat:
            half = mat["ours_half"]
            text += f" ({half['peak_rss_mb']:,.0f} MB at {half['rows']:,} rows)"
        if "feast" in mat:
            text += (
                f"; Feast's `local` engine needed {mat['feast']['peak_rss_mb']:,.0f} MB for "
                f"{mat['feast']['rows']:,} rows"
            )
        lines += ["", _wrap(text + ".")]
    return "\n".join([*lines, README_END])


def _wrap(paragraph: str) -> str:
    """README's line width; a number stays on the line of its unit."""
    kept = paragraph.replace(" MB", "\u00a0MB")  # textwrap splits at ASCII spaces only
    text = textwrap.fill(kept, width=95, break_long_words=False, break_on_hyphens=False)
    return text.replace("\u00a0", " ")


def rewrite_readme(text: str, block: str) -> str:
    """``text`` with the lines from ``README_START`` to ``README_END`` replaced by ``block``."""
    lines = text.split("\n")
    starts = [i for i, line in enumerate(lines) if line.strip() == README_START]
    ends = [i for i, line in enumerate(lines) if line.strip() == README_END]
    if len(starts) != 1 or len(ends) != 1 or ends[0] < starts[0]:
        raise ReadmeError(
            f"expected one {README_START} line followed by one {README_END} line, found "
            f"{len(starts)} and {len(ends)}: add them around the headline table"
        )
    return "\n".join([*lines[: starts[0]], block, *lines[ends[0] + 1 :]])


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("json", nargs="+", type=Path, help="pytest-benchmark JSON, one per server")
    parser.add_argument("--markdown", type=Path, help="write this Markdown report")
    parser.add_argument("--plot", type=Path, help="write this PNG plot (needs matplotlib)")
    parser.add_argument(
        "--readme",
        type=Path,
        help=f"rewrite the headline table between {README_START} and {README_END} in this file",
    )
    args = parser.parse_args(argv)

    runs = [load(path) for path in args.json if path.exists()]
    for path in args.json:
        if not path.exists():
            print(f"note: {path} not found, left out", file=sys.stderr)
    runs = [run for run in runs if run.results or run.writes]
    if not runs:
        print("no benchmark results to report", file=sys.stderr)
        return 1

    print(environment(runs))
    for run in runs:
        print(f"\n## {run.server}")
        if run.results:
            print(f"\n{table(run)}\n\n{checks_table(run)}")
        if run.writes:
            print(f"\n{write_tables(run)}")

    if args.plot:
        try:
            plot_speedups(runs, args.plot)
            print(f"\nwrote {args.plot}")
        except ImportError:
            print("matplotlib is not installed: no plot (pip install -e '.[bench]')")
            args.plot = None
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(markdown(runs, args.plot, args.markdown))
        print(f"wrote {args.markdown}")
    if args.readme:
        try:
            text = rewrite_readme(args.readme.read_text(), readme_block(runs))
        except (OSError, ReadmeError) as exc:
            print(f"cannot update {args.readme}: {exc}", file=sys.stderr)
            return 1
        args.readme.write_text(text)
        print(f"updated the headline table in {args.readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
