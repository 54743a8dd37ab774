"""Redis Cluster: recent writes kept per slot, replayed to a slot's new master after a resharding.

Dragonfly's slot migration has a finalization gap: the target already owns the slots, the
source still accepts a script call it had checked before its pause (a script or ``MULTI``
that waited at the pause runs afterwards), acknowledges it, and erases it with the slots it
gave away. The write is acknowledged and gone. Redis Cluster has no such gap, and single
commands do not meet it; our event-time write is a script.

The client closes it on its side (on Dragonfly: the backend gives a Redis Cluster's clients
:data:`NOTHING_KEPT`). Every script call a master acknowledged is kept here for a while
(:data:`KEEP_SECONDS`, at most :data:`KEEP_BYTES`), by slot. When a master answers ``MOVED``,
it is asked which of the slots it took writes for it still serves (one ``EXISTS`` per slot,
one round trip: a migration moves whole ranges), and the calls of the others are sent again
to their new owners; so are a slot's calls when the slot map routes it away from
the master that took them, and, for :data:`LEAVING_SECONDS` after a ``MOVED`` (or for a slot
known to have left), whatever that master acknowledges — before the write returns. The
flows that do it are in ``cluster.py``; this module is the bookkeeping, without I/O. The
event-time script makes replays safe: a replayed row never replaces a newer one, and an
equal one is left alone.

What this cannot cover: a write acknowledged more than :data:`KEEP_SECONDS` before the
process next hears from that master (or pushed out by :data:`KEEP_BYTES` of newer writes);
writes made by redis-py's own cluster client (the fallback after a redirection or a broken
connection) rather than the fast path; and other processes' writes, each of which replays
only its own. docs/topologies.md gives the operating rule that covers the rest.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from redis import exceptions as redis_exceptions
from redis.crc import key_slot

from feast_dragonfly._protocol import script as _script
from feast_dragonfly._protocol import wire
from feast_dragonfly._protocol.flow import Flow
from feast_dragonfly._protocol.script import ScriptCall

#: How long an acknowledged call stays replayable (seconds).
KEEP_SECONDS = 30.0
#: Packed bytes of acknowledged calls kept per cluster client, oldest dropped first.
KEEP_BYTES = 4 << 20
#: How long a slot is remembered as having left a master (its acknowledgements replayed).
LEFT_SECONDS = 30.0
#: After a master answers ``MOVED``, how long every call it acknowledges is replayed at once
#: (its other slots may have left with that one: Dragonfly moves whole ranges).
LEAVING_SECONDS = 2.0

# --------------------------------------------------------------------------- requests


@dataclass(frozen=True)
class ViaClusterClient:
    """Commands sent through redis-py's cluster pipeline (which follows MOVED / ASK, refreshes
    the slot map and retries)."""

    commands: list[list[Any]]


@dataclass(frozen=True)
class LoadScriptEverywhere:
    script: _script.Script


def command_args(packed: bytes) -> list[Any]:
    """A packed RESP command back into its arguments (for the cluster client)."""
    args: list[Any] = wire.arguments(packed)
    # redis-py routes EVALSHA by its key count only when the command name is a str.
    args[0] = args[0].decode()
    return args


def raise_unserved(replies: Sequence[Any]) -> None:
    """A redirection the cluster client could not resolve either (its retries exhausted):
    the cluster is not serving that slot, which is not a data problem."""
    for reply in replies:
        if isinstance(
            reply,
            (
                redis_exceptions.AskError,
                redis_exceptions.TryAgainError,
                redis_exceptions.ClusterDownError,
            ),
        ):
            raise redis_exceptions.ClusterError(f"still redirected after retries: {reply}")


def write_via_cluster_client(calls: Sequence[ScriptCall], view_name: str) -> Flow[int]:
    """Script calls through redis-py's cluster pipeline, the script loaded where it was
    missing; returns the rows written."""
    replies = yield ViaClusterClient([command_args(call.command) for call in calls])
    again = _script.needs_load(replies)
    if again:
        try:
            for script in _script.scripts_to_load(calls, again):
                yield LoadScriptEverywhere(script)
        except redis_exceptions.ResponseError as exc:
            raise _script.scripting_refused(exc) from None
        answers = yield ViaClusterClient([command_args(calls[i].command) for i in again])
        for i, reply in zip(again, answers):
            replies[i] = reply
    raise_unserved(replies)
    return _script.rows_written(calls, replies, view_name)


# --------------------------------------------------------------------------- the journal

#: A kept call: (acknowledged at, master name, packed command, its key, its script's SHA1).
_Entry = tuple[float, str, bytes, bytes, str]


class RecentWrites:
    """The script calls each master acknowledged lately, by slot, and the slots known to have
    left a master. Thread-safe; no I/O (the flows replay what it hands back)."""

    def __init__(
        self,
        *,
        keep_seconds: float = KEEP_SECONDS,
        keep_bytes: int = KEEP_BYTES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._keep_seconds = keep_seconds
        self._keep_bytes = keep_bytes
        self._clock = clock
        self._lock = threading.Lock()
        #: slot -> ((acknowledged at, master name, command, first key, script sha), ...):
        #: immutable and of plain values only, so the garbage collector soon stops tracking
        #: them (kept ScriptCall objects made it walk thousands of objects over and over)
        self._by_slot: dict[int, tuple[_Entry, ...]] = {}
        self._scripts: dict[str, _script.Script] = {}
        #: (acknowledged at, slot, size) in acknowledgement order, for pruning
        self._order: deque[tuple[float, int, int]] = deque()
        self._bytes = 0
        #: slot -> (the master it left, when that was learned)
        self._left: dict[int, tuple[str, float]] = {}
        #: slot -> the master that acknowledged its latest kept call (read without the lock)
        self._last_node: dict[int, str] = {}
        #: master -> when it last answered MOVED (it is giving slots away)
        self._leaving: dict[str, float] = {}

    def __len__(self) -> int:
        return sum(len(entries) for entries in self._by_slot.values())

    def elsewhere(self, slot: int, node: str) -> bool:
        """Whether calls another master acknowledged for ``slot`` may be kept: a cheap check
        for the routing hot path, before :meth:`routed`."""
        last = self._last_node.get(slot)
        return last is not None and last != node

    def acknowledged(self, node: str, calls: Sequence[ScriptCall]) -> list[ScriptCall]:
        """Keep what ``node`` acknowledged; returns the calls to replay now: those for slots
        already known to have left ``node`` (their acknowledgement arrived late)."""
        now = self._clock()
        again: list[ScriptCall] = []
        with self._lock:
            leaving = now - self._leaving.get(node, -LEAVING_SECONDS) < LEAVING_SECONDS
            if leaving:
                return list(calls)
            left_slots, by_slot, last_node = self._left, self._by_slot, self._last_node
            order, size, scripts = self._order, 0, self._scripts
            for call in calls:
                key = call.key(0)
                slot = key_slot(key)
                if left_slots:
                    left = left_slots.get(slot)
                    if left is not None and left[0] == node and now - left[1] < LEFT_SECONDS:
                        again.append(call)
                        continue
                sha = call.script.sha
                if sha not in scripts:
                    scripts[sha] = call.script
                by_slot[slot] = (*by_slot.get(slot, ()), (now, node, call.command, key, sha))
                last_node[slot] = node
                order.append((now, slot, len(call.command)))
                size += len(call.command)
            self._bytes += size
            self._prune(now)
        return again

    def moved(self, node: str, slot: int) -> dict[int, list[ScriptCall]]:
        """``node`` answered ``MOVED`` for ``slot``: the slots it acknowledged calls for
        lately, with those calls, for the caller to ask ``node`` which it still serves (a
        migration may have taken more slots than this one) and :meth:`take` the others. Kept
        until taken, so a reader of one of those slots can replay it first. Only ``slot``
        if ``node`` was asked already in the last :data:`LEAVING_SECONDS`, during which
        whatever it acknowledges is replayed at once."""
        now = self._clock()
        with self._lock:
            self._prune(now)
            self._left[slot] = (node, now)
            if now - self._leaving.get(node, -LEAVING_SECONDS) < LEAVING_SECONDS:
                kept = [self._call(e) for e in self._by_slot.get(slot, ()) if e[1] == node]
                return {slot: kept} if kept else {}
            self._leaving[node] = now
            return {
                kept_slot: [self._call(entry) for entry in entries if entry[1] == node]
                for kept_slot, entries in self._by_slot.items()
                if any(entry[1] == node for entry in entries)
            }

    def take(self, node: str, slots: Sequence[int]) -> list[ScriptCall]:
        """The calls ``node`` acknowledged for ``slots``, which it no longer serves: to
        replay (each handed out once)."""
        now = self._clock()
        with self._lock:
            out: list[ScriptCall] = []
            for slot in slots:
                self._left[slot] = (node, now)
                out += self._hand_out(slot, lambda owner: owner == node)
            return out

    def routed(self, slot: int, node: str) -> list[ScriptCall]:
        """The slot map now sends ``slot`` to ``node``: calls other masters acknowledged for
        it, to replay (each handed out once)."""
        now = self._clock()
        with self._lock:
            self._prune(now)
            entries = self._by_slot.get(slot)
            if entries and any(entry[1] != node for entry in entries):
                self._left[slot] = (next(e[1] for e in entries if e[1] != node), now)
            return self._hand_out(slot, lambda owner: owner != node)

    def _hand_out(self, slot: int, gone: Callable[[str], bool]) -> list[ScriptCall]:
        """The kept calls of ``slot`` whose master is ``gone``, forgotten (lock held)."""
        entries = self._by_slot.get(slot)
        if not entries:
            return []
        keep = tuple(entry for entry in entries if not gone(entry[1]))
        if len(keep) == len(entries):
            return []
        out = [self._call(entry) for entry in entries if gone(entry[1])]
        if keep:
            self._by_slot[slot] = keep
            self._last_node[slot] = keep[-1][1]
        else:
            del self._by_slot[slot]
            self._last_node.pop(slot, None)
        return out

    def _call(self, entry: _Entry) -> ScriptCall:
        _at, _node, command, key, sha = entry
        return ScriptCall(command, [key], 1, self._scripts[sha])

    def _prune(self, now: float) -> None:
        horizon = now - self._keep_seconds
        order = self._order
        while order and (order[0][0] < horizon or self._bytes > self._keep_bytes):
            at, slot, size = order.popleft()
            self._bytes -= size
            entries = self._by_slot.get(slot)
            if entries:
                # Entries of a slot are in acknowledgement order: the oldest goes first.
                if entries[0][0] <= at:
                    entries = self._by_slot[slot] = entries[1:]
                if not entries:
                    del self._by_slot[slot]
                    self._last_node.pop(slot, None)


class NothingKept(RecentWrites):
    """The journal of a deployment that never erases an acknowledged write (Redis Cluster
    hands keys over one by one with ``MIGRATE``): keeps nothing, costs nothing."""

    def elsewhere(self, slot: int, node: str) -> bool:
        return False

    def acknowledged(self, node: str, calls: Sequence[ScriptCall]) -> list[ScriptCall]:
        return []

    def moved(self, node: str, slot: int) -> dict[int, list[ScriptCall]]:
        return {}


#: The journal of every Redis Cluster client.
NOTHING_KEPT = NothingKept()

_JOURNAL_LOCK = threading.Lock()


def journal_of(cluster: Any) -> RecentWrites:
    """The journal of a cluster client (one per client: sync, and each event loop's); the
    backend sets :data:`NOTHING_KEPT` on the clients of a Redis Cluster."""
    journal = getattr(cluster, "recent_writes", None)
    if journal is None:
        with _JOURNAL_LOCK:
            journal = getattr(cluster, "recent_writes", None)
            if journal is None:
                journal = cluster.recent_writes = RecentWrites()
    return journal
