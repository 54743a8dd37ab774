"""``_store.maintenance``: deleting a project's data exactly, on the real server.

Hashes are written in Feast's layout by hand (``HSET``) for several projects whose names end
alike or hold glob characters, with single and compound join keys and entity values whose
bytes are glob characters:

* ``project_keys`` yields exactly this project's hash keys of entities with exactly these join
  keys — never another project's, even one ``SCAN MATCH`` alone would also match.
* ``delete_entities`` removes exactly those hashes (also key by key, as on a cluster, and in
  batches beyond one ``UNLINK``), and returns how many.
* ``delete_view`` removes one view's fields, a hash left without any other view whole, leaves
  hashes without the view untouched, and returns how many hashes it changed.
"""

from __future__ import annotations

import pytest
from store_kit import compound_key, entity_key, hash_key, snapshot

from feast_dragonfly._protocol.keys import feature_field, timestamp_field
from feast_dragonfly._store import maintenance

pytestmark = pytest.mark.server

PROJECTS = ["proj", "myproj", "proj2", "p*[x]", "pr?j"]
#: Entity values whose bytes are glob characters: * (42), ? (63), [ (91), \ (92).
IDS = [1, 42, 63, 91, 92]


def put(client, key: bytes, view: str, features: dict[str, bytes]) -> None:
    fields = {feature_field(view, name): value for name, value in features.items()}
    client.hset(key, mapping={**fields, timestamp_field(view): b"ts-" + view.encode()})


@pytest.fixture
def populated(redis_client):
    """Per project: drivers (views ``a`` and ``b`` on one hash, ``a`` alone for id 92),
    customers, and driver+customer pairs."""
    for project in PROJECTS:
        for i in IDS:
            driver = hash_key(i, project)
            put(redis_client, driver, "a", {"x": b"%d" % i})
            if i != 92:
                put(redis_client, driver, "b", {"y": b"y", "z": b"z"})
            put(redis_client, hash_key(entity_key(i, "customer_id"), project), "c", {"c": b"c"})
            pair = hash_key(compound_key(driver_id=i, customer_id=i), project)
            put(redis_client, pair, "p", {"p": b"p"})
    assert redis_client.dbsize() == len(PROJECTS) * len(IDS) * 3
    return redis_client


def drivers(project: str) -> set[bytes]:
    return {hash_key(i, project) for i in IDS}


@pytest.mark.parametrize("project", PROJECTS)
def test_project_keys_are_exactly_this_projects_keys_of_these_join_keys(populated, project):
    found = list(maintenance.project_keys(populated, project=project, join_keys=["driver_id"]))
    assert sorted(found) == sorted((key, None) for key in drivers(project))  # hashes: no view
    pairs = maintenance.project_keys(
        populated, project=project, join_keys=["customer_id", "driver_id"]
    )
    assert set(pairs) == {
        (hash_key(compound_key(driver_id=i, customer_id=i), project), None) for i in IDS
    }
    assert list(maintenance.project_keys(populated, project=project, join_keys=["nobody"])) == []


@pytest.mark.parametrize("key_by_key", [False, True], ids=["unlink", "key-by-key"])
@pytest.mark.parametrize("project", ["proj", "p*[x]"])
def test_delete_entities_removes_exactly_those_hashes(populated, project, key_by_key):
    before = snapshot(populated)
    removed = maintenance.delete_entities(
        populated, project=project, join_keys=["driver_id"], key_by_key=key_by_key
    )
    after = snapshot(populated)
    assert removed == len(IDS)
    assert set(before) - set(after) == drivers(project)
    assert {key: before[key] for key in after} == after, "a surviving hash was changed"
    assert maintenance.delete_entities(populated, project=project, join_keys=["driver_id"]) == 0


@pytest.mark.parametrize("key_by_key", [False, True], ids=["unlink", "key-by-key"])
def test_delete_entities_in_several_batches(redis_client, key_by_key):
    count = 2 * maintenance._BATCH + 17
    with redis_client.pipeline(transaction=False) as pipe:
        for i in range(count):
            pipe.hset(hash_key(i), b"f", b"v")
            pipe.hset(hash_key(i, "myproj"), b"f", b"v")
        pipe.execute()
    removed = maintenance.delete_entities(
        redis_client, project="proj", join_keys=["driver_id"], key_by_key=key_by_key
    )
    assert removed == count
    assert redis_client.dbsize() == count  # every myproj hash is still there


def test_delete_view_removes_its_fields_and_hashes_left_without_a_view(populated):
    before = snapshot(populated)
    touched = maintenance.delete_view(
        populated, project="proj", join_keys=["driver_id"], view_name="b", feature_names=["y", "z"]
    )
    after = snapshot(populated)
    assert touched == len(IDS) - 1  # id 92's hash never held view b
    for i in IDS:
        assert set(populated.hkeys(hash_key(i))) == {feature_field("a", "x"), timestamp_field("a")}
    changed = {key for key in before if after.get(key) != before[key]}
    assert changed == drivers("proj") - {hash_key(92)}

    touched = maintenance.delete_view(
        populated, project="proj", join_keys=["driver_id"], view_name="a", feature_names=["x"]
    )
    assert touched == len(IDS)
    final = snapshot(populated)
    assert set(before) - set(final) == drivers("proj"), "hashes left without a view go whole"
    assert {key: before[key] for key in final} == final, "another project's hash was changed"


def test_delete_view_of_a_view_nobody_stored_changes_nothing(populated):
    before = snapshot(populated)
    touched = maintenance.delete_view(
        populated, project="proj", join_keys=["driver_id"], view_name="zz", feature_names=["x"]
    )
    assert touched == 0
    assert snapshot(populated) == before
