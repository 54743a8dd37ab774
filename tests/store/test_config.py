"""``_store.config``: the ``online_store:`` section users write, validated and parsed once.

* Unknown keys are named (with a migration hint for Feast's Redis options) and badly typed
  options are refused, both without echoing any value: a misplaced ``password:`` never shows.
* Malformed connection strings and TLS options without TLS fail when the config loads, with a
  message saying what is wrong; a valid config's ``repr`` never shows the password.
* The same through Feast: ``RepoConfig``, ``feature_store.yaml`` and the ``feast`` CLI.
* The parsed settings are built once, follow every assignment (a refused one changes
  nothing), and are built on demand for a config made without validation.

The password used throughout is SECRET; every message, repr and formatted traceback (with
its whole exception chain) is checked for it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import traceback
from pathlib import Path

import pydantic
import pytest
import yaml
from feast import FeatureStore, RepoConfig

from feast_dragonfly import DragonflyConfigError, DragonflyOnlineStoreConfig

SECRET = "sekret-XYZ"


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
    [
        ("max_connections", SECRET),
        ("key_ttl_seconds", SECRET),
        ("key_ttl_seconds", -5),
        ("socket_timeout", -1),
        ("retry_attempts", -1),
        ("retry_attempts", SECRET),
        ("retry_backoff_base", 0),
        ("retry_backoff_cap", -0.5),
    ],
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


# --------------------------------------------------------------------------- parsed settings


def test_settings_are_parsed_once_and_follow_assignments():
    config = DragonflyOnlineStoreConfig(connection_string="db1:6379,password=s3cret")
    first = config.settings()
    assert config.settings() is first
    assert first.client.connection.address == "db1:6379"
    config.read_chunk_size = 7
    assert config.settings().read_chunk_size == 7
    assert config.settings().client == first.client  # same connections: same backend
    config.connection_string = "db2:6380"
    assert config.settings().client.connection.address == "db2:6380"
    with pytest.raises(DragonflyConfigError) as caught:
        config.connection_string = "db3:6379,password=hunter2,ssl_ca_certs=/x"
    assert "hunter2" not in str(caught.value)
    assert config.settings().client.connection.address == "db2:6380"  # unchanged


def test_a_config_built_without_validation_parses_its_settings_on_demand():
    config = DragonflyOnlineStoreConfig.model_construct(
        connection_string=f"db9:6390,password={SECRET}", read_chunk_size=3
    )
    settings = config.settings()
    assert settings.client.connection.address == "db9:6390"
    assert settings.read_chunk_size == 3
    assert config.settings() is settings
    assert SECRET not in repr(config)
