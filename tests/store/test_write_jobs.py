"""``_store.write_jobs``: what ``online_write_batch`` sends, decided once per call (no I/O:
configs point at servers that need not exist, backends from ``backends.open_backend``).

* ``layout: compact``: compact records planned by ``compact.write.plan_calls`` (the calls'
  script is ``COMPACT_WRITE``; keys ``<hash key>:<storage view name>``, versioned names
  included; join-key values left out; the view's ttl and the store's ``key_ttl_seconds`` in
  each row's expiry, expired rows counted not sent), after the schema registration flow
  (``HSETNX`` of the view's canonical schema, once per backend); a view too wide for Feast's
  layout is still written as records.
* ``layout: feast``: ``write.plan_calls`` (``EVENT_TIME_WRITE``, the key ttl and the view's
  timestamp field in each call's header), nothing to register; a wide view: the transaction
  flow of ``wide.writing`` and no script calls.
* ``rows_per_call`` follows the backend: ``write_rows_per_call`` on a single server, 1 on a
  ``ClusterBackend`` (``redis_type: redis_cluster``); ``workers`` is the store's
  ``write_workers``; ``plan_calls`` plans again, the same calls, when called again.
"""

from __future__ import annotations

import inspect
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest
from feast import FeatureView, Field, FileSource
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.types import Int64
from redis.crc import key_slot
from store_kit import calls_of, entity, entity_key, feature_view, hash_key, repo_config, row

from feast_dragonfly._protocol import wire
from feast_dragonfly._protocol.keys import compact_key
from feast_dragonfly._protocol.script import COMPACT_WRITE, EVENT_TIME_WRITE
from feast_dragonfly._store.backends import Backend, ClusterBackend, open_backend
from feast_dragonfly._store.cluster_write import NodePlanner
from feast_dragonfly._store.compact import views
from feast_dragonfly._store.compact.codec import decode, encode_row
from feast_dragonfly._store.compact.directory import directory_key, schema_field
from feast_dragonfly._store.write_jobs import write_job

UTC = timezone.utc
NOW = datetime.now(UTC).replace(microsecond=0)
WIDE = 16_000  # features: more than one script call of Feast's layout can carry


def setup(tmp_path, *, layout="compact", cluster=False, versioning=False, **options):
    """(settings, backend, config) for a store that is never contacted."""
    address = "127.0.0.1:7000,127.0.0.1:7001" if cluster else "127.0.0.1:6390"
    config = repo_config(
        tmp_path / f"{layout}-{cluster}-{versioning}",
        address,
        layout=layout,
        versioning=versioning,
        write_rows_per_call=options.pop("write_rows_per_call", 2),
        **({"redis_type": "redis_cluster"} if cluster else {}),
        **options,
    )
    settings = config.online_store.settings()
    return settings, open_backend(settings.client), config


def ttl_view(ttl):
    source = FileSource(path="/nonexistent/unused.parquet", timestamp_field="event_timestamp")
    fields = [Field(name=n, dtype=Int64) for n in ("driver_id", "a", "b")]
    return FeatureView(name="fv", entities=[entity()], schema=fields, source=source, ttl=ttl)


def parsed(call):
    """(keys, arguments after the keys) of a planned call."""
    args = wire.arguments(call.command)
    n = int(args[2])
    assert args[:2] == [b"EVALSHA", call.script.sha.encode()]
    return args[3 : 3 + n], args[3 + n :]


@pytest.fixture(scope="module")
def wide_view():
    return feature_view("wide", tuple(f"f{i}" for i in range(WIDE)))


# --------------------------------------------------------------------------- compact


