"""Throw-away local Redis Cluster and Sentinel deployments, for the topology tests.

Test-only code: it lives in ``tests/`` and is not shipped in the package; the topology tests
import it as a sibling module (``from local_topology import LocalCluster, start_cluster``).
Built on the public helpers of :mod:`feast_dragonfly.testing.local_server` (same binary discovery,
127.0.0.1 only, free ports, private temporary directories, ``stop()`` ends every process it
started):

* :func:`start_cluster` — ``masters`` × ``redis-server --cluster-enabled yes``, slots split
  evenly with ``CLUSTER ADDSLOTS``, joined with ``CLUSTER MEET``, ready when every node reports
  ``cluster_state:ok`` and knows every slot. With a Dragonfly binary it starts ``masters`` ×
  ``dragonfly --cluster_mode=yes`` (each with an admin port on 127.0.0.1) and acts as their
  cluster manager: Dragonfly nodes do not gossip, so the fixture pushes the slot ranges to every
  node's admin port with ``DFLYCLUSTER CONFIG`` (JSON: ranges, master id from ``CLUSTER MYID``,
  ip, port), and pushes a new one for each migration (:meth:`LocalCluster.migrate_slots`).
  ``emulated=True`` starts one ``dragonfly --cluster_mode=emulated`` node instead (a single
  node that speaks the CLUSTER protocol and owns all slots).
* :func:`start_sentinel_group` — a master, its replicas and ``redis-server --sentinel``
  processes monitoring it, with short timeouts so a forced failover takes about a second.
  redis-server only: Dragonfly cannot act as a sentinel.

Passwords go to the servers through config files in the processes' private (0700) directories
or ``CONFIG SET``, never on a command line, and are never shown.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import redis
from redis.crc import key_slot

from feast_dragonfly.testing.local_server import (
    DEFAULT_START_TIMEOUT_S,
    HOST,
    LocalServer,
    LocalServerError,
    ServerBinary,
    detect_binary,
    find_server_binary,
    free_port,
    redis_conf_string,
    server_command,
    spawn_server,
    start_server,
)

__all__ = [
    "LocalCluster",
    "LocalSentinelGroup",
    "start_cluster",
    "start_sentinel_group",
]

SLOTS = 16384
DEFAULT_MASTER_NAME = "mymaster"


def _stop_all(servers: Sequence[LocalServer]) -> None:
    for server in servers:
        try:
            server.stop()
        except Exception:  # noqa: BLE001 - stop the others anyway
            pass


def _wait(condition: Any, timeout: float, what: str) -> None:
    """Poll ``condition()`` until true; a ``LocalServerError`` naming ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except redis.RedisError as exc:
            last = exc
        time.sleep(0.05)
    detail = f" (last error: {type(last).__name__}: {last})" if last else ""
    raise LocalServerError(f"timed out after {timeout:.0f} s waiting for {what}{detail}")


#: A cluster node also listens on its port + 10000 (the cluster bus), so its port must be at
#: most 55535 and both ports free.
_MAX_CLUSTER_PORT = 65535 - 10000


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def _cluster_port() -> int:
    for _ in range(1000):
        port = free_port()
        if port <= _MAX_CLUSTER_PORT and _port_is_free(port + 10000):
            return port
    raise LocalServerError("found no free port pair (port, port + 10000) for a cluster node")


def _start_cluster_node(
    binary: ServerBinary, *, password: str | None, start_timeout: float
) -> LocalServer:
    extra = ["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"]
    return spawn_server(
        binary,
        # nodes.conf goes to the node's private --dir.
        lambda workdir, port: server_command(binary, port, workdir, password, extra, 2),
        password=password,
        start_timeout=start_timeout,
        prefix="feast-dragonfly-cluster-",
        pick_port=_cluster_port,
    )


def _resolve(binary: ServerBinary | str | None) -> ServerBinary:
    if binary is None:
        return find_server_binary()
    if isinstance(binary, str):
        return detect_binary(os.path.abspath(binary))
    return binary


