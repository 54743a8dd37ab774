"""``feast-dragonfly migrate`` never drops a feature view it could keep: hashes holding several
views, merged without a registry (``-C``), where the target holds only some of them, or holds
views newer than the source's next to older ones; and compact records, one per view.

The source is the suite's server, written by Feast's own ``RedisOnlineStore`` where the case is
about Feast's data; the target is a second server from the same binary.
"""

from __future__ import annotations

import pytest
from feast.infra.online_stores.redis import RedisOnlineStore
from migrate_kit import applied_repo, at, run, write
from store_kit import FEAST_REDIS, feature_view, hash_key

from feast_dragonfly._protocol.keys import compact_key
from feast_dragonfly._store.layout import encode_event_time
from feast_dragonfly.testing.local_server import start_server

pytestmark = pytest.mark.server

PROFILE = feature_view("profile", ("name", "age"))
STATS = feature_view("stats", ("trips", "rating", "score"))
ENTITIES = range(100)


@pytest.fixture(scope="module")
def target_server(server_binary):
    server = start_server(server_binary)
    yield server
    server.stop()


def migrate(source: str, target: str, *args: str, checkpoint):
    return run("migrate", "--source", source, "--target", target, "--project", "shop",
               "--checkpoint", str(checkpoint), *args)  # fmt: skip


def view_fields(flat: dict, view: str, others: dict) -> dict:
    """The fields of ``view`` in a hash: its ``_ts`` and the fields no other view has."""
    return {k: v for k, v in flat.items() if k == f"_ts:{view}".encode() or k not in others}


def test_a_view_the_target_lacks_is_copied_without_a_registry(
    tmp_path, server_connection_string, redis_client, target, target_client
):
    """Feast's store wrote ``profile`` and ``stats`` on the source; the target's writers already
    wrote a newer ``profile`` for the same entities. Without ``-C`` the target must end with
    its own ``profile`` and the source's ``stats``, for every entity."""
    for view, hour in ((PROFILE, 1), (STATS, 1)):
        write(RedisOnlineStore(), tmp_path, server_connection_string, project="shop", view=view,
              ids=ENTITIES, when=at(hour), value=hour, store_type=FEAST_REDIS)  # fmt: skip
    write(RedisOnlineStore(), tmp_path / "t", target.connection_string, project="shop",
          view=PROFILE, ids=ENTITIES, when=at(2), value=7, store_type=FEAST_REDIS)  # fmt: skip
    before = {i: target_client.hgetall(hash_key(i, "shop")) for i in ENTITIES}
    result = migrate(server_connection_string, target.connection_string, "--verify",
                     checkpoint=tmp_path / "cp.json")  # fmt: skip
    assert result.exit_code == 0, result.output
    for i in ENTITIES:
        source = redis_client.hgetall(hash_key(i, "shop"))
        merged = target_client.hgetall(hash_key(i, "shop"))
        # the target's newer profile, untouched, plus every field of the source's stats
        assert {k: merged[k] for k in before[i]} == before[i]
        stats = {k: v for k, v in source.items() if k not in before[i] or k == b"_ts:stats"}
        assert len(stats) == 4 and {k: merged.get(k) for k in stats} == stats
        assert merged[b"_ts:profile"] == encode_event_time(at(2))[0]
    assert "warning" not in result.output
    assert "0 mismatched" in result.output


def test_no_view_newer_on_the_target_writes_every_field(
    tmp_path, server_connection_string, redis_client, target, target_client, store
):
    write(store, tmp_path, server_connection_string, project="shop", view=PROFILE, ids=[1],
          when=at(5), value=5)  # fmt: skip
    write(store, tmp_path, server_connection_string, project="shop", view=STATS, ids=[1],
          when=at(5), value=6)  # fmt: skip
    write(store, tmp_path / "t", target.connection_string, project="shop", view=PROFILE, ids=[1],
          when=at(2), value=2)  # fmt: skip
    result = migrate(server_connection_string, target.connection_string, "--verify",
                     checkpoint=tmp_path / "cp.json")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert target_client.hgetall(hash_key(1, "shop")) == redis_client.hgetall(hash_key(1, "shop"))
    assert "2 views identical" in result.output


def _newer_on_each_side(store, tmp_path, source: str, target: str) -> None:
    """Key 1: the source's profile is newer, the target's stats are; the target lacks a third
    view (``extra``); key 2 is on the source only."""
    extra = feature_view("extra", ("x",))
    write(store, tmp_path, source, project="shop", view=PROFILE, ids=[1, 2], when=at(5), value=5)
    write(store, tmp_path, source, project="shop", view=STATS, ids=[1, 2], when=at(1), value=1)
    write(store, tmp_path, source, project="shop", view=extra, ids=[1], when=at(1), value=9)
    write(store, tmp_path / "t", target, project="shop", view=PROFILE, ids=[1], when=at(2), value=2)
    write(store, tmp_path / "t", target, project="shop", view=STATS, ids=[1], when=at(3), value=3)


