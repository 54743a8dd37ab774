"""Start server processes: free ports, safe command lines, and waiting until they answer.

Every local server — :func:`start_server`'s, and the test suite's TLS / restartable servers
(``tests/server_kit.py``) and Redis Cluster / Sentinel deployments (``tests/local_topology.py``)
— is started through these helpers, so all of them bind to 127.0.0.1 only, on a port the OS
reports free, and keep no data on disk.

A password, when given, never appears on the server's command line (where ``ps`` would show
it): redis-server (and valkey-server, which takes the same flags) reads it from a 0600 config
file, Dragonfly from the ``DFLY_requirepass`` environment variable.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import redis

from feast_dragonfly.testing.discovery import ServerBinary, detect_binary, find_server_binary
from feast_dragonfly.testing.errors import LocalServerError
from feast_dragonfly.testing.server import NO_RETRY, LocalServer

__all__ = [
    "DEFAULT_START_TIMEOUT_S",
    "HOST",
    "free_port",
    "redis_conf_string",
    "server_command",
    "spawn_server",
    "start_server",
]

#: The only address local servers bind to (and the one clients of them connect to).
HOST = "127.0.0.1"
#: Seconds a start may take before it is reported as failed.
DEFAULT_START_TIMEOUT_S = 20.0
_BIND_ATTEMPTS = 5
# What each server logs when the port it was given was taken in the meantime.
_BIND_RACE = re.compile(r"Address already in use|Could not open port|Could not create server TCP")


def free_port() -> int:
    """A port the OS says is free on 127.0.0.1 right now (another process may race us).

    Public for callers that must know the port before the server starts (a server restarted
    on the same port, cluster nodes); :func:`spawn_server` retries a start that loses the race.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


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
    ``requirepass password`` (redis-server and valkey-server: a 0600 config file in
    ``workdir``, Dragonfly: the ``DFLY_requirepass`` variable), then ``extra``;
    ``proactor_threads`` is Dragonfly's thread count. Public so servers started some other way
    (TLS, restarts on the same port, cluster nodes) get the same safe command line.
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
            retry=NO_RETRY,
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