def test_a_compact_job_plans_records_after_registering_the_schema(tmp_path):
    settings, backend, config = setup(tmp_path, write_concurrency=3)
    assert type(backend) is Backend and settings.compact
    view = feature_view()
    rows = [row(k, NOW, k) for k in range(5)]
    job = write_job(settings, backend, config, view, rows, None)
    assert job.backend is backend and job.view_name == "fv" and job.workers == 3
    assert job.wide_flow is None and job.plan_calls is not None
    calls = list(job.plan_calls())
    assert [call.script for call in calls] == [COMPACT_WRITE] * 3
    assert [call.rows for call in calls] == [2, 2, 1]  # write_rows_per_call
    assert sum(call.progress_rows for call in calls) == 5
    schema = views.schema_of(view)
    records = []
    for call in calls:
        keys, body = parsed(call)
        records += list(zip(keys, body[0::2], body[1::2]))
    for k, (key, rec, expire_at) in enumerate(records):
        assert key == compact_key(hash_key(k), "fv")
        assert rec == encode_row(schema, rows[k][1], NOW) and expire_at == b"0"
    sent = calls_of(job.registering, {"hsetnx": 1})
    assert sent == [
        (
            "hsetnx",
            directory_key("proj"),
            schema_field("fv", schema.id),
            schema.canonical.encode(),
        )
    ]
    again = write_job(settings, backend, config, view, rows, None)
    assert calls_of(again.registering, {}) == []  # registered once per backend
    fresh = write_job(settings, open_backend(settings.client), config, view, rows, None)
    assert len(calls_of(fresh.registering, {"hsetnx": 1})) == 1


def test_a_compact_job_leaves_join_keys_out_and_applies_both_ttls(tmp_path):
    settings, backend, config = setup(tmp_path, key_ttl_seconds=600, write_rows_per_call=10)
    view = ttl_view(timedelta(seconds=60))
    now = datetime.now(UTC).replace(microsecond=0)  # not NOW: collected maybe long before
    with_key = {"a": ValueProto(int64_val=1), "driver_id": ValueProto(int64_val=1)}
    rows = [
        (entity_key(1), with_key, now, None),  # expires with the view's ttl: now + 60 s
        row(2, now - timedelta(seconds=61), 2),  # already past the view's ttl
        row(3, now + timedelta(hours=1), 3),  # the key ttl is earlier: now + 600 s
    ]
    before = views.now_ms()
    [call] = list(write_job(settings, backend, config, view, rows, None).plan_calls())
    after = views.now_ms()
    keys, body = parsed(call)
    assert keys == [compact_key(hash_key(1), "fv"), compact_key(hash_key(3), "fv")]
    assert call.progress_rows == 3
    schema = views.schema_of(view)
    assert body[0] == encode_row(schema, {"a": ValueProto(int64_val=1)}, now)
    assert int(body[1]) == int(now.timestamp()) * 1000 + 60_000
    assert before + 600_000 <= int(body[3]) <= after + 600_000
    assert [ValueProto.FromString(v).int64_val for v in decode(schema, body[2]).values] == [3, 3]


def test_the_storage_name_of_a_versioned_view_makes_keys_and_schema_field(tmp_path):
    settings, backend, config = setup(tmp_path, versioning=True)
    view = feature_view()
    view.current_version_number = 3
    job = write_job(settings, backend, config, view, [row(1, NOW, 1)], None)
    assert job.view_name == "fv_v3"
    [call] = list(job.plan_calls())
    assert [call.key(0)] == [compact_key(hash_key(1), "fv_v3")]
    [(_, _, field, _)] = calls_of(job.registering, {"hsetnx": 1})
    assert field == schema_field("fv_v3", views.schema_of(view).id)


def test_plan_calls_plans_again_when_called_again(tmp_path):
    # a failover's second attempt plans again: the same calls
    for layout in ("compact", "feast"):
        settings, backend, config = setup(tmp_path, layout=layout)
        job = write_job(
            settings, backend, config, feature_view(), [row(k, NOW, k) for k in range(5)], None
        )
        first = [call.command for call in job.plan_calls()]
        assert len(first) == 3 and [call.command for call in job.plan_calls()] == first


def test_a_wide_view_is_still_written_as_records_with_compact(tmp_path, wide_view):
    settings, backend, config = setup(tmp_path)
    values = {f"f{i}": ValueProto(int64_val=i) for i in range(0, WIDE, 1000)}
    job = write_job(
        settings, backend, config, wide_view, [(entity_key(1), values, NOW, None)], None
    )
    assert job.wide_flow is None and job.registering is not None
    [call] = list(job.plan_calls())
    assert call.script is COMPACT_WRITE and [call.key(0)] == [compact_key(hash_key(1), "wide")]
    decoded = decode(views.schema_of(wide_view), parsed(call)[1][0]).values
    assert ValueProto.FromString(decoded[3000]).int64_val == 3000 and decoded[3001] == b""


