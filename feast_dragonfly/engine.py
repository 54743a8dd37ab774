"""The materialization engine under its older path: ``type: feast_dragonfly.engine.DragonflyMaterializationEngine`` keeps working.

Feast loads a class named in ``feature_store.yaml`` from its module and finds its config class
(``DragonflyMaterializationEngineConfig``) in the same module, so both are re-exported. The implementation lives in
:mod:`feast_dragonfly._engines.local`.
"""

from feast_dragonfly._engines.local import (
    DragonflyMaterializationEngine,
    DragonflyMaterializationEngineConfig,
)

__all__ = ["DragonflyMaterializationEngine", "DragonflyMaterializationEngineConfig"]
