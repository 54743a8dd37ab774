"""Redis Cluster: routing by hash slot, round trips, ASK following, and the fast read path.

The data layout stays Feast's — no hash tags — so the keys of one request are spread over the
cluster's 16,384 slots and therefore over every master. Both paths work the same way:

1. **Route** every command by its key's slot to the master that serves it, as redis-py's
   cluster client currently sees the slot map.
2. **Send** each master's commands as pre-encoded RESP on one of that master's pooled
   connections (the same packed ``HMGET`` / ``EVALSHA`` bytes as on a single server), the
   masters' batches concurrently.
3. **Follow ASK** (a slot being migrated, the key already moved): resend to the node named,
   right after ``ASKING`` on the same connection. (redis-py's asyncio cluster client sends its
   ``ASKING`` on whichever pooled connection is free, so it loops when a node has several.)
4. **Fall back** for whatever is still unserved — ``MOVED`` (the slot moved: a resharding or a
   failover), ``TRYAGAIN``, ``CLUSTERDOWN``, or a connection that broke — by resending just
   those commands through redis-py's cluster pipeline, which follows the redirection,
   refreshes its slot map and retries. The next request then routes by the new map.
5. **Replay** (bookkeeping in ``cluster_replay.py``): once slots are known to have left a
   master (it answers ``MOVED``, then says which of its recently written slots it no longer
   serves; or the map routes a slot elsewhere), the writes that master acknowledged for them
   lately are sent again, to the new owners, before the request goes on — a Dragonfly
   migration can acknowledge a script call and then erase it.

The read path is here (``fetch``); the write senders, built on the same round trips and
ASK following, are in ``cluster_write.py``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from functools import partial
from typing import Any, cast

from redis import exceptions as redis_exceptions
from redis.asyncio.cluster import ClusterNode as AsyncClusterNode
from redis.cluster import ClusterNode
from redis.crc import key_slot

from feast_dragonfly._protocol import flow, wire
from feast_dragonfly._protocol import script as _script
from feast_dragonfly._protocol.flow import Flow
from feast_dragonfly._protocol.script import ScriptCall
from feast_dragonfly._protocol.topology import AsyncRedisCluster, SyncRedisCluster
from feast_dragonfly._store import read as _read
from feast_dragonfly._store.cluster_replay import (
    ViaClusterClient,
    journal_of,
    raise_unserved,
    write_via_cluster_client,
)

#: The cluster clients (with their fast-path limits) and their nodes, sync or asyncio.
Cluster = SyncRedisCluster | AsyncRedisCluster
Node = ClusterNode | AsyncClusterNode

#: Replies a master sends for a key it does not (or not yet, or no longer) serve: the command
#: did not run, and redis-py's cluster client knows how to get it served.
REDIRECTS = (
    redis_exceptions.AskError,  # MOVED too (MovedError subclasses AskError)
    redis_exceptions.TryAgainError,
    redis_exceptions.ClusterDownError,
)
#: A node we cannot talk to right now: its commands go through the cluster client, which
#: retries and refreshes the slot map (a replica may have taken over).
TRANSPORT_ERRORS = (redis_exceptions.ConnectionError, redis_exceptions.TimeoutError)


# --------------------------------------------------------------------------- routing


def _route(
    cluster: Cluster, keys: Sequence[bytes], replays: list[ScriptCall]
) -> dict[str, tuple[Node, list[int]]]:
    """Indices of ``keys`` per master (by node name), in key order; ``replays`` gets the
    writes to resend first, for slots the map now routes away from the master that took them."""
    groups: dict[str, tuple[Node, list[int]]] = {}
    node_of_slot: dict[int, Any] = {}
    nodes_manager = cluster.nodes_manager
    journal = journal_of(cluster)
    for index, key in enumerate(keys):
        slot = key_slot(key)
        node = node_of_slot.get(slot)
        if node is None:
            node = node_of_slot[slot] = nodes_manager.get_node_from_slot(slot)
            if journal.elsewhere(slot, node.name):
                replays.extend(journal.routed(slot, node.name))
        entry = groups.get(node.name)
        if entry is None:
            entry = groups[node.name] = (node, [])
        entry[1].append(index)
    return groups


class NoFreeConnection(redis_exceptions.ConnectionError):
    """Every fast-path connection to a node stayed busy for ``socket_timeout`` seconds: an
    overload, reported like the standalone pool's "No connection available", not retried."""


