"""Traffic that keeps running while a test fails a master over, for the cluster and the Sentinel
failover tests.

A failover test proves something only if requests are in flight when the master goes, keep
coming long enough afterwards to show the store recovered (a loop that stalled proves nothing),
and every error they hit reaches the test instead of dying with its thread. Both topologies
need exactly that, so it is written once, here. What the traffic does (the values a read
expects, the rows a write sends) and what counts as recovered stay in each test.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import NamedTuple

from feast_dragonfly.testing.local_server import LocalServer


class Counts(NamedTuple):
    reads: int
    writes: int


class Traffic:
    """``read()`` and ``write(step)`` called in a loop, each in its own thread, for as long as
    the ``with`` block runs (and ``warmup`` seconds before it starts, so the block acts while
    requests are in flight).

    A call that raises does not end its loop: the exception goes to ``failures`` for the test
    to assert on. ``reads`` and ``writes`` count the calls that returned. ``write`` gets 1, 2,
    3, ... so each round can use a newer event time.
    """

    def __init__(
        self,
        read: Callable[[], object],
        write: Callable[[int], object],
        *,
        warmup: float = 0.3,
    ) -> None:
        self._read = read
        self._write = write
        self._warmup = warmup
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._read_loop),
            threading.Thread(target=self._write_loop),
        ]
        self.reads = 0
        self.writes = 0
        self.failures: list[BaseException] = []

    def _read_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._read()
                self.reads += 1
            except BaseException as exc:  # noqa: BLE001 - reported by the test
                self.failures.append(exc)

    def _write_loop(self) -> None:
        step = 0
        while not self._stop.is_set():
            step += 1
            try:
                self._write(step)
                self.writes += 1
            except BaseException as exc:  # noqa: BLE001
                self.failures.append(exc)

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        try:
            time.sleep(self._warmup)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def counts(self) -> Counts:
        """Calls that have returned so far."""
        return Counts(self.reads, self.writes)

    def wait_for(self, reads: int, writes: int, timeout: float = 10.0) -> None:
        """Until at least ``reads`` reads and ``writes`` writes have returned in all, or
        ``timeout`` seconds passed (the test then asserts on the counts)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and (self.reads < reads or self.writes < writes):
            time.sleep(0.05)


def replicas_in_sync(master: LocalServer) -> int:
    """How many replicas have every write ``master`` has acknowledged, after waiting up to 5 s
    for one (``WAIT 1 5000``): with one, a failover now loses nothing."""
    client = master.client()
    try:
        return client.execute_command("WAIT", 1, 5000)
    finally:
        client.close()
