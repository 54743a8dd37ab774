"""Connection strings and URLs → redis-py clients, with secrets kept out of every message.

Two spellings are accepted because users arrive from two places: Feast's own
``host:port,password=...,ssl=true,db=0`` (so a ``type: redis`` config moves over unchanged)
and the ``redis://`` / ``rediss://`` URLs every other Redis tool understands (parsed by
redis-py itself, not by us).
"""

from __future__ import annotations

import json
import re
import ssl as _ssl
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import redis.asyncio.sentinel as redis_asyncio_sentinel
import redis.sentinel as redis_sentinel
from redis import exceptions as redis_exceptions
from redis.connection import parse_url

from feast_dragonfly.errors import (
    DragonflyConfigError,
    DragonflyConnectionError,
    DragonflyStoreError,
)

#: Options users may put after ``host:port`` in Feast's format (or in a URL's query string),
#: with the type each is coerced to. Anything else is rejected by name, instead of failing
#: later inside redis-py with a TypeError that does not say where the key came from.
_OPTION_TYPES: dict[str, type] = {
    "password": str,
    "username": str,
    "db": int,
    "ssl": bool,
    "ssl_ca_certs": str,
    "ssl_certfile": str,
    "ssl_keyfile": str,
    "ssl_cert_reqs": str,
    "ssl_check_hostname": bool,
    "socket_timeout": float,
    "socket_connect_timeout": float,
    "socket_keepalive": bool,
    "health_check_interval": int,
    "retry_on_timeout": bool,
    "client_name": str,
    # Accepted for Feast compatibility; meaningful only for cluster deployments.
    "skip_full_coverage_check": bool,
}

_SECRET_OPTIONS = frozenset({"password"})
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}
_HOST_PORT = re.compile(r"^(?P<host>\[[0-9a-fA-F:.]+\]|[^:\s\[\]]+):(?P<port>\d{1,5})$")


@dataclass(frozen=True)
class ConnectionSettings:
    """Where and how to connect; ``repr`` never shows the password."""

    host: str
    port: int
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def address(self) -> str:
        """``host:port`` — what error messages name."""
        return f"{self.host}:{self.port}"

    @property
    def password(self) -> str | None:
        return self.options.get("password")

    @property
    def use_ssl(self) -> bool:
        return bool(self.options.get("ssl"))

    def redacted(self) -> str:
        """The settings as a user could have written them, password masked."""
        parts = [self.address]
        for key, value in sorted(self.options.items()):
            shown = "***" if key in _SECRET_OPTIONS else value
            parts.append(f"{key}={shown}")
        return ",".join(parts)

    def __repr__(self) -> str:
        return f"ConnectionSettings({self.redacted()})"

    __str__ = __repr__


def parse_connection_string(text: str) -> ConnectionSettings:
    """Parse Feast's ``host:port,key=value`` format or a ``redis://``/``rediss://`` URL."""
    text = text.strip()
    if not text:
        raise DragonflyConfigError("connection_string is empty; expected e.g. 'localhost:6379'")
    if "://" in text:
        return _parse_url(text)
    return _parse_feast_format(text)


def _parse_feast_format(text: str) -> ConnectionSettings:
    nodes: list[tuple[str, int]] = []
    options: dict[str, Any] = {}
    for position, raw in enumerate(text.split(",")):
        item = raw.strip()
        if not item:
            continue
        if "=" in item:
            key, _, value = item.partition("=")
            key = key.strip()
            options[key] = _coerce_option(key, value.strip())
            continue
        nodes.append(_parse_host_port(item, position))
    if not nodes:
        raise DragonflyConfigError(
            "connection_string names no server; expected 'host:port' first, "
            "e.g. 'localhost:6379,db=0'"
        )
    if len(nodes) > 1:
        listed = ", ".join(f"{h}:{p}" for h, p in nodes)
        raise DragonflyConfigError(
            f"connection_string lists several servers ({listed}); a standalone server takes "
            "exactly one 'host:port'"
        )
    host, port = nodes[0]
    return ConnectionSettings(host=host, port=port, options=options)