def _node_semaphore(cluster: Cluster, node: Node, factory: Callable[[int], Any]) -> Any:
    semaphore = cluster.node_semaphores.get(node.name)
    if semaphore is None:
        with cluster.node_semaphores_lock:
            semaphore = cluster.node_semaphores.get(node.name)
            if semaphore is None:
                semaphore = factory(cluster.fast_path_connections)
                cluster.node_semaphores[node.name] = semaphore
    return semaphore


def _no_free_connection(cluster: Cluster, node: Node) -> NoFreeConnection:
    return NoFreeConnection(
        f"no free connection to cluster node {node.name} within "
        f"{cluster.fast_path_timeout:g} s (max_connections={cluster.fast_path_connections})"
    )


def _roundtrip(
    cluster: SyncRedisCluster, node: ClusterNode, payloads: list[bytes], count: int
) -> list[Any]:
    """Send pre-encoded commands on one of ``node``'s pooled connections; read ``count``
    replies (error replies as exception objects). At most ``max_connections`` at once per
    node (``_topology.FastPathLimits``)."""
    semaphore = _node_semaphore(cluster, node, threading.BoundedSemaphore)
    if not semaphore.acquire(timeout=cluster.fast_path_timeout):
        raise _no_free_connection(cluster, node)
    try:
        pool = cluster.get_redis_connection(node).connection_pool
        connection = pool.get_connection()
        try:
            connection.send_packed_command(payloads, check_health=False)
            return [wire.read_reply(connection) for _ in range(count)]
        except BaseException:
            connection.disconnect()
            raise
        finally:
            pool.release(connection)
    finally:
        semaphore.release()


async def _roundtrip_async(
    cluster: AsyncRedisCluster, node: AsyncClusterNode, payloads: list[bytes], count: int
) -> list[Any]:
    """The asyncio twin of :func:`_roundtrip` (the client, and so its semaphores, belong to
    one event loop)."""
    semaphore = _node_semaphore(cluster, node, asyncio.BoundedSemaphore)
    try:
        await asyncio.wait_for(semaphore.acquire(), cluster.fast_path_timeout)
    except asyncio.TimeoutError:
        raise _no_free_connection(cluster, node) from None
    try:
        connection = node.acquire_connection()
        try:
            await connection.send_packed_command(payloads, check_health=False)
            return await wire.read_replies_async(connection, count)
        except BaseException:
            await connection.disconnect()
            raise
        finally:
            node.release(connection)
    finally:
        semaphore.release()


# --------------------------------------------------------------------------- requests

# What the flows below ask their driver to send (see ``flow``): pre-encoded commands to one
# node's fast-path connection, commands through redis-py's cluster pipeline (which follows
# MOVED / ASK, refreshes the slot map and retries), or the script to every primary.


@dataclass(frozen=True)
class _RoundTrip:
    node: Node
    payloads: list[bytes]
    replies: int


def send_request(cluster: SyncRedisCluster, request: Any) -> Any:
    if isinstance(request, _RoundTrip):
        return _roundtrip(
            cluster, cast(ClusterNode, request.node), request.payloads, request.replies
        )
    if isinstance(request, ViaClusterClient):
        pipe = cluster.pipeline()
        for args in request.commands:
            pipe.execute_command(*args)
        return pipe.execute(raise_on_error=False)
    return cluster.script_load(request.script.source)


