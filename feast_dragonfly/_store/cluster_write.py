"""Redis Cluster: the fast write path, script calls routed to their masters by hash slot.

The event-time script declares the keys it touches, and a cluster runs a script only when all
its keys hash to one slot, so in cluster mode every script call carries exactly one row
(``rows_per_call`` 1); calls are still pipelined, many per round trip per master. A node that
lacks the script (``NOSCRIPT``) gets it loaded and the calls resent; every call is event-time
guarded, so sending one twice never changes the result. Routing, round trips, ASK following
and the fallback through redis-py's cluster client are shared with reads (``cluster.py``).
Every call a master acknowledges is kept for a while, and replayed to the slot's new owner
once the slot is known to have left that master (``cluster_replay.py``): a write returns only
after the calls it must replay were sent again.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

from redis.crc import key_slot

from feast_dragonfly._protocol import script as _script
from feast_dragonfly._protocol.flow import Flow
from feast_dragonfly._protocol.script import ScriptCall
from feast_dragonfly._protocol.topology import AsyncRedisCluster, SyncRedisCluster
from feast_dragonfly._store.cluster import (
    REDIRECTS,
    TRANSPORT_ERRORS,
    Cluster,
    Node,
    NoFreeConnection,
    exchange,
    follow_asks,
    replay,
    replay_moved,
    send_request,
    send_request_async,
)
from feast_dragonfly._store.cluster_replay import journal_of, write_via_cluster_client
from feast_dragonfly._store.send import (
    AsyncRoundTrips,
    Job,
    RoundTrips,
    no_round_trip,
    progress_rows,
)

#: Script calls per round trip to one master (each carries one row in cluster mode).
CALLS_PER_NODE_ROUND_TRIP = 64


def _slot_of_call(call: ScriptCall) -> int:
    slot = key_slot(call.key(0))
    for index in range(1, call.rows):
        if key_slot(call.key(index)) != slot:
            raise AssertionError("a cluster script call must keep its keys in one slot")
    return slot


def _split_replies(
    calls: Sequence[ScriptCall], replies: Sequence[Any]
) -> tuple[list[ScriptCall], list[Any], list[ScriptCall]]:
    done_calls, done_replies, redo = [], [], []
    for call, reply in zip(calls, replies):
        if isinstance(reply, REDIRECTS):
            redo.append(call)
        else:
            done_calls.append(call)
            done_replies.append(reply)
    return done_calls, done_replies, redo


def _write_on_node(
    cluster: Cluster, node: Node, calls: Sequence[ScriptCall], view_name: str
) -> Flow[int]:
    """Script calls to the master serving their slots (ASK followed); what that master will
    not serve goes through the cluster client. Returns the rows written."""
    commands = [call.command for call in calls]
    try:
        script = calls[0].script  # one writer, one layout: every call runs the same script
        replies = yield from exchange(node, commands, scripts=script)
        yield from follow_asks(cluster, commands.__getitem__, replies, scripts=script)
    except NoFreeConnection:
        raise
    except TRANSPORT_ERRORS:
        return (yield from write_via_cluster_client(calls, view_name))
    done_calls, done_replies, redo = _split_replies(calls, replies)
    written = _script.rows_written(done_calls, done_replies, view_name)
    # Kept for a replay; replayed now if this master is known to have given their slot away
    # (or, MOVED replies, if it just said so).
    yield from replay(cluster, journal_of(cluster).acknowledged(node.name, done_calls))
    if redo:
        yield from replay_moved(cluster, [node.name] * len(replies), replies)
    if redo:
        written += yield from write_via_cluster_client(redo, view_name)
    return written


class NodePlanner:
    """Routes single-slot script calls to the master serving their slot and makes a round
    trip of a master's calls once it has ``per_round_trip`` of them; the partly filled
    batches at the end (no I/O here: ``send.RoundTrips`` / ``AsyncRoundTrips`` run them)."""

    def __init__(self, cluster: Cluster, view_name: str, per_round_trip: int) -> None:
        self._cluster = cluster
        self._view_name = view_name
        self._nodes = cluster.nodes_manager
        self._journal = journal_of(cluster)
        self._per_round_trip = max(1, per_round_trip)
        self._open: dict[str, tuple[Node, list[ScriptCall]]] = {}

    def jobs(self, group: Sequence[ScriptCall]) -> list[Job]:
        full = []
        for call in group:
            if not call.rows:  # progress only: nothing to route
                full.append(Job(call.progress_rows, no_round_trip()))
                continue
            slot = _slot_of_call(call)
            node = self._nodes.get_node_from_slot(slot)
            if self._journal.elsewhere(slot, node.name):
                # The slot left the master that acknowledged its latest writes: send those
                # again (to this one) along with this write.
                replays = self._journal.routed(slot, node.name)
                full.append(Job(0, replay(self._cluster, replays)))
            entry = self._open.get(node.name)
            if entry is None:
                entry = self._open[node.name] = (node, [])
            entry[1].append(call)
            if len(entry[1]) >= self._per_round_trip:
                del self._open[node.name]
                full.append(self._job(*entry))
        return full

    def drain(self) -> list[Job]:
        batches = [self._job(node, calls) for node, calls in self._open.values()]
        self._open.clear()
        return batches

    def _job(self, node: Node, calls: list[ScriptCall]) -> Job:
        return Job(
            progress_rows(calls), _write_on_node(self._cluster, node, calls, self._view_name)
        )


class ClusterSender(RoundTrips):
    """Routes single-slot script calls to their masters (sync API), ``calls_per_round_trip``
    calls per round trip, up to ``concurrency`` round trips in flight on the executor.

    Same interface as ``send.Sender`` (``submit`` groups, then ``finish`` or ``abort``);
    progress is reported from the calling thread as round trips complete, in rows.
    """

    def __init__(
        self,
        cluster: SyncRedisCluster,
        view_name: str,
        *,
        calls_per_round_trip: int = CALLS_PER_NODE_ROUND_TRIP,
        **options: Any,
    ) -> None:
        planner = NodePlanner(cluster, view_name, calls_per_round_trip)
        super().__init__(planner, partial(send_request, cluster), **options)


class AsyncClusterSender(AsyncRoundTrips):
    """:class:`ClusterSender` for the asyncio cluster client."""

    def __init__(
        self,
        cluster: AsyncRedisCluster,
        view_name: str,
        *,
        calls_per_round_trip: int = CALLS_PER_NODE_ROUND_TRIP,
        **options: Any,
    ) -> None:
        planner = NodePlanner(cluster, view_name, calls_per_round_trip)
        super().__init__(planner, partial(send_request_async, cluster), **options)
