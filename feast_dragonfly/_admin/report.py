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
            f"warning: {_keys_hold(c['whole_key_merges'])} several feature views whose "
            "fields could not be told apart; each was merged as a whole (its newest event time "
            "decided for all its views). Give the feature repo with -C to merge per view."
        )
    lines.extend(f"  {p}" for p in report.problems)
    return "\n".join(lines)


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
