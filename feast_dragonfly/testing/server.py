"""A running (or external) Redis-protocol server, and how to describe one someone else runs.

A server started by :mod:`feast_dragonfly.testing.spawn` binds to 127.0.0.1 only, keeps no
data on disk, and lives in a private temporary directory that :meth:`LocalServer.stop` removes.
A password, when given, never appears in any ``repr``, log tail or error message (nor, see
``spawn``, on the server's command line).
"""

from __future__ import annotations

import atexit
import shutil
import subprocess
import threading
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from feast_dragonfly.testing.discovery import ANSI_CODES, SEMVER, ServerKind
from feast_dragonfly.testing.errors import LocalServerError

__all__ = ["DEFAULT_STOP_TIMEOUT_S", "LocalServer", "connect_external", "redact_url"]

#: Seconds :meth:`LocalServer.stop` waits after SIGTERM before it sends SIGKILL.
DEFAULT_STOP_TIMEOUT_S = 5.0
_LOG_TAIL_LINES = 25

#: Probes fail fast: redis-py's default retries with backoff would slow polling and errors.
NO_RETRY = Retry(NoBackoff(), 0)


class LocalServer:
    """A Redis-protocol server at ``host:port``; ``stop()`` ends it if we started it.

    Attributes: ``host``, ``port``, ``kind`` (``"dragonfly"`` / ``"redis"`` / ``"valkey"``),
    ``version``, ``binary`` (path, or ``None`` for an external server), ``pid``, ``password``
    (never shown by ``repr``), ``username`` (external servers with ACL users), ``db``,
    ``managed`` (``True`` when this object started the process).
    """

    def __init__(
        self,
        *,
        host: str,
        port: int,
        kind: ServerKind,
        version: str,
        binary: str | None,
        password: str | None = None,
        username: str | None = None,
        db: int = 0,
        process: subprocess.Popen[bytes] | None = None,
        workdir: str | None = None,
        log_path: str | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.kind: ServerKind = kind
        self.version = version
        self.binary = binary
        self.password = password
        self.username = username
        self.db = db
        self._process = process
        self._workdir = workdir
        self._log_path = log_path
        self._lock = threading.Lock()
        if process is not None:
            atexit.register(self.stop)

    # -- addresses ---------------------------------------------------------------------------

    @property
    def address(self) -> str:
        """``127.0.0.1:PORT`` — safe to print."""
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT`` (``/db`` when not 0); never carries the password."""
        return f"redis://{self.address}" + (f"/{self.db}" if self.db else "")

    @property
    def connection_string(self) -> str:
        """Feast's format, ``127.0.0.1:PORT[,db=N][,username=...][,password=...]``.

        Includes the password when there is one (so it works as ``connection_string`` in
        ``feature_store.yaml``): do not print it; print :attr:`address` instead.
        """
        parts = [self.address]
        if self.db:
            parts.append(f"db={self.db}")
        if self.username is not None:
            parts.append(f"username={self.username}")
        if self.password is not None:
            parts.append(f"password={self.password}")
        return ",".join(parts)

    @property
    def managed(self) -> bool:
        """Whether this object started (and so will stop) the server process."""
        return self._process is not None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def workdir(self) -> str | None:
        """The private temp dir the server runs in (``None`` once stopped, or if external)."""
        return self._workdir

    def describe(self) -> str:
        """``dragonfly 1.40.1 (/path/to/dragonfly) on 127.0.0.1:PORT`` — for logs."""
        where = self.binary if self.binary else "external"
        return f"{self.kind} {self.version} ({where}) on {self.address}"

    def __repr__(self) -> str:
        password = "<set>" if self.password is not None else None
        return (
            f"LocalServer(kind={self.kind!r}, version={self.version!r}, "
            f"address={self.address!r}, db={self.db}, binary={self.binary!r}, pid={self.pid}, "
            f"password={password}, running={self.is_running()})"
        )

    # -- use ---------------------------------------------------------------------------------

    def client(self, **kwargs: Any) -> redis.Redis:
        """A redis-py client for this server (password and db filled in; kwargs override)."""
        settings: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "db": self.db,
            "username": self.username,
            "password": self.password,
            "socket_connect_timeout": 5,
            "socket_timeout": 30,
        }
        settings.update(kwargs)
        return redis.Redis(**settings)

    def is_running(self) -> bool:
        """For a managed server: whether its process is alive. External ones: assumed so."""
        return self._process is None or self._process.poll() is None

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """The last lines the server logged (colour codes and the password removed)."""
        if not self._log_path:
            return ""
        return _read_log_tail(self._log_path, lines, self.password)

    # -- lifecycle ---------------------------------------------------------------------------

    def stop(self, timeout: float = DEFAULT_STOP_TIMEOUT_S) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` s; remove the temp dir. Idempotent.

        A no-op for an external server: we did not start it, so we do not stop it.
        """
        with self._lock:
            process = self._process
            if process is not None:
                if process.poll() is None:
                    process.terminate()
                    try:
                        process.wait(timeout)
                    except subprocess.TimeoutExpired:
                        process.kill()
                        process.wait(timeout)
                atexit.unregister(self.stop)
            if self._workdir:
                shutil.rmtree(self._workdir, ignore_errors=True)
                self._workdir = None
                self._log_path = None

    def __enter__(self) -> LocalServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _read_log_tail(log_path: str, lines: int, password: str | None) -> str:
    try:
        text = Path(log_path).read_text(errors="replace")
    except OSError:
        return ""
    text = ANSI_CODES.sub("", text)
    if password:
        text = text.replace(password, "***")
    kept = [line for line in text.splitlines() if line.strip()]
    return "\n".join(kept[-lines:])


def connect_external(url: str) -> LocalServer:
    """Describe a server someone else runs (``redis://[[user]:password@]host:port[/db]``).

    The result has the same attributes as a started server; ``stop()`` leaves it alone. The
    kind comes from ``INFO server``: Dragonfly reports ``dragonfly_version``, Valkey
    ``server_name:valkey`` and ``valkey_version`` (its ``redis_version`` is the Redis release
    it is compatible with, 7.2.4, not its own).
    """
    parts = urlsplit(url)
    if parts.scheme != "redis" or not parts.hostname:
        raise LocalServerError(
            "expected a URL like redis://[:password@]host:port[/db] (rediss:// is not "
            f"supported here), got {redact_url(url)!r}"
        )
    db_text = parts.path.strip("/") or "0"
    if not db_text.isdigit():
        raise LocalServerError(f"bad database number {db_text!r} in {redact_url(url)!r}")
    password = unquote(parts.password) if parts.password is not None else None
    server = LocalServer(
        host=parts.hostname,
        port=parts.port or 6379,
        kind="redis",
        version="unknown",
        binary=None,
        password=password,
        username=unquote(parts.username) if parts.username else None,
        db=int(db_text),
    )
    client = server.client(retry=NO_RETRY)
    try:
        info: Mapping[str, Any] = client.info("server")
    except redis.RedisError as exc:
        raise LocalServerError(
            f"cannot reach the server at {redact_url(url)}: {type(exc).__name__}: {exc}"
        ) from None
    finally:
        client.close()
    if "dragonfly_version" in info:
        server.kind = "dragonfly"
        match = SEMVER.search(str(info["dragonfly_version"]))
        server.version = match.group(1) if match else str(info["dragonfly_version"])
    elif "valkey_version" in info or str(info.get("server_name", "")).lower() == "valkey":
        server.kind = "valkey"
        server.version = str(info.get("valkey_version", info.get("redis_version", "unknown")))
    else:
        server.version = str(info.get("redis_version", "unknown"))
    return server


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = quote(parts.username or "", safe="")
    host = parts.netloc.rsplit("@", 1)[-1]
    return parts._replace(netloc=f"{user}:***@{host}").geturl()
