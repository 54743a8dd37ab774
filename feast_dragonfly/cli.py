"""The ``feast-dragonfly`` command line (installed as a console script).

``feast-dragonfly serve`` runs :mod:`feast_dragonfly._serve.app` in a feature repo, with
``feast serve``'s flags where they apply (``-c`` is the TLS certificate there, so the repo
directory is ``-C/--chdir``). ``migrate`` (:mod:`feast_dragonfly._admin.migrate`) copies projects
between servers; ``stats`` (:mod:`feast_dragonfly._admin.stats`) describes what a server holds.
Both run through :mod:`feast_dragonfly._admin.commands`: this module only parses arguments and
prints. Errors are printed without a traceback and never with a password; exit codes: 0 done,
1 failed, 2 usage error, 3 ``--verify`` found mismatches, 130 interrupted.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import click

from feast_dragonfly._serve import env

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
    default=env.feast_registry_ttl,
    show_default="feast serve's default",
    help="Seconds between registry refreshes (0: never).",
)
@click.option(
    "--max-entity-rows",
    type=click.IntRange(min=1),
    default=env.DEFAULT_MAX_ENTITY_ROWS,
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
def serve(**options: Any) -> None:
    """Serve online features over HTTP, like `feast serve`, on feast-dragonfly's fast path."""
    from feast_dragonfly._serve import run

    if bool(options["tls_key_path"]) != bool(options["tls_cert_path"]):
        raise click.UsageError("TLS needs both --key and --cert")
    # The options are run.ServeOptions' fields, one per flag.
    run.serve(run.ServeOptions(**{**options, "repo": os.path.abspath(options["repo"])}))


_REDIS_TYPES = click.Choice(["redis", "redis_cluster", "redis_sentinel"])


@contextmanager
def _clear_errors() -> Iterator[None]:
    """Our errors (already scrubbed of passwords) as one line and exit code 1."""
    from feast_dragonfly._admin.commands import EXIT_FAILED
    from feast_dragonfly.errors import DragonflyStoreError

    try:
        yield
    except (DragonflyStoreError, ValueError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_FAILED)


def _echo_err(text: str) -> None:
    click.echo(text, err=True)


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
@click.option(
    "--to-layout",
    type=click.Choice(["feast", "compact"]),
    default=None,
    help="Convert into this layout (needs -C REPO); the source and target may then be the "
    "same server. Default: copy every key in the layout it has.",
)
@click.option(
    "--remove-source",
    is_flag=True,
    help="With --to-layout, afterwards remove each source key the target holds (once every "
    "reader and writer uses the new layout; see docs/migration.md).",
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
def migrate(**options: Any) -> None:
    """Copy Feast projects from one server to another, or convert them between layouts,
    merging per feature view by event time (the target's newer data is kept), resumably. See
    docs/migration.md."""
    from feast_dragonfly._admin import commands

    if options["verify"] and options["verify_sample"]:
        raise click.UsageError("--verify and --verify-sample exclude each other")
    if options["remove_source"] and (not options["to_layout"] or options["dry_run"]):
        raise click.UsageError("--remove-source goes with --to-layout, and not with --dry-run")
    with _clear_errors():
        # The options are commands.migrate's keyword arguments, one per flag.
        code = commands.migrate(**options, out=click.echo, err=_echo_err)
    if code:
        sys.exit(code)


@cli.command()
@_repo_option("Feature repo: its online store is the server, its registry names the views.")
@click.option("--connection-string", help="The server (instead of, or overriding, the repo's).")
@click.option("--redis-type", type=_REDIS_TYPES, help="With --connection-string (default redis).")
@click.option("--sentinel-master", default=None, help="With redis_sentinel (default mymaster).")
@click.option("--project", "projects", multiple=True, help="Only this project (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option(
    "--sample", type=click.IntRange(min=1), default=1000, show_default=True,
    help="Hashes (and as many records) per project whose MEMORY USAGE is measured.",
)  # fmt: skip
def stats(**options: Any) -> None:
    """Keys, feature values, memory, bytes per value and TTLs per Feast project, feature view
    and layout; views on the server that the registry no longer has; on Dragonfly, hashes too
    big to be kept as listpacks."""
    from feast_dragonfly._admin import commands

    if options["repo"] is None and options["connection_string"] is None:
        raise click.UsageError("give the feature repo (-C REPO) or --connection-string")
    with _clear_errors():
        # The options are commands.stats's keyword arguments, one per flag.
        report = commands.stats(**options)
    click.echo(report)


if __name__ == "__main__":  # pragma: no cover
    cli()
