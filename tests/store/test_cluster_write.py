"""``_store.cluster_write``: script calls routed to the master serving their slot (no I/O).

* ``NodePlanner`` routes each call to the master of its slot (a stand-in slot map: two
  masters), makes a round trip of a master's calls as soon as it holds ``per_round_trip`` of
  them, in input order, and of the partly filled batches at ``drain`` (which forgets them);
  every job carries its calls' rows.
* A call whose keys hash to several slots is refused: a cluster runs a script only when its
  keys share one slot.

The same planner on a real cluster (writes, ``MOVED`` / ``ASK``, failover) is in
``test_cluster.py``; the drivers that run its jobs in ``test_send.py``.
"""

from __future__ import annotations

from datetime import datetime, timezone
from types import SimpleNamespace

import pytest
from redis.crc import key_slot
from store_kit import row

from feast_dragonfly._store import write
from feast_dragonfly._store.cluster_write import NodePlanner

VIEW = "drivers"
T0 = datetime(2024, 5, 1, 12, 0, 0, 123_456, tzinfo=timezone.utc)


def plan(rows, rows_per_call=100):
    return list(write.plan_calls(rows, view_name=VIEW, project="proj", key_version=3,
                                 ttl_seconds=None, rows_per_call=rows_per_call))  # fmt: skip


class Slots:
    """A cluster's slot map: slots below 8192 on master ``a``, the others on ``b``."""

    def __init__(self) -> None:
        self.a, self.b = SimpleNamespace(name="a"), SimpleNamespace(name="b")
        self.nodes_manager = SimpleNamespace(get_node_from_slot=self.node)

    def node(self, slot: int) -> SimpleNamespace:
        return self.a if slot < 8192 else self.b


def test_a_cluster_batches_calls_per_master_by_slot_and_drains_the_rest():
    cluster = Slots()
    calls = plan([row(k, T0, k) for k in range(40)], rows_per_call=1)
    on = {"a": [], "b": []}
    for call in calls:
        on[cluster.node(key_slot(call.key(0))).name].append(call)
    assert len(on["a"]) >= 7 and len(on["b"]) >= 7  # both masters get several
    planner = NodePlanner(cluster, VIEW, per_round_trip=3)

    jobs = [job for start in range(0, 40, 4) for job in planner.jobs(calls[start : start + 4])]
    rest = planner.drain()
    assert planner.drain() == []  # forgotten once drained
    batches = {"a": [], "b": []}
    for job in jobs + rest:
        request = next(job.flow)  # a round trip to one master, its calls in input order
        batches[request.node.name].append(request.payloads)
        assert job.rows == len(request.payloads) == request.replies
    for name, routed in on.items():
        commands = [call.command for call in routed]
        assert batches[name] == [commands[i : i + 3] for i in range(0, len(commands), 3)]
    assert all(job.rows == 3 for job in jobs) and all(job.rows < 3 for job in rest)


def test_a_cluster_batch_is_sent_as_soon_as_it_is_full():
    cluster = Slots()
    calls = plan([row(k, T0, k) for k in range(40)], rows_per_call=1)
    first_on_a = [c for c in calls if key_slot(c.key(0)) < 8192][:2]
    planner = NodePlanner(cluster, VIEW, per_round_trip=2)
    assert planner.jobs(first_on_a[:1]) == []
    [job] = planner.jobs(first_on_a[1:])
    assert next(job.flow).payloads == [c.command for c in first_on_a]


def test_a_round_trip_of_at_least_one_call_whatever_the_batch_size_asked():
    cluster = Slots()
    calls = plan([row(k, T0, k) for k in range(4)], rows_per_call=1)
    planner = NodePlanner(cluster, VIEW, per_round_trip=0)
    jobs = planner.jobs(calls)
    assert [next(job.flow).payloads for job in jobs] == [[call.command] for call in calls]
    assert planner.drain() == []


def test_a_call_whose_keys_span_several_slots_is_refused():
    rows = [row(k, T0, k) for k in range(40)]
    [call] = plan(rows, rows_per_call=40)
    assert len({key_slot(call.key(i)) for i in range(call.rows)}) > 1
    with pytest.raises(AssertionError, match="one slot"):
        NodePlanner(Slots(), VIEW, per_round_trip=8).jobs([call])
