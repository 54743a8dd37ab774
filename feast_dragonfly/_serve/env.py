"""How ``feast-dragonfly serve`` hands its options to the feature server's worker processes.

uvicorn imports the app once per worker, so the CLI passes the repo and options through the
environment. This module holds the names and defaults both sides use, and imports nothing
heavy: the CLI's ``migrate`` and ``stats`` load it too, and should not wait for Feast.
"""

from __future__ import annotations

#: Where ``feature_server.app()`` finds the feature repo in each worker process.
REPO_ENV = "FEAST_DRAGONFLY_SERVE_REPO"
REGISTRY_TTL_ENV = "FEAST_DRAGONFLY_SERVE_REGISTRY_TTL"
MAX_ROWS_ENV = "FEAST_DRAGONFLY_SERVE_MAX_ENTITY_ROWS"
METRICS_ENV = "FEAST_DRAGONFLY_SERVE_METRICS"

#: Entity rows one request may ask for (``--max-entity-rows``): a bound on the work and memory
#: one request can cost.
DEFAULT_MAX_ENTITY_ROWS = 10_000


def feast_registry_ttl() -> int:
    """``feast serve``'s default registry refresh interval, in seconds (read from Feast when
    asked, so that importing this costs nothing)."""
    from feast.constants import DEFAULT_FEATURE_SERVER_REGISTRY_TTL

    return int(DEFAULT_FEATURE_SERVER_REGISTRY_TTL)