def _parse_host_port(item: str, position: int) -> tuple[str, int]:
    match = _HOST_PORT.match(item)
    if not match:
        if position > 0:
            # A later entry may be the tail of a password that contained a comma
            # ("password=abc,def"): never echo it.
            raise DragonflyConfigError(
                f"connection_string entry {position + 1} (not shown: it may hold part of a "
                "password) is neither 'host:port' nor 'key=value'; a password containing a "
                "comma needs a redis:// URL with the comma written as %2C"
            )
        raise DragonflyConfigError(
            f"connection_string entry '{item}' is neither 'host:port' nor 'key=value'"
        )
    port = int(match["port"])
    if not 0 < port < 65536:
        raise DragonflyConfigError(f"connection_string port {port} is outside 1-65535")
    return match["host"].strip("[]"), port


def _parse_url(text: str) -> ConnectionSettings:
    scheme = text.split("://", 1)[0].lower()
    if scheme not in ("redis", "rediss"):
        raise DragonflyConfigError(
            f"connection_string scheme '{scheme}://' is not supported; use redis:// or rediss:// "
            "(or Feast's 'host:port,key=value' format)"
        )
    database = urlsplit(text).path.strip("/")
    if database and not database.isdigit():
        # redis-py would silently fall back to database 0 and write somewhere else.
        raise DragonflyConfigError(
            f"connection_string URL path '/{database}' is not a database number (db); "
            "use e.g. redis://host:6379/0"
        )
    try:
        parsed = parse_url(text)
    except ValueError as exc:
        # redis-py's messages quote the option, never the password.
        raise DragonflyConfigError(f"connection_string URL is malformed: {exc}") from None
    host = parsed.pop("host", None) or "localhost"
    port = int(parsed.pop("port", None) or 6379)
    if not 0 < port < 65536:
        raise DragonflyConfigError(f"connection_string port {port} is outside 1-65535")
    connection_class = parsed.pop("connection_class", None)
    options: dict[str, Any] = {}
    for key, value in parsed.items():
        if value is None:
            continue
        if key not in _OPTION_TYPES:
            raise DragonflyConfigError(_unknown_option_message(key))
        if isinstance(value, str) and key not in ("username", "password"):
            # Query values arrive as text ("?ssl=false"); give them the Feast format's types.
            # (redis-py has already percent-decoded the username and password.)
            value = _coerce_option(key, value)
        options[key] = value
    if connection_class is not None and connection_class.__name__ == "SSLConnection":
        options["ssl"] = True
    return ConnectionSettings(host=host, port=port, options=options)


def _coerce_option(key: str, raw: str) -> Any:
    if key not in _OPTION_TYPES:
        raise DragonflyConfigError(_unknown_option_message(key))
    wanted = _OPTION_TYPES[key]
    value: Any = raw
    if wanted is not str:
        # Feast json-decodes values ('true', '0', '2.5'); accept the same spellings.
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
    try:
        if wanted is bool:
            return _to_bool(value)
        if wanted is int and not isinstance(value, bool):
            return int(value)
        if wanted is float and not isinstance(value, bool):
            return float(value)
        if wanted is str:
            return str(value)
    except (TypeError, ValueError):
        pass
    shown = "***" if key in _SECRET_OPTIONS else raw
    raise DragonflyConfigError(
        f"connection_string option '{key}' has value '{shown}', expected {wanted.__name__}"
    )


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(value)


def _unknown_option_message(key: str) -> str:
    known = ", ".join(sorted(_OPTION_TYPES))
    return f"connection_string option '{key}' is not supported; known options: {known}"


def client_kwargs(
    settings: ConnectionSettings,
    *,
    socket_timeout: float,
    socket_connect_timeout: float,
    ssl_connection_class: type,
) -> dict[str, Any]:
    """Keyword arguments for a redis-py connection pool (sync or async: the caller names its
    TLS connection class, the only thing that differs between the two)."""
    options = dict(settings.options)
    options.pop("skip_full_coverage_check", None)
    use_ssl = bool(options.pop("ssl", False))
    kwargs: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "socket_timeout": options.pop("socket_timeout", socket_timeout),
        "socket_connect_timeout": options.pop("socket_connect_timeout", socket_connect_timeout),
    }
    ssl_only = sorted(k for k in options if k.startswith("ssl_"))
    if ssl_only and not use_ssl:
        raise DragonflyConfigError(
            f"connection_string sets {', '.join(ssl_only)} but TLS is off; add ssl=true "
            "or use a rediss:// URL"
        )
    if use_ssl:
        reqs = options.pop("ssl_cert_reqs", None)
        if reqs is not None:
            kwargs["ssl_cert_reqs"] = _cert_reqs(reqs)
        kwargs["connection_class"] = ssl_connection_class
    kwargs.update(options)
    return kwargs


