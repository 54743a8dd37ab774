"""Redis Cluster: the store's fast read and write paths, routed by hash slot.

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

Writes: the event-time script declares the keys it touches, and a cluster runs a script only
when all its keys hash to one slot, so in cluster mode every script call carries exactly one
row (``rows_per_call`` 1); calls are still pipelined, many per round trip per master. A node
that lacks the script (``NOSCRIPT``) gets it loaded and the calls resent; every call is
event-time guarded, so sending one twice never changes the result.

``update`` / ``teardown`` scan every master (redis-py's cluster ``SCAN`` visits all primaries).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor
from typing import Any

from redis import exceptions as redis_exceptions
from redis.crc import key_slot

from feast_dragonfly import _maintenance, _read, _transport, _write

#: Replies a master sends for a key it does not (or not yet, or no longer) serve: the command
#: did not run, and redis-py's cluster client knows how to get it served.
_REDIRECTS = (
    redis_exceptions.AskError,  # MOVED too (MovedError subclasses AskError)
    redis_exceptions.TryAgainError,
    redis_exceptions.ClusterDownError,
)
#: A node we cannot talk to right now: its commands go through the cluster client, which
#: retries and refreshes the slot map (a replica may have taken over).
_TRANSPORT = (redis_exceptions.ConnectionError, redis_exceptions.TimeoutError)

#: Script calls per round trip to one master (each carries one row in cluster mode).
CALLS_PER_NODE_ROUND_TRIP = 64


# --------------------------------------------------------------------------- routing


def _route(cluster: Any, keys: Sequence[bytes]) -> dict[str, tuple[Any, list[int]]]:
    """Indices of ``keys`` per master (by node name), in key order."""
    groups: dict[str, tuple[Any, list[int]]] = {}
    node_of_slot: dict[int, Any] = {}
    nodes_manager = cluster.nodes_manager
    for index, key in enumerate(keys):
        slot = key_slot(key)
        node = node_of_slot.get(slot)
        if node is None:
            node = node_of_slot[slot] = nodes_manager.get_node_from_slot(slot)
        entry = groups.get(node.name)
        if entry is None:
            entry = groups[node.name] = (node, [])
        entry[1].append(index)
    return groups


class NoFreeConnection(redis_exceptions.ConnectionError):
    """Every fast-path connection to a node stayed busy for ``socket_timeout`` seconds: an
    overload, reported like the standalone pool's "No connection available", not retried."""


def _node_semaphore(cluster: Any, node: Any, factory: Callable[[int], Any]) -> Any:
    semaphore = cluster.node_semaphores.get(node.name)
    if semaphore is None:
        with cluster.node_semaphores_lock:
            semaphore = cluster.node_semaphores.get(node.name)
            if semaphore is None:
                semaphore = factory(cluster.fast_path_connections)
                cluster.node_semaphores[node.name] = semaphore
    return semaphore


def _no_free_connection(cluster: Any, node: Any) -> NoFreeConnection:
    return NoFreeConnection(
        f"no free connection to cluster node {node.name} within "
        f"{cluster.fast_path_timeout:g} s (max_connections={cluster.fast_path_connections})"
    )


def _roundtrip(cluster: Any, node: Any, payloads: list[bytes], count: int) -> list[Any]:
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
            return [_transport.read_reply(connection) for _ in range(count)]
        except BaseException:
            connection.disconnect()
            raise
        finally:
            pool.release(connection)
    finally:
        semaphore.release()


async def _roundtrip_async(cluster: Any, node: Any, payloads: list[bytes], count: int) -> list[Any]:
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
            return [await _transport.read_reply_async(connection) for _ in range(count)]
        except BaseException:
            await connection.disconnect()
            raise
        finally:
            node.release(connection)
    finally:
        semaphore.release()


def _command_args(packed: bytes) -> list[Any]:
    """A packed RESP command back into its arguments (for the cluster client's fallback)."""
    end = packed.index(b"\r\n")
    count = int(packed[1:end])
    position = end + 2
    args: list[Any] = []
    for _ in range(count):
        end = packed.index(b"\r\n", position)
        length = int(packed[position + 1 : end])
        start = end + 2
        args.append(packed[start : start + length])
        position = start + length + 2
    # redis-py routes EVALSHA by its key count only when the command name is a str.
    args[0] = args[0].decode()
    return args


# --------------------------------------------------------------------------- ASK

_ASKING = b"*1\r\n$6\r\nASKING\r\n"


