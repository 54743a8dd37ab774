"""``_store.cluster_replay``: acknowledged writes replayed to a slot's new master.

Without I/O (a stand-in clock and slot map):

* ``RecentWrites`` keeps what each master acknowledged, by slot. A master that answers
  ``MOVED`` gets its kept slots listed (a migration may have taken more slots than the one it
  named) and the calls of those it gave away are taken once; a slot's calls are handed out
  when the map routes it to another master — never another master's; what a master
  acknowledges in the seconds after its ``MOVED``, or for a slot known to have left it, comes
  straight back for a replay; calls older than ``keep_seconds`` or beyond ``keep_bytes`` are
  dropped, oldest first.
* ``NodePlanner`` adds a replay job (to the slot's new master) when it routes a slot away from
  the master that took its latest writes; ``command_args`` unpacks a packed call for redis-py's cluster client (the
  command name a ``str``: redis-py routes ``EVALSHA`` by its keys only then).

On a real cluster: Dragonfly's (``--cluster_mode=yes``) keeps what it acknowledged, and a
write the old master acknowledged, then erased (as Dragonfly's migration finalization can), is
back on the new master after the next read — through ``MOVED`` (sync) and through a refreshed
slot map (async); a Redis Cluster, which never erases an acknowledged write, keeps nothing.
The whole scenario under traffic is ``test_cluster_resharding.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import datetime, timezone
from types import SimpleNamespace

import pytest
from local_topology import LocalCluster, start_cluster
from redis.crc import key_slot
from store_kit import entity_key, feature_view, hash_key, repo_config, row

from feast_dragonfly._protocol import wire
from feast_dragonfly._store import write
from feast_dragonfly._store.cluster import replay
from feast_dragonfly._store.cluster_replay import NOTHING_KEPT, RecentWrites, command_args
from feast_dragonfly._store.cluster_write import NodePlanner
from feast_dragonfly.testing.local_server import ServerBinary

VIEW = "drivers"
T0 = datetime(2024, 5, 1, 12, tzinfo=timezone.utc)


def plan(rows):
    return list(write.plan_calls(rows, view_name=VIEW, project="proj", key_version=3,
                                 ttl_seconds=None, rows_per_call=1))  # fmt: skip


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def calls_in_two_slots():
    """Calls of two rows in one slot and one row in another."""
    # Keys that differ in 16 bits or fewer never share a CRC16 slot: spread the ids.
    calls = plan([row(k * 1_000_003, T0, k) for k in range(2000)])
    by_slot: dict[int, list] = {}
    for call in calls:
        by_slot.setdefault(key_slot(call.key(0)), []).append(call)
    shared = next(slot for slot, group in by_slot.items() if len(group) >= 2)
    other = next(slot for slot in by_slot if slot != shared)
    return shared, by_slot[shared][:2], other, by_slot[other][:1]


# --------------------------------------------------------------------------- the journal


def test_moved_lists_every_slot_that_master_took_writes_for_and_take_hands_them_out_once():
    clock = Clock()
    journal = RecentWrites(clock=clock)
    slot, pair, other, [single] = calls_in_two_slots()
    assert journal.acknowledged("a", pair[:1]) == []
    assert journal.acknowledged("b", pair[1:]) == []
    assert journal.acknowledged("a", [single]) == []
    # Not only the slot it named; kept until taken.
    assert journal.moved("a", other) == {slot: pair[:1], other: [single]}
    assert journal.moved("a", other) == {other: [single]}  # asked already: that slot only
    assert journal.take("a", [other]) == [single]
    assert journal.take("a", [other]) == []  # handed out once
    assert len(journal) == 2
    assert journal.take("a", [slot]) == pair[:1]  # never b's
    clock.now += 60
    assert journal.moved("b", slot) == {}  # too old: dropped


def test_late_acknowledgements_from_the_old_master_are_replayed_at_once():
    clock = Clock()
    journal = RecentWrites(clock=clock)
    slot, pair, _other, [single] = calls_in_two_slots()
    assert journal.moved("a", slot) == {}
    assert journal.acknowledged("a", [single]) == [single]  # right after its MOVED: any slot
    assert journal.acknowledged("b", pair) == []  # the new master: kept, not replayed
    clock.now += 3
    assert journal.acknowledged("a", [single]) == []  # later: kept
    assert journal.acknowledged("a", pair) == pair  # but not for the slot it gave away
    assert len(journal) == 3


def test_routing_a_slot_elsewhere_hands_out_the_old_masters_calls():
    journal = RecentWrites(clock=Clock())
    slot, pair, _other, _single = calls_in_two_slots()
    journal.acknowledged("a", pair)
    assert not journal.elsewhere(slot, "a")
    assert journal.routed(slot, "a") == []
    assert journal.elsewhere(slot, "b")
    assert journal.routed(slot, "b") == pair
    assert not journal.elsewhere(slot, "b")
    # Later acknowledgements of the old master for that slot come straight back.
    assert journal.acknowledged("a", pair[:1]) == pair[:1]


def test_old_calls_and_calls_over_the_byte_budget_are_dropped_oldest_first():
    clock = Clock()
    slot, pair, other, [single] = calls_in_two_slots()
    journal = RecentWrites(clock=clock, keep_seconds=10)
    journal.acknowledged("a", pair[:1])
    clock.now += 6
    journal.acknowledged("a", pair[1:])
    clock.now += 6
    journal.acknowledged("a", [single])  # prunes what is older than 10 s
    assert journal.routed(slot, "b") == pair[1:]

    small = RecentWrites(clock=clock, keep_bytes=len(pair[1].command) + len(single.command))
    small.acknowledged("a", pair)
    small.acknowledged("a", [single])
    assert small.routed(slot, "b") == pair[1:]
    assert small.routed(other, "b") == [single]


# --------------------------------------------------------------------------- planning


class Slots:
    """A slot map with two masters; ``flip`` moves every slot to the other one."""

    def __init__(self) -> None:
        self.a, self.b = SimpleNamespace(name="a"), SimpleNamespace(name="b")
        self.flipped = False
        self.nodes_manager = SimpleNamespace(get_node_from_slot=self.node)

    def node(self, slot: int) -> SimpleNamespace:
        first = slot < 8192
        return self.a if first != self.flipped else self.b


def test_the_planner_replays_a_slots_writes_when_it_routes_the_slot_elsewhere():
    cluster = Slots()
    slot, pair, _other, _single = calls_in_two_slots()
    owner = cluster.node(slot).name
    planner = NodePlanner(cluster, VIEW, per_round_trip=1)
    planner._journal.acknowledged(owner, pair)
    [job] = planner.jobs(pair[:1])  # same master: no replay
    assert next(job.flow).node.name == owner
    cluster.flipped = True
    replay_job, write_job = planner.jobs(pair[:1])
    assert replay_job.rows == 0
    request = next(replay_job.flow)  # resent to the slot's new master
    assert request.node.name != owner
    assert request.payloads == [call.command for call in pair]
    assert next(write_job.flow).node.name != owner


def test_a_replay_counts_no_rows_and_sends_nothing_when_empty():
    flow = replay(Slots(), [])
    with pytest.raises(StopIteration) as done:
        next(flow)
    assert done.value.value == 0


def test_command_args_unpack_a_call_for_the_cluster_client():
    [call] = plan([row(1, T0, 1)])
    args = command_args(call.command)
    assert args[0] == "EVALSHA"
    assert args[1:] == wire.arguments(call.command)[1:]
    assert args[3] == call.key(0)  # EVALSHA sha numkeys key...
    assert wire.command(args[0].encode(), *args[1:]) == call.command


# --------------------------------------------------------------------------- a real cluster


@pytest.fixture(scope="module")
def started(server_binary: ServerBinary) -> Iterator[LocalCluster]:
    with start_cluster(server_binary) as cluster:
        yield cluster


@pytest.fixture
def cluster(started: LocalCluster) -> LocalCluster:
    started.flushall()
    return started


def _dragonfly_only(cluster: LocalCluster) -> None:
    if cluster.kind != "dragonfly":
        pytest.skip("Dragonfly only: a Redis Cluster keeps no writes for a replay")


def test_only_a_dragonfly_cluster_keeps_acknowledged_writes(tmp_path, cluster, store):
    config = repo_config(tmp_path, cluster.connection_string, redis_type="redis_cluster")
    store.online_write_batch(config, feature_view("fv", ("a",)), [row(1, T0, 1, ("a",))], None)
    journal = store._get_client(config).recent_writes
    if cluster.kind == "dragonfly":
        assert isinstance(journal, RecentWrites) and len(journal) == 1
    else:
        assert journal is NOTHING_KEPT and len(journal) == 0


def _erase_on_new_owner(cluster: LocalCluster, entity: int) -> tuple[int, int]:
    """Move the entity's slot to another master, then delete the key there: what Dragonfly's
    finalization gap does to a write the old master acknowledged. (old, new) master."""
    key = hash_key(entity)
    source = cluster.master_of_key(key)
    target = (source + 1) % len(cluster.masters)
    cluster.migrate_slot(key_slot(key), target)
    client = cluster.masters[target].client(decode_responses=False)
    try:
        assert client.delete(key) == 1
    finally:
        client.close()
    return source, target


def _holds(cluster: LocalCluster, index: int, key: bytes) -> bool:
    client = cluster.masters[index].client(decode_responses=False)
    try:
        return bool(client.exists(key))
    finally:
        client.close()


def test_a_write_erased_by_a_migration_is_replayed_after_moved(tmp_path, cluster, store):
    _dragonfly_only(cluster)
    config = repo_config(tmp_path, cluster.connection_string, redis_type="redis_cluster")
    view = feature_view("fv", ("a",))
    store.online_write_batch(config, view, [row(i, T0, i, ("a",)) for i in range(20)], None)
    _source, target = _erase_on_new_owner(cluster, 7)
    # The store still routes the slot to the old master, which answers MOVED.
    got = store.online_read(config, view, [entity_key(i) for i in range(20)])
    assert [features["a"].int64_val for _when, features in got] == list(range(20))
    assert _holds(cluster, target, hash_key(7))


def test_a_write_erased_by_a_migration_is_replayed_when_the_map_moved(tmp_path, cluster, store):
    _dragonfly_only(cluster)
    config = repo_config(tmp_path, cluster.connection_string, redis_type="redis_cluster")
    view = feature_view("fv", ("a",))

    async def scenario() -> None:
        await store.online_write_batch_async(config, view, [row(7, T0, 7, ("a",))], None)
        _source, target = _erase_on_new_owner(cluster, 7)
        client = await store._get_client_async(config)
        await client.nodes_manager.initialize()  # the map already names the new master
        got = await store.online_read_async(config, view, [entity_key(7)])
        assert got[0][1]["a"].int64_val == 7
        assert _holds(cluster, target, hash_key(7))
        await store.close()

    asyncio.run(scenario())
