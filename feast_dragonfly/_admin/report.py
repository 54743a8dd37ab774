"""What a migration tells its user: the counters it keeps, and the text made of them.

Kept apart from the steps that fill the counters (``batch``) and the driver that runs them
(``migrate``), so every message ``feast-dragonfly migrate`` prints at the end is in one place.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from feast_dragonfly._admin import verify as _migrate_verify
from feast_dragonfly.errors import DragonflyStoreError

#: Problem keys named in the summary (the counters count them all).
MAX_REPORTED = 10


class MigrationError(DragonflyStoreError):
    """The migration stopped; the message says why and what to do next."""


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


def empty_projects(report: Report, projects: Sequence[str]) -> list[str]:
    """The projects of which the source holds no key (a misspelt name, most likely)."""
    return [p for p in projects if not report.counters.get(f"project:{p}")]


def _keys_hold(count: int) -> str:
    return "1 key holds" if count == 1 else f"{count:,} keys hold"


def unknown_views(report: Report) -> dict[str, int]:
    """Views found on the source that the registry does not know, and how many rows of each
    were left as they were (a conversion needs the view's schema)."""
    prefix = "unknown_view:"
    return {
        name[len(prefix) :]: count
        for name, count in sorted(report.counters.items())
        if name.startswith(prefix)
    }


def summary(report: Report, dry_run: bool, to_layout: str | None = None) -> str:
    """The end-of-run summary, one line per counter that matters."""
    c = report.counters
    if to_layout is not None:
        return _conversion_summary(report, dry_run, to_layout)
    if dry_run:
        records = c.get("records_found", 0)
        return (
            f"dry run: {c.get('keys_found', 0):,} keys"
            + (f" and {records:,} compact records" if records else "")
            + f", {c.get('bytes', 0):,} bytes (MEMORY USAGE) would be migrated; nothing was "
            "written"
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
    if c.get("records_found"):
        lines.insert(4, _records_line(c))
    if c.get("whole_key_merges"):
        lines.append(
            f"warning: {_keys_hold(c['whole_key_merges'])} several feature views, some newer "
            "on the target and some on the source, whose fields could not be told apart; as "
            "--merge-whole-keys-losing-views asked, each was merged as a whole (its newest "
            "event time decided for all the views both sides held, so the other side's newer "
            "views were lost). Give the feature repo with -C to merge per view."
        )
    lines.extend(f"  {p}" for p in report.problems)
    return "\n".join(lines)


def _records_line(c: dict[str, int]) -> str:
    return (
        f"compact records:         {c.get('records_found', 0):,} found, "
        f"{c.get('records_copied', 0):,} copied, {c.get('records_kept_newer', 0):,} kept by "
        f"the target (newer or equal), {c.get('records_unreadable', 0):,} unreadable"
    )


def _conversion_summary(report: Report, dry_run: bool, to_layout: str) -> str:
    c = report.counters
    source, kind = (
        ("hashes", "keys_found") if to_layout == "compact" else ("records", "records_found")
    )
    unknown = unknown_views(report)
    unreadable = (
        c.get("views_unreadable", 0) + c.get("records_unreadable", 0)
        + c.get("skipped_not_hash", 0) + c.get("skipped_no_views", 0)
    )  # fmt: skip
    lines = [f"converting to the {to_layout} layout"]
    lines.append(f"{f'source {source} found:':<25}{c.get(kind, 0):,}")
    if dry_run:
        size = f" ({c.get('record_bytes', 0):,} bytes of records)" if to_layout == "compact" else ""
        lines.append(f"views to convert:        {c.get('views_to_convert', 0):,}{size}")
    else:
        lines.append(f"views converted:         {c.get('converted', 0):,}")
        lines.append(f"views kept (target newer or equal): {c.get('converted_kept', 0):,}")
    lines += [
        f"views expired:           {c.get('views_expired', 0):,} (past their view's ttl or "
        "their key's TTL: not converted)",
        f"unreadable:              {unreadable:,}",
        f"errors:                  {c.get('errors', 0):,}",
    ]
    if unknown:
        listed = ", ".join(f"{name} ({count:,})" for name, count in unknown.items())
        lines.append(
            f"views the registry does not know (left as they are): {listed}: a conversion "
            "needs each view's features and types; apply the view, or remove its data"
        )
    in_place = c.get("records_in_place", 0) + c.get("keys_in_place", 0)
    if in_place:
        lines.append(f"already in the {to_layout} layout: {in_place:,} keys (left as they are)")
    if to_layout == "compact" and c.get("records_found") and not in_place:
        lines.append(_records_line(c))
    if to_layout == "feast" and c.get("keys_found") and not in_place:
        lines.append(
            f"entity hashes copied as they are: {c.get('keys_copied', 0):,} of "
            f"{c.get('keys_found', 0):,}"
        )
    if dry_run:
        lines.append("dry run: nothing was written")
    lines.extend(f"  {p}" for p in report.problems)
    return "\n".join(lines)


def removal_summary(removed: Report, to_layout: str | None) -> str:
    """What ``--remove-source`` did."""
    c = removed.counters
    kind = "entity hashes" if to_layout == "compact" else "compact records"
    return (
        f"removed from the source:  {c.get('removed', 0):,} {kind}; "
        f"{c.get('remove_left', 0):,} left (a view the registry does not know, unreadable, "
        "not on the target at the same or a later event time, or written meanwhile)"
    )


def verify_summary(checked: Report) -> list[str]:
    """The lines ``--verify`` / ``--verify-sample`` print: totals, then each mismatched key."""
    assert checked.verify is not None
    v = checked.verify
    lines = [
        f"verify: {checked.verified_keys:,} keys: {v.match:,} views identical, "
        f"{v.kept:,} kept by the target as newer, {v.mismatch:,} mismatched"
    ]
    lines.extend(f"  mismatch: {key}" for key in checked.mismatched)
    return lines