# --------------------------------------------------------------------------- cluster


class LocalCluster:
    """Running cluster nodes; ``connection_string`` lists the masters (Feast's format).

    ``masters`` and ``replicas`` follow :meth:`failover`: a promoted replica moves to
    ``masters`` (same index as the master it replaced), the old master to ``replicas``.
    """

    def __init__(
        self,
        masters: list[LocalServer],
        *,
        emulated: bool,
        replicas: list[LocalServer] | None = None,
        admin_ports: list[int] | None = None,
    ) -> None:
        self.masters = masters
        self.replicas = replicas or []
        #: True for a single Dragonfly node in ``--cluster_mode=emulated``.
        self.emulated = emulated
        self.kind = masters[0].kind
        #: Dragonfly ``--cluster_mode=yes``: each master's admin port (where ``DFLYCLUSTER``
        #: commands go); empty for redis-server and the emulated node.
        self.admin_ports = admin_ports or []
        #: Dragonfly ``--cluster_mode=yes``: the slot ranges of each master, as last pushed.
        self.slot_ranges: list[list[tuple[int, int]]] = []
        self._ids: list[str] = []

    @property
    def managed(self) -> bool:
        """True for a multi-node Dragonfly cluster, whose slots this fixture assigns (there is
        no gossip: every change is a ``DFLYCLUSTER CONFIG`` pushed to every node)."""
        return bool(self.admin_ports)

    @property
    def asks(self) -> bool:
        """Whether a migration moves keys one by one, answering ``ASK`` for the moved ones
        (redis-server); Dragonfly serves a migrating slot from the source until it is handed
        over, then answers ``MOVED``."""
        return not self.emulated and not self.managed

    @property
    def connection_string(self) -> str:
        """``127.0.0.1:P1,127.0.0.1:P2,...`` plus the password option when there is one:
        do not print it (print :attr:`addresses`)."""
        parts = [server.address for server in self.masters]
        if self.masters[0].password is not None:
            parts.append(f"password={self.masters[0].password}")
        return ",".join(parts)

    @property
    def addresses(self) -> str:
        return ",".join(server.address for server in self.masters)

    def clients(self) -> list[redis.Redis]:
        """One plain client per master (close them)."""
        return [server.client(decode_responses=False) for server in self.masters]

    def flushall(self) -> None:
        for client in self.clients():
            try:
                client.flushall()
            finally:
                client.close()

    def node_ids(self) -> list[str]:
        ids = []
        for client in self.clients():
            try:
                ids.append(_decode(client.execute_command("CLUSTER MYID")))
            finally:
                client.close()
        return ids

    def master_of_slot(self, slot: int) -> int:
        """Index in :attr:`masters` of the master that owns ``slot`` (as it says itself)."""
        client = self.masters[0].client(decode_responses=False)
        try:
            for start, end, primary, *_ in client.execute_command("CLUSTER SLOTS"):
                if int(start) <= slot <= int(end):
                    port = int(primary[1])
                    return next(i for i, s in enumerate(self.masters) if s.port == port)
        finally:
            client.close()
        raise LocalServerError(f"slot {slot} is not served")

    def _owners(self) -> list[int]:
        """The index in :attr:`masters` of each slot's master, from one ``CLUSTER SLOTS``."""
        owners = [-1] * SLOTS
        ports = {server.port: index for index, server in enumerate(self.masters)}
        client = self.masters[0].client(decode_responses=False)
        try:
            for start, end, primary, *_ in client.execute_command("CLUSTER SLOTS"):
                owners[int(start) : int(end) + 1] = [ports[int(primary[1])]] * (
                    int(end) - int(start) + 1
                )
        finally:
            client.close()
        return owners

    def master_of_key(self, key: bytes) -> int:
        return self.master_of_slot(key_slot(key))

    def keys_per_master(self) -> list[list[bytes]]:
        """Every key each master holds (SCAN on each)."""
        out = []
        for client in self.clients():
            try:
                out.append(sorted(client.scan_iter(count=1000)))
            finally:
                client.close()
        return out

    def migrate_slot(
        self,
        slot: int,
        target: int,
        *,
        keys: Sequence[bytes] | None = None,
        finish: bool = True,
    ) -> None:
        """Move ``slot`` (and its keys) to master ``target``, the way ``redis-cli --cluster
        reshard`` does. ``finish=False`` stops half-way — ``keys`` (default: all) moved, slot
        still MIGRATING/IMPORTING — so clients get ``ASK`` for the moved keys (redis-server
        only: see :attr:`asks`)."""
        if self.emulated:
            raise LocalServerError("an emulated cluster has one node: nothing to migrate to")
        source = self.master_of_slot(slot)
        if source == target:
            raise LocalServerError(f"slot {slot} is already on master {target}")
        if self.managed:
            if not finish or keys is not None:
                raise LocalServerError(
                    "Dragonfly migrates whole slot ranges (no ASK, no key-by-key MIGRATE)"
                )
            self.migrate_slots([(slot, slot)], target)
            return
        clients = self.clients()
        try:
            _move_redis_slots(
                self.masters, clients, self.node_ids(), [slot], source, target, keys, finish
            )
        finally:
            for client in clients:
                client.close()

    def migrate_slots(
        self, ranges: Sequence[tuple[int, int]], target: int, *, timeout: float = 60.0
    ) -> None:
        """Move the slots of ``ranges`` (inclusive, all on one master) to master ``target``,
        while clients keep working: redis-server slot by slot as ``redis-cli --cluster
        reshard`` does (``MIGRATING`` / ``IMPORTING``, ``MIGRATE``, ``SETSLOT NODE``);
        Dragonfly the way its cluster manager does — a config with a ``migrations`` entry on
        the source, ``SLOT-MIGRATION-STATUS`` polled until ``FINISHED``, then the config that
        gives the slots to the target."""
        if not self.managed:
            ids, clients = self.node_ids(), self.clients()
            owners = self._owners()
            slots = [s for a, b in ranges for s in range(a, b + 1) if owners[s] != target]
            try:
                for first in range(0, len(slots), 64):
                    chunk = slots[first : first + 64]
                    for source in sorted({owners[s] for s in chunk}):
                        mine = [s for s in chunk if owners[s] == source]
                        _move_redis_slots(self.masters, clients, ids, mine, source, target)
            finally:
                for client in clients:
                    client.close()
            return
        source = self.master_of_slot(ranges[0][0])
        moved = _normalized(ranges)
        if source == target or not all(
            _covers(self.slot_ranges[source], start, end) for start, end in moved
        ):
            raise LocalServerError(f"slots {moved} are not all on one master other than {target}")
        migration = {
            "node_id": self._ids[target],
            "ip": HOST,
            "port": self.admin_ports[target],
            "slot_ranges": [{"start": start, "end": end} for start, end in moved],
        }
        self._push_config(migrations={source: [migration]})

        def finished() -> bool:
            admin = self._admin(source)
            try:
                status = admin.execute_command("DFLYCLUSTER", "SLOT-MIGRATION-STATUS")
            finally:
                admin.close()
            states = [_decode(entry[2]) for entry in status]
            if "FATAL" in states:
                raise LocalServerError(f"the slot migration failed: {status}")
            return states == ["FINISHED"]

        _wait(finished, timeout, f"Dragonfly's migration of slots {moved} to finish")
        owned = set()
        for start, end in self.slot_ranges[source]:
            owned.update(range(start, end + 1))
        for start, end in moved:
            owned.difference_update(range(start, end + 1))
        self.slot_ranges[source] = _as_ranges(owned)
        self.slot_ranges[target] = _normalized([*self.slot_ranges[target], *moved])
        self._push_config()

    def _admin(self, index: int) -> redis.Redis:
        return redis.Redis(
            host=HOST,
            port=self.admin_ports[index],
            password=self.masters[index].password,
            socket_timeout=10,
        )

    def _push_config(self, migrations: dict[int, list[dict[str, Any]]] | None = None) -> None:
        """``DFLYCLUSTER CONFIG`` with :attr:`slot_ranges` (and ``migrations``, by source)
        to every node, the way Dragonfly's cluster manager keeps every node in step."""
        shards = []
        for index, server in enumerate(self.masters):
            shard: dict[str, Any] = {
                "slot_ranges": [{"start": a, "end": b} for a, b in self.slot_ranges[index]],
                "master": {"id": self._ids[index], "ip": HOST, "port": server.port},
                "replicas": [],
            }
            if migrations and index in migrations:
                shard["migrations"] = migrations[index]
            shards.append(shard)
        text = json.dumps(shards)
        for index in range(len(self.masters)):
            admin = self._admin(index)
            try:
                admin.execute_command("DFLYCLUSTER", "CONFIG", text)
            finally:
                admin.close()

    def failover(self, replica: int = 0, timeout: float = 30.0) -> int:
        """``CLUSTER FAILOVER`` on ``replicas[replica]`` (a graceful, coordinated switch);
        waits until every node routes its slots to it. Returns its index in ``masters``."""
        node = self.replicas[replica]
        client = node.client(decode_responses=True)
        try:
            old_port = int(client.info("replication")["master_port"])
        finally:
            client.close()
        index = next(i for i, m in enumerate(self.masters) if m.port == old_port)
        last_request = [0.0]

        def request() -> None:
            # A manual failover the master never hears of (its cluster-bus link was being
            # re-established) times out after 5 s: ask again.
            if time.monotonic() - last_request[0] > 6:
                last_request[0] = time.monotonic()
                replica_client = node.client()
                try:
                    replica_client.execute_command("CLUSTER FAILOVER")
                finally:
                    replica_client.close()

        def promoted() -> bool:
            request()
            for server in (*self.masters, *self.replicas):
                other = server.client(decode_responses=False)
                try:
                    owners = {int(entry[2][1]) for entry in other.execute_command("CLUSTER SLOTS")}
                finally:
                    other.close()
                if old_port in owners or node.port not in owners:
                    return False
            return True

        _wait(promoted, timeout, f"replica {node.address} to take over from master {old_port}")
        self.masters[index], self.replicas[replica] = node, self.masters[index]
        return index

    def stop(self) -> None:
        _stop_all([*self.replicas, *self.masters])

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _move_redis_slots(
    masters: Sequence[LocalServer],
    clients: Sequence[redis.Redis],
    ids: Sequence[str],
    slots: Sequence[int],
    source: int,
    target: int,
    keys: Sequence[bytes] | None = None,
    finish: bool = True,
) -> None:
    """Slots from ``source`` to ``target`` as ``redis-cli --cluster reshard`` moves each:
    IMPORTING / MIGRATING, ``MIGRATE`` until the slot is empty on the source (or just
    ``keys``), then every master told the new owner (unless ``finish`` is false). The slots
    go together, each step one pipeline per node, so a resharding takes seconds."""
    src, dst = clients[source], clients[target]
    auth: list[Any] = []
    if masters[target].password is not None:
        auth = ["AUTH", masters[target].password]

    def each(client: redis.Redis, *commands: tuple[Any, ...]) -> list[Any]:
        pipe = client.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        return pipe.execute()

    each(dst, *(("CLUSTER SETSLOT", slot, "IMPORTING", ids[source]) for slot in slots))
    each(src, *(("CLUSTER SETSLOT", slot, "MIGRATING", ids[target]) for slot in slots))
    # The keys as stored: redis-py's reply callback would decode them (lossily, for binary keys).
    src.set_response_callback("CLUSTER GETKEYSINSLOT", lambda response, **_: response)
    pending = list(slots)
    while pending:
        if keys is not None:
            batches = [list(keys)]
        else:
            batches = each(src, *(("CLUSTER GETKEYSINSLOT", slot, 500) for slot in pending))
        moving = [(slot, batch) for slot, batch in zip(pending, batches) if batch]
        each(
            src,
            *(
                ("MIGRATE", HOST, masters[target].port, "", 0, 5000, *auth, "KEYS", *batch)
                for _slot, batch in moving
            ),
        )
        pending = [] if keys is not None else [slot for slot, _batch in moving]
    if finish:
        others = [i for i in range(len(masters)) if i not in (source, target)]
        for index in (target, source, *others):
            each(
                clients[index], *(("CLUSTER SETSLOT", slot, "NODE", ids[target]) for slot in slots)
            )


