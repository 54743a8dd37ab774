"""The Ray engine under its older path: ``type: feast_dragonfly.ray_engine.DragonflyRayEngine`` keeps working.

Feast loads a class named in ``feature_store.yaml`` from its module and finds its config class
(``DragonflyRayEngineConfig``) in the same module, so both are re-exported. The implementation lives in
:mod:`feast_dragonfly._engines.ray`.
"""

from feast_dragonfly._engines.ray import DragonflyRayEngine, DragonflyRayEngineConfig

__all__ = ["DragonflyRayEngine", "DragonflyRayEngineConfig"]