def _is_ask(reply: Any) -> bool:
    return isinstance(reply, redis_exceptions.AskError) and not isinstance(
        reply, redis_exceptions.MovedError
    )


def _ask_groups(cluster: Any, replies: Sequence[Any]) -> dict[str, tuple[Any, list[int]]]:
    """Indices of the replies that are ASK, by the (known) node each names; an unknown node
    is left to the cluster client."""
    groups: dict[str, tuple[Any, list[int]]] = {}
    for index, reply in enumerate(replies):
        if _is_ask(reply):
            node = cluster.nodes_manager.get_node(host=reply.host, port=reply.port)
            if node is not None:
                groups.setdefault(node.name, (node, []))[1].append(index)
    return groups


def _last_of_each(answers: list[Any], per: int) -> list[Any]:
    return answers[per - 1 :: per]


def _exchange(
    cluster: Any, node: Any, payloads: list[bytes], *, asking: bool = False, scripts: bool = False
) -> list[Any]:
    """One reply per payload (one command each). ``asking``: each command goes right after an
    ``ASKING`` on the same connection, as an ASK redirection requires (redis-py's asyncio
    cluster client sends ``ASKING`` on whichever pooled connection is free, so redirections
    are followed here). ``scripts``: on ``NOSCRIPT``, load the script on that node, resend."""
    sent = [_ASKING + payload for payload in payloads] if asking else payloads
    per = 2 if asking else 1
    replies = _last_of_each(_roundtrip(cluster, node, sent, per * len(sent)), per)
    missing = [i for i, reply in enumerate(replies) if scripts and _write._is_noscript(reply)]
    if missing:
        _load_failed(_roundtrip(cluster, node, [_write._script_load_command()], 1)[0])
        again = _roundtrip(cluster, node, [sent[i] for i in missing], per * len(missing))
        for i, reply in zip(missing, _last_of_each(again, per)):
            replies[i] = reply
    return replies


async def _exchange_async(
    cluster: Any, node: Any, payloads: list[bytes], *, asking: bool = False, scripts: bool = False
) -> list[Any]:
    sent = [_ASKING + payload for payload in payloads] if asking else payloads
    per = 2 if asking else 1
    replies = _last_of_each(await _roundtrip_async(cluster, node, sent, per * len(sent)), per)
    missing = [i for i, reply in enumerate(replies) if scripts and _write._is_noscript(reply)]
    if missing:
        load = await _roundtrip_async(cluster, node, [_write._script_load_command()], 1)
        _load_failed(load[0])
        again = await _roundtrip_async(
            cluster, node, [sent[i] for i in missing], per * len(missing)
        )
        for i, reply in zip(missing, _last_of_each(again, per)):
            replies[i] = reply
    return replies


def _follow_asks(
    cluster: Any, payload_of: Callable[[int], bytes], replies: list[Any], *, scripts: bool
) -> None:
    """Resend each command answered ``ASK`` to the node named, after ``ASKING``; replies are
    replaced in place (if that node cannot be reached, the ASK is left to the cluster client)."""
    for node, indices in _ask_groups(cluster, replies).values():
        try:
            answers = _exchange(
                cluster, node, [payload_of(i) for i in indices], asking=True, scripts=scripts
            )
        except NoFreeConnection:
            raise
        except _TRANSPORT:
            continue
        for i, answer in zip(indices, answers):
            replies[i] = answer


async def _follow_asks_async(
    cluster: Any, payload_of: Callable[[int], bytes], replies: list[Any], *, scripts: bool
) -> None:
    for node, indices in _ask_groups(cluster, replies).values():
        try:
            answers = await _exchange_async(
                cluster, node, [payload_of(i) for i in indices], asking=True, scripts=scripts
            )
        except NoFreeConnection:
            raise
        except _TRANSPORT:
            continue
        for i, answer in zip(indices, answers):
            replies[i] = answer


def _raise_unserved(replies: Sequence[Any]) -> None:
    """A redirection the cluster client could not resolve either (its retries exhausted):
    the cluster is not serving that slot, which is not a data problem."""
    for reply in replies:
        if isinstance(reply, _REDIRECTS):
            raise redis_exceptions.ClusterError(f"still redirected after retries: {reply}")


def _needs_cluster_client(reply: Any) -> bool:
    """A reply the fast path could not get: no answer (broken connection) or a redirection."""
    return reply is None or isinstance(reply, _REDIRECTS)


