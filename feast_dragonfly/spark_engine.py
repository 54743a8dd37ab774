"""The Spark engine under its older path: ``type: feast_dragonfly.spark_engine.DragonflySparkEngine`` keeps working.

Feast loads a class named in ``feature_store.yaml`` from its module and finds its config class
(``DragonflySparkEngineConfig``) in the same module, so both are re-exported. The implementation lives in
:mod:`feast_dragonfly._engines.spark`.
"""

from feast_dragonfly._engines.spark import DragonflySparkEngine, DragonflySparkEngineConfig

__all__ = ["DragonflySparkEngine", "DragonflySparkEngineConfig"]
