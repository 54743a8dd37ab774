"""``_store.online_store``: update() / teardown() scoping, feature-view versioning, precompute,
and Feast hook guards.

All against a real server. Several projects share one server, as they do in production (the
deletions themselves, without the store, are ``test_maintenance.py``'s).
"""

from __future__ import annotations

import inspect
import struct
from datetime import datetime, timedelta, timezone

import mmh3
import pandas as pd
import pytest
import yaml
from feast import FeatureService, FeatureStore, FeatureView, Field, FileSource, utils
from feast.infra.online_stores.online_store import OnlineStore
from feast.infra.online_stores.redis import RedisOnlineStore
from feast.types import Int64
from store_kit import (
    FEAST_REDIS,
    OURS,
    compound_key,
    entity,
    entity_key,
    feature_view,
    hash_key,
    repo_config,
    row,
    snapshot,
    stored_values,
)

from feast_dragonfly import DragonflyOnlineStore

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)


def field(view: str, feature: str) -> bytes:
    return struct.pack("<I", mmh3.hash(f"{view}:{feature}", signed=False))


def write(store, config, view, rows):
    store.online_write_batch(config, view, list(rows), None)


# --------------------------------------------------------------------------- update()


@pytest.fixture
def two_views_one_hash(tmp_path, server_connection_string):
    """view_a and view_b share the driver hash of entity 1; entity 2 holds only view_a."""
    config = repo_config(tmp_path, server_connection_string)
    view_a = feature_view("view_a", ("x", "y"))
    view_b = feature_view("view_b", ("z",))
    store = DragonflyOnlineStore()
    write(store, config, view_a, [row(1, T0, 1, ("x", "y")), row(2, T0, 2, ("x", "y"))])
    write(store, config, view_b, [row(1, T0, 3, ("z",))])
    # The same view in another project, whose name ends like ours.
    other = repo_config(tmp_path / "other", server_connection_string, project="myproj")
    write(store, other, view_a, [row(1, T0, 9, ("x", "y")), row(2, T0, 9, ("x", "y"))])
    return store, config, view_a, view_b


def test_update_deletes_only_the_removed_views_fields(two_views_one_hash, redis_client):
    store, config, view_a, view_b = two_views_one_hash
    others = {k: v for k, v in snapshot(redis_client).items() if k.endswith(b"myproj")}
    assert len(others) == 2

    store.update(config, [view_a], [view_b], [], [], partial=False)

    assert set(redis_client.hkeys(hash_key(1))) == {field("view_b", "z"), b"_ts:view_b"}
    assert redis_client.exists(hash_key(2)) == 0, "a hash holding only view_a is removed"
    assert stored_values(store, config, view_b, [1])[0] == (T0, {"z": 3})
    assert (
        stored_values(store, config, view_a, [1, 2])
        == [(datetime.fromtimestamp(0, timezone.utc), {"x": None, "y": None})] * 2
    )
    after = {k: v for k, v in snapshot(redis_client).items() if k.endswith(b"myproj")}
    assert after == others, "another project's copy of the view was touched"


def test_update_keeps_data_when_full_scan_for_deletion_is_off(
    two_views_one_hash, tmp_path, server_connection_string, redis_client
):
    store, _, view_a, view_b = two_views_one_hash
    before = snapshot(redis_client)
    config = repo_config(
        tmp_path / "noscan", server_connection_string, full_scan_for_deletion=False
    )
    store.update(config, [view_a, view_b], [], [entity()], [], partial=False)
    assert snapshot(redis_client) == before


def test_update_with_nothing_to_delete_changes_nothing(two_views_one_hash, redis_client):
    store, config, view_a, view_b = two_views_one_hash
    before = snapshot(redis_client)
    store.update(config, [], [view_a, view_b], [], [entity()], partial=True)
    assert snapshot(redis_client) == before


# --------------------------------------------------------------------------- teardown()

PROJECTS = ["proj", "myproj", "proj2", "p*[x]", "pqx", "xproj", "pr?j"]