def _normalized(ranges: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    slots: set[int] = set()
    for start, end in ranges:
        slots.update(range(start, end + 1))
    return _as_ranges(slots)


def _as_ranges(slots: set[int]) -> list[tuple[int, int]]:
    """Sorted, merged inclusive ranges of ``slots``."""
    ranges: list[tuple[int, int]] = []
    for slot in sorted(slots):
        if ranges and ranges[-1][1] == slot - 1:
            ranges[-1] = (ranges[-1][0], slot)
        else:
            ranges.append((slot, slot))
    return ranges


def _covers(ranges: Sequence[tuple[int, int]], start: int, end: int) -> bool:
    return any(a <= start and end <= b for a, b in ranges)


def _node_id(server: LocalServer) -> str:
    client = server.client()
    try:
        return _decode(client.execute_command("CLUSTER MYID"))
    finally:
        client.close()


def _cluster_roles(server: LocalServer) -> dict[str, str]:
    """Replica node id -> its master's id, as ``server`` sees the cluster (CLUSTER NODES)."""
    client = server.client()
    try:
        # The raw text: redis-py's parsed form differs between versions.
        client.set_response_callback("CLUSTER NODES", lambda response, **_: response)
        text = _decode(client.execute_command("CLUSTER NODES"))
    finally:
        client.close()
    roles = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) > 3 and "slave" in fields[2].split(","):
            roles[fields[0]] = fields[3]
    return roles