def test_views_newer_on_each_side_stop_the_run_and_name_the_fix(
    tmp_path, server_connection_string, redis_client, target, target_client, store
):
    _newer_on_each_side(store, tmp_path, server_connection_string, target.connection_string)
    before = target_client.hgetall(hash_key(1, "shop"))
    result = migrate(server_connection_string, target.connection_string,
                     checkpoint=tmp_path / "cp.json")  # fmt: skip
    assert result.exit_code == 1
    message = result.output
    assert "error: entity driver_id=1 holds feature views" in message
    assert "profile" in message and "stats" in message and "extra" in message
    assert "-C REPO" in message and "--merge-whole-keys-losing-views" in message
    assert "Traceback" not in message
    assert target_client.hgetall(hash_key(1, "shop")) == before  # not written at all
    # The fix it names: the feature repo, then every view is merged on its own.
    extra = feature_view("extra", ("x",))
    applied_repo(tmp_path / "repo", server_connection_string, "shop", [PROFILE, STATS, extra])
    again = migrate(server_connection_string, target.connection_string, "-C",
                    str(tmp_path / "repo"), "--resume", "--verify",
                    checkpoint=tmp_path / "cp.json")  # fmt: skip
    assert again.exit_code == 0, again.output
    merged = target_client.hgetall(hash_key(1, "shop"))
    source = redis_client.hgetall(hash_key(1, "shop"))
    assert merged[b"_ts:profile"] == source[b"_ts:profile"]  # the source's, newer
    assert merged[b"_ts:stats"] == before[b"_ts:stats"]  # the target's, newer
    assert merged[b"_ts:extra"] == source[b"_ts:extra"]  # only the source had it
    assert "0 mismatched" in again.output


def test_the_registry_missing_a_field_stops_with_its_own_advice(
    tmp_path, server_connection_string, target, target_client, store
):
    """Two views the registry does not know (deleted ones?): their fields have no owner."""
    _newer_on_each_side(store, tmp_path, server_connection_string, target.connection_string)
    applied_repo(tmp_path / "repo", server_connection_string, "shop", [PROFILE])
    result = migrate(server_connection_string, target.connection_string, "-C",
                     str(tmp_path / "repo"), checkpoint=tmp_path / "cp.json")  # fmt: skip
    assert result.exit_code == 1
    assert "-C does not know all of its fields" in result.output
    assert "-C REPO" not in result.output


def test_merging_whole_keys_is_an_opt_in_that_says_what_it_lost(
    tmp_path, server_connection_string, redis_client, target, target_client, store
):
    _newer_on_each_side(store, tmp_path, server_connection_string, target.connection_string)
    before = target_client.hgetall(hash_key(1, "shop"))
    result = migrate(server_connection_string, target.connection_string,
                     "--merge-whole-keys-losing-views", checkpoint=tmp_path / "cp.json")  # fmt: skip
    assert result.exit_code == 0, result.output
    text = result.output
    assert "warning: 1 key holds several feature views" in text
    assert "--merge-whole-keys-losing-views" in text and "lost" in text
    merged = target_client.hgetall(hash_key(1, "shop"))
    origin = redis_client.hgetall(hash_key(1, "shop"))
    # The source's newest time (hour 5) beat the target's (3): both shared views are the
    # source's now (the target's newer stats are lost, as the flag says) ...
    assert merged[b"_ts:profile"] == origin[b"_ts:profile"]
    assert merged[b"_ts:stats"] == origin[b"_ts:stats"] != before[b"_ts:stats"]
    # ... and the view the target lacked was copied all the same.
    assert merged[b"_ts:extra"] == origin[b"_ts:extra"]
    assert target_client.hgetall(hash_key(2, "shop")) == redis_client.hgetall(hash_key(2, "shop"))


def test_the_flag_is_offered_by_migrate():
    assert "--merge-whole-keys-losing-views" in run("migrate", "--help").output


def test_compact_records_keep_each_view_on_its_own(
    tmp_path, server_connection_string, redis_client, target, target_client, store
):
    """One record per (entity, view): the target's newer profile record stays, the stats
    record it lacks is copied, with no registry."""
    for view, hour in ((PROFILE, 1), (STATS, 1)):
        write(store, tmp_path, server_connection_string, project="shop", view=view,
              ids=range(5), when=at(hour), value=hour, layout="compact")  # fmt: skip
    write(store, tmp_path / "t", target.connection_string, project="shop", view=PROFILE,
          ids=range(5), when=at(2), value=7, layout="compact")  # fmt: skip
    before = {i: target_client.get(compact_key(hash_key(i, "shop"), "profile")) for i in range(5)}
    result = migrate(server_connection_string, target.connection_string, "--verify",
                     checkpoint=tmp_path / "cp.json")  # fmt: skip
    assert result.exit_code == 0, result.output
    for i in range(5):
        key = hash_key(i, "shop")
        assert target_client.get(compact_key(key, "profile")) == before[i]
        stats = compact_key(key, "stats")
        assert target_client.get(stats) == redis_client.get(stats) is not None
    assert "warning" not in result.output