def _populate(tmp_path, connection_string, store_type=OURS):
    """Every project gets driver rows, customer rows and compound-key rows."""
    driver_view = feature_view("drivers", ("x",))
    customer = entity("customer", "customer_id")
    customer_view = feature_view("customers", ("c",), [customer])
    pair_view = feature_view("pairs", ("p",), [entity(), customer])
    store = DragonflyOnlineStore() if store_type == OURS else RedisOnlineStore()
    configs = {}
    for project in PROJECTS:
        config = repo_config(
            tmp_path / f"p{len(configs)}", connection_string, project=project, store_type=store_type
        )
        configs[project] = config
        # Entity values include bytes that are glob metacharacters: * (42), ? (63), [ (91), \ (92)
        ids = [1, 42, 63, 91, 92]
        write(store, config, driver_view, [row(i, T0, i, ("x",)) for i in ids])
        write(
            store,
            config,
            customer_view,
            [row(entity_key(i, "customer_id"), T0, i, ("c",)) for i in ids],
        )
        write(
            store,
            config,
            pair_view,
            [row(compound_key(driver_id=i, customer_id=i), T0, i, ("p",)) for i in ids],
        )
    return store, configs, (driver_view, customer_view, pair_view)


def _project_of(key: bytes) -> str:
    """Keys are <serialized v3 entity key><project>: walk the length-prefixed entity key
    (count, then count x (type, length, name), then count x (type, length, value))."""
    (count,) = struct.unpack_from("<I", key, 0)
    pos = 4
    for _ in range(2 * count):
        _type, length = struct.unpack_from("<II", key, pos)
        pos += 8 + length
    name = key[pos:].decode()
    assert name in PROJECTS, name
    return name


@pytest.mark.parametrize("victim", ["proj", "p*[x]", "pr?j"])
def test_teardown_is_scoped_exactly_to_its_project(
    tmp_path, server_connection_string, redis_client, victim
):
    store, configs, (driver_view, _, _) = _populate(tmp_path, server_connection_string)
    before = snapshot(redis_client)
    assert len(before) == len(PROJECTS) * 15

    store.teardown(configs[victim], [driver_view], [entity()])

    after = snapshot(redis_client)
    removed = set(before) - set(after)
    assert {_project_of(k) for k in removed} == {victim}
    # Exactly the victim's single-key driver hashes went; its customer and compound keys stay.
    assert removed == {hash_key(i, victim) for i in (1, 42, 63, 91, 92)}
    assert {k: before[k] for k in after} == after, "a surviving key was modified"


def test_teardown_removes_only_entities_with_the_torn_down_views_join_keys(
    tmp_path, server_connection_string, redis_client
):
    store, configs, (driver_view, customer_view, pair_view) = _populate(
        tmp_path, server_connection_string
    )
    before = snapshot(redis_client)
    store.teardown(configs["proj"], [pair_view], [])
    removed = set(before) - set(snapshot(redis_client))
    assert removed == {
        hash_key(compound_key(driver_id=i, customer_id=i), "proj") for i in (1, 42, 63, 91, 92)
    }

    store.teardown(configs["proj"], [driver_view, customer_view, pair_view], [])
    left = {_project_of(k) for k in snapshot(redis_client)}
    assert left == set(PROJECTS) - {"proj"}
    assert len(snapshot(redis_client)) == (len(PROJECTS) - 1) * 15


def test_teardown_handles_join_keys_whose_serialized_length_is_a_glob_character(
    tmp_path, server_connection_string, redis_client
):
    """A join key 42/91/92 bytes long puts '*', '[' or '\\' into the SCAN prefix."""
    store = DragonflyOnlineStore()
    config = repo_config(tmp_path, server_connection_string)
    views = []
    for length in (42, 91, 92, 63):
        join_key = ("k" * length)[:length]
        view = feature_view(f"v{length}", ("x",), [entity(f"e{length}", join_key)])
        write(store, config, view, [row(entity_key(7, join_key), T0, 1, ("x",))])
        views.append(view)
    assert redis_client.dbsize() == 4
    store.teardown(config, views[:3], [])
    assert [k for k in redis_client.keys()] == [hash_key(entity_key(7, "k" * 63))]


def test_feasts_own_store_wipes_other_projects_on_teardown(
    tmp_path, server_connection_string, redis_client
):
    """Documents the defect our teardown fixes: Feast's store SCANs ``<prefix>*proj``."""
    feast_store, configs, (driver_view, _, _) = _populate(
        tmp_path, server_connection_string, store_type=FEAST_REDIS
    )
    before = snapshot(redis_client)
    feast_store.teardown(configs["proj"], [driver_view], [])
    lost = {_project_of(k) for k in set(before) - set(snapshot(redis_client))}
    assert lost > {"proj"}, "Feast's teardown no longer leaks; the defect note can go"
    assert "myproj" in lost and "xproj" in lost


