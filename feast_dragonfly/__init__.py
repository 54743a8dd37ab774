"""feast-dragonfly: a fast, drop-in Feast online store for DragonflyDB and Redis."""

from importlib import import_module
from typing import Any

from feast_dragonfly._view_writer import ViewWriter
from feast_dragonfly.engine import (
    DragonflyMaterializationEngine,
    DragonflyMaterializationEngineConfig,
)
from feast_dragonfly.errors import (
    DragonflyConfigError,
    DragonflyConnectionError,
    DragonflyDataError,
    DragonflyScriptingError,
    DragonflyStoreError,
)
from feast_dragonfly.online_store import DragonflyOnlineStore, DragonflyOnlineStoreConfig

__version__ = "0.1.0"

# The Spark and Ray engines import pyspark / ray (the `spark` / `ray` extras): loaded on first
# use, so `import feast_dragonfly` needs neither. Feast finds an engine's config class by name
# on this module (`feast_dragonfly.DragonflySparkEngine` -> `...Config`), which this serves too.
_LAZY = {
    "DragonflySparkEngine": "feast_dragonfly.spark_engine",
    "DragonflySparkEngineConfig": "feast_dragonfly.spark_engine",
    "DragonflyRayEngine": "feast_dragonfly.ray_engine",
    "DragonflyRayEngineConfig": "feast_dragonfly.ray_engine",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'feast_dragonfly' has no attribute {name!r}")
    return getattr(import_module(module), name)


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
