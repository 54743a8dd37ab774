"""feast-dragonfly: a fast, drop-in Feast online store for DragonflyDB and Redis."""

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from feast_dragonfly._engines.local import (
        DragonflyMaterializationEngine,
        DragonflyMaterializationEngineConfig,
    )
    from feast_dragonfly._engines.ray import DragonflyRayEngine, DragonflyRayEngineConfig
    from feast_dragonfly._engines.spark import DragonflySparkEngine, DragonflySparkEngineConfig
    from feast_dragonfly._store.online_store import DragonflyOnlineStore, DragonflyOnlineStoreConfig
    from feast_dragonfly._store.view_writer import ViewWriter
    from feast_dragonfly.errors import (
        DragonflyConfigError,
        DragonflyConnectionError,
        DragonflyDataError,
        DragonflyScriptingError,
        DragonflyServerFullError,
        DragonflyStoreError,
    )

# Every export is loaded on first use: importing Feast takes seconds, and `feast-dragonfly
# migrate` / `stats` need none of it. The Spark and Ray engines also import pyspark / ray (the
# `spark` / `ray` extras). Feast finds a class named in feature_store.yaml with getattr on
# this module (and its config class by name: `...DragonflySparkEngine` -> `...Config`), which
# this serves as well.
_LAZY = {
    "ViewWriter": "feast_dragonfly._store.view_writer",
    "DragonflyMaterializationEngine": "feast_dragonfly._engines.local",
    "DragonflyMaterializationEngineConfig": "feast_dragonfly._engines.local",
    "DragonflyConfigError": "feast_dragonfly.errors",
    "DragonflyConnectionError": "feast_dragonfly.errors",
    "DragonflyDataError": "feast_dragonfly.errors",
    "DragonflyScriptingError": "feast_dragonfly.errors",
    "DragonflyServerFullError": "feast_dragonfly.errors",
    "DragonflyStoreError": "feast_dragonfly.errors",
    "DragonflyOnlineStore": "feast_dragonfly._store.online_store",
    "DragonflyOnlineStoreConfig": "feast_dragonfly._store.online_store",
    "DragonflySparkEngine": "feast_dragonfly._engines.spark",
    "DragonflySparkEngineConfig": "feast_dragonfly._engines.spark",
    "DragonflyRayEngine": "feast_dragonfly._engines.ray",
    "DragonflyRayEngineConfig": "feast_dragonfly._engines.ray",
}


def _installed_version() -> str:
    """``__version__``: pyproject.toml holds the version, the installed package's metadata
    carries it (read on first use: importing importlib.metadata costs migrate / stats ~20 ms)."""
    from importlib import metadata

    try:
        return metadata.version("feast-dragonfly")
    except metadata.PackageNotFoundError:  # a source tree on sys.path, never installed
        return "0+unknown"


def __getattr__(name: str) -> Any:
    if name == "__version__":
        value: Any = _installed_version()
    else:
        module = _LAZY.get(name)
        if module is None:
            raise AttributeError(f"module 'feast_dragonfly' has no attribute {name!r}")
        value = getattr(import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY, "__version__"})


__all__ = [
    "DragonflyConfigError",
    "DragonflyConnectionError",
    "DragonflyDataError",
    "DragonflyMaterializationEngine",
    "DragonflyMaterializationEngineConfig",
    "DragonflyRayEngine",
    "DragonflyRayEngineConfig",
    "DragonflyOnlineStore",
    "DragonflyOnlineStoreConfig",
    "DragonflyScriptingError",
    "DragonflyServerFullError",
    "DragonflySparkEngine",
    "DragonflySparkEngineConfig",
    "DragonflyStoreError",
    "ViewWriter",
    "__version__",
]