# --------------------------------------------------------------------------- reads


def _sub_plan(plan: _read.ReadPlan, indices: Sequence[int]) -> _read.ReadPlan:
    return _read.ReadPlan(
        views=[],
        keys=[plan.keys[i] for i in indices],
        key_fieldsets=[plan.key_fieldsets[i] for i in indices],
        key_entities=[plan.key_entities[i] for i in indices],
    )


def _hmget_command(plan: _read.ReadPlan, index: int) -> bytes:
    return _sub_plan(plan, [index]).commands(0, 1)


def _hmget_args(plan: _read.ReadPlan, index: int) -> list[Any]:
    fields = [f for fieldset in plan.key_fieldsets[index] for f in fieldset.fields]
    return ["HMGET", plan.keys[index], *fields]


def _read_tasks(cluster: Any, plan: _read.ReadPlan, chunk_size: int) -> list[tuple[Any, list[int]]]:
    tasks = []
    for node, indices in _route(cluster, plan.keys).values():
        for start in range(0, len(indices), chunk_size):
            tasks.append((node, indices[start : start + chunk_size]))
    return tasks


def _merge(
    tasks: Sequence[tuple[Any, list[int]]], results: Sequence[list[Any] | None], total: int
) -> list[Any]:
    """Replies in plan order; ``None`` where a master could not be reached."""
    replies: list[Any] = [None] * total
    for (_node, indices), result in zip(tasks, results):
        if result is not None:
            for index, reply in zip(indices, result):
                replies[index] = reply
    return replies


def _read_on_node(
    cluster: Any, plan: _read.ReadPlan, node: Any, indices: list[int]
) -> list[Any] | None:
    sub = _sub_plan(plan, indices)
    try:
        return _roundtrip(cluster, node, [sub.commands(0, len(indices))], len(indices))
    except NoFreeConnection:
        raise
    except _TRANSPORT:
        return None  # redone through the cluster client, which retries and re-learns slots


def fetch(
    cluster: Any, plan: _read.ReadPlan, chunk_size: int, executor: Executor | None
) -> list[Any]:
    """Every HMGET reply in plan order: per-master chunks sent concurrently (``executor``),
    ASK redirections followed, whatever is left redone through redis-py's cluster pipeline."""
    tasks = _read_tasks(cluster, plan, chunk_size)
    if executor is None or len(tasks) <= 1:
        results = [_read_on_node(cluster, plan, node, indices) for node, indices in tasks]
    else:
        futures = [
            executor.submit(_read_on_node, cluster, plan, node, indices) for node, indices in tasks
        ]
        results = [future.result() for future in futures]
    replies = _merge(tasks, results, len(plan.keys))
    _follow_asks(cluster, lambda i: _hmget_command(plan, i), replies, scripts=False)
    redo = [i for i, reply in enumerate(replies) if _needs_cluster_client(reply)]
    if redo:
        pipe = cluster.pipeline()
        for index in redo:
            pipe.execute_command(*_hmget_args(plan, index))
        for index, reply in zip(redo, pipe.execute(raise_on_error=False)):
            replies[index] = reply
    _raise_unserved(replies)
    _read._raise_on_error(plan, replies)
    return replies


async def _read_on_node_async(
    cluster: Any, plan: _read.ReadPlan, node: Any, indices: list[int]
) -> list[Any] | None:
    sub = _sub_plan(plan, indices)
    try:
        return await _roundtrip_async(cluster, node, [sub.commands(0, len(indices))], len(indices))
    except NoFreeConnection:
        raise
    except _TRANSPORT:
        return None


async def fetch_async(cluster: Any, plan: _read.ReadPlan, chunk_size: int) -> list[Any]:
    tasks = _read_tasks(cluster, plan, chunk_size)
    results = await asyncio.gather(
        *(_read_on_node_async(cluster, plan, node, indices) for node, indices in tasks)
    )
    replies = _merge(tasks, results, len(plan.keys))
    await _follow_asks_async(cluster, lambda i: _hmget_command(plan, i), replies, scripts=False)
    redo = [i for i, reply in enumerate(replies) if _needs_cluster_client(reply)]
    if redo:
        pipe = cluster.pipeline()
        for index in redo:
            pipe.execute_command(*_hmget_args(plan, index))
        for index, reply in zip(redo, await pipe.execute(raise_on_error=False)):
            replies[index] = reply
    _raise_unserved(replies)
    _read._raise_on_error(plan, replies)
    return replies


