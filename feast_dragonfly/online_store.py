"""The online store under its older path: ``type: feast_dragonfly.online_store.DragonflyOnlineStore`` keeps working.

Feast loads a class named in ``feature_store.yaml`` from its module and finds its config class
(``DragonflyOnlineStoreConfig``) in the same module, so both are re-exported. The implementation lives in
:mod:`feast_dragonfly._store.online_store`.
"""

from feast_dragonfly._store.online_store import DragonflyOnlineStore, DragonflyOnlineStoreConfig

__all__ = ["DragonflyOnlineStore", "DragonflyOnlineStoreConfig"]