# --------------------------------------------------------------------------- Feast's layout


def test_a_feast_layout_job_plans_event_time_calls_and_registers_nothing(tmp_path):
    settings, backend, config = setup(tmp_path, layout="feast", key_ttl_seconds=45)
    rows = [row(k, NOW, k) for k in range(3)]
    job = write_job(settings, backend, config, feature_view(), rows, None)
    assert job.registering is None and job.wide_flow is None
    calls = list(job.plan_calls())
    assert [call.script for call in calls] == [EVENT_TIME_WRITE] * 2
    assert [call.rows for call in calls] == [2, 1]
    keys, rest = parsed(calls[0])
    assert keys == [hash_key(0), hash_key(1)]  # Feast's hashes, no view suffix
    assert rest[:2] == [b"45", b"_ts:fv"]


def test_a_wide_view_in_feasts_layout_is_a_transaction_flow(tmp_path, wide_view):
    settings, backend, config = setup(tmp_path, layout="feast")
    values = {f"f{i}": ValueProto(int64_val=i) for i in range(WIDE)}
    job = write_job(
        settings, backend, config, wide_view, [(entity_key(1), values, NOW, None)], None
    )
    assert job.plan_calls is None and job.registering is None
    assert inspect.isgenerator(job.wide_flow)
    job.wide_flow.close()


# --------------------------------------------------------------------------- cluster


@pytest.mark.parametrize("layout", ["compact", "feast"])
def test_a_cluster_backend_carries_one_row_per_call(tmp_path, layout):
    settings, backend, config = setup(tmp_path, layout=layout, cluster=True, write_rows_per_call=50)
    assert isinstance(backend, ClusterBackend) and settings.client.redis_type == "redis_cluster"
    rows = [row(k, NOW, k) for k in range(6)]
    calls = list(write_job(settings, backend, config, feature_view(), rows, None).plan_calls())
    assert [call.rows for call in calls] == [1] * 6
    expected = COMPACT_WRITE if layout == "compact" else EVENT_TIME_WRITE
    assert all(call.script is expected for call in calls)
    single, single_backend, single_config = setup(tmp_path, layout=layout, write_rows_per_call=50)
    job = write_job(single, single_backend, single_config, feature_view(), rows, None)
    assert [call.rows for call in job.plan_calls()] == [6]


class Slots:
    """A stand-in cluster slot map (as ``test_cluster_write``): two masters."""

    def __init__(self) -> None:
        a, b = SimpleNamespace(name="a"), SimpleNamespace(name="b")
        self.nodes_manager = SimpleNamespace(
            get_node_from_slot=lambda slot: a if slot < 8192 else b
        )


def test_a_cluster_routes_every_compact_call_to_one_master(tmp_path):
    settings, backend, config = setup(tmp_path, cluster=True)
    rows = [row(k, NOW, k) for k in range(20)]
    calls = list(write_job(settings, backend, config, feature_view(), rows, None).plan_calls())
    planner = NodePlanner(Slots(), "fv", per_round_trip=64)
    jobs = planner.jobs(calls) + planner.drain()
    assert sum(job.rows for job in jobs) == 20
    assert {key_slot(call.key(0)) for call in calls} == {
        key_slot(compact_key(hash_key(k), "fv")) for k in range(20)
    }


def test_a_cluster_routes_a_compact_batch_whose_rows_all_expired(tmp_path):
    settings, backend, config = setup(tmp_path, cluster=True)
    rows = [row(k, NOW - timedelta(days=1), k) for k in range(3)]
    job = write_job(settings, backend, config, ttl_view(timedelta(minutes=5)), rows, None)
    calls = list(job.plan_calls())
    assert sum(call.progress_rows for call in calls) == 3
    planner = NodePlanner(Slots(), "fv", per_round_trip=64)
    jobs = planner.jobs(calls) + planner.drain()
    assert sum(job.rows for job in jobs) == 3