async def send_request_async(cluster: AsyncRedisCluster, request: Any) -> Any:
    if isinstance(request, _RoundTrip):
        return await _roundtrip_async(
            cluster, cast(AsyncClusterNode, request.node), request.payloads, request.replies
        )
    if isinstance(request, ViaClusterClient):
        pipe = cluster.pipeline()
        for args in request.commands:
            pipe.execute_command(*args)
        return await pipe.execute(raise_on_error=False)
    return await cluster.script_load(request.script.source)


# --------------------------------------------------------------------------- ASK

_ASKING = b"*1\r\n$6\r\nASKING\r\n"


def _is_ask(reply: Any) -> bool:
    return isinstance(reply, redis_exceptions.AskError) and not isinstance(
        reply, redis_exceptions.MovedError
    )


def _ask_groups(cluster: Cluster, replies: Sequence[Any]) -> dict[str, tuple[Node, list[int]]]:
    """Indices of the replies that are ASK, by the (known) node each names; an unknown node
    is left to the cluster client."""
    groups: dict[str, tuple[Node, list[int]]] = {}
    for index, reply in enumerate(replies):
        if _is_ask(reply):
            node = cluster.nodes_manager.get_node(host=reply.host, port=reply.port)
            if node is not None:
                groups.setdefault(node.name, (node, []))[1].append(index)
    return groups


def exchange(
    node: Node,
    payloads: list[bytes],
    *,
    asking: bool = False,
    scripts: _script.Script | None = None,
) -> Flow[list[Any]]:
    """One reply per payload (one command each). ``asking``: each command goes right after an
    ``ASKING`` on the same connection, as an ASK redirection requires (redis-py's asyncio
    cluster client sends ``ASKING`` on whichever pooled connection is free, so redirections
    are followed here). ``scripts``: the script the commands call — on ``NOSCRIPT``, it is
    loaded on that node and the commands resent."""
    sent = [_ASKING + payload for payload in payloads] if asking else payloads
    per = 2 if asking else 1
    replies = wire.last_of_each((yield _RoundTrip(node, sent, per * len(sent))), per)
    missing = _script.needs_load(replies) if scripts is not None else []
    if missing:
        assert scripts is not None
        [loaded] = yield _RoundTrip(node, [scripts.load_command], 1)
        _script.check_loaded(loaded)
        again = yield _RoundTrip(node, [sent[i] for i in missing], per * len(missing))
        for i, reply in zip(missing, wire.last_of_each(again, per)):
            replies[i] = reply
    return replies


def follow_asks(
    cluster: Cluster,
    payload_of: Callable[[int], bytes],
    replies: list[Any],
    *,
    scripts: _script.Script | None,
) -> Flow[None]:
    """Resend each command answered ``ASK`` to the node named, after ``ASKING``; replies are
    replaced in place (if that node cannot be reached, the ASK is left to the cluster client)."""
    for node, indices in _ask_groups(cluster, replies).values():
        try:
            answers = yield from exchange(
                node, [payload_of(i) for i in indices], asking=True, scripts=scripts
            )
        except NoFreeConnection:
            raise
        except TRANSPORT_ERRORS:
            continue
        for i, answer in zip(indices, answers):
            replies[i] = answer


def _needs_cluster_client(reply: Any) -> bool:
    """A reply the fast path could not get: no answer (broken connection) or a redirection."""
    return reply is None or isinstance(reply, REDIRECTS)


# --------------------------------------------------------------------------- reads


def _sub_plan(plan: _read.ReadPlan, indices: Sequence[int]) -> _read.ReadPlan:
    return _read.ReadPlan(
        views=[],
        keys=[plan.keys[i] for i in indices],
        key_fieldsets=[plan.key_fieldsets[i] for i in indices],
        key_entities=[plan.key_entities[i] for i in indices] if plan.key_entities else [],
        records=plan.records,
    )