def _decode(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _slot_ranges(masters: int) -> list[tuple[int, int]]:
    size = SLOTS // masters
    ranges = []
    for index in range(masters):
        start = index * size
        end = SLOTS - 1 if index == masters - 1 else start + size - 1
        ranges.append((start, end))
    return ranges


def _cluster_ready(servers: Sequence[LocalServer], *, gossip: bool = True) -> bool:
    """Every node serves every slot (and, with ``gossip``, reports ``cluster_state:ok`` and
    knows every node: redis-server)."""
    for server in servers:
        client = server.client(decode_responses=True)
        try:
            info = client.execute_command("CLUSTER INFO")
            if isinstance(info, bytes | str):
                text = _decode(info)
                fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
            else:
                fields = {k: str(v) for k, v in info.items()}
            if gossip and fields.get("cluster_state") != "ok":
                return False
            if gossip and int(fields.get("cluster_known_nodes", 0)) != len(servers):
                return False
            served = sum(
                int(end) - int(start) + 1
                for start, end, *_ in client.execute_command("CLUSTER SLOTS")
            )
            if served != SLOTS:
                return False
        finally:
            client.close()
    return True


def _start_dragonfly_cluster(
    binary: ServerBinary, *, masters: int, password: str | None, start_timeout: float
) -> LocalCluster:
    """``masters`` × ``dragonfly --cluster_mode=yes`` with admin ports on 127.0.0.1, the slots
    split evenly and pushed to every node (``DFLYCLUSTER CONFIG``); ready when every node
    serves the whole map."""
    started: list[LocalServer] = []
    admin_ports: list[int] = []
    try:
        for _ in range(masters):
            admin: list[int] = []

            def command_for(
                workdir: str, port: int, admin: list[int] = admin
            ) -> tuple[list[str], dict[str, str]]:
                admin[:] = [free_port()]
                extra = [
                    "--cluster_mode=yes",
                    f"--admin_port={admin[0]}",
                    f"--admin_bind={HOST}",
                ]
                # One thread each: three nodes share the test machine's cores.
                return server_command(binary, port, workdir, password, extra, 1)

            started.append(
                spawn_server(
                    binary,
                    command_for,
                    password=password,
                    start_timeout=start_timeout,
                    prefix="feast-dragonfly-dfcluster-",
                )
            )
            admin_ports.append(admin[0])
        cluster = LocalCluster(started, emulated=False, admin_ports=admin_ports)
        cluster._ids = cluster.node_ids()
        cluster.slot_ranges = [[r] for r in _slot_ranges(masters)]
        cluster._push_config()
        _wait(lambda: _cluster_ready(started, gossip=False), start_timeout, "the slot map")
    except BaseException:
        _stop_all(started)
        raise
    return cluster


def start_cluster(
    binary: ServerBinary | str | None = None,
    *,
    masters: int = 3,
    replicas: int = 0,
    password: str | None = None,
    start_timeout: float = DEFAULT_START_TIMEOUT_S,
    emulated: bool = False,
) -> LocalCluster:
    """Start a local cluster; see the module docstring. ``replicas`` replica nodes are
    attached to the first masters, one each (redis-server only). ``emulated``: Dragonfly's
    single-node emulated cluster instead of ``masters`` nodes. Always ``stop()`` it (or use
    it as a context manager): it owns every process it started, also when starting fails."""
    binary = _resolve(binary)
    if binary.kind == "dragonfly" and not emulated:
        if replicas:
            raise LocalServerError("the Dragonfly cluster fixture starts masters only")
        return _start_dragonfly_cluster(
            binary, masters=masters, password=password, start_timeout=start_timeout
        )
    if binary.kind == "dragonfly":
        if replicas:
            raise LocalServerError("Dragonfly's emulated cluster is one node: no replicas")
        node = start_server(
            binary,
            password=password,
            extra_args=["--cluster_mode=emulated"],
            start_timeout=start_timeout,
        )
        cluster = LocalCluster([node], emulated=True)
        try:
            _wait(lambda: _cluster_ready([node]), start_timeout, "the emulated cluster")
        except BaseException:
            cluster.stop()
            raise
        return cluster

    started: list[LocalServer] = []
    replica_nodes: list[LocalServer] = []
    try:
        for _ in range(masters):
            started.append(
                _start_cluster_node(binary, password=password, start_timeout=start_timeout)
            )
        for _ in range(replicas):
            replica_nodes.append(
                _start_cluster_node(binary, password=password, start_timeout=start_timeout)
            )
        everyone = [*started, *replica_nodes]
        for server in everyone:
            if password is not None:
                client = server.client()
                try:
                    client.config_set("masterauth", password)
                finally:
                    client.close()
        for server, (start, end) in zip(started, _slot_ranges(masters)):
            client = server.client()
            try:
                client.execute_command("CLUSTER ADDSLOTS", *range(start, end + 1))
            finally:
                client.close()
        first = started[0].client()
        try:
            for server in everyone[1:]:
                first.execute_command("CLUSTER MEET", HOST, server.port)
        finally:
            first.close()
        # Redis keeps a fresh master's cluster state "fail" for 2 s after it starts.
        _wait(lambda: _cluster_ready(everyone), start_timeout + 5, "cluster_state:ok everywhere")
        cluster = LocalCluster(started, emulated=False, replicas=replica_nodes)
        ids = cluster.node_ids()
        for index, replica in enumerate(replica_nodes):
            client = replica.client()
            try:
                client.execute_command("CLUSTER REPLICATE", ids[index % masters])
            finally:
                client.close()

        replica_ids = [_node_id(replica) for replica in replica_nodes]

        def replicating() -> bool:
            for replica in replica_nodes:
                client = replica.client(decode_responses=True)
                try:
                    if client.info("replication").get("master_link_status") != "up":
                        return False
                finally:
                    client.close()
            # Every node must know each replica's role: a master ignores a manual failover
            # request from a node it does not know as its replica, and the others vote only
            # for a known replica.
            for server in everyone:
                roles = _cluster_roles(server)
                for index, replica_id in enumerate(replica_ids):
                    if roles.get(replica_id) != ids[index % masters]:
                        return False
            return True

        _wait(replicating, start_timeout, "the cluster replicas to sync and be known")
    except BaseException:
        _stop_all([*replica_nodes, *started])
        raise
    return cluster


# --------------------------------------------------------------------------- sentinel


class LocalSentinelGroup:
    """A master, its replicas and the sentinels that watch them."""

    def __init__(
        self,
        *,
        data_nodes: list[LocalServer],
        sentinels: list[LocalServer],
        master_name: str,
        sentinel_password: str | None,
    ) -> None:
        #: Every data node; which one is the master changes with failovers (see ``master()``).
        self.data_nodes = data_nodes
        self.sentinels = sentinels
        self.master_name = master_name
        self.sentinel_password = sentinel_password

    def connection_string(self, *, extra_sentinels: Sequence[str] = ()) -> str:
        """Feast's format for ``redis_type: redis_sentinel``: the sentinels (after
        ``extra_sentinels``, e.g. a dead address), then the master's password and the
        sentinels' one. Holds passwords: do not print it."""
        parts = [*extra_sentinels, *(s.address for s in self.sentinels)]
        password = self.data_nodes[0].password
        if password is not None:
            parts.append(f"password={password}")
        if self.sentinel_password is not None:
            parts.append(f"sentinel_password={self.sentinel_password}")
        return ",".join(parts)

    def sentinel_client(self, index: int = 0) -> redis.Redis:
        return redis.Redis(
            host=HOST,
            port=self.sentinels[index].port,
            password=self.sentinel_password,
            decode_responses=True,
            socket_timeout=5,
        )

    def master_address(self) -> tuple[str, int]:
        client = self.sentinel_client()
        try:
            address: Any = client.sentinel_get_master_addr_by_name(self.master_name)
            return str(address[0]), int(address[1])
        finally:
            client.close()

    def master(self) -> LocalServer:
        """The data node the sentinels currently name as master."""
        _host, port = self.master_address()
        return next(node for node in self.data_nodes if node.port == port)

    def failover(self, timeout: float = 30.0) -> LocalServer:
        """``SENTINEL FAILOVER``, then wait until every sentinel has finished it (names a new
        master, no failover in progress) and that node says it is a master. Returns it."""
        old = self.master_address()
        client = self.sentinel_client()
        try:
            client.sentinel_failover(self.master_name)
        finally:
            client.close()

        def switched() -> bool:
            # SENTINEL MASTER (what clients' discovery reads), not GET-MASTER-ADDR-BY-NAME,
            # which names the promoted replica already while the failover is still running.
            for index in range(len(self.sentinels)):
                sentinel = self.sentinel_client(index)
                try:
                    state: Any = sentinel.sentinel_master(self.master_name)
                finally:
                    sentinel.close()
                if (str(state["ip"]), int(state["port"])) == old:
                    return False
                if not state.get("is_master") or "failover_in_progress" in str(state.get("flags")):
                    return False
            node = self.master().client(decode_responses=True)
            try:
                return node.info("replication").get("role") == "master"
            finally:
                node.close()

        _wait(switched, timeout, f"the sentinels to switch master '{self.master_name}'")
        return self.master()

    def stop(self) -> None:
        _stop_all([*self.sentinels, *self.data_nodes])

    def __enter__(self) -> LocalSentinelGroup:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _start_sentinel(
    binary: ServerBinary,
    *,
    master: LocalServer,
    master_name: str,
    password: str | None,
    start_timeout: float,
) -> LocalServer:
    """One ``redis-server <conf> --sentinel`` (Sentinel needs a config file it may rewrite;
    passwords live only there, inside the private directory)."""

    def argv_for(workdir: str, port: int) -> list[str]:
        lines = [
            f"bind {HOST}",
            f"port {port}",
            f"dir {redis_conf_string(workdir)}",
            'logfile ""',
            f"sentinel monitor {master_name} {HOST} {master.port} 1",
            f"sentinel down-after-milliseconds {master_name} 5000",
            f"sentinel failover-timeout {master_name} 10000",
            f"sentinel parallel-syncs {master_name} 1",
        ]
        if master.password is not None:
            secret = redis_conf_string(master.password)
            lines.append(f"sentinel auth-pass {master_name} {secret}")
        if password is not None:
            lines.append(f"requirepass {redis_conf_string(password)}")
        conf = Path(workdir) / "sentinel.conf"
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write("\n".join(lines) + "\n")
        return [binary.path, str(conf), "--sentinel"]

    return spawn_server(
        binary,
        lambda workdir, port: (argv_for(workdir, port), None),
        password=password,
        start_timeout=start_timeout,
        prefix="feast-dragonfly-sentinel-",
    )


def start_sentinel_group(
    binary: ServerBinary | str | None = None,
    *,
    replicas: int = 1,
    sentinels: int = 1,
    master_name: str = DEFAULT_MASTER_NAME,
    password: str | None = None,
    sentinel_password: str | None = None,
    start_timeout: float = DEFAULT_START_TIMEOUT_S,
) -> LocalSentinelGroup:
    """Start a master, ``replicas`` replicas and ``sentinels`` sentinels (quorum 1, so one
    sentinel can fail over on its own); ready when replication is up and every sentinel knows
    every replica. ``password`` protects the data nodes, ``sentinel_password`` the sentinels."""
    binary = _resolve(binary)
    if binary.kind == "dragonfly":
        raise LocalServerError(
            "Dragonfly cannot act as a Redis Sentinel; use a redis-server binary"
        )
    data_nodes: list[LocalServer] = []
    sentinel_nodes: list[LocalServer] = []
    try:
        for _ in range(1 + replicas):
            node = start_server(binary, password=password, start_timeout=start_timeout)
            data_nodes.append(node)
            if password is not None:
                client = node.client()
                try:
                    # Every node may become a replica after a failover: it needs masterauth.
                    client.config_set("masterauth", password)
                finally:
                    client.close()
        master = data_nodes[0]
        for replica in data_nodes[1:]:
            client = replica.client()
            try:
                client.replicaof(HOST, master.port)
            finally:
                client.close()

        def replicating() -> bool:
            for replica in data_nodes[1:]:
                client = replica.client(decode_responses=True)
                try:
                    if client.info("replication").get("master_link_status") != "up":
                        return False
                finally:
                    client.close()
            return True

        _wait(replicating, start_timeout, "the replicas to sync with the master")
        for _ in range(sentinels):
            sentinel_nodes.append(
                _start_sentinel(
                    binary,
                    master=master,
                    master_name=master_name,
                    password=sentinel_password,
                    start_timeout=start_timeout,
                )
            )
        group = LocalSentinelGroup(
            data_nodes=data_nodes,
            sentinels=sentinel_nodes,
            master_name=master_name,
            sentinel_password=sentinel_password,
        )

        def watching() -> bool:
            for index in range(len(sentinel_nodes)):
                client = group.sentinel_client(index)
                try:
                    known = client.sentinel_slaves(master_name)
                finally:
                    client.close()
                healthy = [
                    r
                    for r in known
                    if r.get("is_slave")
                    and not r.get("is_sdown")
                    and not r.get("is_disconnected")
                    and r.get("master-link-status", "ok") == "ok"
                ]
                if len(healthy) < replicas:
                    return False
            return True

        _wait(watching, start_timeout, "the sentinels to see every replica")
    except BaseException:
        _stop_all([*sentinel_nodes, *data_nodes])
        raise
    return group