# --------------------------------------------------------------------------- versioning


@pytest.mark.parametrize(
    ("versioning", "current", "tag", "expected"),
    [
        (True, 2, None, "fv_v2"),
        (True, 2, 1, "fv_v1"),  # a pinned read (projection.version_tag) wins
        (True, 0, None, "fv"),
        (True, None, None, "fv"),
        (False, 2, None, "fv"),
    ],
)
def test_versioned_views_hash_exactly_like_feasts_store(
    tmp_path, server_connection_string, redis_client, versioning, current, tag, expected
):
    view = feature_view("fv", ("a", "b"))
    view.current_version_number = current
    view.projection.version_tag = tag
    rows = [row(1, T0, 1), row(2, T0 + timedelta(seconds=1), 2)]

    feast_config = repo_config(
        tmp_path / "feast", server_connection_string, store_type=FEAST_REDIS, versioning=versioning
    )
    RedisOnlineStore().online_write_batch(feast_config, view, rows, None)
    reference = snapshot(redis_client)
    redis_client.flushall()

    config = repo_config(tmp_path / "ours", server_connection_string, versioning=versioning)
    store = DragonflyOnlineStore()
    write(store, config, view, rows)
    assert snapshot(redis_client) == reference
    fields = set(redis_client.hkeys(hash_key(1)))
    assert fields == {f"_ts:{expected}".encode(), field(expected, "a"), field(expected, "b")}

    assert stored_values(store, config, view, [1, 2]) == [
        (T0, {"a": 1, "b": 1}),
        (T0 + timedelta(seconds=1), {"a": 2, "b": 2}),
    ]
    # delete_table removes the versioned fields (the only view on these hashes).
    store.update(config, [view], [], [], [], partial=False)
    assert redis_client.dbsize() == 0


def test_versioned_reads_are_allowed_for_our_store():
    store = DragonflyOnlineStore()
    assert store._is_versioned_read_supported() is True
    view = feature_view("fv")
    view.projection.version_tag = 3
    store._check_versioned_read_support([(view, ["a"])])  # must not raise


def _feature_repo(path, connection_string, *, store_type=OURS, project="proj", versioning=True):
    path.mkdir(parents=True, exist_ok=True)
    settings = {
        "project": project,
        "registry": {
            "path": str(path / "registry.db"),
            "enable_online_feature_view_versioning": versioning,
        },
        "provider": "local",
        "online_store": {"type": store_type, "connection_string": connection_string},
        "offline_store": {"type": "file"},
        "entity_key_serialization_version": 3,
    }
    (path / "feature_store.yaml").write_text(yaml.safe_dump(settings, sort_keys=False))
    return FeatureStore(repo_path=str(path))


def test_versioned_repo_end_to_end_matches_feasts_store(
    tmp_path, server_connection_string, redis_client
):
    """`feast apply` twice bumps the view to v1; writes and pinned reads use fv_v1 / fv."""
    driver = entity()
    source = FileSource(path=str(tmp_path / "unused.parquet"), timestamp_field="event_timestamp")

    def apply_twice(fs):
        fs.apply(
            [
                driver,
                FeatureView(
                    name="fv",
                    entities=[driver],
                    source=source,
                    schema=[Field(name="a", dtype=Int64)],
                ),
            ]
        )
        fs.apply(
            [
                driver,
                FeatureView(
                    name="fv",
                    entities=[driver],
                    source=source,
                    schema=[Field(name="a", dtype=Int64), Field(name="b", dtype=Int64)],
                ),
            ]
        )
        assert fs.get_feature_view("fv").current_version_number == 1

    frame = pd.DataFrame(
        {"driver_id": [1, 2], "a": [10, 20], "b": [11, 21], "event_timestamp": [T0, T0]}
    )
    feast_repo = _feature_repo(tmp_path / "feast", server_connection_string, store_type=FEAST_REDIS)
    apply_twice(feast_repo)
    feast_repo.write_to_online_store("fv", frame)
    reference = snapshot(redis_client)
    redis_client.flushall()

    ours = _feature_repo(tmp_path / "ours", server_connection_string)
    apply_twice(ours)
    ours.write_to_online_store("fv", frame)
    assert snapshot(redis_client) == reference
    assert b"_ts:fv_v1" in redis_client.hkeys(hash_key(1))

    rows = [{"driver_id": 1}, {"driver_id": 2}, {"driver_id": 3}]
    latest = ours.get_online_features(["fv:a", "fv:b"], rows).to_dict()
    assert latest == {"driver_id": [1, 2, 3], "a": [10, 20, None], "b": [11, 21, None]}
    pinned = ours.get_online_features(["fv@v1:a"], rows).to_dict()
    assert pinned["a"] == [10, 20, None]
    v0 = ours.get_online_features(["fv@v0:a"], rows).to_dict()
    assert v0["a"] == [None, None, None]  # nothing was written under the v0 name
    assert feast_repo.get_online_features(["fv@v1:a"], rows).to_dict() == pinned


