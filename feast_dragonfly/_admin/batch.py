"""One batch of a migration, key by key: which keys to copy whole, which to merge, and how.

A key the target lacks is restored whole from its source ``DUMP`` (``restores`` /
``restore``); any other key becomes a merge plan (``plans``) applied by the merge script
(``merge``). Each step counts what it did into a :class:`Report`; a reply that is about the
target rather than one key (out of memory, scripting refused) stops the migration
(``fail_on``). ``migrate.Migration`` decides which step a batch takes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from feast_dragonfly._admin import merge as _migrate_merge
from feast_dragonfly._admin import scan
from feast_dragonfly._admin import verify as _migrate_verify
from feast_dragonfly._admin.merge import KeyPlan
from feast_dragonfly._admin.registry_views import FieldOwners
from feast_dragonfly._admin.report import MAX_REPORTED, MigrationError, Report
from feast_dragonfly._admin.scan import Dumped, by_endpoint, memory_usage, read_hashes
from feast_dragonfly._protocol import script as _script
from feast_dragonfly._protocol import wire
from feast_dragonfly._protocol.deployment import Deployment, Endpoint
from feast_dragonfly._protocol.keys import TIMESTAMP_PREFIX, describe_key
from feast_dragonfly._protocol.wire import out_of_memory


def plans(
    keys: Sequence[bytes],
    hashes: Sequence[tuple[Any, Any]],
    owners: FieldOwners | None,
    out: Report,
) -> list[KeyPlan]:
    """The merge plans of one batch's source hashes; keys that cannot be merged are counted."""
    planned = []
    for key, (flat, pttl) in zip(keys, hashes):
        if not readable_hash(key, flat, out):
            continue
        groups, whole_key = _migrate_merge.view_groups(flat, owners)
        if not groups:
            out.add("skipped_no_views")
            out.note(f"skipped {describe_key(key)}: the hash has no _ts:<view> field")
            continue
        planned.append(KeyPlan(key, groups, whole_key, remaining(pttl)))
    return planned


def remaining(pttl: Any) -> int:
    """A source key's remaining time to live for the target, in ms; -1 for none. ``PTTL``
    answers 0 for a key with less than a millisecond left: it gets 1, not "no expiry"."""
    if not isinstance(pttl, int) or pttl < 0:
        return -1
    return max(pttl, 1)


def _out_of_memory(reply: Any) -> bool:
    """The target is full: no later key will fit either, so the whole run must stop."""
    text = str(reply)
    return out_of_memory(reply) or "OOM" in text or "maxmemory" in text


def fail_on(reply: Any, target: Deployment) -> None:
    """Errors that stop the whole migration (the checkpoint still holds every confirmed
    batch): out of memory, and anything that is not about one key."""
    text = target.scrub(str(reply))
    if _out_of_memory(reply):
        raise MigrationError(
            f"{target.full_message(reply, 'the target')}: raise its maxmemory (or free memory "
            "there), then run the same command with --resume to continue"
        )
    raise MigrationError(f"the target {target.address} refused a merge: {text}")


def readable_hash(key: bytes, flat: Any, out: Report) -> bool:
    """Whether a source key's HGETALL reply is a hash to work on; a key of another type, or
    one gone since the SCAN, is counted (and the first named)."""
    if isinstance(flat, Exception):
        out.add("skipped_not_hash")
        out.note(f"skipped {describe_key(key)}: the source key is not a hash ({flat})")
        return False
    if not flat:
        out.add("skipped_vanished")  # expired or deleted since the SCAN
        return False
    return True


class MergeRule(Protocol):
    """What ``merge`` needs of a migration's options."""

    @property
    def merge_whole_keys_losing_views(self) -> bool:
        """A key whose views are newer on each side, and whose fields have no known owner:
        merge it as a whole (the older side's newer views are lost), or stop the run there
        (``ambiguous``)."""

    @property
    def owners(self) -> FieldOwners | None:
        """The registry's field owners (the error's advice depends on whether there are)."""


def merge(
    plans: Sequence[KeyPlan],
    target: Deployment,
    per_call: int,
    out: Report,
    rule: MergeRule | None = None,
) -> None:
    """Apply the plans with the merge script, ``per_call`` keys per call on each master, under
    ``rule`` (None: stop at a key whose views are newer on each side)."""
    merge_whole = rule is not None and rule.merge_whole_keys_losing_views
    registry = rule is not None and rule.owners is not None
    for endpoint, mine in by_endpoint((target.endpoint_for(p.key), p) for p in plans):
        calls = [mine[i : i + per_call] for i in range(0, len(mine), per_call)]
        packed = [_migrate_merge.pack_call(c, merge_whole) for c in calls]
        replies = endpoint.exchange(packed, len(calls))
        if any(_script.is_noscript(r) for r in replies):  # a restarted target: load and resend
            endpoint.exchange([_migrate_merge.LOAD_COMMAND], 1)
            replies = endpoint.exchange(packed, len(calls))
        for call, reply in zip(calls, replies):
            if isinstance(reply, Exception):
                fail_on(reply, target)
            for plan, (written, kept, status) in zip(call, _migrate_merge.parse_reply(reply)):
                if status == _migrate_merge.AMBIGUOUS:
                    ambiguous(plan, registry)
                _count_merge(plan, written, kept, status, out)


