"""Which Dragonfly shard holds a key, so one script call touches one shard.

Dragonfly splits its keys over shards, one per thread, and puts a key on shard
``XXH64(key, seed 120577240643) % num_shards``. A script call runs on one thread; every
``redis.call`` on a key of another shard is a hop to that shard's thread and back. A call of
100 rows spread over the shards pays about one hop per row; the same rows grouped by shard pay
none: measured on Dragonfly 1.40.1 with 2 and 3 threads, 20,000 ``SET`` s in 100-key script
calls took 650 ms spread and 40 ms grouped.

Writers therefore order the rows of a batch by shard before cutting it into calls. The order
changes nothing else: a row's event-time rule is evaluated per key, and every key still goes
in exactly one call. :func:`detect` asks the server for its shard count (``DEBUG SHARDS``)
and checks the hash on probe keys (``DEBUG OBJECT`` names a key's shard). An ACL user without
``DEBUG`` (the usual production set-up) gets Dragonfly's default, one shard per thread
(``INFO``'s ``thread_count``), unchecked: a wrong guess only leaves the hops in place. On
Redis, Valkey, a cluster, or a Dragonfly whose placement differs from the check, there is no
map and rows keep their order.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import chain
from typing import Any

import xxhash

logger = logging.getLogger(__name__)

#: Dragonfly's seed for placing keys on shards.
SEED = 120577240643
#: Probe keys checked against the server's own placement (a placement that differs passes
#: all of them with odds of 1 in shards ** PROBES: 1 in 65,536 with 2 shards); each lives at
#: most ``PROBE_TTL_MS``.
PROBES = 16
PROBE_TTL_MS = 5000


@dataclass(frozen=True)
class ShardMap:
    """Dragonfly's placement of keys on its ``count`` shards."""

    count: int

    def shard(self, key: bytes) -> int:
        """The shard holding ``key``."""
        return xxhash.xxh64_intdigest(key, SEED) % self.count

    def order(self, keys: Iterable[bytes]) -> list[int]:
        """Positions of ``keys`` grouped by shard, in their order within each shard."""
        count, digest = self.count, xxhash.xxh64_intdigest
        buckets: list[list[int]] = [[] for _ in range(count)]
        for position, key in enumerate(keys):
            buckets[digest(key, SEED) % count].append(position)
        return list(chain.from_iterable(buckets))


def detect(client: Any) -> ShardMap | None:
    """The shard map of the server behind ``client`` (a standalone Dragonfly with more than
    one shard), or None. Never raises: without a map rows just keep their order."""
    try:
        info = client.info("server")
        if "dragonfly_version" not in info or info.get("redis_mode") != "standalone":
            return None
        try:
            count = _shard_count(client.execute_command("DEBUG", "SHARDS"))
        except Exception as exc:  # noqa: BLE001 - DEBUG refused (ACL) or unknown
            threads = int(info.get("thread_count") or 0)
            logger.debug("DEBUG SHARDS refused (%s): assuming %d shards", type(exc), threads)
            return ShardMap(threads) if threads >= 2 else None
        if count is None or count < 2:
            return None
        shard_map = ShardMap(count)
        if not _placement_matches(client, shard_map):
            logger.info("Dragonfly places keys differently here: rows are not grouped by shard")
            return None
        return shard_map
    except Exception as exc:  # noqa: BLE001 - an optimisation only: never fail a write for it
        logger.debug("no Dragonfly shard map (%s): rows are not grouped by shard", type(exc))
        return None


def _text(reply: Any) -> str:
    """A ``DEBUG`` reply as text (bytes, or str with ``decode_responses``)."""
    return reply.decode() if isinstance(reply, bytes) else str(reply)


def _shard_count(reply: Any) -> int | None:
    for line in _text(reply).splitlines():
        name, _, value = line.partition(":")
        if name.strip() == "num_shards":
            return int(value)
    return None


def _placement_matches(client: Any, shard_map: ShardMap) -> bool:
    """Whether the server puts probe keys where ``shard_map`` says (short-lived keys of our
    own namespace, removed again)."""
    keys = [f"feast_dragonfly:shard_probe:{uuid.uuid4().hex}".encode() for _ in range(PROBES)]
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.set(key, b"1", px=PROBE_TTL_MS)
    for key in keys:
        pipe.execute_command("DEBUG", "OBJECT", key)
    pipe.delete(*keys)
    replies = pipe.execute()[PROBES : 2 * PROBES]
    for key, reply in zip(keys, replies):
        fields = dict(part.partition(":")[::2] for part in _text(reply).split())
        if fields.get("shard") != str(shard_map.shard(key)):
            return False
    return True
