"""feast-dragonfly: a fast, drop-in Feast online store for DragonflyDB and Redis."""

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

__all__ = [
    "DragonflyConfigError",
    "DragonflyConnectionError",
    "DragonflyDataError",
    "DragonflyMaterializationEngine",
    "DragonflyMaterializationEngineConfig",
    "DragonflyOnlineStore",
    "DragonflyOnlineStoreConfig",
    "DragonflyScriptingError",
    "DragonflyStoreError",
    "ViewWriter",
    "__version__",
]
