"""Bad input reaching the store and unusable servers: every error names the problem, none
the password.

* TLS options that make no sense without TLS, caught at the latest on first use.
* Unreachable servers, refused credentials (sync and async), and every spelling of the right
  password.
* Stored data the store cannot read (a non-hash key), a value over the server's argument
  limit, entity values of the wrong type (as with Feast's own store).

Mistakes in the ``online_store:`` section itself are ``test_config.py``'s. The password used
throughout is SECRET; every message, repr and formatted traceback (with its whole exception
chain) is checked for it.
"""

from __future__ import annotations

import asyncio
import time
import traceback
from datetime import datetime, timedelta, timezone

import pytest
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from store_kit import entity_key, feature_view, free_port, hash_key, repo_config, row, snapshot

from feast_dragonfly import (
    DragonflyConfigError,
    DragonflyConnectionError,
    DragonflyDataError,
    DragonflyOnlineStore,
)
from feast_dragonfly.testing.local_server import start_server

SECRET = "sekret-XYZ"
T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)


def assert_no_secret(exc: BaseException, *also: object) -> None:
    text = "".join(traceback.format_exception(exc)) + str(exc) + repr(exc)
    assert SECRET not in text, text
    for thing in also:
        assert SECRET not in repr(thing) and SECRET not in str(thing)


# --------------------------------------------------------------------------- TLS options


def test_inconsistent_tls_options_fail_clearly_on_first_use(tmp_path):
    """Wherever it is detected, the message must say what to fix."""
    store = DragonflyOnlineStore()
    try:
        config = repo_config(
            tmp_path, f"127.0.0.1:{free_port()},ssl_ca_certs=/etc/ca.pem,password={SECRET}"
        )
    except DragonflyConfigError as exc:  # detected at config time: also fine here
        caught: BaseException = exc
    else:
        with pytest.raises(DragonflyConfigError) as info:
            store.online_read(config, feature_view(), [entity_key(1)])
        caught = info.value
    assert "ssl_ca_certs" in str(caught) and "ssl" in str(caught)
    assert_no_secret(caught)


# --------------------------------------------------------------------------- unusable servers


@pytest.mark.parametrize("operation", ["read", "write", "async_read", "initialize"])
def test_unreachable_server_is_named_quickly(tmp_path, operation):
    port = free_port()
    config = repo_config(tmp_path, f"127.0.0.1:{port},password={SECRET}")
    store = DragonflyOnlineStore()
    view = feature_view()

    async def run_async(coro_factory):
        try:
            return await coro_factory()
        finally:
            await store.close()

    calls = {
        "read": lambda: store.online_read(config, view, [entity_key(1)]),
        "write": lambda: store.online_write_batch(config, view, [row(1, T0, 1)], None),
        "async_read": lambda: asyncio.run(
            run_async(lambda: store.online_read_async(config, view, [entity_key(1)]))
        ),
        "initialize": lambda: asyncio.run(run_async(lambda: store.initialize(config))),
    }
    started = time.monotonic()
    with pytest.raises(DragonflyConnectionError) as caught:
        calls[operation]()
    assert time.monotonic() - started < 3
    assert f"127.0.0.1:{port}" in str(caught.value)
    assert_no_secret(caught.value)


@pytest.fixture(scope="module")
def protected_server(server_binary):
    """A second server (same kind as the session one) that requires SECRET; asking for
    ``server_binary`` marks its tests ``server``, so the Dragonfly pass runs them too."""
    server = start_server(server_binary, password=SECRET)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def protected(protected_server):
    client = protected_server.client()
    client.flushall()
    client.close()
    return protected_server


@pytest.mark.parametrize(
    "credentials",
    [
        ",password=wrong-password-123",
        "",  # no password at all
        ",username=nobody,password=wrong-password-123",
        "url:redis://default:wrong-password-123@",
    ],
    ids=["wrong-password", "no-password", "wrong-user", "url-wrong-password"],
)
@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
def test_refused_credentials_give_a_clear_error(tmp_path, protected, credentials, use_async):
    if credentials.startswith("url:"):
        connection_string = credentials[4:] + protected.address
    else:
        connection_string = protected.address + credentials
    config = repo_config(tmp_path, connection_string)
    store = DragonflyOnlineStore()
    view = feature_view()

    async def read_async():
        try:
            await store.initialize(config)
        finally:
            await store.close()

    with pytest.raises(DragonflyConnectionError) as caught:
        if use_async:
            asyncio.run(read_async())
        else:
            store.online_read(config, view, [entity_key(1)])
    message = str(caught.value)
    assert protected.address in message
    assert "password" in message.lower() or "auth" in message.lower()
    assert "wrong-password-123" not in message
    assert_no_secret(caught.value)


@pytest.mark.parametrize(
    "spelling",
    ["feast", "url-user", "url-no-user"],
)
def test_correct_password_works_in_every_spelling(tmp_path, protected, spelling):
    connection_string = {
        "feast": f"{protected.address},password={SECRET}",
        "url-user": f"redis://default:{SECRET}@{protected.address}",
        "url-no-user": f"redis://:{SECRET}@{protected.address}",
    }[spelling]
    config = repo_config(tmp_path, connection_string)
    store = DragonflyOnlineStore()
    view = feature_view()
    store.online_write_batch(config, view, [row(1, T0, 5)], None)
    [(when, values)] = store.online_read(config, view, [entity_key(1)])
    assert (when, values["a"].int64_val) == (T0, 5)

    async def read_async():
        try:
            await store.initialize(config)
            return await store.online_read_async(config, view, [entity_key(1)])
        finally:
            await store.close()

    [(_, values)] = asyncio.run(read_async())
    assert values["b"].int64_val == 5
    assert SECRET not in repr(config.online_store)


