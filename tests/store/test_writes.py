"""The write path's transport: several connections at once, and servers that refuse scripting."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest
from feast.infra.online_stores.redis import RedisOnlineStore
from store_kit import FEAST_REDIS, feature_view, hash_key, repo_config, row

from feast_dragonfly import DragonflyOnlineStore, DragonflyScriptingError

T0 = datetime(2024, 5, 1, tzinfo=timezone.utc)
FEATURES = tuple(f"f{i}" for i in range(12))


def rows(count: int, shift: int = 0):
    return [row(e, T0 + timedelta(seconds=shift + e % 3), e, FEATURES) for e in range(count)]


@pytest.mark.valkey
@pytest.mark.parametrize("concurrency", [1, 2, 8])
@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
async def test_chunks_over_several_connections_store_feasts_bytes(
    tmp_path, server_connection_string, redis_client, concurrency, use_async
):
    view = feature_view("wide", FEATURES)
    data = rows(1500) + rows(1500, shift=-10) + rows(700, shift=5)  # older and newer rows
    feast_config = repo_config(tmp_path / "f", server_connection_string, store_type=FEAST_REDIS)
    for start in range(0, len(data), 1500):  # Feast's store: row order decides within a batch
        RedisOnlineStore().online_write_batch(feast_config, view, data[start : start + 1500], None)
    reference = {k: redis_client.hgetall(k) for k in map(hash_key, range(1500))}
    redis_client.flushall()

    config = repo_config(
        tmp_path / "o",
        server_connection_string,
        write_concurrency=concurrency,
        write_rows_per_call=37,
    )
    store = DragonflyOnlineStore()
    counts: list[int] = []
    try:
        for start in range(0, len(data), 1500):
            batch = data[start : start + 1500]
            if use_async:
                await store.online_write_batch_async(config, view, batch, counts.append)
            else:
                store.online_write_batch(config, view, batch, counts.append)
    finally:
        await store.close()
    assert sum(counts) == len(data)
    assert {k: redis_client.hgetall(k) for k in map(hash_key, range(1500))} == reference


@pytest.fixture
def user_without_scripting(redis_client):
    """An ACL user that may read and write hashes but not run scripts (-@scripting)."""
    name, password = f"noscript-{uuid.uuid4().hex[:8]}", "pw-" + uuid.uuid4().hex[:8]
    redis_client.execute_command(
        "ACL", "SETUSER", name, "on", f">{password}", "~*", "+@all", "-@scripting"
    )
    try:
        yield name, password
    finally:
        redis_client.execute_command("ACL", "DELUSER", name)


@pytest.mark.valkey
@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
async def test_a_server_refusing_scripts_gives_a_clear_error(
    tmp_path, redis_server, redis_client, user_without_scripting, use_async
):
    name, password = user_without_scripting
    connection = f"{redis_server.host}:{redis_server.port},username={name},password={password}"
    config = repo_config(tmp_path, connection)
    store = DragonflyOnlineStore()
    view = feature_view()
    with pytest.raises(DragonflyScriptingError) as caught:
        try:
            if use_async:
                await store.online_write_batch_async(config, view, [row(1, T0, 1)], None)
            else:
                store.online_write_batch(config, view, [row(1, T0, 1)], None)
        finally:
            await store.close()
    message = str(caught.value)
    assert "scripting" in message.lower() and "EVALSHA" in message
    assert password not in message
    assert redis_client.dbsize() == 0


def test_write_concurrency_is_bounded_by_the_pool(tmp_path, server_connection_string):
    config = repo_config(
        tmp_path, server_connection_string, write_concurrency=64, max_connections=3
    )
    store = DragonflyOnlineStore()
    assert config.online_store.settings().write_workers == 3
    store.online_write_batch(config, feature_view("wide", FEATURES), rows(500), None)
