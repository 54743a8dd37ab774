"""The write interface for bulk writers: materialization engines and tools.

``online_write_batch`` takes Feast's rows, one list at a time. A bulk writer (our
materialization engine; next the Spark / Ray engines and the migration tool) instead plans its
own script calls column-wise (``_write.plan_columnar_calls``) and streams them: it needs to
know how many rows one call may carry on this deployment, the TTL to write, and something that
keeps a bounded number of round trips in flight while it converts the next batch. That is a
:class:`ViewWriter`, opened by ``DragonflyOnlineStore.view_writer``::

    with store.view_writer(config, view_name, progress=bar.update, ahead_rows=50_000) as out:
        for batch in batches:
            out.send(plan_calls(batch, out.ttl_seconds, out.rows_per_call))
    print(out.written)

Leaving the block waits for every round trip (or, on an error, for those in flight) and stops
the writer's threads; failures come out as the store's errors, never with a password.
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType

from feast_dragonfly._protocol.keys import Progress
from feast_dragonfly._protocol.script import ScriptCall
from feast_dragonfly._store import write as _write
from feast_dragonfly._store.backends import Backend


class ViewWriter:
    """Streams one feature view's script calls to the server(s), ``workers`` round trips at a
    time, with room for ``ahead_rows`` more queued behind them."""

    def __init__(
        self,
        backend: Backend,
        view_name: str,
        *,
        workers: int,
        rows_per_call: int,
        ttl_seconds: int | None,
        progress: Progress = None,
        ahead_rows: int = 0,
    ) -> None:
        self.view_name = view_name
        #: Rows one script call may carry here (1 on a Redis Cluster).
        self.rows_per_call = backend.rows_per_call(rows_per_call)
        #: Seconds each written hash lives (``key_ttl_seconds``), None: forever.
        self.ttl_seconds = ttl_seconds
        #: Rows the server has written so far (final once the block is left).
        self.written = 0
        #: Where a standalone Dragonfly keeps each key: planners group a call's rows by shard
        #: (``_protocol.shards``); None elsewhere.
        self.shards = backend.shard_map()
        self._backend = backend
        self._executor = (
            ThreadPoolExecutor(max_workers=workers, thread_name_prefix="feast-dragonfly-mat")
            if workers > 1
            else None
        )
        per_round_trip = self.rows_per_call * _write.CALLS_PER_ROUND_TRIP
        self._sender = backend.sender(
            view_name,
            executor=self._executor,
            concurrency=workers,
            progress=progress,
            window=workers + -(-ahead_rows // per_round_trip),
        )

    def send(self, calls: Iterable[ScriptCall]) -> None:
        """Queue ``calls``; returns once they are in flight or queued (waits while the window
        is full, so memory stays bounded)."""
        with self._backend.errors():
            for group in _write.group_calls(calls):
                self._sender.submit(group)

    def __enter__(self) -> ViewWriter:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            if kind is None:
                with self._backend.errors():
                    self.written = self._sender.finish()
            else:
                self._sender.abort()
        finally:
            if self._executor is not None:
                self._executor.shutdown(wait=True)
