"""``feast-dragonfly migrate --to-layout``: converting a project between Feast's layout and the
compact one, on one server and across two, read back through the store in each layout.

Data is written by the store itself (``online_write_batch`` with ``layout: feast`` or
``compact``), so the bytes are the real ones; after a conversion, the store configured with
the other layout must read exactly what it read before.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from feast import FeatureView
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.types import Array, Float64, Int64, String
from migrate_kit import applied_repo, run
from store_kit import entity_key, hash_key, repo_config, typed_view

from feast_dragonfly._protocol.keys import compact_key
from feast_dragonfly._store.compact.directory import directory_key
from feast_dragonfly.testing.local_server import start_server

pytestmark = pytest.mark.server

NOW = datetime.now(timezone.utc).replace(microsecond=0)
PROJECT = "shop"


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def target_server(server_binary):
    server = start_server(server_binary)
    yield server
    server.stop()


# --------------------------------------------------------------------------- builders


def view(name="fv", fields=(("a", Int64), ("b", Float64), ("s", String)), ttl=None) -> FeatureView:
    return typed_view(name, fields, ttl)


FV1 = view("fv1")
FV2 = view("fv2", (("c", Int64), ("tags", Array(String))))


def _value(name: str, dtype, number: int) -> ValueProto:
    if dtype == Int64:
        return ValueProto(int64_val=number)
    if dtype == Float64:
        return ValueProto(double_val=number + 0.25)
    if dtype == String:
        return ValueProto(string_val=f"v{number}")
    return ValueProto(string_list_val={"val": [f"t{number}", "x"]})


def write(stores, tmp_path: Path, connection_string: str, fv: FeatureView, ids, when, number,
          layout="feast", **options) -> None:  # fmt: skip
    """Rows for ``ids`` of one view through the store (value ``number`` + the entity id)."""
    config = store_config(tmp_path, connection_string, layout, **options)
    rows = [
        (entity_key(i), {f.name: _value(f.name, f.dtype, number + i) for f in fv.features}, when,
         None)
        for i in ids
    ]  # fmt: skip
    stores().online_write_batch(config, fv, rows, None)


_configs = iter(range(1_000_000))


def store_config(tmp_path: Path, connection_string: str, layout: str, **options):
    where = tmp_path / f"cfg-{layout}-{next(_configs)}"
    return repo_config(where, connection_string, project=PROJECT, layout=layout, **options)


def read(stores, tmp_path, connection_string, layout, fv, ids) -> list:
    """What the store in ``layout`` reads: (event time, {feature: serialized value}) per id."""
    config = store_config(tmp_path, connection_string, layout)
    out = []
    for when, values in stores().online_read(config, fv, [entity_key(i) for i in ids]):
        out.append((when, {n: v.SerializeToString() for n, v in (values or {}).items()}))
    return out


def convert(source: str, target: str, repo: Path, layout: str, *args: str, checkpoint: Path):
    return run("migrate", "--source", source, "--target", target, "--project", PROJECT,
               "-C", str(repo), "--to-layout", layout, "--checkpoint", str(checkpoint), *args)  # fmt: skip


def two_view_data(stores, tmp_path, connection_string, layout="feast") -> None:
    """fv1 for entities 0-5, fv2 for 3-8: entities 3-5 hold both views."""
    write(stores, tmp_path, connection_string, FV1, range(6), NOW - timedelta(hours=1), 10,
          layout)  # fmt: skip
    write(stores, tmp_path, connection_string, FV2, range(3, 9), NOW - timedelta(hours=2), 100,
          layout)  # fmt: skip


def everything_read(stores, tmp_path, connection_string, layout) -> list:
    return [read(stores, tmp_path, connection_string, layout, fv, range(10)) for fv in (FV1, FV2)]


def expected_by_layout(stores, tmp_path, connection_string, layout) -> list:
    found = everything_read(stores, tmp_path, connection_string, layout)
    assert sum(1 for rows in found for when, values in rows if values and when) > 0
    return found


# --------------------------------------------------------------------------- both ways


def test_feast_to_compact_on_one_server_then_back(stores, tmp_path, server_connection_string,
                                                  redis_client):  # fmt: skip
    two_view_data(stores, tmp_path, server_connection_string)
    repo = tmp_path / "repo"
    applied_repo(repo, server_connection_string, PROJECT, [FV1, FV2])
    before = everything_read(stores, tmp_path, server_connection_string, "feast")
    hashes = {k: redis_client.hgetall(k) for k in (hash_key(i, PROJECT) for i in range(9))}

    result = convert(server_connection_string, server_connection_string, repo, "compact",
                     "--verify", checkpoint=tmp_path / "cp.json")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "views converted:         12" in result.output  # 6 + 6 rows, 3 hashes split in two
    assert "12 views identical, 0 kept by the target as newer, 0 mismatched" in result.output
    assert everything_read(stores, tmp_path, server_connection_string, "compact") == before
    # the source is left in place; multi-view hashes became one record per view
    assert {k: redis_client.hgetall(k) for k in hashes} == hashes
    for i in (3, 4, 5):
        assert redis_client.exists(compact_key(hash_key(i, PROJECT), "fv1"))
        assert redis_client.exists(compact_key(hash_key(i, PROJECT), "fv2"))
    assert redis_client.hlen(directory_key(PROJECT)) == 2  # both views' schemas registered

    # and back, onto the same server: the records merge into one hash per entity again
    for key in hashes:
        redis_client.delete(key)
    back = convert(server_connection_string, server_connection_string, repo, "feast",
                   "--verify", checkpoint=tmp_path / "back.json")  # fmt: skip
    assert back.exit_code == 0, back.output
    assert "views converted:         12" in back.output
    assert "12 views identical" in back.output
    assert everything_read(stores, tmp_path, server_connection_string, "feast") == before
    assert {k: redis_client.hgetall(k) for k in hashes} == hashes  # byte for byte


def test_compact_to_feast_across_servers_then_back(stores, tmp_path, server_connection_string,
                                                   redis_client, target, target_client):  # fmt: skip
    two_view_data(stores, tmp_path, server_connection_string, layout="compact")
    repo = tmp_path / "repo"
    applied_repo(repo, server_connection_string, PROJECT, [FV1, FV2])
    before = everything_read(stores, tmp_path, server_connection_string, "compact")

    result = convert(server_connection_string, target.connection_string, repo, "feast",
                     "--verify", checkpoint=tmp_path / "cp.json")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "views converted:         12" in result.output
    assert everything_read(stores, tmp_path, target.connection_string, "feast") == before
    both = target_client.hgetall(hash_key(4, PROJECT))
    assert {b"_ts:fv1", b"_ts:fv2"} <= set(both) and len(both) == 2 + 3 + 2
    assert target_client.dbsize() == 9  # one hash per entity, nothing else

    # and back onto the emptied source: the very records it held, byte for byte
    records = {k: redis_client.get(k) for k in redis_client.scan_iter(count=1000)
               if redis_client.type(k) == b"string"}  # fmt: skip
    assert len(records) == 12
    redis_client.flushall()
    again = convert(target.connection_string, server_connection_string, repo, "compact",
                    "--verify", checkpoint=tmp_path / "back.json")  # fmt: skip
    assert again.exit_code == 0, again.output
    assert "12 views identical" in again.output
    assert {k: redis_client.get(k) for k in records} == records
    assert everything_read(stores, tmp_path, server_connection_string, "compact") == before


def test_plain_migrate_copies_compact_records_as_they_are(stores, tmp_path,
        server_connection_string, redis_client, target, target_client):  # fmt: skip
    two_view_data(stores, tmp_path, server_connection_string, layout="compact")
    write(stores, tmp_path, server_connection_string, FV1, [7], NOW, 5, layout="compact",
          key_ttl_seconds=3600)  # fmt: skip
    before = everything_read(stores, tmp_path, server_connection_string, "compact")
    result = run("migrate", "--source", server_connection_string, "--target",
                 target.connection_string, "--project", PROJECT, "--verify",
                 "--checkpoint", str(tmp_path / "cp.json"))  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "compact records:         13 found, 13 copied" in result.output
    assert "13 views identical" in result.output
    assert everything_read(stores, tmp_path, target.connection_string, "compact") == before
    key = compact_key(hash_key(7, PROJECT), "fv1")
    assert target_client.get(key) == redis_client.get(key)
    assert 0 < target_client.pttl(key) <= redis_client.pttl(key) + 1000
    assert target_client.hgetall(directory_key(PROJECT)) == redis_client.hgetall(
        directory_key(PROJECT)
    )


# --------------------------------------------------------------------------- the merge


def test_a_newer_target_record_or_view_wins(stores, tmp_path, server_connection_string, target,
                                            target_client):  # fmt: skip
    repo = tmp_path / "repo"
    applied_repo(repo, server_connection_string, PROJECT, [FV1, FV2])
    two_view_data(stores, tmp_path, server_connection_string)
    # target: entity 0's fv1 newer (kept), entity 1's fv1 older (replaced)
    write(stores, tmp_path, target.connection_string, FV1, [0], NOW, 900, layout="compact")
    write(stores, tmp_path, target.connection_string, FV1, [1], NOW - timedelta(days=1), 800,
          layout="compact")  # fmt: skip
    newer = target_client.get(compact_key(hash_key(0, PROJECT), "fv1"))
    result = convert(server_connection_string, target.connection_string, repo, "compact",
                     "--verify", checkpoint=tmp_path / "cp.json")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "views converted:         11" in result.output
    assert "views kept (target newer or equal): 1" in result.output
    assert "11 views identical, 1 kept by the target as newer, 0 mismatched" in result.output
    assert target_client.get(compact_key(hash_key(0, PROJECT), "fv1")) == newer
    got = read(stores, tmp_path, target.connection_string, "compact", FV1, [0, 1])
    assert got[0][1]["a"] == ValueProto(int64_val=900).SerializeToString()
    assert got[1][1]["a"] == ValueProto(int64_val=11).SerializeToString()

    # compact -> feast: a target hash whose fv2 is newer keeps it, its fv1 is merged in
    target_client.flushall()
    write(stores, tmp_path, target.connection_string, FV2, [4], NOW, 700)
    back = convert(server_connection_string, target.connection_string, repo, "feast",
                   checkpoint=tmp_path / "back.json")  # fmt: skip
    assert back.exit_code == 0, back.output
    assert "converted:         0" in back.output  # the source holds no records
    two_view_data(stores, tmp_path, server_connection_string, layout="compact")
    back = convert(server_connection_string, target.connection_string, repo, "feast",
                   "--verify", checkpoint=tmp_path / "back2.json")  # fmt: skip
    assert back.exit_code == 0, back.output
    assert "views kept (target newer or equal): 1" in back.output
    got = read(stores, tmp_path, target.connection_string, "feast", FV2, [4])[0]
    assert got[1]["c"] == ValueProto(int64_val=704).SerializeToString()
    fv1 = read(stores, tmp_path, target.connection_string, "feast", FV1, [4])[0]
    assert fv1[1]["a"] == ValueProto(int64_val=14).SerializeToString()


def test_a_stopped_conversion_resumes(stores, tmp_path, server_connection_string, target,
                                      target_client, monkeypatch):  # fmt: skip
    from feast_dragonfly._admin import records
    from feast_dragonfly.errors import DragonflyConnectionError

    repo = tmp_path / "repo"
    applied_repo(repo, server_connection_string, PROJECT, [FV1])
    write(stores, tmp_path, server_connection_string, FV1, range(200), NOW, 1)
    real, calls = records.write_records, []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 6:
            raise DragonflyConnectionError("the target went away (test)")
        return real(*args, **kwargs)

    monkeypatch.setattr(records, "write_records", failing)
    checkpoint = tmp_path / "cp.json"
    args = ("--batch", "10", "--concurrency", "1")
    stopped = convert(server_connection_string, target.connection_string, repo, "compact",
                      *args, checkpoint=checkpoint)  # fmt: skip
    assert stopped.exit_code == 1, stopped.output
    assert "--resume" in stopped.output
    assert 0 < target_client.dbsize() < 200
    monkeypatch.setattr(records, "write_records", real)
    resumed = convert(server_connection_string, target.connection_string, repo, "compact",
                      *args, "--resume", "--verify", checkpoint=checkpoint)  # fmt: skip
    assert resumed.exit_code == 0, resumed.output
    assert "resuming from" in resumed.output
    assert "200 views identical" in resumed.output
    assert "source hashes found:     200" in resumed.output  # counted once over both runs
    assert target_client.dbsize() == 200 + 1  # the records and the schema directory


# --------------------------------------------------------------------------- what is left out


def test_a_view_the_registry_does_not_know_is_reported_and_skipped(stores, tmp_path,
        server_connection_string, redis_client, target, target_client):  # fmt: skip
    old = view("old_view", (("x", Int64),))
    two_view_data(stores, tmp_path, server_connection_string)
    write(stores, tmp_path, server_connection_string, old, range(3), NOW, 1)
    repo = tmp_path / "repo"
    applied_repo(repo, server_connection_string, PROJECT, [FV1, FV2])  # old_view is gone
    result = convert(server_connection_string, target.connection_string, repo, "compact",
                     checkpoint=tmp_path / "cp.json")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "views the registry does not know (left as they are): old_view (3)" in result.output
    assert not any(k.endswith(b":old_view") for k in target_client.scan_iter(count=1000))
    assert "views converted:         12" in result.output
    # the same for records
    redis_client.flushall()
    write(stores, tmp_path, server_connection_string, old, range(2), NOW, 1, layout="compact")
    target_client.flushall()
    back = convert(server_connection_string, target.connection_string, repo, "feast",
                   checkpoint=tmp_path / "back.json")  # fmt: skip
    assert back.exit_code == 0, back.output
    assert "old_view (2)" in back.output and target_client.dbsize() == 0


def test_expired_values_are_not_converted_and_ttls_carry_over(stores, tmp_path,
        server_connection_string, redis_client, target, target_client):  # fmt: skip
    now = datetime.now(timezone.utc)  # the expiries below are measured from here
    hourly = view("hourly", (("a", Int64),), ttl=timedelta(hours=1))
    forever = view("forever", (("b", Int64),))
    repo = tmp_path / "repo"
    applied_repo(repo, server_connection_string, PROJECT, [hourly, forever])
    # entities 0-1: an hour old already (expired), 2-3: fresh; 4: forever, in a hash that
    # expires in 10 minutes (key_ttl_seconds)
    write(stores, tmp_path, server_connection_string, hourly, [0, 1], now - timedelta(hours=2), 1)
    write(stores, tmp_path, server_connection_string, hourly, [2, 3], now - timedelta(minutes=30),
          1)  # fmt: skip
    write(stores, tmp_path, server_connection_string, forever, [3, 4], now, 1, key_ttl_seconds=600)
    write(stores, tmp_path, server_connection_string, forever, [5], now, 1)
    result = convert(server_connection_string, target.connection_string, repo, "compact",
                     "--verify", checkpoint=tmp_path / "cp.json")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "views expired:           2" in result.output
    assert "views converted:         5" in result.output
    record = lambda i, v: compact_key(hash_key(i, PROJECT), v)  # noqa: E731
    assert not target_client.exists(record(0, "hourly"))
    # event time + the view's ttl: expires in about half an hour
    assert 25 * 60_000 < target_client.pttl(record(2, "hourly")) <= 30 * 60_000
    # entity 3's hash expired in 10 minutes (the forever row refreshed it): both records do
    assert 0 < target_client.pttl(record(3, "hourly")) <= 600_000
    assert 0 < target_client.pttl(record(4, "forever")) <= 600_000
    assert target_client.pttl(record(5, "forever")) == -1

    # back to Feast's layout on a fresh server: a hash lives as long as its longest record
    redis_client.flushall()
    target_client.execute_command("PEXPIRE", record(2, "hourly"), 60_000)
    back = convert(target.connection_string, server_connection_string, repo, "feast",
                   "--verify", checkpoint=tmp_path / "back.json")  # fmt: skip
    assert back.exit_code == 0, back.output
    assert 0 < redis_client.pttl(hash_key(2, PROJECT)) <= 60_000
    assert 0 < redis_client.pttl(hash_key(3, PROJECT)) <= 600_000
    assert redis_client.pttl(hash_key(5, PROJECT)) == -1


def test_a_hash_of_records_without_expiry_never_expires(stores, tmp_path,
        server_connection_string, redis_client, target, target_client):  # fmt: skip
    """Entity 0: fv1's record expires in 10 minutes, fv2's never: whichever is merged first,
    the hash ends without an expiry (it would otherwise drop fv2 with fv1)."""
    repo = tmp_path / "repo"
    applied_repo(repo, server_connection_string, PROJECT, [FV1, FV2])
    write(stores, tmp_path, server_connection_string, FV1, [0], NOW, 1, layout="compact",
          key_ttl_seconds=600)  # fmt: skip
    write(stores, tmp_path, server_connection_string, FV2, [0], NOW, 1, layout="compact")
    result = convert(server_connection_string, target.connection_string, repo, "feast",
                     checkpoint=tmp_path / "cp.json")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert target_client.pttl(hash_key(0, PROJECT)) == -1
    assert target_client.hlen(hash_key(0, PROJECT)) == 2 + 3 + 2


def test_a_value_of_a_retyped_feature_is_kept(stores, tmp_path, server_connection_string,
                                              target):  # fmt: skip
    """Stored as Int64, the registry now says Float64: the record keeps the value whole (a
    fallback), so both layouts read the same."""
    write(stores, tmp_path, server_connection_string, view("fv", (("a", Int64),)), range(3), NOW, 7)
    retyped = view("fv", (("a", Float64),))
    repo = tmp_path / "repo"
    applied_repo(repo, server_connection_string, PROJECT, [retyped])
    result = convert(server_connection_string, target.connection_string, repo, "compact",
                     "--verify", checkpoint=tmp_path / "cp.json")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "3 views identical" in result.output
    assert read(stores, tmp_path, target.connection_string, "compact", retyped, range(3)) == read(
        stores, tmp_path, server_connection_string, "feast", retyped, range(3)
    )


# --------------------------------------------------------------------------- the command


def test_dry_run_verify_and_bad_input(stores, tmp_path, server_connection_string, redis_client,
                                      target, target_client):  # fmt: skip
    two_view_data(stores, tmp_path, server_connection_string)
    repo = tmp_path / "repo"
    applied_repo(repo, server_connection_string, PROJECT, [FV1, FV2])
    dry = convert(server_connection_string, target.connection_string, repo, "compact",
                  "--dry-run", checkpoint=tmp_path / "cp.json")  # fmt: skip
    assert dry.exit_code == 0, dry.output
    assert "views to convert:        12" in dry.output and "nothing was written" in dry.output
    assert target_client.dbsize() == 0 and not (tmp_path / "cp.json").exists()

    done = convert(server_connection_string, target.connection_string, repo, "compact",
                   checkpoint=tmp_path / "cp.json")  # fmt: skip
    assert done.exit_code == 0, done.output
    target_client.delete(compact_key(hash_key(0, PROJECT), "fv1"))
    check = convert(server_connection_string, target.connection_string, repo, "compact",
                    "--dry-run", "--verify", checkpoint=tmp_path / "cp.json")  # fmt: skip
    assert check.exit_code == 3, check.output
    assert "11 views identical, 0 kept by the target as newer, 1 mismatched" in check.output
    assert "mismatch: entity driver_id=0, view fv1" in check.output

    # without the registry: refused, as is a registry of another project
    bare = run("migrate", "--source", server_connection_string, "--target",
               target.connection_string, "--project", PROJECT, "--to-layout", "feast")  # fmt: skip
    assert bare.exit_code == 1 and "needs the feature repo (-C REPO)" in bare.output
    other = run("migrate", "--source", server_connection_string, "--target",
                target.connection_string, "--project", "other", "-C", str(repo),
                "--to-layout", "feast")  # fmt: skip
    assert other.exit_code == 1 and "describes project 'shop'" in other.output
    # the same server without a conversion is still refused
    same = run("migrate", "--source", server_connection_string, "--target",
               server_connection_string, "--project", PROJECT)  # fmt: skip
    assert same.exit_code == 1 and "--to-layout" in same.output


def test_a_corrupt_record_is_named_and_skipped(stores, tmp_path, server_connection_string,
                                               redis_client, target):  # fmt: skip
    write(stores, tmp_path, server_connection_string, FV1, range(3), NOW, 1, layout="compact")
    repo = tmp_path / "repo"
    applied_repo(repo, server_connection_string, PROJECT, [FV1])
    key = compact_key(hash_key(1, PROJECT), "fv1")
    redis_client.set(key, redis_client.get(key)[:-3])  # truncated
    redis_client.set(compact_key(hash_key(2, PROJECT), "fv1"), b"\x01" + b"\x00" * 16)
    result = convert(server_connection_string, target.connection_string, repo, "feast",
                     checkpoint=tmp_path / "cp.json")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "unreadable:              2" in result.output
    assert "entity driver_id=1, view fv1: malformed compact record" in result.output
    assert "entity driver_id=2, view fv1: written under schema 0x00000000" in result.output
    assert "views converted:         1" in result.output


# --------------------------------------------------------------------------- removing the source


def test_remove_source_after_converting_on_one_server(stores, tmp_path, server_connection_string,
                                                      redis_client):  # fmt: skip
    old = view("old_view", (("x", Int64),))
    two_view_data(stores, tmp_path, server_connection_string)
    write(stores, tmp_path, server_connection_string, old, [8], NOW, 1)  # next to fv2
    repo = tmp_path / "repo"
    applied_repo(repo, server_connection_string, PROJECT, [FV1, FV2])
    before = everything_read(stores, tmp_path, server_connection_string, "feast")
    result = convert(server_connection_string, server_connection_string, repo, "compact",
                     "--verify", "--remove-source", checkpoint=tmp_path / "cp.json")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "removed from the source:  8 entity hashes; 1 left" in result.output
    assert everything_read(stores, tmp_path, server_connection_string, "compact") == before
    hashes = [k for k in redis_client.scan_iter(count=1000) if redis_client.type(k) == b"hash"]
    assert sorted(hashes) == sorted([hash_key(8, PROJECT), directory_key(PROJECT)])

    back = convert(server_connection_string, server_connection_string, repo, "feast",
                   "--remove-source", checkpoint=tmp_path / "back.json")  # fmt: skip
    assert back.exit_code == 0, back.output
    assert "removed from the source:  12 compact records; 0 left" in back.output
    assert everything_read(stores, tmp_path, server_connection_string, "feast") == before
    assert not any(redis_client.type(k) == b"string" for k in redis_client.scan_iter())
    usage = run("migrate", "--source", server_connection_string, "--target",
                server_connection_string, "--project", PROJECT, "--remove-source")  # fmt: skip
    assert usage.exit_code == 2 and "--remove-source goes with --to-layout" in usage.output


def test_a_key_written_after_it_was_read_is_not_removed(stores, tmp_path,
                                                        server_connection_string, redis_client):  # fmt: skip
    from feast_dragonfly._admin import cleanup
    from feast_dragonfly._admin.report import Report
    from feast_dragonfly._admin.scan import open_deployment

    write(stores, tmp_path, server_connection_string, FV1, [0, 1], NOW, 1)
    stamp = redis_client.hget(hash_key(0, PROJECT), b"_ts:fv1")
    record = compact_key(hash_key(2, PROJECT), "fv1")
    redis_client.set(record, b"\x01" + b"\x00" * 20)
    stale = [
        cleanup.Removal(hash_key(0, PROJECT), (b"h", b"1", b"_ts:fv1", stamp)),  # unchanged
        cleanup.Removal(hash_key(1, PROJECT), (b"h", b"1", b"_ts:fv1", stamp + b"x")),
        cleanup.Removal(record, (b"s", b"\x01" + b"\x00" * 19)),
    ]
    deployment = open_deployment(server_connection_string, "redis", connections=1,
                                 sentinel_master="mymaster")  # fmt: skip
    out = Report()
    try:
        cleanup.remove(deployment, stale, 32, out)
    finally:
        deployment.close()
    assert (out.counters["removed"], out.counters["remove_left"]) == (1, 2)
    assert not redis_client.exists(hash_key(0, PROJECT))
    assert redis_client.exists(hash_key(1, PROJECT)) and redis_client.exists(record)


def test_to_and_from_a_cluster(server_binary, stores, tmp_path, server_connection_string,
                               redis_client):  # fmt: skip
    """Records of one entity live in other slots than its hash: each is routed on its own."""
    from local_topology import start_cluster

    two_view_data(stores, tmp_path, server_connection_string)
    repo = tmp_path / "repo"
    applied_repo(repo, server_connection_string, PROJECT, [FV1, FV2])
    before = everything_read(stores, tmp_path, server_connection_string, "feast")
    with start_cluster(server_binary) as cluster:
        to_cluster = convert(server_connection_string, cluster.connection_string, repo,
                             "compact", "--target-type", "redis_cluster", "--verify",
                             checkpoint=tmp_path / "cp.json")  # fmt: skip
        assert to_cluster.exit_code == 0, to_cluster.output
        assert "12 views identical" in to_cluster.output
        config = store_config(tmp_path, cluster.connection_string, "compact",
                              redis_type="redis_cluster")  # fmt: skip
        for fv, expected in zip((FV1, FV2), before):
            rows = stores().online_read(config, fv, [entity_key(i) for i in range(10)])
            got = [(w, {n: v.SerializeToString() for n, v in (r or {}).items()}) for w, r in rows]
            assert got == expected
        redis_client.flushall()
        back = convert(cluster.connection_string, server_connection_string, repo, "feast",
                       "--source-type", "redis_cluster", "--verify",
                       checkpoint=tmp_path / "back.json")  # fmt: skip
        assert back.exit_code == 0, back.output
        assert "12 views identical" in back.output
    assert everything_read(stores, tmp_path, server_connection_string, "feast") == before
