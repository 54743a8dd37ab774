"""``feast-dragonfly stats`` on a known data set written by the store itself."""

from __future__ import annotations

import json

import pytest
from migrate_kit import applied_repo, at, run, shop_and_myshop, two_views, write
from store_kit import feature_view, hash_key

from feast_dragonfly._admin.stats import UNATTRIBUTED

pytestmark = pytest.mark.server

VIEW = feature_view("fv", ("a", "b"))


def _data(store, tmp_path, connection_string: str) -> None:
    """shop: 10 keys with a one-hour TTL, 5 without (view fv: 2 features + _ts); myshop: 3."""
    shop_and_myshop(store, tmp_path, connection_string, VIEW, expiring=10, lasting=5, myshop=3)


def stats_json(*args: str) -> dict:
    result = run("stats", "--json", *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_numbers_of_a_known_data_set(store, tmp_path, server_connection_string, redis_client):
    _data(store, tmp_path, server_connection_string)
    redis_client.set(b"unrelated", b"x")
    report = stats_json("--connection-string", server_connection_string, "--project", "shop")
    assert list(report["projects"]) == ["shop"]
    shop = report["projects"]["shop"]
    assert shop["keys"] == 15
    assert shop["ttl"]["no_ttl"] == 5 and shop["ttl"]["with_ttl"] == 10
    assert 3500 < shop["ttl"]["p50_s"] <= 3600
    assert shop["ttl"]["p99_s"] <= shop["ttl"]["max_s"] <= 3600
    view = shop["views"]["fv"]
    assert (view["keys"], view["fields"]) == (15, 45)
    measured = sum(int(redis_client.memory_usage(hash_key(i, "shop"))) for i in range(15))
    assert shop["memory_bytes"] == view["memory_bytes"] == measured  # sample covers every key
    assert shop["leftover_views"] == [] and view["in_registry"] is None


def test_every_project_when_none_is_named_and_a_table(store, tmp_path, server_connection_string):
    _data(store, tmp_path, server_connection_string)
    report = stats_json("--connection-string", server_connection_string)
    assert {p: v["keys"] for p, v in report["projects"].items()} == {"shop": 15, "myshop": 3}
    table = run("stats", "--connection-string", server_connection_string, "--sample", "5")
    assert table.exit_code == 0, table.output
    assert "project shop: 15 entity keys" in table.output
    assert "(MEMORY USAGE of 5 sampled keys)" in table.output
    assert "project myshop: 3 entity keys" in table.output
    assert "TTL: 5 never expire" in table.output


def test_leftover_views_and_per_view_fields_from_the_registry(
    store, tmp_path, server_connection_string
):
    fv1, fv2 = two_views()
    old = feature_view("old_view", ("x",))
    for view, ids in ((fv1, range(4)), (fv2, range(2, 6)), (old, range(3))):
        write(store, tmp_path, server_connection_string, project="shop", view=view, ids=ids,
              when=at(1), value=1)  # fmt: skip
    repo = tmp_path / "repo"
    applied_repo(repo, server_connection_string, "shop", [fv1, fv2])  # old_view was deleted
    report = stats_json("-C", str(repo))
    shop = report["projects"]["shop"]
    assert shop["keys"] == 6
    assert shop["leftover_views"] == ["old_view"]
    views = shop["views"]
    # old_view's field x is named by no registry view, but each hash holding it has exactly
    # one view the registry does not know: x is counted as old_view's
    assert {n: (v["keys"], v["fields"]) for n, v in views.items()} == {
        "fv1": (4, 12),
        "fv2": (4, 12),
        "old_view": (3, 6),
    }
    assert views["fv1"]["in_registry"] is True and views["old_view"]["in_registry"] is False
    table = run("stats", "-C", str(repo))
    assert "old_view *" in table.output and "leftover of a deleted feature view" in table.output
    # without the registry, fields of multi-view hashes cannot be attributed
    bare = stats_json("--connection-string", server_connection_string, "--project", "shop")
    # keys 0-1: a, b, x; key 2: a, b, c, d, x; key 3: a, b, c, d (4-5 hold fv2 alone)
    assert bare["projects"]["shop"]["views"][UNATTRIBUTED]["fields"] == 3 + 3 + 5 + 4


def test_unreachable_server_is_a_clear_error():
    from feast_dragonfly.testing.local_server import free_port

    address = f"127.0.0.1:{free_port()}"
    result = run("stats", "--connection-string", address)
    assert result.exit_code == 1
    assert f"cannot reach the Redis-protocol server at {address}" in result.output
    assert run("stats").exit_code == 2  # neither -C nor --connection-string