def _cert_reqs(value: str) -> Any:
    mapping = {
        "none": _ssl.CERT_NONE,
        "optional": _ssl.CERT_OPTIONAL,
        "required": _ssl.CERT_REQUIRED,
    }
    try:
        return mapping[str(value).lower()]
    except KeyError:
        raise DragonflyConfigError(
            f"connection_string option 'ssl_cert_reqs' has value '{value}', "
            "expected none, optional or required"
        ) from None


@contextmanager
def translated_errors(settings: ConnectionSettings) -> Iterator[None]:
    """Turn redis-py's failures into errors that name the server (every node, for a cluster
    or Sentinel) and a next step, never the password."""
    try:
        yield
    except DragonflyStoreError:
        raise
    # Topology errors first: some subclass the generic ones below (a missing master is a
    # ConnectionError, CLUSTERDOWN a ResponseError).
    except (redis_sentinel.MasterNotFoundError, redis_asyncio_sentinel.MasterNotFoundError):
        raise DragonflyConnectionError(
            f"cannot find the {settings.address}: no sentinel names a healthy master (are the "
            "sentinels running and reachable, do they monitor that name (sentinel_master), is "
            "sentinel_password right?)"
        ) from None
    except redis_exceptions.RedisClusterException as exc:
        text = scrub(str(exc), settings)
        advice = ""
        if "cluster mode is not enabled" in text.lower():
            advice = " (the server is not a cluster node: use redis_type: redis)"
        raise DragonflyConnectionError(
            f"cannot use the Redis Cluster at {settings.address}: {text}{advice}"
        ) from None
    except redis_exceptions.ClusterError as exc:
        raise DragonflyConnectionError(
            f"the Redis Cluster at {settings.address} is not serving: {scrub(str(exc), settings)}"
        ) from None
    except redis_exceptions.AuthenticationError as exc:
        raise DragonflyConnectionError(
            f"authentication failed at {settings.address}: {scrub(str(exc), settings)} "
            "(check password / username in connection_string)"
        ) from None
    except redis_exceptions.NoPermissionError as exc:
        raise DragonflyConnectionError(
            f"the user connected to {settings.address} lacks a permission: "
            f"{scrub(str(exc), settings)} (grant it with ACL SETUSER, or use another user)"
        ) from None
    except redis_exceptions.ResponseError as exc:
        text = str(exc)
        if text.startswith(("NOAUTH", "WRONGPASS", "NOPERM")):
            raise DragonflyConnectionError(
                f"server at {settings.address} refused the credentials: {scrub(text, settings)} "
                "(check password / username in connection_string)"
            ) from None
        if "TLS" in text and not settings.use_ssl:
            raise DragonflyConnectionError(
                f"the server at {settings.address} only accepts TLS connections: "
                f"{scrub(text, settings)} (use a rediss:// URL or add ssl=true)"
            ) from None
        raise
    except (redis_exceptions.ConnectionError, redis_exceptions.TimeoutError, OSError) as exc:
        hint = _tls_hint(exc) if settings.use_ssl else None
        raise DragonflyConnectionError(
            f"cannot reach the Redis-protocol server at {settings.address}: "
            f"{scrub(str(exc), settings)} "
            f"({hint or 'is it running, and is connection_string right?'})"
        ) from None


def _tls_hint(exc: BaseException) -> str:
    """What to check when a TLS connection fails (the server's message alone rarely says)."""
    causes = [exc, exc.__context__, exc.__cause__]
    text = " ".join(str(c) for c in causes if c is not None)
    if any(isinstance(c, _ssl.SSLCertVerificationError) for c in causes):
        return (
            "TLS: the server's certificate did not verify; check ssl_ca_certs (the CA that "
            "signed it) and, for a host-name mismatch, ssl_check_hostname"
        )
    if "CERTIFICATE_REQUIRED" in text or "certificate required" in text:
        return "TLS: the server requires a client certificate; set ssl_certfile and ssl_keyfile"
    return (
        "TLS is on: is the server running with TLS on this port, and are the ssl_* options right?"
    )


def scrub(text: str, settings: ConnectionSettings) -> str:
    """``text`` with the password masked."""
    password = settings.password
    if password:
        text = text.replace(str(password), "***")
    return text
