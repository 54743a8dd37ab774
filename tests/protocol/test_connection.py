"""``_protocol.connection``: connection strings → settings → redis-py kwargs, and clear errors.

* Feast's ``host:port,key=value`` format and ``redis://`` / ``rediss://`` URLs parse to the
  same typed options; every mistake is a ``DragonflyConfigError`` that says what is wrong.
* ``redacted`` / ``repr`` / ``scrub`` and every message never show the password.
* ``client_kwargs`` builds pool kwargs (timeouts, TLS class, cert requirements) and refuses
  TLS options without TLS.
* ``translated_errors`` turns real failures — an unreachable port, a wrong password, a
  missing ACL permission, TLS against a plain server — into ``DragonflyConnectionError``
  naming the server and a next step; other errors pass through untouched.
"""

from __future__ import annotations

import ssl
import traceback

import pytest
import redis
from redis import exceptions as redis_exceptions

from feast_dragonfly._protocol.connection import (
    ConnectionSettings,
    client_kwargs,
    parse_connection_string,
    scrub,
    translated_errors,
)
from feast_dragonfly.errors import (
    DragonflyConfigError,
    DragonflyConnectionError,
    DragonflyDataError,
)
from feast_dragonfly.testing.local_server import free_port, start_server

SECRET = "pa55-w0rd-931"


def assert_clean(error: BaseException) -> None:
    text = "".join(traceback.format_exception(error)) + repr(error)
    assert SECRET not in text, text


def test_feast_format_options_are_typed():
    parsed = parse_connection_string(
        f" cache.local:6380 , password={SECRET},ssl=true,db=2,socket_timeout=2.5,"
        "retry_on_timeout=0,,health_check_interval=30,username=feast,client_name=svc "
    )
    assert (parsed.host, parsed.port, parsed.address) == ("cache.local", 6380, "cache.local:6380")
    assert parsed.options == {
        "password": SECRET,
        "ssl": True,
        "db": 2,
        "socket_timeout": 2.5,
        "retry_on_timeout": False,
        "health_check_interval": 30,
        "username": "feast",
        "client_name": "svc",
    }
    assert parsed.password == SECRET and parsed.use_ssl
    assert parse_connection_string("[::1]:7000").host == "::1"
    assert parse_connection_string("h:1,password=123").password == "123"  # text, not int
    plain = parse_connection_string("h:1")
    assert plain.options == {} and plain.password is None and not plain.use_ssl


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("   ", "is empty"),
        (f"password={SECRET}", "names no server"),
        ("a:1,b:2", "several servers (a:1, b:2)"),
        ("localhost", "entry 'localhost' is neither"),
        ("h:0", "port 0 is outside 1-65535"),
        ("h:70000", "port 70000 is outside"),
        (f"h:1,password={SECRET},timeout=3", "option 'timeout' is not supported; known options"),
        ("h:1,db=two", "option 'db' has value 'two', expected int"),
        ("h:1,ssl=maybe", "option 'ssl' has value 'maybe', expected bool"),
        ("http://h:1", "scheme 'http://' is not supported"),
        ("redis://h:1/cache", "URL path '/cache' is not a database number"),
        ("redis://h:1?foo=1", "option 'foo' is not supported"),
        ("redis://h:1?socket_timeout=soon", "URL is malformed"),
        (f"redis://:{SECRET}@h:70000", "URL is malformed"),
    ],
)
def test_mistakes_are_config_errors_that_say_what_is_wrong(text, fragment):
    with pytest.raises(DragonflyConfigError) as caught:
        parse_connection_string(text)
    assert fragment in str(caught.value)
    assert_clean(caught.value)


def test_a_password_with_a_comma_is_never_echoed_in_the_error():
    """Feast's format splits on commas: the tail of such a password is an entry of its own,
    and the error must say which entry is wrong without showing it."""
    with pytest.raises(DragonflyConfigError) as caught:
        parse_connection_string("h:1,password=abc,def-tail-of-secret")
    message = str(caught.value)
    assert "def-tail-of-secret" not in message and "abc" not in message
    assert "entry 3" in message and "%2C" in message


def test_urls_give_the_same_options():
    url = parse_connection_string(
        f"redis://feast:{SECRET.replace('-', '%2D')}@cache:6380/3?socket_timeout=2.5&retry_on_timeout=true"
    )
    assert (url.host, url.port) == ("cache", 6380)
    assert url.options == {
        "username": "feast",
        "password": SECRET,  # percent-decoded
        "db": 3,
        "socket_timeout": 2.5,
        "retry_on_timeout": True,
    }
    tls = parse_connection_string("rediss://cache")
    assert (tls.port, tls.use_ssl) == (6379, True)
    assert parse_connection_string("redis://h:1?ssl=false").options == {"ssl": False}
    assert parse_connection_string("redis://").address == "localhost:6379"


def test_the_password_is_never_shown():
    settings = parse_connection_string(f"h:1,password={SECRET},db=1,ssl=true")
    assert settings.redacted() == "h:1,db=1,password=***,ssl=True"
    assert repr(settings) == str(settings) == "ConnectionSettings(h:1,db=1,password=***,ssl=True)"
    assert scrub(f"AUTH {SECRET} failed, {SECRET}", settings) == "AUTH *** failed, ***"
    assert scrub("AUTH x failed", ConnectionSettings("h", 1)) == "AUTH x failed"