# --------------------------------------------------------------------------- bad stored data


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
def test_reading_a_non_hash_key_names_the_entity_and_changes_nothing(
    tmp_path, redis_client, server_connection_string, use_async
):
    config = repo_config(tmp_path, server_connection_string)
    store = DragonflyOnlineStore()
    view = feature_view()
    store.online_write_batch(config, view, [row(1, T0, 1), row(3, T0, 3)], None)
    redis_client.set(hash_key(2), b"not a hash")
    before = snapshot(redis_client)

    async def read_async():
        try:
            return await store.online_read_async(config, view, keys)
        finally:
            await store.close()

    keys = [entity_key(1), entity_key(2), entity_key(3)]
    with pytest.raises(DragonflyDataError) as caught:
        if use_async:
            asyncio.run(read_async())
        else:
            store.online_read(config, view, keys)
    message = str(caught.value)
    assert "driver_id=2" in message and "WRONGTYPE" in message and "non-hash" in message
    assert snapshot(redis_client) == before
    # The other entities still read fine on their own: nothing was damaged.
    [(_, one), (_, three)] = store.online_read(config, view, [entity_key(1), entity_key(3)])
    assert (one["a"].int64_val, three["a"].int64_val) == (1, 3)


# --------------------------------------------------------------------------- oversized values


@pytest.fixture(scope="module")
def small_bulk_server(server_binary):
    """A server that refuses any argument over 1 MiB (Redis' smallest allowed limit)."""
    limit = 1 << 20
    extra = (
        [f"--max_bulk_len={limit}"]
        if server_binary.kind == "dragonfly"
        else ["--proto-max-bulk-len", str(limit)]
    )
    server = start_server(server_binary, extra_args=extra)
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
def test_a_value_larger_than_the_server_accepts_is_named_and_nothing_stored_is_lost(
    tmp_path, small_bulk_server, use_async
):
    admin = small_bulk_server.client()
    admin.flushall()
    config = repo_config(tmp_path, small_bulk_server.connection_string, write_rows_per_call=1)
    store = DragonflyOnlineStore()
    view = feature_view()
    store.online_write_batch(config, view, [row(k, T0, k) for k in (1, 2, 3)], None)
    before = snapshot(admin)
    later = T0 + timedelta(hours=1)
    huge = (
        entity_key(2),
        {"a": ValueProto(string_val="x" * 1_500_000), "b": ValueProto(int64_val=9)},
        later,
        None,
    )

    async def write_async(rows):
        try:
            await store.online_write_batch_async(config, view, rows, None)
        finally:
            await store.close()

    def write(rows):
        if use_async:
            asyncio.run(write_async(rows))
        else:
            store.online_write_batch(config, view, rows, None)

    with pytest.raises((DragonflyDataError, DragonflyConnectionError)) as caught:
        write([row(1, later, 10), huge, row(3, later, 30)])
    message = str(caught.value)
    assert "driver_id=2" in message and "1,500,0" in message, message
    assert "proto-max-bulk-len" in message and "max_bulk_len" in message
    after = snapshot(admin)
    assert after[hash_key(2)] == before[hash_key(2)]  # the refused row's data is intact
    assert set(after) == set(before)
    write([row(2, later, 20)])  # the store recovers: the next write goes through
    assert admin.hgetall(hash_key(2)) != before[hash_key(2)][1]
    admin.close()


# --------------------------------------------------------------------------- entity key types


def test_entity_values_of_the_wrong_type_behave_exactly_as_with_feasts_store(
    tmp_path, redis_client, server_connection_string
):
    """Feast converts entity values to the entity's declared type before any online store
    sees them: '1001' finds driver 1001, 'abc' fails in Feast's conversion. Ours matches."""
    import pandas as pd
    from feast import Entity, FeatureView, Field, FileSource, ValueType
    from feast.types import Int64
    from feast_repo import online_store_settings, write_feature_repo

    outcomes = {}
    for kind in ("feast", "ours"):
        redis_client.flushall()
        path = tmp_path / kind
        path.mkdir()
        frame = pd.DataFrame({"driver_id": [1001], "event_timestamp": [T0], "v": [5]})
        frame.to_parquet(path / "data.parquet")
        store = write_feature_repo(
            path,
            project="types",
            online_store=online_store_settings(kind, server_connection_string),
        )
        driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
        view = FeatureView(
            name="fv",
            entities=[driver],
            schema=[Field(name="driver_id", dtype=Int64), Field(name="v", dtype=Int64)],
            source=FileSource(path=str(path / "data.parquet"), timestamp_field="event_timestamp"),
            ttl=timedelta(days=3650),
        )
        store.apply([driver, view])
        store.write_to_online_store(
            "fv", pd.DataFrame({"driver_id": ["1001"], "event_timestamp": [T0], "v": [5]})
        )
        results = []
        for value in (1001, "1001", 1001.0, "abc", "1001 ", 2**70):
            try:
                got = store.get_online_features(
                    features=["fv:v"], entity_rows=[{"driver_id": value}]
                ).to_dict()
                results.append(("ok", got["v"]))
            except Exception as exc:  # noqa: BLE001 - the comparison is the point
                results.append((type(exc).__name__, str(exc)))
        online = store._get_provider().online_store
        text_key = EntityKeyProto(
            join_keys=["driver_id"], entity_values=[ValueProto(string_val="1001")]
        )
        [(when, values)] = online.online_read(store.config, view, [text_key])
        results.append(("string-typed key", when is None and values is None))
        outcomes[kind] = results
    assert outcomes["ours"] == outcomes["feast"]
    assert outcomes["ours"][:3] == [("ok", [5])] * 3
