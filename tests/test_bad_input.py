"""Bad configuration and unusable servers: every error names the problem, none the password.

The password used throughout is SECRET; every message, repr and formatted traceback (with
its whole exception chain) is checked for it.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

import pydantic
import pytest
import yaml
from feast import FeatureStore, RepoConfig
from store_kit import entity_key, feature_view, free_port, repo_config, row

from feast_dragonfly import (
    DragonflyConfigError,
    DragonflyConnectionError,
    DragonflyOnlineStore,
    DragonflyOnlineStoreConfig,
)
from feast_dragonfly.local_server import start_server

SECRET = "sekret-XYZ"
T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)


def assert_no_secret(exc: BaseException, *also: object) -> None:
    text = "".join(traceback.format_exception(exc)) + str(exc) + repr(exc)
    assert SECRET not in text, text
    for thing in also:
        assert SECRET not in repr(thing) and SECRET not in str(thing)


# --------------------------------------------------------------------------- config keys


@pytest.mark.parametrize(
    ("key", "value", "hint"),
    [
        ("bogus_option", 1, None),
        ("password", SECRET, "connection_string"),  # a misplaced password key: never echoed
        ("skip_dedup", True, "skip_dedup"),  # Feast's Redis option: migration hint
        ("client", "glide", "hiredis"),  # Feast's Redis option: migration hint
        ("Connection_String", f"localhost:6379,password={SECRET}", None),
    ],
)
def test_unknown_config_key_is_named_without_echoing_values(key, value, hint):
    with pytest.raises((DragonflyConfigError, pydantic.ValidationError)) as caught:
        DragonflyOnlineStoreConfig(
            connection_string=f"localhost:6379,password={SECRET}", **{key: value}
        )
    message = str(caught.value)
    assert f"'{key}'" in message or key in message
    if hint:
        assert hint in message
    assert "connection_string" in message  # the known options are listed
    assert_no_secret(caught.value)


@pytest.mark.parametrize(
    ("key", "value"),
    [("max_connections", SECRET), ("key_ttl_seconds", SECRET), ("socket_timeout", -1)],
)
def test_badly_typed_options_are_named_without_echoing_the_value(key, value):
    with pytest.raises(pydantic.ValidationError) as caught:
        DragonflyOnlineStoreConfig(
            connection_string=f"localhost:6379,password={SECRET}", **{key: value}
        )
    assert key in str(caught.value)
    assert_no_secret(caught.value)


def test_valid_config_never_shows_the_password():
    config = DragonflyOnlineStoreConfig(connection_string=f"localhost:6379,password={SECRET}")
    assert SECRET not in repr(config) and SECRET not in str(config)
    assert "localhost:6379" in repr(config)
    settings = config.connection_settings()
    assert SECRET not in repr(settings) and SECRET not in str(settings)
    url_config = DragonflyOnlineStoreConfig(
        connection_string=f"redis://default:{SECRET}@localhost:6379/2"
    )
    assert SECRET not in repr(url_config) and SECRET not in str(url_config)


# --------------------------------------------------------------------------- connection strings


@pytest.mark.parametrize(
    ("connection_string", "expected"),
    [
        ("localhost", ["'localhost'", "host:port"]),
        ("host:abc", ["'host:abc'"]),
        ("a:1,b:2", ["several servers", "a:1", "b:2"]),
        ("host:1,bogus=1", ["'bogus'", "not supported"]),
        ("host:1,db=abc", ["'db'", "int"]),
        ("host:1,ssl=maybe", ["'ssl'", "bool"]),
        ("h:99999", ["99999"]),
        ("", ["empty"]),
        (",password=PW", ["no server"]),
        ("ftp://x", ["ftp://"]),
        ("redis://h:99999", ["port"]),
        ("redis://h:1?bogus=2", ["'bogus'"]),
        ("redis://h:1/abc", ["db"]),  # silently using db 0 would write to the wrong database
    ],
)
def test_malformed_connection_strings_are_rejected_at_config_time(connection_string, expected):
    if "://" in connection_string:
        scheme, rest = connection_string.split("://", 1)
        text = f"{scheme}://user:{SECRET}@{rest}"
    elif not connection_string:
        text = ""
    elif "PW" in connection_string:
        text = connection_string.replace("PW", SECRET)
    else:
        text = f"{connection_string},password={SECRET}"
    with pytest.raises(DragonflyConfigError) as caught:
        DragonflyOnlineStoreConfig(connection_string=text)
    message = str(caught.value)
    for fragment in expected:
        assert fragment.lower() in message.lower(), message
    assert_no_secret(caught.value)


@pytest.mark.parametrize(
    ("connection_string", "option"),
    [
        ("localhost:6379,ssl_ca_certs=/etc/ca.pem", "ssl_ca_certs"),
        ("localhost:6379,ssl=false,ssl_certfile=/c.pem", "ssl_certfile"),
        ("localhost:6379,ssl=true,ssl_cert_reqs=maybe", "ssl_cert_reqs"),
    ],
)
def test_inconsistent_tls_options_fail_at_config_time(connection_string, option):
    """The config validates the connection string eagerly ("a bad string fails at `feast
    apply`, not at the first read"); TLS options are part of the string."""
    with pytest.raises(DragonflyConfigError) as caught:
        DragonflyOnlineStoreConfig(connection_string=f"{connection_string},password={SECRET}")
    assert option in str(caught.value)
    assert_no_secret(caught.value)


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


# --------------------------------------------------------------------------- Feast config files


def _write_repo(path: Path, online_store: dict) -> None:
    path.mkdir(parents=True, exist_ok=True)
    settings = {
        "project": "proj",
        "registry": str(path / "registry.db"),
        "provider": "local",
        "online_store": online_store,
        "offline_store": {"type": "file"},
        "entity_key_serialization_version": 3,
    }
    (path / "feature_store.yaml").write_text(yaml.safe_dump(settings, sort_keys=False))


def test_repo_config_with_unknown_online_store_key(tmp_path):
    with pytest.raises((DragonflyConfigError, pydantic.ValidationError)) as caught:
        config = RepoConfig(
            project="proj",
            registry=str(tmp_path / "registry.db"),
            provider="local",
            online_store={
                "type": "feast_dragonfly.DragonflyOnlineStore",
                "connection_string": f"localhost:6379,password={SECRET}",
                "max_conections": 8,
            },
            entity_key_serialization_version=3,
        )
        _ = config.online_store  # Feast builds the store config lazily
    assert "max_conections" in str(caught.value)
    assert_no_secret(caught.value)


def test_feature_store_yaml_with_unknown_online_store_key(tmp_path):
    _write_repo(
        tmp_path,
        {
            "type": "feast_dragonfly.DragonflyOnlineStore",
            "connection_string": f"localhost:6379,password={SECRET}",
            "skip_dedup": True,
        },
    )
    with pytest.raises((DragonflyConfigError, pydantic.ValidationError)) as caught:
        _ = FeatureStore(repo_path=str(tmp_path)).config.online_store
    assert "skip_dedup" in str(caught.value)
    assert_no_secret(caught.value)


def test_feast_cli_reports_an_unknown_key_without_the_password(tmp_path):
    """What a user sees: `feast plan` on a repo with a typo under online_store."""
    _write_repo(
        tmp_path,
        {
            "type": "feast_dragonfly.DragonflyOnlineStore",
            "connection_string": f"localhost:6379,password={SECRET}",
            "key_ttl_secs": 60,
        },
    )
    feast_cli = Path(sys.executable).with_name("feast")
    done = subprocess.run(
        [str(feast_cli), "plan"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert "key_ttl_secs" in output
    assert SECRET not in output


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
def protected_server():
    """A second server (same kind as the session one) that requires SECRET."""
    server = start_server(password=SECRET)
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