def ambiguous(plan: KeyPlan, registry: bool) -> None:
    """Stop the run at a key whose views are newer on each side and whose fields no registry
    attributes: merging it as a whole would lose one side's newer views."""
    views = ", ".join(
        name[len(TIMESTAMP_PREFIX) :].decode("utf-8", "replace")
        for group in plan.groups
        for name, _ in group.timestamps
    )
    if registry:
        why = "the registry of the feature repo given with -C does not know all of its fields"
        fix = "apply the views it holds to that repo and run the same command again"
    else:
        why = "only the feature repo's registry can say which field belongs to which"
        fix = "run the same command with -C REPO (the project's feature repo)"
    raise MigrationError(
        f"{describe_key(plan.key)} holds feature views {views}, some newer on the target and "
        f"some on the source, and {why}; the key was left as it was. To merge it per view, "
        f"{fix}, adding --resume to go on from where this run stopped; or, accepting that the "
        "older side's newer views are lost, merge such keys as a whole with "
        "--merge-whole-keys-losing-views"
    )


def _count_merge(plan: KeyPlan, written: int, kept: int, status: int, out: Report) -> None:
    """Count one key's merge outcome; a key the script refused is an error, named."""
    if status == _migrate_merge.MERGED_WHOLE:
        out.add("whole_key_merges")
    elif status == _migrate_merge.NOT_A_HASH:
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


def restores(
    keys: Sequence[bytes], dumps: Sequence[Dumped], out: Report
) -> list[tuple[bytes, Dumped]]:
    """The keys of a batch to copy whole; the others are counted as the merge would count
    them (a key that vanished, is not a hash or is not in Feast's layout is not copied)."""
    copies = []
    for key, dumped in zip(keys, dumps):
        status = dumped.status
        if status == 0 and dumped.payload is not None:
            copies.append((key, dumped))
        elif status == scan.GONE or status == 0:
            out.add("skipped_vanished")
        elif status == scan.NOT_A_HASH:
            out.add("skipped_not_hash")
            out.note(f"skipped {describe_key(key)}: the source key is not a hash (WRONGTYPE)")
        elif status == scan.NO_VIEWS:
            out.add("skipped_no_views")
            out.note(f"skipped {describe_key(key)}: the hash has no _ts:<view> field")
        else:
            out.add("errors")
            out.note(f"skipped {describe_key(key)}: a _ts field is not a protobuf Timestamp")
    return copies


def is_busy(reply: Any) -> bool:
    """RESTORE met a key a writer created meanwhile: expected, that key is merged instead."""
    return isinstance(reply, Exception) and str(reply).startswith("BUSYKEY")


def restore(
    copies: Sequence[tuple[bytes, Dumped]], target: Deployment, out: Report
) -> list[tuple[bytes, Any]]:
    """``RESTORE`` (without REPLACE: atomic create-if-absent) each copy on the target; the
    copies it did not take come back with their error replies: BUSYKEY when a writer created
    the key meanwhile (it must be merged), anything else when the target will not restore."""
    refused: list[tuple[bytes, Any]] = []
    for endpoint, mine in by_endpoint((target.endpoint_for(c[0]), c) for c in copies):
        commands = [
            wire.command(
                b"RESTORE", key, b"%d" % max(remaining(dumped.pttl), 0), dumped.payload or b""
            )
            for key, dumped in mine
        ]
        for (key, dumped), reply in zip(mine, endpoint.exchange(commands, len(commands))):
            if not isinstance(reply, Exception):
                out.add("keys_copied")
                out.add("views_written", dumped.views)
                continue
            if _out_of_memory(reply):
                fail_on(reply, target)
            refused.append((key, reply))
    return refused


def dry_run_batch(endpoint: Endpoint, keys: Sequence[bytes], out: Report) -> None:
    """Count the keys and their bytes (``MEMORY USAGE``) instead of writing anything."""
    sizes = memory_usage(endpoint, keys)
    out.add("keys_found", len(keys))
    out.add("bytes", sum(size or 0 for size in sizes))


def verify_plans(plans: Sequence[KeyPlan], target: Deployment, out: Report) -> None:
    """Compare the target's hashes with what merging these plans should have given, view by
    view (``verify.verify_key``)."""
    assert out.verify is not None
    for endpoint, mine in by_endpoint((target.endpoint_for(p.key), p) for p in plans):
        with target.errors():
            stored = read_hashes(endpoint, [p.key for p in mine])
        for plan, (flat, _) in zip(mine, stored):
            out.verified_keys += 1
            verdict = _migrate_verify.verify_key(
                plan.groups, None if isinstance(flat, Exception) else flat
            )
            out.verify.match += verdict.match
            out.verify.kept += verdict.kept
            out.verify.mismatch += verdict.mismatch
            if verdict.mismatch and len(out.mismatched) < MAX_REPORTED:
                out.mismatched.append(describe_key(plan.key))
