"""The ``feast-dragonfly`` command line (installed as a console script).

``feast-dragonfly serve`` runs :mod:`feast_dragonfly.feature_server` in a feature repo, with
``feast serve``'s flags where they apply (``-c`` is the TLS certificate there, so the repo
directory is ``-C/--chdir``). ``migrate`` (:mod:`feast_dragonfly.migrate`) copies projects
between servers; ``stats`` (:mod:`feast_dragonfly.stats`) describes what a server holds.
Errors are printed without a traceback and never with a password; exit codes: 0 done,
1 failed, 2 usage error, 3 ``--verify`` found mismatches.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from feast_dragonfly import _serve_env

if TYPE_CHECKING:
    from feast_dragonfly._registry_views import RepoViews

F = TypeVar("F", bound=Callable[..., Any])


def _repo_option(help: str, **kwargs: object) -> Callable[[F], F]:
    """``-C/--chdir REPO``, the feature repo, as every subcommand spells it."""
    return click.option(
        "--chdir",
        "-C",
        "repo",
        type=click.Path(exists=True, file_okay=False),
        help=help,
        **kwargs,  # type: ignore[arg-type]
    )


@click.group()
def cli() -> None:
    """feast-dragonfly: Feast's online store for DragonflyDB and Redis, and its tools."""