# --------------------------------------------------------------------------- precompute


def _precompute_keeps_row_order() -> bool:
    """Whether Feast's precomputed path puts repeated and unsorted entity rows where they were
    asked (0.67 on); before, it answered the distinct entities in sorted order instead."""
    fast_path = inspect.signature(OnlineStore._try_precomputed_fast_path)
    return "entity_row_indices" in fast_path.parameters


def test_precomputed_feature_service_reads_equal_the_regular_path(
    tmp_path, server_connection_string, redis_client
):
    driver = entity()
    source = FileSource(path=str(tmp_path / "unused.parquet"), timestamp_field="event_timestamp")
    view_a = FeatureView(
        name="view_a",
        entities=[driver],
        source=source,
        schema=[Field(name="x", dtype=Int64), Field(name="y", dtype=Int64)],
    )
    view_b = FeatureView(
        name="view_b", entities=[driver], source=source, schema=[Field(name="z", dtype=Int64)]
    )
    service = FeatureService(name="svc", features=[view_a, view_b[["z"]]], precompute_online=True)
    fs = _feature_repo(tmp_path / "repo", server_connection_string, versioning=False)
    fs.apply([driver, view_a, view_b, service])

    ids = list(range(1, 21))
    fs.write_to_online_store(
        "view_a",
        pd.DataFrame(
            {"driver_id": ids, "x": ids, "y": [i * 10 for i in ids], "event_timestamp": [T0] * 20}
        ),
    )
    fs.write_to_online_store(
        "view_b",
        pd.DataFrame(
            {"driver_id": ids[:10], "z": [i * 100 for i in ids[:10]], "event_timestamp": [T0] * 10}
        ),
    )
    # Another project on the same server with a name Feast's prefix scan also matches.
    other = _feature_repo(
        tmp_path / "other", server_connection_string, project="myproj", versioning=False
    )
    other.apply([driver, view_a])
    other.write_to_online_store(
        "view_a", pd.DataFrame({"driver_id": [500], "x": [5], "y": [5], "event_timestamp": [T0]})
    )

    assert isinstance(fs._get_provider().online_store, DragonflyOnlineStore)
    written = fs.precompute_feature_service("svc")
    assert written == 20

    rows = [{"driver_id": i} for i in (3, 15, 3, 20, 1)]  # repeats and order kept
    if not _precompute_keeps_row_order():  # Feast < 0.67, for every store: sorted, distinct
        rows = [{"driver_id": i} for i in (1, 3, 15, 20)]
    service = fs.get_feature_service("svc")
    # Feast 0.67 stores vectors under full names (view__feature) and compares them with the
    # requested names, so the precomputed path only works with full_feature_names=True
    # (with False it raises for every store, Feast's own included).
    precomputed = fs.get_online_features(
        features=service, entity_rows=rows, full_feature_names=True
    ).to_dict()
    regular = fs.get_online_features(
        features=["view_a:x", "view_a:y", "view_b:z"], entity_rows=rows, full_feature_names=True
    ).to_dict()
    assert precomputed == regular
    expected = {1: (10, 100), 3: (30, 300), 15: (150, None), 20: (200, None)}
    assert precomputed["view_a__y"] == [expected[row["driver_id"]][0] for row in rows]
    assert precomputed["view_b__z"] == [expected[row["driver_id"]][1] for row in rows]

    # The vectors live in the service's synthetic view on the same entity hashes.
    assert b"_ts:__precomputed__svc" in redis_client.hkeys(hash_key(3))
    assert not any(b"precomputed" in f for f in redis_client.hkeys(hash_key(500, "myproj")))