def _hmget_command(plan: _read.ReadPlan, index: int) -> bytes:
    return _sub_plan(plan, [index]).commands(0, 1)


def _hmget_args(plan: _read.ReadPlan, index: int) -> list[Any]:
    if plan.records:
        return ["GET", plan.keys[index]]
    fields = [f for fieldset in plan.key_fieldsets[index] for f in fieldset.fields]
    return ["HMGET", plan.keys[index], *fields]


def _read_tasks(
    cluster: Cluster, plan: _read.ReadPlan, chunk_size: int
) -> tuple[list[tuple[Node, list[int]]], list[ScriptCall]]:
    """Per-master chunks of the plan, and the writes to replay before reading them."""
    tasks = []
    replays: list[ScriptCall] = []
    for node, indices in _route(cluster, plan.keys, replays).values():
        for start in range(0, len(indices), chunk_size):
            tasks.append((node, indices[start : start + chunk_size]))
    return tasks, replays


def _merge(
    tasks: Sequence[tuple[Node, list[int]]], results: Sequence[list[Any] | None], total: int
) -> tuple[list[Any], list[str]]:
    """Replies in plan order (``None`` where a master could not be reached), and the name of
    the master each went to."""
    replies: list[Any] = [None] * total
    nodes: list[str] = [""] * total
    for (node, indices), result in zip(tasks, results):
        for index in indices:
            nodes[index] = node.name
        if result is not None:
            for index, reply in zip(indices, result):
                replies[index] = reply
    return replies, nodes


def _exists(key: bytes) -> bytes:
    return b"*2\r\n$6\r\nEXISTS\r\n$%d\r\n%b\r\n" % (len(key), key)


def replay(
    cluster: Cluster, calls: Sequence[ScriptCall], owners: dict[int, Node] | None = None
) -> Flow[int]:
    """Acknowledged calls sent again, to the master serving each slot now (``owners``, else
    the slot map; a ``MOVED`` followed once), on the fast path; what that cannot deliver
    goes through the cluster client. Returns 0: the rows were counted when first written."""
    pending = list(calls)
    for _attempt in range(2):
        groups: dict[tuple[str, str], tuple[Node, list[ScriptCall]]] = {}
        for call in pending:
            slot = key_slot(call.key(0))
            node = (owners or {}).get(slot) or cluster.nodes_manager.get_node_from_slot(slot)
            groups.setdefault((node.name, call.script.sha), (node, []))[1].append(call)
        pending, owners = [], {}
        for node, group in groups.values():
            try:
                replies = yield from exchange(
                    node, [call.command for call in group], scripts=group[0].script
                )
            except NoFreeConnection:
                raise
            except TRANSPORT_ERRORS:
                pending += group
                continue
            for call, reply in zip(group, replies):
                if isinstance(reply, redis_exceptions.MovedError):
                    target = cluster.nodes_manager.get_node(host=reply.host, port=reply.port)
                    if target is not None:
                        owners[reply.slot_id] = target
                if isinstance(reply, REDIRECTS):
                    pending.append(call)
                else:
                    _script.rows_written([call], [reply], "(replayed after a resharding)")
        if not pending:
            return 0
    yield from write_via_cluster_client(pending, "(replayed after a resharding)")
    return 0


