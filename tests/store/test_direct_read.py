"""``_store.direct_read``: plain online reads planned without Feast's per-request machinery.

* ``columnar`` turns either form of entity rows into join key → values, and says ``None`` for
  anything else.
* ``prepare`` (a hand-built plan, no server): hash keys are exactly ``layout``'s for the same
  entity values; one ``HMGET`` per distinct hash, shared by every view that reads it, an
  entity asked for twice read once; placements say where each row's fields are, and
  ``view_rows`` cuts them out of the replies. Requests outside the plain shapes — missing or
  extra join keys, no rows, values Feast would convert (bools, floats, ints out of range,
  non-strings) — get ``None``.
* ``registry_content``: no digest without a valid cached registry proto; the same digest while
  the content is unchanged, another once it changes.
* ``plan_request`` on an applied repo (the differential ``api`` repos, real server): the plan
  of feature refs (fields, sorted join keys, output names, join-key types), the same plan object
  while the registry is unchanged, ``None`` for shapes Feast's path must answer (other key
  versions, pre-computed services, on-demand views, join-key maps, bytes or timestamp entity
  keys); the planned ``HMGET`` commands find the stored rows.
"""

from __future__ import annotations

from datetime import datetime, timezone
from types import SimpleNamespace

import pytest
from differential_kit import DIFFERENTIAL_MARKS
from feast import FeatureService
from feast.protos.feast.core.Registry_pb2 import Registry as RegistryProto
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value
from feast.value_type import ValueType

from feast_dragonfly._protocol import wire
from feast_dragonfly._store import direct_read, layout
from feast_dragonfly._store.read import field_set

INT64, INT32, STRING = ValueType.INT64, ValueType.INT32, ValueType.STRING

VIEW_A = direct_read.ViewPart(field_set("a", ("x", "y")), ("driver_id",), ("x", "y"), "a")
VIEW_B = direct_read.ViewPart(field_set("b", ("z",)), ("driver_id",), ("z",), "b")
PAIRS = direct_read.ViewPart(field_set("p", ("q",)), ("customer_id", "driver_id"), ("q",), "p")
PLAN = direct_read.DirectPlan(
    (VIEW_A, VIEW_B, PAIRS), {"driver_id": INT64, "customer_id": STRING}, b"proj", []
)


def key_of(**values) -> bytes:
    protos = {
        int: lambda v: Value(int64_val=v),
        str: lambda v: Value(string_val=v),
    }
    entity = EntityKey(
        join_keys=list(values), entity_values=[protos[type(v)](v) for v in values.values()]
    )
    return layout.entity_hash_key(entity, b"proj", 3)


# --------------------------------------------------------------------------- entity rows


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        ([{"a": 1, "b": "x"}, {"a": 2, "b": "y"}], {"a": [1, 2], "b": ["x", "y"]}),
        ({"a": [1, 2], "b": ("x", "y")}, {"a": [1, 2], "b": ["x", "y"]}),
        ({"a": []}, {"a": []}),
        ([], None),
        ([{"a": 1}, {"b": 2}], None),  # rows with different keys
        ([{"a": 1}, {"a": 2, "b": 3}], None),
        ([("a", 1)], None),
        ({"a": 1}, None),  # a mapping of scalars, not of lists
        ("a", None),
    ],
)
def test_columnar_takes_both_forms_of_entity_rows(rows, expected):
    assert direct_read.columnar(rows) == expected


def test_columnar_copies_the_callers_lists():
    given = {"a": [1, 2]}
    columns = direct_read.columnar(given)
    columns["a"].append(3)
    assert given == {"a": [1, 2]}


# --------------------------------------------------------------------------- prepare


