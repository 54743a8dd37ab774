"""Starting ``feast-dragonfly serve``: load the repo once, then hand the app to uvicorn.

The repo is loaded in the parent process first so that a broken repo fails at once, with
Feast's own message, instead of in every worker; the workers find the repo and the options
through the environment (``env``), since uvicorn starts them by import string.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass
from typing import Any

from feast_dragonfly._serve import env

#: How long uvicorn waits for a worker to answer a health ping: the default 5 s is shorter
#: than a spawned worker's imports of Feast on a busy machine, and then every replacement is
#: killed too and none ever serves.
WORKER_HEALTHCHECK_SECONDS = 60


@dataclass(frozen=True)
class ServeOptions:
    """``feast-dragonfly serve``'s flags, parsed (one field per flag, named as the flag)."""

    repo: str
    host: str
    port: int
    workers: int
    no_access_log: bool
    keep_alive_timeout: int
    registry_ttl_sec: int
    max_entity_rows: int
    max_in_flight: int
    tls_key_path: str
    tls_cert_path: str
    metrics: bool
    metrics_port: int


def serve(options: ServeOptions, log_config: dict[str, Any] | None = None) -> None:
    """Run the feature server until it is stopped (blocks). ``log_config``: the command
    line's logging setup, for uvicorn to apply in each worker (None: uvicorn's own)."""
    import uvicorn
    from feast import FeatureStore

    from feast_dragonfly._serve import app

    store = FeatureStore(repo_path=options.repo)  # fails here, clearly, on a broken repo
    app.check_servable(store)
    if options.metrics:
        from feast import metrics as feast_metrics

        feast_metrics.start_metrics_server(
            store, port=options.metrics_port, metrics_config=feast_metrics.build_metrics_flags()
        )
        os.environ[env.METRICS_ENV] = "1"
    os.environ[env.REPO_ENV] = options.repo
    os.environ[env.REGISTRY_TTL_ENV] = str(options.registry_ttl_sec)
    os.environ[env.MAX_ROWS_ENV] = str(options.max_entity_rows)
    os.environ[env.MAX_IN_FLIGHT_ENV] = str(options.max_in_flight)
    uvicorn.run(
        "feast_dragonfly._serve.app:app",
        factory=True,
        host=options.host,
        port=options.port,
        workers=options.workers,
        access_log=not options.no_access_log,
        timeout_keep_alive=options.keep_alive_timeout,
        loop="uvloop",
        http="httptools",
        ws="none",  # no WebSocket endpoint (and no websockets import: older ones warn on it)
        ssl_keyfile=options.tls_key_path or None,
        ssl_certfile=options.tls_cert_path or None,
        log_config=log_config or uvicorn.config.LOGGING_CONFIG,
        log_level=None if log_config else "info",
        **_worker_healthcheck(uvicorn),
    )


def _worker_healthcheck(uvicorn: Any) -> dict[str, Any]:
    """uvicorn's worker health-check timeout, on a uvicorn that has one (0.37 on; the older
    ones Feast 0.64 and 0.65 pin ping no worker)."""
    if "timeout_worker_healthcheck" in inspect.signature(uvicorn.Config).parameters:
        return {"timeout_worker_healthcheck": WORKER_HEALTHCHECK_SECONDS}
    return {}
