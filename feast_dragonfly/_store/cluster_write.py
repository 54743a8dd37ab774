"""Redis Cluster: the fast write path, script calls routed to their masters by hash slot.

The event-time script declares the keys it touches, and a cluster runs a script only when all
its keys hash to one slot, so in cluster mode every script call carries exactly one row
(``rows_per_call`` 1); calls are still pipelined, many per round trip per master. A node that
lacks the script (``NOSCRIPT``) gets it loaded and the calls resent; every call is event-time
guarded, so sending one twice never changes the result. Routing, round trips, ASK following
and the fallback through redis-py's cluster client are shared with reads (``cluster.py``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from concurrent.futures import Executor
from functools import partial
from typing import Any

from redis import exceptions as redis_exceptions
from redis.crc import key_slot

from feast_dragonfly._protocol import flow, wire
from feast_dragonfly._protocol import script as _script
from feast_dragonfly._protocol.flow import Flow
from feast_dragonfly._protocol.keys import Progress
from feast_dragonfly._protocol.script import ScriptCall
from feast_dragonfly._protocol.topology import AsyncRedisCluster, SyncRedisCluster
from feast_dragonfly._store import write as _write
from feast_dragonfly._store.cluster import (
    REDIRECTS,
    TRANSPORT_ERRORS,
    Cluster,
    LoadScriptEverywhere,
    Node,
    NoFreeConnection,
    ViaClusterClient,
    exchange,
    follow_asks,
    raise_unserved,
    send_request,
    send_request_async,
)

#: Script calls per round trip to one master (each carries one row in cluster mode).
CALLS_PER_NODE_ROUND_TRIP = 64


def _command_args(packed: bytes) -> list[Any]:
    """A packed RESP command back into its arguments (for the cluster client's fallback)."""
    args: list[Any] = wire.arguments(packed)
    # redis-py routes EVALSHA by its key count only when the command name is a str.
    args[0] = args[0].decode()
    return args


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
        replies = yield from exchange(node, commands, scripts=True)
        yield from follow_asks(cluster, commands.__getitem__, replies, scripts=True)
    except NoFreeConnection:
        raise
    except TRANSPORT_ERRORS:
        return (yield from _write_via_cluster_client(calls, view_name))
    done_calls, done_replies, redo = _split_replies(calls, replies)
    written = _script.rows_written(done_calls, done_replies, view_name)
    if redo:
        written += yield from _write_via_cluster_client(redo, view_name)
    return written


def _write_via_cluster_client(calls: Sequence[ScriptCall], view_name: str) -> Flow[int]:
    """The slow path: redis-py's cluster pipeline follows MOVED / ASK and retries."""
    replies = yield ViaClusterClient([_command_args(call.command) for call in calls])
    again = _script.needs_load(replies)
    if again:
        try:
            yield LoadScriptEverywhere()
        except redis_exceptions.ResponseError as exc:
            raise _script.scripting_refused(exc) from None
        answers = yield ViaClusterClient([_command_args(calls[i].command) for i in again])
        for i, reply in zip(again, answers):
            replies[i] = reply
    raise_unserved(replies)
    return _script.rows_written(calls, replies, view_name)


def run_on_node(
    cluster: SyncRedisCluster, node: Node, calls: Sequence[ScriptCall], view_name: str
) -> int:
    """Send script calls to the master serving their slots; returns the rows written."""
    return flow.run(_write_on_node(cluster, node, calls, view_name), partial(send_request, cluster))


async def run_on_node_async(
    cluster: AsyncRedisCluster, node: Node, calls: Sequence[ScriptCall], view_name: str
) -> int:
    return await flow.run_async(
        _write_on_node(cluster, node, calls, view_name), partial(send_request_async, cluster)
    )


class _NodeBatches:
    """Routes single-slot script calls to the master serving their slot and hands back a
    master's calls once it has ``per_round_trip`` of them: the batching both the sync and the
    async sender use (no I/O here)."""

    def __init__(self, cluster: Cluster, per_round_trip: int) -> None:
        self._nodes = cluster.nodes_manager
        self._per_round_trip = max(1, per_round_trip)
        self._open: dict[str, tuple[Node, list[ScriptCall]]] = {}

    def add(self, call: ScriptCall) -> tuple[Node, list[ScriptCall]] | None:
        """Buffer ``call``; a full batch ``(node, calls)`` to send now, or None."""
        node = self._nodes.get_node_from_slot(_slot_of_call(call))
        entry = self._open.get(node.name)
        if entry is None:
            entry = self._open[node.name] = (node, [])
        entry[1].append(call)
        if len(entry[1]) < self._per_round_trip:
            return None
        del self._open[node.name]
        return entry

    def drain(self) -> list[tuple[Node, list[ScriptCall]]]:
        """Every partly filled batch, emptied out."""
        batches = list(self._open.values())
        self._open.clear()
        return batches


def _rows(calls: Sequence[ScriptCall]) -> int:
    return sum(call.progress_rows for call in calls)


class ClusterSender(_write.RoundTrips):
    """Routes single-slot script calls to their masters (sync API), ``calls_per_round_trip``
    calls per round trip, up to ``concurrency`` round trips in flight on the executor.

    Same interface as ``_write.Sender`` (``submit`` groups, then ``finish`` or ``abort``);
    progress is reported from the calling thread as round trips complete, in rows.
    """

    def __init__(
        self,
        cluster: Cluster,
        view_name: str,
        *,
        executor: Executor | None,
        concurrency: int,
        progress: Progress,
        calls_per_round_trip: int = CALLS_PER_NODE_ROUND_TRIP,
        window: int | None = None,
    ) -> None:
        super().__init__(
            executor=executor, concurrency=concurrency, progress=progress, window=window
        )
        self._cluster = cluster
        self._view_name = view_name
        self._batches = _NodeBatches(cluster, calls_per_round_trip)

    def submit(self, group: Iterable[ScriptCall]) -> None:
        for call in group:
            batch = self._batches.add(call)
            if batch is not None:
                self._dispatch(*batch)

    def _dispatch(self, node: Node, calls: list[ScriptCall]) -> None:
        self._start(_rows(calls), run_on_node, self._cluster, node, calls, self._view_name)

    def _flush(self) -> None:
        for node, calls in self._batches.drain():
            self._dispatch(node, calls)

    def abort(self) -> None:
        """Drop what is buffered and wait for what is in flight, without reporting."""
        self._batches.drain()
        super().abort()


class AsyncClusterSender(_write.AsyncRoundTrips):
    """:class:`ClusterSender` for the asyncio cluster client."""

    def __init__(
        self,
        cluster: Cluster,
        view_name: str,
        *,
        concurrency: int,
        progress: Progress,
        calls_per_round_trip: int = CALLS_PER_NODE_ROUND_TRIP,
        window: int | None = None,
    ) -> None:
        super().__init__(concurrency=concurrency, progress=progress, window=window)
        self._cluster = cluster
        self._view_name = view_name
        self._batches = _NodeBatches(cluster, calls_per_round_trip)

    async def submit(self, group: Iterable[ScriptCall]) -> None:
        for call in group:
            batch = self._batches.add(call)
            if batch is not None:
                await self._dispatch(*batch)

    async def _dispatch(self, node: Node, calls: list[ScriptCall]) -> None:
        await self._start(
            _rows(calls), run_on_node_async, self._cluster, node, calls, self._view_name
        )

    async def _flush(self) -> None:
        for node, calls in self._batches.drain():
            await self._dispatch(node, calls)

    async def abort(self) -> None:
        self._batches.drain()
        await super().abort()
