"""A server that runs out of memory, for the full-server tests (store, engine, migrate), and
the rows they write (``rows``: values large enough to fill it fast, each telling its view,
entity and feature apart) and read back (``read``: None for an entity not found).

Each test module starts its own small server (``small_server``: the suite's binary, with a
password, so every message can be checked for it) and caps it at run time: ``cap`` sets
``maxmemory`` a little above what the server uses now, so a write of a few thousand rows is
refused part way; ``uncap`` gives the server its start-up limit back (``maxmemory 0`` means "no
limit" to Redis and Valkey, but "nothing fits" to Dragonfly).

How servers differ: Redis and Valkey refuse a write with ``OOM command not allowed when used
memory > 'maxmemory'`` under ``noeviction`` and evict under ``allkeys-lru``, both set with
``CONFIG SET``. Dragonfly answers ``Out of memory``; its only policy besides ``noeviction`` is
``--cache_mode=true`` (a start-up flag, reported as policy ``eviction``); its start-up limit
must be 256 MiB per thread, but ``CONFIG SET maxmemory`` takes smaller values; it may still
refuse some writes while evicting in cache mode; and it also refuses writes (and new
connections) once its resident memory passes 1.25 × ``maxmemory`` (``--rss_oom_deny_ratio``).
An empty Dragonfly is some 20 MB resident, and memory freed by ``FLUSHALL`` is reused without
the resident size shrinking, so a limit a little above the data would refuse at once, or
never; in cache mode it likewise evicts every key while its resident memory is over the limit.
The small servers turn both off, and Dragonfly then counts data as Redis does.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone

import redis
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.types import Int64, String
from store_kit import entity_key, typed_view

from feast_dragonfly.testing.local_server import LocalServer, ServerBinary, start_server

#: The small servers' password: no message, log or output may show it.
SECRET = "full-server-s3cret"

#: The keys :func:`uncap` writes to see that the server takes writes again start so.
PROBE = b"full-server-kit:probe:"

#: Bytes a capped server may still take: a few thousand rows of the tests' views.
HEADROOM = 500_000


def small_server(binary: ServerBinary, *, evicting: bool = False) -> LocalServer:
    """A server of the suite's kind with :data:`SECRET` as its password; ``evicting``: in
    Dragonfly's cache mode (Redis and Valkey switch policies at run time, in :func:`cap`)."""
    extra = []
    if binary.kind == "dragonfly":
        extra = ["--rss_oom_deny_ratio=-1", "--enable_heartbeat_rss_eviction=false"]
        extra += ["--cache_mode=true"] if evicting else []
    return start_server(binary, password=SECRET, extra_args=extra)


def cap(
    client: redis.Redis,
    *,
    policy: str = "noeviction",
    headroom: int = HEADROOM,
    limit: int | None = None,
) -> None:
    """Let the server take about ``headroom`` more bytes (or set ``maxmemory`` to ``limit``:
    1 refuses every write), under ``policy`` (Redis and Valkey; Dragonfly keeps the policy it
    started with)."""
    used = int(client.info("memory")["used_memory"])
    if not is_dragonfly(client):
        client.config_set("maxmemory-policy", policy)
    client.config_set("maxmemory", str(limit if limit is not None else used + headroom))


def uncap(client: redis.Redis, limit: str) -> None:
    """Give the server back the limit it had (``limit``: ``CONFIG GET maxmemory`` before), and
    wait until it takes writes again (each Dragonfly thread notices a raised limit a moment
    later: the probe writes keys on every one)."""
    client.config_set("maxmemory", limit)
    deadline = time.monotonic() + 5
    probes = [PROBE + b"%d" % i for i in range(16)]
    while True:
        try:
            for probe in probes:
                client.set(probe, b"1")
            client.delete(*probes)
            return
        except redis.ResponseError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


@contextmanager
def capped(client: redis.Redis, **options: object) -> Iterator[None]:
    """:func:`cap` for the block, :func:`uncap` after it (also when it fails)."""
    limit = str(client.config_get("maxmemory")["maxmemory"])
    cap(client, **options)  # type: ignore[arg-type]
    try:
        yield
    finally:
        uncap(client, limit)


def is_dragonfly(client: redis.Redis) -> bool:
    return "dragonfly_version" in client.info("server")


def limit_named(message: str, server: LocalServer, role: str = "the server") -> bool:
    """Whether ``message`` names the server, its limit and policy, and never the password."""
    return (
        f"{role} at {server.address} is out of memory (maxmemory " in message
        and ", policy " in message
        and SECRET not in message
    )


# --------------------------------------------------------------------------- rows


T1 = datetime(2026, 3, 1, tzinfo=timezone.utc)
#: The tests' views, with values large enough to fill a capped server fast.
CARS = typed_view("cars", (("a", Int64), ("blob", String), ("b", Int64)))
TRIPS = typed_view("trips", (("c", Int64), ("blob", String)))
BLOB = 2_000


def value(view, entity: int, feature: int) -> int | str:
    """Each value tells its view, entity and feature apart (a wrong row cannot pass)."""
    if view.features[feature].dtype == String:
        return f"{view.name}:{entity}:".ljust(BLOB, "x")
    return len(view.name) * 10**9 + entity * 100 + feature


def proto(plain: int | str) -> ValueProto:
    return ValueProto(string_val=plain) if isinstance(plain, str) else ValueProto(int64_val=plain)


def rows(view, ids) -> list:
    return [
        (
            entity_key(i),
            {f.name: proto(value(view, i, n)) for n, f in enumerate(view.features)},
            T1 + timedelta(seconds=i),
            None,
        )
        for i in ids
    ]


def expected(view, entity: int) -> tuple:
    features = {f.name: value(view, entity, n) for n, f in enumerate(view.features)}
    return T1 + timedelta(seconds=entity), features


EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def read(store, config, view, ids) -> list:
    """(event time, {feature: value}) per entity; None for one not found (Feast's answer for
    it: no row, or every value unset at the epoch)."""
    out = []
    for when, features in store.online_read(config, view, [entity_key(i) for i in ids]):
        values = {n: _plain(v) for n, v in (features or {}).items()}
        missing = when in (None, EPOCH) and not any(v is not None for v in values.values())
        out.append(None if missing else (when, values))
    return out


def _plain(proto: ValueProto) -> int | str | None:
    kind = proto.WhichOneof("val")
    return getattr(proto, kind) if kind else None
