"""Feast's universal online-store tests, pointed at one online store: the repo-config module.

Feast's integration suite (``sdk/python/tests`` of a Feast source checkout) builds its
parametrisation from ``tests.universal.feature_repos.repo_configuration``, which imports the
module named by ``$FULL_REPO_CONFIGS_MODULE`` and reads ``FULL_REPO_CONFIGS`` from it, or
``AVAILABLE_ONLINE_STORES`` + ``AVAILABLE_OFFLINE_STORES`` when it defines those. ``run.py``
next to this file sets ``FULL_REPO_CONFIGS_MODULE=repo_configs`` and puts this folder (never
the repository root) on ``PYTHONPATH``; the offline store is always Feast's local file store.

Environment (set by ``run.py``):

* ``UNIVERSAL_STORE``: ``redis`` (Feast's own ``RedisOnlineStore``), ``ours-feast`` or
  ``ours-compact`` (``feast_dragonfly.DragonflyOnlineStore`` with ``layout: feast`` /
  ``layout: compact``).
* ``UNIVERSAL_ADDRESS``: the server's connection string, ``127.0.0.1:PORT``.
* ``UNIVERSAL_ALIAS``: empty, or a key such as ``redis`` / ``sqlite``: the store is then
  registered under that key of ``AVAILABLE_ONLINE_STORES``, so tests marked
  ``@pytest.mark.universal_online_stores(only=["redis"])`` run against it too. Empty: Feast's
  documented way, ``FULL_REPO_CONFIGS`` alone (keyed by the config's ``type``).
* ``UNIVERSAL_EXTRA``: optional JSON object merged into the ``online_store`` config, e.g.
  ``{"enforce_view_ttl": true}``.

Everything is computed on first attribute access (PEP 562 ``__getattr__``), so importing this
module outside Feast's suite — our own pytest run, a linter — does nothing: it needs neither
the environment nor Feast's ``tests`` package until Feast asks for ``FULL_REPO_CONFIGS``.
"""

from __future__ import annotations

import json
import os
from typing import Any

STORES = ("redis", "ours-feast", "ours-compact")
OURS_TYPE = "feast_dragonfly.DragonflyOnlineStore"


def online_store_config(store: str, address: str, extra: str = "") -> dict[str, Any]:
    """The ``online_store`` section of ``feature_store.yaml`` for ``store`` at ``address``."""
    if store == "redis":
        config: dict[str, Any] = {"type": "redis", "connection_string": address}
    elif store in ("ours-feast", "ours-compact"):
        config = {
            "type": OURS_TYPE,
            "connection_string": address,
            "layout": store.removeprefix("ours-"),
        }
    else:
        raise ValueError(f"UNIVERSAL_STORE={store!r}: expected one of {', '.join(STORES)}")
    if extra:
        merged = json.loads(extra)
        if not isinstance(merged, dict):
            raise ValueError(f"UNIVERSAL_EXTRA must be a JSON object, not {extra!r}")
        config.update(merged)
    return config


def _from_environment() -> dict[str, Any]:
    """This module's public names, built from the environment and Feast's test helpers."""
    # Feast's own test package: importable only inside Feast's suite (FEAST_SRC/sdk/python).
    from tests.universal.feature_repos.integration_test_repo_config import (
        IntegrationTestRepoConfig,
    )
    from tests.universal.feature_repos.universal.data_sources.file import (
        FileDataSourceCreator,
    )

    online_store = online_store_config(
        os.environ.get("UNIVERSAL_STORE", "ours-feast"),
        os.environ["UNIVERSAL_ADDRESS"],
        os.environ.get("UNIVERSAL_EXTRA", ""),
    )
    names: dict[str, Any] = {
        "ONLINE_STORE": online_store,
        "FULL_REPO_CONFIGS": [
            IntegrationTestRepoConfig(
                provider="local",
                offline_store_creator=FileDataSourceCreator,
                online_store=online_store,
            )
        ],
    }
    alias = os.environ.get("UNIVERSAL_ALIAS", "")
    if alias:
        names["AVAILABLE_OFFLINE_STORES"] = [("local", FileDataSourceCreator)]
        names["AVAILABLE_ONLINE_STORES"] = {alias: (online_store, None)}
    return names


_LAZY = ("ONLINE_STORE", "FULL_REPO_CONFIGS", "AVAILABLE_OFFLINE_STORES", "AVAILABLE_ONLINE_STORES")


def __getattr__(name: str) -> Any:
    """Build the configs on first use; without an alias the ``AVAILABLE_*`` names stay absent."""
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    names = _from_environment()
    globals().update(names)
    if name not in names:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return names[name]