def test_client_kwargs():
    settings = parse_connection_string(f"h:1,password={SECRET},db=2,skip_full_coverage_check=true")
    kwargs = client_kwargs(
        settings, socket_timeout=3.0, socket_connect_timeout=1.0, ssl_connection_class=object
    )
    assert kwargs == {
        "host": "h",
        "port": 1,
        "socket_timeout": 3.0,
        "socket_connect_timeout": 1.0,
        "password": SECRET,
        "db": 2,
    }
    tls = parse_connection_string(
        "h:1,ssl=true,ssl_cert_reqs=optional,ssl_ca_certs=/ca.pem,socket_timeout=9"
    )
    kwargs = client_kwargs(
        tls,
        socket_timeout=3.0,
        socket_connect_timeout=1.0,
        ssl_connection_class=redis.SSLConnection,
    )
    assert kwargs["connection_class"] is redis.SSLConnection and "ssl" not in kwargs
    assert kwargs["ssl_cert_reqs"] == ssl.CERT_OPTIONAL and kwargs["ssl_ca_certs"] == "/ca.pem"
    assert kwargs["socket_timeout"] == 9  # the string's own value wins
    with pytest.raises(
        DragonflyConfigError, match="sets ssl_ca_certs, ssl_certfile but TLS is off"
    ):
        client_kwargs(
            parse_connection_string("h:1,ssl_certfile=c,ssl_ca_certs=a"),
            socket_timeout=1,
            socket_connect_timeout=1,
            ssl_connection_class=object,
        )
    with pytest.raises(DragonflyConfigError, match="expected none, optional or required"):
        client_kwargs(
            parse_connection_string("h:1,ssl=true,ssl_cert_reqs=sometimes"),
            socket_timeout=1,
            socket_connect_timeout=1,
            ssl_connection_class=object,
        )


# --------------------------------------------------------------------------- real failures


def ping(text: str, timeout: float = 2) -> None:
    """Connect as the store would (parse, kwargs, translated errors) and PING."""
    settings = parse_connection_string(text)
    kwargs = client_kwargs(
        settings,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        ssl_connection_class=redis.SSLConnection,
    )
    client = redis.Redis(connection_pool=redis.ConnectionPool(**kwargs))
    try:
        with translated_errors(settings):
            client.ping()
    finally:
        client.close()


@pytest.fixture(scope="module")
def locked_server(server_binary):
    """A server with a password and an ACL user that may only PING."""
    server = start_server(server_binary, password=SECRET)
    admin = server.client()
    try:
        admin.execute_command(
            "ACL", "SETUSER", "pinger", "on", f">{SECRET}", "~*", "-@all", "+ping"
        )
        admin.close()
        yield server
    finally:
        server.stop()


def test_an_unreachable_port_names_the_address():
    port = free_port()
    with pytest.raises(DragonflyConnectionError) as caught:
        ping(f"127.0.0.1:{port},password={SECRET}")
    assert f"cannot reach the Redis-protocol server at 127.0.0.1:{port}" in str(caught.value)
    assert "is it running" in str(caught.value)
    assert_clean(caught.value)


def test_a_wrong_password_is_a_credentials_error(locked_server):
    ping(locked_server.connection_string)  # the right one works
    for text in (f"{locked_server.address},password={SECRET}x", f"{locked_server.address}"):
        with pytest.raises(DragonflyConnectionError) as caught:
            ping(text)
        message = str(caught.value)
        assert locked_server.address in message and "password / username" in message
        assert_clean(caught.value)


def test_a_missing_permission_names_it(locked_server):
    settings = parse_connection_string(f"{locked_server.address},username=pinger,password={SECRET}")
    client = redis.Redis(host=locked_server.host, port=locked_server.port, username="pinger",
                         password=SECRET)  # fmt: skip
    try:
        with translated_errors(settings):
            assert client.ping()
        with pytest.raises(DragonflyConnectionError) as caught, translated_errors(settings):
            client.get("k")
    finally:
        client.close()
    assert "lacks a permission" in str(caught.value) and "ACL SETUSER" in str(caught.value)
    assert_clean(caught.value)


def test_tls_against_a_plain_server_hints_at_tls(redis_server):
    with pytest.raises(DragonflyConnectionError) as caught:
        ping(f"{redis_server.address},ssl=true,ssl_cert_reqs=none", timeout=0.5)
    assert "TLS is on: is the server running with TLS on this port" in str(caught.value)


def test_other_errors_pass_through_untouched(redis_client, redis_server):
    settings = parse_connection_string(redis_server.connection_string)
    redis_client.set(b"k", b"v")
    with (
        pytest.raises(redis_exceptions.ResponseError, match="WRONGTYPE"),
        translated_errors(settings),
    ):
        redis_client.hget(b"k", b"f")
    ours = DragonflyDataError("already explained")
    with pytest.raises(DragonflyDataError) as caught, translated_errors(settings):
        raise ours
    assert caught.value is ours