def replay_moved(cluster: Cluster, nodes: Sequence[str], replies: Sequence[Any]) -> Flow[None]:
    """A master answered ``MOVED`` (``nodes[i]`` sent ``replies[i]``): the writes it
    acknowledged lately for the slots it gave away, replayed to their new owners. Which slots
    those are is asked of the master itself — one ``EXISTS`` per slot it took writes for, in
    one round trip — since a migration moves more slots than the one it named."""
    journal = journal_of(cluster)
    seen: set[tuple[str, int]] = set()
    owners: dict[int, Node] = {}
    for name, reply in zip(nodes, replies):
        if not isinstance(reply, redis_exceptions.MovedError) or (name, reply.slot_id) in seen:
            continue
        seen.add((name, reply.slot_id))
        candidates = journal.moved(name, reply.slot_id)
        others = [slot for slot in candidates if slot != reply.slot_id]
        gone = [reply.slot_id]
        node = cluster.nodes_manager.get_node(node_name=name)
        if others and node is not None:
            try:
                answers = yield _RoundTrip(
                    node, [_exists(candidates[slot][0].key(0)) for slot in others], len(others)
                )
                for slot, answer in zip(others, answers):
                    if isinstance(answer, redis_exceptions.MovedError):
                        gone.append(slot)
                        owner = cluster.nodes_manager.get_node(host=answer.host, port=answer.port)
                        if owner is not None:
                            owners[slot] = owner
            except NoFreeConnection:
                raise
            except TRANSPORT_ERRORS:
                gone += others  # cannot tell: replaying is safe
        elif others:
            gone += others
        owner = cluster.nodes_manager.get_node(host=reply.host, port=reply.port)
        if owner is not None:
            owners[reply.slot_id] = owner
        yield from replay(cluster, journal.take(name, gone), owners)


def _read_on_node(plan: _read.ReadPlan, node: Node, indices: list[int]) -> Flow[list[Any] | None]:
    sub = _sub_plan(plan, indices)
    try:
        return (yield _RoundTrip(node, [sub.commands(0, len(indices))], len(indices)))
    except NoFreeConnection:
        raise
    except TRANSPORT_ERRORS:
        return None  # redone through the cluster client, which retries and re-learns slots


def _complete_read(
    cluster: Cluster, plan: _read.ReadPlan, replies: list[Any], nodes: list[str]
) -> Flow[list[Any]]:
    """ASK redirections followed, the writes of slots that moved replayed, whatever is left
    redone through the cluster client."""
    yield from follow_asks(cluster, lambda i: _hmget_command(plan, i), replies, scripts=None)
    yield from replay_moved(cluster, nodes, replies)
    redo = [i for i, reply in enumerate(replies) if _needs_cluster_client(reply)]
    if redo:
        answers = yield ViaClusterClient([_hmget_args(plan, index) for index in redo])
        for index, reply in zip(redo, answers):
            replies[index] = reply
    raise_unserved(replies)
    _read.raise_on_error(plan, replies)
    return replies


def fetch(
    cluster: SyncRedisCluster, plan: _read.ReadPlan, chunk_size: int, executor: Executor | None
) -> list[Any]:
    """Every HMGET reply in plan order: per-master chunks sent concurrently (``executor``),
    ASK redirections followed, whatever is left redone through redis-py's cluster pipeline."""
    tasks, replays = _read_tasks(cluster, plan, chunk_size)
    send = partial(send_request, cluster)
    flow.run(replay(cluster, replays), send)

    def read(node: Node, indices: list[int]) -> list[Any] | None:
        return flow.run(_read_on_node(plan, node, indices), send)

    if executor is None or len(tasks) <= 1:
        results = [read(node, indices) for node, indices in tasks]
    else:
        futures = [executor.submit(read, node, indices) for node, indices in tasks]
        results = [future.result() for future in futures]
    replies, nodes = _merge(tasks, results, len(plan.keys))
    return flow.run(_complete_read(cluster, plan, replies, nodes), send)


async def fetch_async(
    cluster: AsyncRedisCluster, plan: _read.ReadPlan, chunk_size: int
) -> list[Any]:
    tasks, replays = _read_tasks(cluster, plan, chunk_size)
    send = partial(send_request_async, cluster)
    await flow.run_async(replay(cluster, replays), send)
    results = await asyncio.gather(
        *(flow.run_async(_read_on_node(plan, node, indices), send) for node, indices in tasks)
    )
    replies, nodes = _merge(tasks, results, len(plan.keys))
    return await flow.run_async(_complete_read(cluster, plan, replies, nodes), send)