@cli.command()
@_repo_option(
    "The feature repo (the directory holding feature_store.yaml).", default=".", show_default=True
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
    default=_serve_env.feast_registry_ttl,
    show_default="feast serve's default",
    help="Seconds between registry refreshes (0: never).",
)
@click.option(
    "--max-entity-rows",
    type=click.IntRange(min=1),
    default=_serve_env.DEFAULT_MAX_ENTITY_ROWS,
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

    from feast_dragonfly import feature_server

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
        os.environ[_serve_env.METRICS_ENV] = "1"
    os.environ[_serve_env.REPO_ENV] = repo
    os.environ[_serve_env.REGISTRY_TTL_ENV] = str(registry_ttl_sec)
    os.environ[_serve_env.MAX_ROWS_ENV] = str(max_entity_rows)
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

_REDIS_TYPES = click.Choice(["redis", "redis_cluster", "redis_sentinel"])
EXIT_FAILED = 1
EXIT_MISMATCH = 3


@contextmanager
def _clear_errors() -> Iterator[None]:
    """Our errors (already scrubbed of passwords) as one line and exit code 1."""
    from feast_dragonfly.errors import DragonflyStoreError

    try:
        yield
    except (DragonflyStoreError, ValueError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_FAILED)


def _repo_views(repo: str | None) -> RepoViews | None:
    if repo is None:
        return None
    from feast_dragonfly._registry_views import load_repo_views

    return load_repo_views(os.path.abspath(repo))


@cli.command()
@click.option("--source", required=True, help="Source connection string (Feast's or a URL).")
@click.option("--target", required=True, help="Target connection string (Feast's or a URL).")
@click.option(
    "--project", "projects", multiple=True, required=True, help="Project to copy (repeatable)."
)
@click.option("--source-type", type=_REDIS_TYPES, default="redis", show_default=True)
@click.option("--target-type", type=_REDIS_TYPES, default="redis", show_default=True)
@click.option("--source-sentinel-master", default="mymaster", show_default=True)
@click.option("--target-sentinel-master", default="mymaster", show_default=True)
@_repo_option(
    "Feature repo whose registry says which fields belong to which view (needed to "
    "merge per view when one hash holds several views)."
)
@click.option("--resume", is_flag=True, help="Continue from the checkpoint of an earlier run.")
@click.option(
    "--checkpoint",
    type=click.Path(dir_okay=False),
    help="Checkpoint file (default: .feast-dragonfly-migrate-<id>.json here).",
)
@click.option("--verify", is_flag=True, help="Afterwards, compare every key with the source.")
@click.option(
    "--verify-sample",
    type=click.IntRange(min=1),
    help="Afterwards, compare N randomly chosen keys with the source.",
)
@click.option("--dry-run", is_flag=True, help="Count keys and bytes; write nothing.")
@click.option(
    "--concurrency", type=click.IntRange(min=1), default=8, show_default=True,
    help="Batches in flight, each on its own connections.",
)  # fmt: skip
@click.option(
    "--batch", type=click.IntRange(min=1), default=500, show_default=True,
    help="Keys per SCAN page (one batch, one checkpoint step).",
)  # fmt: skip
def migrate(
    source: str,
    target: str,
    projects: tuple[str, ...],
    source_type: str,
    target_type: str,
    source_sentinel_master: str,
    target_sentinel_master: str,
    repo: str | None,
    resume: bool,
    checkpoint: str | None,
    verify: bool,
    verify_sample: int | None,
    dry_run: bool,
    concurrency: int,
    batch: int,
) -> None:
    """Copy Feast projects' entity hashes from one server to another, merging per feature
    view by event time (the target's newer data is kept), resumably. See docs/migration.md."""
    from feast_dragonfly import migrate as migration
    from feast_dragonfly._migrate_scan import open_deployment, same_server

    if verify and verify_sample:
        raise click.UsageError("--verify and --verify-sample exclude each other")
    with _clear_errors():
        views = _repo_views(repo)
        owners = views.field_owners() if views is not None else None
        src = open_deployment(
            source, source_type, connections=concurrency, sentinel_master=source_sentinel_master
        )
        try:
            dst = open_deployment(
                target, target_type, connections=concurrency, sentinel_master=target_sentinel_master
            )
        except BaseException:
            src.close()
            raise
        try:
            if same_server(src, dst):
                raise migration.MigrationError(
                    f"source and target are the same server and database ({dst.address}, "
                    f"db {dst.db}); a migration needs two different ones"
                )
            options = migration.MigrateOptions(
                projects=projects,
                checkpoint=Path(checkpoint or migration.checkpoint_path(src, dst, projects)),
                resume=resume,
                dry_run=dry_run,
                verify_sample=verify_sample if verify_sample else (0 if verify else None),
                concurrency=concurrency,
                batch=batch,
                owners=owners,
            )
            run = migration.Migration(src, dst, options, lambda text: click.echo(text, err=True))
            click.echo(
                f"{'dry run: ' if dry_run else ''}migrating {', '.join(projects)} from "
                f"{src.address} to {dst.address}",
                err=True,
            )
            with src.errors():
                total = sum(int(e.client.dbsize()) for e in src.endpoints)
            try:
                report = run.run(total)
            except KeyboardInterrupt:
                click.echo(
                    "\ninterrupted: every batch the target confirmed is in the checkpoint; run "
                    "the same command with --resume to continue",
                    err=True,
                )
                sys.exit(130)
            click.echo(migration.summary(report, dry_run))
            for project in migration.empty_projects(report, projects):
                click.echo(
                    f"project '{project}': no keys on the source {src.address} "
                    "(is the name right? project names are case-sensitive)"
                )
            if options.verify_sample is not None:
                checked = run.verify()
                assert checked.verify is not None
                v = checked.verify
                click.echo(
                    f"verify: {checked.verified_keys:,} keys: {v.match:,} views identical, "
                    f"{v.kept:,} kept by the target as newer, {v.mismatch:,} mismatched"
                )
                for key in checked.mismatched:
                    click.echo(f"  mismatch: {key}")
                if v.mismatch:
                    sys.exit(EXIT_MISMATCH)
            if migration.empty_projects(report, projects):
                sys.exit(EXIT_FAILED)
        finally:
            src.close()
            dst.close()


@cli.command()
@_repo_option("Feature repo: its online store is the server, its registry names the views.")
@click.option("--connection-string", help="The server (instead of, or overriding, the repo's).")
@click.option("--redis-type", type=_REDIS_TYPES, help="With --connection-string (default redis).")
@click.option("--sentinel-master", default=None, help="With redis_sentinel (default mymaster).")
@click.option("--project", "projects", multiple=True, help="Only this project (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option(
    "--sample", type=click.IntRange(min=1), default=1000, show_default=True,
    help="Keys per project whose MEMORY USAGE is measured.",
)  # fmt: skip
def stats(
    repo: str | None,
    connection_string: str | None,
    redis_type: str | None,
    sentinel_master: str | None,
    projects: tuple[str, ...],
    as_json: bool,
    sample: int,
) -> None:
    """Entity keys, fields, memory and TTLs per Feast project and feature view, and views on
    the server that the registry no longer has."""
    import json

    from feast_dragonfly import stats as server_stats
    from feast_dragonfly._migrate_scan import open_deployment

    if repo is None and connection_string is None:
        raise click.UsageError("give the feature repo (-C REPO) or --connection-string")
    with _clear_errors():
        views = _repo_views(repo)
        wanted: list[str] | None = list(projects) or None
        owners = None
        registries: dict[str, list[str]] = {}  # the registry describes the repo's project
        server, kind, master = connection_string, redis_type or "redis", "mymaster"
        if views is not None:
            wanted = wanted or [views.project]
            owners = views.field_owners()
            registries[views.project] = list(views.views)
            if connection_string is None:
                server, kind = views.connection_string, redis_type or views.redis_type
                master = views.sentinel_master
        assert server is not None
        deployment = open_deployment(
            server, kind, connections=1, sentinel_master=sentinel_master or master
        )
        try:
            collected = server_stats.collect(deployment, wanted, owners, sample_size=sample)
        finally:
            deployment.close()
        report = server_stats.as_json(collected, deployment.address, registries)
        click.echo(json.dumps(report, indent=2) if as_json else server_stats.as_table(report))


if __name__ == "__main__":  # pragma: no cover
    cli()
