"""Checking a migrated key against its source, view by view, under the merge's own rule.

A view the target kept (its event time newer than or equal to the source's) is not a
mismatch: the merge was supposed to keep it. Everything else must be byte-identical. A group
of several views (fields without a known owner) is judged view by view on its timestamps; its
fields must all be identical unless the target kept one of its views (a differing field may
then be that view's).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from feast_dragonfly._admin.merge import Group, event_time
from feast_dragonfly._admin.scan import pairs

MATCH, KEPT, MISMATCH = "match", "kept", "mismatch"


@dataclass
class Verdict:
    """Views of one key that match, that the target kept as newer, and that differ."""

    match: int = 0
    kept: int = 0
    mismatch: int = 0


def verify_key(groups: Sequence[Group], target_flat: Any) -> Verdict:
    target = dict(pairs(target_flat or ()))
    verdict = Verdict()
    for group in groups:
        outcomes = [_verify_group(group, target)] * group.views
        if group.views > 1:
            outcomes = _verify_views(group, target)
        for outcome in outcomes:
            setattr(verdict, outcome, getattr(verdict, outcome) + 1)
    return verdict


def _verify_views(group: Group, target: dict[bytes, bytes]) -> list[str]:
    """One outcome per view of a several-view group."""
    outcomes = []
    for name, value in group.timestamps:
        there = target.get(name)
        stored = event_time(there)
        if there == value:
            outcomes.append(MATCH)
        elif stored is not None and stored >= (event_time(value) or (0, 0)):
            outcomes.append(KEPT)
        else:
            outcomes.append(MISMATCH)
    if KEPT not in outcomes and any(target.get(n) != v for n, v in group.features):
        outcomes = [MISMATCH if o == MATCH else o for o in outcomes]
    return outcomes


def _verify_group(group: Group, target: dict[bytes, bytes]) -> str:
    source_best = max((event_time(v) or (0, 0)) for _, v in group.timestamps)
    stamps = [event_time(target.get(name)) for name, _ in group.timestamps]
    target_best = max((s for s in stamps if s is not None), default=None)
    identical = all(target.get(n) == v for n, v in (*group.timestamps, *group.features))
    if identical:
        return MATCH
    if target_best is not None and target_best >= source_best:
        return KEPT
    return MISMATCH