def test_one_hmget_per_hash_shared_by_the_views_that_read_it():
    prepared = direct_read.prepare(PLAN, {"driver_id": [1, 2, 1], "customer_id": ["c", "d", "c"]})
    read_plan = prepared.read_plan
    assert prepared.rows == 3
    assert read_plan.keys == [
        key_of(driver_id=1),
        key_of(driver_id=2),
        key_of(customer_id="c", driver_id=1),
        key_of(customer_id="d", driver_id=2),
    ]
    both = [VIEW_A.fieldset, VIEW_B.fieldset]
    assert read_plan.key_fieldsets == [both, both, [PAIRS.fieldset], [PAIRS.fieldset]]
    # View a's three fields (x, y, _ts:a) come first in a driver's HMGET, then view b's.
    assert prepared.placements == [
        [(0, 0), (1, 0), (0, 0)],
        [(0, 3), (1, 3), (0, 3)],
        [(2, 0), (3, 0), (2, 0)],
    ]
    expected = b"".join(
        wire.command(b"HMGET", key, *[f for fs in fieldsets for f in fs.fields])
        for key, fieldsets in zip(read_plan.keys, read_plan.key_fieldsets)
    )
    assert read_plan.commands(0, 4) == expected


def test_view_rows_cut_each_views_fields_out_of_the_replies():
    prepared = direct_read.prepare(PLAN, {"driver_id": [2, 1], "customer_id": ["d", "c"]})
    replies = [
        [b"x2", b"y2", b"t2a", b"z2", b"t2b"],
        [b"x1", None, b"t1a", None, None],
        [b"q-d", b"tp-d"],
        [None, None],
    ]
    assert prepared.view_rows(replies) == [
        [[b"x2", b"y2", b"t2a"], [b"x1", None, b"t1a"]],
        [[b"z2", b"t2b"], [None, None]],
        [[b"q-d", b"tp-d"], [None, None]],
    ]


@pytest.mark.parametrize(
    "entities",
    [
        {"driver_id": [1]},  # a view's join key is missing
        {"driver_id": [1], "customer_id": ["c"], "other": [2]},  # a key no view reads
        {"driver_id": [], "customer_id": []},
        {"driver_id": [True], "customer_id": ["c"]},
        {"driver_id": [1.0], "customer_id": ["c"]},
        {"driver_id": ["1"], "customer_id": ["c"]},
        {"driver_id": [2**63], "customer_id": ["c"]},
        {"driver_id": [None], "customer_id": ["c"]},
        {"driver_id": [1], "customer_id": [7]},
        {"driver_id": [1], "customer_id": [b"c"]},
    ],
)
def test_requests_outside_the_plain_shapes_get_none(entities):
    assert direct_read.prepare(PLAN, entities) is None


@pytest.mark.parametrize(("value", "direct"), [(2**31 - 1, True), (-(2**31), True), (2**31, False)])
def test_int32_join_keys_take_values_in_range(value, direct):
    view = direct_read.ViewPart(field_set("s", ("v",)), ("shard",), ("v",), "s")
    plan = direct_read.DirectPlan((view,), {"shard": INT32}, b"proj", [])
    prepared = direct_read.prepare(plan, {"shard": [value]})
    assert (prepared is not None) == direct
    if direct:
        entity = EntityKey(join_keys=["shard"], entity_values=[Value(int32_val=value)])
        assert prepared.read_plan.keys == [layout.entity_hash_key(entity, b"proj", 3)]


# --------------------------------------------------------------------------- registry content


class Registry:
    """A stand-in for Feast's registry cache: a proto, when it was cached, and its validity."""

    def __init__(self, proto, valid: bool = True) -> None:
        self.cached_registry_proto = proto
        self.cached_registry_proto_created = datetime(2024, 1, 1, tzinfo=timezone.utc)
        self.valid = valid

    def is_cache_valid(self) -> bool:
        return self.valid


def test_registry_content_is_a_digest_of_a_valid_cached_proto():
    proto = RegistryProto(version_id="one")
    registry = Registry(proto)
    digest = direct_read.registry_content(registry)
    assert isinstance(digest, bytes) and len(digest) == 16
    assert direct_read.registry_content(Registry(RegistryProto(version_id="one"))) == digest
    assert direct_read.registry_content(Registry(RegistryProto(version_id="two"))) != digest
    assert direct_read.registry_content(Registry(proto, valid=False)) is None
    assert direct_read.registry_content(Registry(None)) is None
    assert direct_read.registry_content(SimpleNamespace()) is None
    # Refreshed (a new creation time) with other content: the digest follows.
    proto.version_id = "changed"
    registry.cached_registry_proto_created = datetime(2024, 1, 2, tzinfo=timezone.utc)
    assert direct_read.registry_content(registry) not in (None, digest)


