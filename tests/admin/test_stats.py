"""``feast-dragonfly stats`` on a known data set written by the store itself."""

from __future__ import annotations

import json

import pytest
from migrate_kit import applied_repo, at, run, shop_and_myshop, two_views, write
from store_kit import feature_view, hash_key

from feast_dragonfly._admin.stats_report import UNATTRIBUTED

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


# --------------------------------------------------------------------------- layouts


def _compact_write(store, tmp_path, connection_string, view, ids, **options):
    write(store, tmp_path / "compact", connection_string, project="shop", view=view, ids=ids,
          when=at(1), value=7, layout="compact", **options)  # fmt: skip


def test_each_views_layout_and_bytes_per_value(store, tmp_path, server_connection_string,
                                               redis_client):  # fmt: skip
    from feast_dragonfly._protocol.keys import compact_key

    wide = feature_view("wide", tuple(f"f{i}" for i in range(6)))
    _data(store, tmp_path, server_connection_string)  # fv: feast layout, 15 keys
    _compact_write(store, tmp_path, server_connection_string, wide, range(10), ttl=600)
    report = stats_json("--connection-string", server_connection_string, "--project", "shop")
    shop = report["projects"]["shop"]
    assert (shop["keys"], shop["records"]) == (15, 10)
    fv, compact = shop["views"]["fv"], shop["compact_views"]["wide"]
    assert (fv["layout"], fv["values"]) == ("feast", 30)
    assert (compact["layout"], compact["keys"], compact["values"]) == ("compact", 10, 60)
    assert compact["ttl"]["with_ttl"] == 10 and "wide" not in shop["views"]
    records = [compact_key(hash_key(i, "shop"), "wide") for i in range(10)]
    measured = sum(int(redis_client.memory_usage(k)) for k in records)
    assert compact["memory_bytes"] == measured
    assert compact["bytes_per_value"] == round(measured / 60, 1)
    hashes = sum(int(redis_client.memory_usage(hash_key(i, "shop"))) for i in range(15))
    assert fv["bytes_per_value"] == round(hashes / 30, 1)
    assert shop["memory_bytes"] == measured + hashes
    table = run("stats", "--connection-string", server_connection_string)
    assert table.exit_code == 0, table.output
    assert "project shop: 15 entity keys, 10 compact records" in table.output
    line = next(row for row in table.output.splitlines() if row.strip().startswith("wide"))
    assert line.split()[:4] == ["wide", "compact", "10", "60"]
    # every project without --project: records are not mistaken for a project of their own
    everything = stats_json("--connection-string", server_connection_string)
    assert sorted(everything["projects"]) == ["myshop", "shop"]


def test_listpack_warning_on_dragonfly(server_binary, store, tmp_path, server_connection_string,
                                       redis_client):  # fmt: skip
    """Dragonfly keeps a hash as a listpack up to 1,024 bytes (``--listpack_max_bytes``): a
    view of 100 features is over, one of 2 is not."""
    wide = feature_view("wide", tuple(f"f{i}" for i in range(100)))
    for hour in (1, 2):  # the second write is the one that turns an oversized listpack over
        write(store, tmp_path, server_connection_string, project="shop", view=wide,
              ids=range(100, 105), when=at(hour), value=123456)  # fmt: skip
    _data(store, tmp_path, server_connection_string)  # other entities: hashes of one view
    report = stats_json("--connection-string", server_connection_string, "--project", "shop")
    shop = report["projects"]["shop"]
    if server_binary.kind != "dragonfly":
        assert report["dragonfly_listpack"] is None and shop["warnings"] == []
        assert "listpack" not in shop["views"]["wide"]
        return
    assert report["dragonfly_listpack"]["max_bytes"] == 1024
    encoding = redis_client.execute_command("DEBUG", "OBJECT", hash_key(100, "shop"))
    assert b"encoding:listpack" not in encoding  # what the warning is about
    listpack = shop["views"]["wide"]["listpack"]
    assert listpack["hash_tables"] == listpack["sampled_hashes"] == listpack["measured"] == 5
    assert shop["views"]["fv"]["listpack"]["hash_tables"] == 0
    (warning,) = shop["warnings"]
    per_value = shop["views"]["wide"]["bytes_per_value"]
    assert f"wide (5 of 5, {per_value:,.1f} bytes per feature value)" in warning
    assert "fv" not in warning.replace("feast-dragonfly", "")
    assert "--listpack_max_bytes=2048" in warning and "layout: compact" in warning
    table = run("stats", "--connection-string", server_connection_string, "--project", "shop")
    assert "warning: Dragonfly keeps sampled hashes of wide (5 of 5" in table.output
    # a value over listpack_max_field_len (64 bytes) makes a small hash a hash table too
    from feast.protos.feast.types.Value_pb2 import Value as ValueProto
    from store_kit import entity_key, repo_config

    notes = feature_view("notes", ("text",))
    config = repo_config(tmp_path / "notes", server_connection_string, project="shop")
    for hour in (1, 2):
        rows = [(entity_key(i), {"text": ValueProto(string_val="n" * 100)}, at(hour), None)
                for i in range(200, 203)]  # fmt: skip
        store.online_write_batch(config, notes, rows, None)
    (long_values,) = stats_json("--connection-string", server_connection_string)["projects"][
        "shop"
    ]["warnings"]
    assert "notes (3 of 3" in long_values and "values of up to 102 bytes" in long_values
    assert "--listpack_max_field_len=128" in long_values


def test_listpack_size_of_a_hash():
    from feast_dragonfly._admin.stats import listpack_size

    # 7 bytes of header and end; a 4-byte string is 1 + 4 + 1 bytes, a 70-byte one 2 + 70 + 1
    assert listpack_size([b"abcd", b"wxyz"]) == (7 + 6 + 6, 4)
    assert listpack_size({b"abcd": b"x" * 70}) == (7 + 6 + 73, 70)


def test_stats_without_a_repo_or_a_server_is_a_usage_error(tmp_path, monkeypatch):
    """No -C and no --connection-string: the current folder is the repo, as for serve."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FEAST_FS_YAML_FILE_PATH", raising=False)
    result = run("stats")
    assert result.exit_code == 2
    assert f"no feature_store.yaml in {tmp_path}" in result.stderr
    assert "(or give --connection-string)" in result.stderr