# --------------------------------------------------------------------------- Feast hooks


READ_HOOK = (
    "self config grouped_refs join_key_values entity_name_to_join_key_map "
    "online_features_response full_feature_names include_feature_view_version_metadata"
).split()
GET_ONLINE_FEATURES = (
    "self config features entity_rows registry project full_feature_names "
    "include_feature_view_version_metadata"
).split()
POPULATE_RESPONSE = (
    "requested_features read_rows indexes online_features_response full_feature_names table "
    "output_len include_feature_view_version_metadata"
).split()

EXPECTED_SIGNATURES = {
    "OnlineStore._read_features_per_fv": (OnlineStore._read_features_per_fv, READ_HOOK),
    "OnlineStore._read_features_per_fv_async": (
        OnlineStore._read_features_per_fv_async,
        READ_HOOK,
    ),
    "OnlineStore.get_online_features": (OnlineStore.get_online_features, GET_ONLINE_FEATURES),
    "OnlineStore.get_online_features_async": (
        OnlineStore.get_online_features_async,
        GET_ONLINE_FEATURES,
    ),
    "utils._populate_response_from_feature_data": (
        utils._populate_response_from_feature_data,
        POPULATE_RESPONSE,
    ),
    "utils._get_unique_entities": (
        utils._get_unique_entities,
        ["table", "join_key_values", "entity_name_to_join_key_map"],
    ),
    "utils._get_entity_key_protos": (utils._get_entity_key_protos, ["entity_rows"]),
    "OnlineStore.online_read": (
        OnlineStore.online_read,
        ["self", "config", "table", "entity_keys", "requested_features"],
    ),
    "OnlineStore.online_write_batch": (
        OnlineStore.online_write_batch,
        ["self", "config", "table", "data", "progress"],
    ),
    "FeatureStore.precompute_feature_service": (
        FeatureStore.precompute_feature_service,
        ["self", "feature_service_name", "batch_size"],
    ),
}


@pytest.mark.parametrize("name", sorted(EXPECTED_SIGNATURES))
def test_feast_private_hooks_we_rely_on_are_unchanged(name):
    function, expected = EXPECTED_SIGNATURES[name]
    actual = list(inspect.signature(function).parameters)
    assert actual == expected, (
        f"Feast changed {name}{inspect.signature(function)}: feast_dragonfly overrides or calls "
        "it positionally — review online_store.py before widening the feast version range"
    )


@pytest.mark.parametrize(
    "name, ours",
    [
        ("_read_features_per_fv", "_read_batched"),
        ("_read_features_per_fv_async", "_read_batched_async"),
    ],
)
def test_our_hook_overrides_match_feasts_signature(name, ours):
    """The overrides take anything (a Feast that passes other arguments gets its own
    implementation, ``feast_hooks``); what they forward to takes Feast's arguments."""
    batched = list(inspect.signature(getattr(DragonflyOnlineStore, ours)).parameters)
    assert batched == list(inspect.signature(getattr(OnlineStore, name)).parameters)


def test_feast_still_special_cases_redis_store_where_we_rely_on_subclassing():
    assert issubclass(DragonflyOnlineStore, RedisOnlineStore)
    precompute = inspect.getsource(FeatureStore.precompute_feature_service)
    assert "isinstance(online_store, RedisOnlineStore)" in precompute, (
        "precompute_feature_service no longer special-cases RedisOnlineStore: check how it "
        "discovers entities now and whether DragonflyOnlineStore still gets vectors"
    )
    assert "_get_client(" in precompute and "scan_iter(" in precompute
    versioned = inspect.getsource(OnlineStore._is_versioned_read_supported)
    assert '"RedisOnlineStore"' in versioned
    # The read path still goes through the hook we override.
    for method in (OnlineStore.get_online_features, OnlineStore.get_online_features_async):
        assert "_read_features_per_fv" in inspect.getsource(method)