# --------------------------------------------------------------------------- plan_request


def _plan(store, features, full_names=False, config=None):
    return direct_read.plan_request(
        config or store.config, store.registry, store.project, features, full_names
    )


class TestPlanRequest:
    pytestmark = DIFFERENTIAL_MARKS

    def test_a_plan_of_feature_refs(self, api):
        store = api.stores["ours"]
        plan = _plan(store, ["driver_stats:trips", "driver_customer:note", "driver_stats:rank"])
        stats, pairs = plan.views
        # Features in Feast's order for the view (its grouping decides the response's order).
        [(_, stats_features), (_, pairs_features)] = plan.grouped_refs
        assert sorted(stats_features) == ["rank", "trips"] and pairs_features == ["note"]
        assert stats.fieldset == field_set("driver_stats", tuple(stats_features))
        assert (stats.join_keys, stats.output_names, stats.metrics_name) == (
            ("driver_id",),
            tuple(stats_features),
            "driver_stats",
        )
        assert pairs.join_keys == ("customer_id", "driver_id")  # sorted, as keys encode them
        assert plan.join_key_types == {"driver_id": INT64, "customer_id": STRING}
        assert plan.project_bytes == store.project.encode()
        assert pairs.fieldset == field_set("driver_customer", ("note",))
        full = _plan(store, ["driver_stats:trips"], full_names=True)
        assert full.views[0].output_names == ("driver_stats__trips",)

    def test_the_same_plan_while_the_registry_is_unchanged(self, api):
        store = api.stores["ours"]
        features = ["driver_stats:trips", "driver_profile:name"]
        plan = _plan(store, features)
        assert _plan(store, list(features)) is plan
        other_config = store.config.model_copy()
        again = _plan(store, features, config=other_config)
        assert again is not plan and again == plan
        # Two stores of one project in turn (say, one per layout) each keep their own plan.
        assert _plan(store, features) is plan
        assert _plan(store, features, config=other_config) is again

    def test_shapes_feasts_path_must_answer_get_none(self, api):
        store = api.stores["ours"]
        stats = store.get_feature_view("driver_stats")
        precomputed = FeatureService(name="pre", features=[stats], precompute_online=True)
        version_2 = SimpleNamespace(entity_key_serialization_version=2)
        assert _plan(store, ["driver_stats:trips"], config=version_2) is None
        assert _plan(store, precomputed) is None
        assert _plan(store, ["adjusted_acc:adjusted_acc", "driver_stats:acc_rate"]) is None
        assert _plan(store, store.get_feature_service("svc_join_key_map"), True) is None
        assert _plan(store, ["shard_blob:v"]) is None  # bytes join key
        assert _plan(store, ["daily:v"]) is None  # timestamp join key

    def test_the_planned_hmgets_find_the_stored_rows(self, api_data):
        store = api_data.stores["ours"]
        online_store = store._get_provider().online_store
        plan = _plan(store, ["driver_stats:trips", "driver_customer:note"])
        entities = {"driver_id": [1, 9999, 3], "customer_id": ["c-0", "c-0", "🐉-3"]}
        prepared = direct_read.prepare(plan, entities)
        assert prepared.read_plan.keys[0] == layout.entity_hash_key(
            EntityKey(join_keys=["driver_id"], entity_values=[Value(int64_val=1)]),
            store.project.encode(),
            3,
        )
        replies = online_store._fetch(store.config, prepared.read_plan)
        stats, pairs = prepared.view_rows(replies)
        trips = [Value.FromString(r[0]) if r[0] else None for r in stats]
        assert trips[1] is None and trips[0] is not None and trips[2] is not None
        feasts = (
            api_data.stores["feast"]
            .get_online_features(
                features=["driver_stats:trips", "driver_customer:note"],
                entity_rows=[dict(zip(entities, row)) for row in zip(*entities.values())],
            )
            .to_dict()
        )
        assert [None if v is None else v.int64_val for v in trips] == feasts["trips"]
        notes = [Value.FromString(r[0]).string_val if r[0] else None for r in pairs]
        assert notes == feasts["note"]
