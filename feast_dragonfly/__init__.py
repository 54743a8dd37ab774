"""feast-dragonfly: a fast, drop-in Feast online store for DragonflyDB and Redis."""

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

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
    "DragonflyStoreError": "feast_dragonfly.errors",
    "DragonflyOnlineStore": "feast_dragonfly._store.online_store",
    "DragonflyOnlineStoreConfig": "feast_dragonfly._store.online_store",
    "DragonflySparkEngine": "feast_dragonfly._engines.spark",
    "DragonflySparkEngineConfig": "feast_dragonfly._engines.spark",
    "DragonflyRayEngine": "feast_dragonfly._engines.ray",
    "DragonflyRayEngineConfig": "feast_dragonfly._engines.ray",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'feast_dragonfly' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


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
    "DragonflySparkEngine",
    "DragonflySparkEngineConfig",
    "DragonflyStoreError",
    "ViewWriter",
    "__version__",
]
