"""The ``feast-dragonfly`` command line (installed as a console script).

``feast-dragonfly serve`` runs :mod:`feast_dragonfly.feature_server` in a feature repo, with
``feast serve``'s flags where they apply (``-c`` is the TLS certificate there, so the repo
directory is ``-C/--chdir``).
"""

from __future__ import annotations

import logging
import os

import click
from feast.constants import DEFAULT_FEATURE_SERVER_REGISTRY_TTL

from feast_dragonfly import feature_server


@click.group()
def cli() -> None:
    """feast-dragonfly: Feast's online store for DragonflyDB and Redis, and its tools."""


@cli.command()
@click.option(
    "--chdir",
    "-C",
    "repo",
    type=click.Path(exists=True, file_okay=False),
    default=".",
    show_default=True,
    help="The feature repo (the directory holding feature_store.yaml).",
)
@click.option("--host", "-h", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", "-p", type=int, default=6566, show_default=True, help="Port to bind.")
@click.option(
    "--workers",
    "-w",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Worker processes sharing the port.",
)
@click.option("--no-access-log", is_flag=True, help="Do not log every request.")
@click.option(
    "--keep-alive-timeout",
    type=int,
    default=5,
    show_default=True,
    help="Seconds an idle keep-alive connection stays open.",
)
@click.option(
    "--registry_ttl_sec",
    "-r",
    type=int,
    default=DEFAULT_FEATURE_SERVER_REGISTRY_TTL,
    show_default=True,
    help="Seconds between registry refreshes (0: never).",
)
@click.option(
    "--max-entity-rows",
    type=click.IntRange(min=1),
    default=feature_server.DEFAULT_MAX_ENTITY_ROWS,
    show_default=True,
    help="Entity rows one request may ask for (more: HTTP 413).",
)
@click.option("--key", "-k", "tls_key_path", default="", help="TLS private key (with --cert).")
@click.option("--cert", "-c", "tls_cert_path", default="", help="TLS certificate (with --key).")
@click.option(
    "--metrics",
    "-m",
    is_flag=True,
    help="Export Feast's Prometheus metrics, as `feast serve --metrics` does.",
)
@click.option(
    "--metrics-port",
    type=int,
    default=8000,
    show_default=True,
    help="Port of the Prometheus endpoint (feast serve: always 8000).",
)
def serve(
    repo: str,
    host: str,
    port: int,
    workers: int,
    no_access_log: bool,
    keep_alive_timeout: int,
    registry_ttl_sec: int,
    max_entity_rows: int,
    tls_key_path: str,
    tls_cert_path: str,
    metrics: bool,
    metrics_port: int,
) -> None:
    """Serve online features over HTTP, like `feast serve`, on feast-dragonfly's fast path."""
    import uvicorn
    from feast import FeatureStore

    if bool(tls_key_path) != bool(tls_cert_path):
        raise click.UsageError("TLS needs both --key and --cert")
    repo = os.path.abspath(repo)
    store = FeatureStore(repo_path=repo)  # fails here, clearly, on a broken repo
    feature_server.check_servable(store)
    if metrics:
        from feast import metrics as feast_metrics

        feast_metrics.start_metrics_server(
            store, port=metrics_port, metrics_config=feast_metrics.build_metrics_flags()
        )
        os.environ[feature_server.METRICS_ENV] = "1"
    os.environ[feature_server.REPO_ENV] = repo
    os.environ[feature_server.REGISTRY_TTL_ENV] = str(registry_ttl_sec)
    os.environ[feature_server.MAX_ROWS_ENV] = str(max_entity_rows)
    logging.basicConfig(level=logging.INFO)
    uvicorn.run(
        "feast_dragonfly.feature_server:app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        access_log=not no_access_log,
        timeout_keep_alive=keep_alive_timeout,
        loop="uvloop",
        http="httptools",
        ssl_keyfile=tls_key_path or None,
        ssl_certfile=tls_cert_path or None,
        log_level="info",
        # uvicorn kills a worker that does not answer its supervisor's ping within this many
        # seconds — the default 5 is shorter than a spawned worker's imports of Feast on a
        # busy machine, and then every replacement is killed too and none ever serves.
        timeout_worker_healthcheck=WORKER_HEALTHCHECK_SECONDS,
    )


#: How long uvicorn waits for a worker to answer a health ping (see ``serve``).
WORKER_HEALTHCHECK_SECONDS = 60


if __name__ == "__main__":  # pragma: no cover
    cli()