# --------------------------------------------------------------------------- writes


def _slot_of_call(call: _write.ScriptCall) -> int:
    slot = key_slot(call.key(0))
    for index in range(1, call.rows):
        if key_slot(call.key(index)) != slot:
            raise AssertionError("a cluster script call must keep its keys in one slot")
    return slot


def _split_replies(
    calls: Sequence[_write.ScriptCall], replies: Sequence[Any]
) -> tuple[list[_write.ScriptCall], list[Any], list[_write.ScriptCall]]:
    done_calls, done_replies, redo = [], [], []
    for call, reply in zip(calls, replies):
        if isinstance(reply, _REDIRECTS):
            redo.append(call)
        else:
            done_calls.append(call)
            done_replies.append(reply)
    return done_calls, done_replies, redo


def _load_failed(reply: Any) -> None:
    if isinstance(reply, Exception):
        raise _write._scripting_refused(reply)


def run_on_node(cluster: Any, node: Any, calls: Sequence[_write.ScriptCall], view_name: str) -> int:
    """Send script calls to the master serving their slots; returns the rows written."""
    commands = [call.command for call in calls]
    try:
        replies = _exchange(cluster, node, commands, scripts=True)
        _follow_asks(cluster, commands.__getitem__, replies, scripts=True)
    except NoFreeConnection:
        raise
    except _TRANSPORT:
        return _run_via_cluster(cluster, calls, view_name)
    done_calls, done_replies, redo = _split_replies(calls, replies)
    written = _write._check_replies(done_calls, done_replies, view_name)
    if redo:
        written += _run_via_cluster(cluster, redo, view_name)
    return written


def _run_via_cluster(cluster: Any, calls: Sequence[_write.ScriptCall], view_name: str) -> int:
    """The slow path: redis-py's cluster pipeline follows MOVED / ASK and retries."""
    pipe = cluster.pipeline()
    for call in calls:
        pipe.execute_command(*_command_args(call.command))
    replies = pipe.execute(raise_on_error=False)
    if any(_write._is_noscript(reply) for reply in replies):
        try:
            cluster.script_load(_write.SCRIPT_SOURCE)  # on every primary
        except redis_exceptions.ResponseError as exc:
            raise _write._scripting_refused(exc) from None
        again = [i for i, reply in enumerate(replies) if _write._is_noscript(reply)]
        pipe = cluster.pipeline()
        for i in again:
            pipe.execute_command(*_command_args(calls[i].command))
        for i, reply in zip(again, pipe.execute(raise_on_error=False)):
            replies[i] = reply
    _raise_unserved(replies)
    return _write._check_replies(calls, replies, view_name)


class ClusterSender(_write.RoundTrips):
    """Routes single-slot script calls to their masters (sync API), ``calls_per_round_trip``
    calls per round trip, up to ``concurrency`` round trips in flight on the executor.

    Same interface as ``_write.Sender`` (``submit`` groups, then ``finish`` or ``abort``);
    progress is reported from the calling thread as round trips complete, in rows.
    """

    def __init__(
        self,
        cluster: Any,
        view_name: str,
        *,
        executor: Executor | None,
        concurrency: int,
        progress: Callable[[int], Any] | None,
        calls_per_round_trip: int = CALLS_PER_NODE_ROUND_TRIP,
        window: int | None = None,
    ) -> None:
        super().__init__(
            executor=executor, concurrency=concurrency, progress=progress, window=window
        )
        self._cluster = cluster
        self._view_name = view_name
        self._per_round_trip = max(1, calls_per_round_trip)
        self._buffers: dict[str, tuple[Any, list[_write.ScriptCall]]] = {}

    def submit(self, group: Iterable[_write.ScriptCall]) -> None:
        nodes_manager = self._cluster.nodes_manager
        for call in group:
            node = nodes_manager.get_node_from_slot(_slot_of_call(call))
            entry = self._buffers.get(node.name)
            if entry is None:
                entry = self._buffers[node.name] = (node, [])
            entry[1].append(call)
            if len(entry[1]) >= self._per_round_trip:
                del self._buffers[node.name]
                self._dispatch(*entry)

    def _dispatch(self, node: Any, calls: list[_write.ScriptCall]) -> None:
        rows = sum(call.progress_rows for call in calls)
        self._start(rows, run_on_node, self._cluster, node, calls, self._view_name)

    def _flush(self) -> None:
        for node, calls in list(self._buffers.values()):
            self._dispatch(node, calls)
        self._buffers.clear()

    def abort(self) -> None:
        """Drop what is buffered and wait for what is in flight, without reporting."""
        self._buffers.clear()
        super().abort()


def run_calls(
    cluster: Any,
    calls: Iterable[_write.ScriptCall],
    view_name: str,
    progress: Callable[[int], Any] | None,
    *,
    executor: Executor | None = None,
    concurrency: int = 1,
) -> int:
    """Send every (single-slot) call to its master; returns the number of rows written."""
    sender = ClusterSender(
        cluster, view_name, executor=executor, concurrency=concurrency, progress=progress
    )
    try:
        for call in calls:
            sender.submit((call,))
    except BaseException:
        sender.abort()
        raise
    return sender.finish()


async def run_on_node_async(
    cluster: Any, node: Any, calls: Sequence[_write.ScriptCall], view_name: str
) -> int:
    commands = [call.command for call in calls]
    try:
        replies = await _exchange_async(cluster, node, commands, scripts=True)
        await _follow_asks_async(cluster, commands.__getitem__, replies, scripts=True)
    except NoFreeConnection:
        raise
    except _TRANSPORT:
        return await _run_via_cluster_async(cluster, calls, view_name)
    done_calls, done_replies, redo = _split_replies(calls, replies)
    written = _write._check_replies(done_calls, done_replies, view_name)
    if redo:
        written += await _run_via_cluster_async(cluster, redo, view_name)
    return written


async def _run_via_cluster_async(
    cluster: Any, calls: Sequence[_write.ScriptCall], view_name: str
) -> int:
    pipe = cluster.pipeline()
    for call in calls:
        pipe.execute_command(*_command_args(call.command))
    replies = await pipe.execute(raise_on_error=False)
    if any(_write._is_noscript(reply) for reply in replies):
        try:
            await cluster.script_load(_write.SCRIPT_SOURCE)
        except redis_exceptions.ResponseError as exc:
            raise _write._scripting_refused(exc) from None
        again = [i for i, reply in enumerate(replies) if _write._is_noscript(reply)]
        pipe = cluster.pipeline()
        for i in again:
            pipe.execute_command(*_command_args(calls[i].command))
        for i, reply in zip(again, await pipe.execute(raise_on_error=False)):
            replies[i] = reply
    _raise_unserved(replies)
    return _write._check_replies(calls, replies, view_name)


async def run_calls_async(
    cluster: Any,
    calls: Iterable[_write.ScriptCall],
    view_name: str,
    progress: Callable[[int], Any] | None,
    *,
    concurrency: int = 1,
) -> int:
    """Send every call to its master, up to ``concurrency`` round trips at once."""
    nodes_manager = cluster.nodes_manager
    batches: list[tuple[Any, list[_write.ScriptCall]]] = []
    open_batches: dict[str, tuple[Any, list[_write.ScriptCall]]] = {}
    for call in calls:
        node = nodes_manager.get_node_from_slot(_slot_of_call(call))
        entry = open_batches.get(node.name)
        if entry is None:
            entry = open_batches[node.name] = (node, [])
            batches.append(entry)
        entry[1].append(call)
        if len(entry[1]) >= CALLS_PER_NODE_ROUND_TRIP:
            del open_batches[node.name]
    if not batches:
        return 0
    semaphore = asyncio.Semaphore(max(1, concurrency))

    async def one(node: Any, batch: list[_write.ScriptCall]) -> int:
        async with semaphore:
            written = await run_on_node_async(cluster, node, batch, view_name)
        if progress:
            progress(sum(call.progress_rows for call in batch))
        return written

    results = await asyncio.gather(*(one(*entry) for entry in batches), return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return sum(results)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- maintenance


def delete_entities(cluster: Any, *, project: str, join_keys: Sequence[str]) -> int:
    """``_maintenance.delete_entities`` for a cluster: the keys of every master (cluster
    ``SCAN``), removed with pipelined single-key ``UNLINK``s (a multi-key ``UNLINK`` would
    cost one round trip per slot)."""
    keys = list(_maintenance.project_keys(cluster, project=project, join_keys=join_keys))
    removed = 0
    for start in range(0, len(keys), _maintenance._BATCH):
        pipe = cluster.pipeline()
        for key in keys[start : start + _maintenance._BATCH]:
            pipe.unlink(key)
        removed += sum(int(reply) for reply in pipe.execute())
    return removed
