"""The ``feast-dragonfly`` command line (installed as a console script).

``feast-dragonfly serve`` runs :mod:`feast_dragonfly._serve.app` in a feature repo, with
``feast serve``'s flags where they apply (``-c`` is the TLS certificate there, so the repo
directory is ``-C/--chdir``). ``migrate`` (:mod:`feast_dragonfly._admin.migrate`) copies projects
between servers; ``stats`` (:mod:`feast_dragonfly._admin.stats`) describes what a server holds.
Both run through :mod:`feast_dragonfly._admin.commands`: this module only parses arguments and
prints. Errors are printed as one line, without a traceback and never with a password; exit
codes: 0 done, 1 failed, 2 usage error (a bad flag, or no ``feature_store.yaml`` where a repo is
needed), 3 ``--verify`` found mismatches, 130 interrupted. Every log line of every command —
ours, Feast's, uvicorn's, in ``serve``'s worker processes too — has one format
(:data:`LOG_FORMAT`), at the level of the global ``--log-level``.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn, TypeVar

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


#: The one format of the command line's log lines (Feast's and uvicorn's included).
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
#: Where Feast looks for feature_store.yaml instead of the repo directory, when set.
FEAST_YAML_ENV = "FEAST_FS_YAML_FILE_PATH"


class _Stderr(logging.StreamHandler):
    """Writes to ``sys.stderr`` as it is when a line is logged (click's test runner swaps it
    for each command it runs, and closes the one it swapped in)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def _configure_logging(level: str) -> None:
    """Every logger's lines through one stderr handler, in :data:`LOG_FORMAT`, at ``level``
    (a handler this installed earlier, in this process, is replaced)."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _Stderr)]:
        root.removeHandler(handler)
    handler = _Stderr()
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root.addHandler(handler)
    root.setLevel(level)


def log_config(level: str) -> dict[str, Any]:
    """The same setup as :func:`_configure_logging`, as uvicorn takes it (a ``dictConfig``
    dict, applied again in every worker process it spawns): its own loggers lose their
    handlers and format and go through the root logger's."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"line": {"format": LOG_FORMAT}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "line",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"level": level, "handlers": ["stderr"]},
        "loggers": {
            name: {"level": level, "handlers": [], "propagate": True}
            for name in ("uvicorn", "uvicorn.error", "uvicorn.access")
        },
    }


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    """``--version``: ours from the installed package's metadata, and what it runs with."""
    if not value or ctx.resilient_parsing:
        return
    from importlib import metadata

    click.echo(
        f"feast-dragonfly {metadata.version('feast-dragonfly')} "
        f"(feast {metadata.version('feast')}, redis-py {metadata.version('redis')}, "
        f"Python {sys.version.split()[0]})"
    )
    ctx.exit()


def _fail(code: int, message: str) -> NoReturn:
    """One line on stderr, then exit with ``code``."""
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def _feature_repo(repo: str, otherwise: str = "") -> str:
    """``repo`` as an absolute path, once it is known to hold Feast's config (Feast's own
    error for a missing one is a traceback): a usage error, one line, when it does not.
    ``otherwise``: how else the command can be run, for the message."""
    from feast_dragonfly._admin.commands import EXIT_USAGE

    path = os.path.abspath(repo)
    named = os.environ.get(FEAST_YAML_ENV)
    if named and not os.path.isfile(named):
        _fail(EXIT_USAGE, f"no feature store config at {named} (named by ${FEAST_YAML_ENV})")
    if not named and not os.path.isfile(os.path.join(path, "feature_store.yaml")):
        _fail(
            EXIT_USAGE,
            f"no feature_store.yaml in {path}: run it in a feature repo, or name one with "
            f"-C REPO{otherwise}",
        )
    return path


@click.group()
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_print_version,
    help="Print the version (and Feast's, redis-py's, Python's) and exit.",
)
@click.option(
    "--log-level",
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
    envvar="FEAST_DRAGONFLY_LOG_LEVEL",
    show_envvar=True,
    help="Log lines at this level and above, of every command (serve's workers too). "
    "Default: info for serve (its start-up and access lines), warning for the others.",
)
def cli(log_level: str | None) -> None:
    """feast-dragonfly: Feast's online store for DragonflyDB and Redis, and its tools."""
    _configure_logging(_log_level("warning"))


def _log_level(default: str) -> str:
    """The global ``--log-level`` (``default`` when not given), as ``logging`` names it."""
    given = click.get_current_context().find_root().params.get("log_level")
    return str(given or default).upper()


@cli.command()
@_repo_option(
    "The feature repo (the directory holding feature_store.yaml).", default=".", show_default=True
)
@click.option("--host", "-h", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", "-p", type=int, default=6566, show_default=True, help="Port to bind.")
@click.option(
    "--workers",
    "-w",
    type=int,
    default=1,
    show_default=True,
    callback=lambda _ctx, _param, value: _workers(value),
    help="Worker processes sharing the port; -1: twice the CPUs plus one, as feast serve's.",
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
@click.option(
    "--max-in-flight",
    type=click.IntRange(min=0),
    default=env.DEFAULT_MAX_IN_FLIGHT,
    envvar=env.MAX_IN_FLIGHT_ENV,
    show_default=True,
    show_envvar=True,
    help="Requests one worker works on at once; more are answered 503 with Retry-After "
    "at once (0: no bound).",
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
    if bool(options["tls_key_path"]) != bool(options["tls_cert_path"]):
        raise click.UsageError("TLS needs both --key and --cert")
    repo = _feature_repo(options["repo"])
    from uvicorn import config as uvicorn_config
    from uvicorn.main import STARTUP_FAILURE  # every uvicorn has it here (0.34 not in config)

    from feast_dragonfly._admin.commands import EXIT_FAILED
    from feast_dragonfly._serve import run

    level = _log_level("info")
    _configure_logging(level)
    with _clear_errors():
        try:
            # The options are run.ServeOptions' fields, one per flag.
            run.serve(run.ServeOptions(**{**options, "repo": repo}), log_config=log_config(level))
        except SystemExit as exc:
            if isinstance(exc.code, str):  # a refusal with its reason (a repo with auth)
                _fail(EXIT_FAILED, exc.code)
            # uvicorn's 3 is --verify's here; an older uvicorn (0.34, which Feast 0.64 and
            # 0.65 pin) exits 1 when it cannot start.
            older = not hasattr(uvicorn_config, "STARTUP_FAILURE")
            if exc.code != STARTUP_FAILURE and not (older and exc.code == 1):
                raise
            _fail(
                EXIT_FAILED,
                f"the feature server did not start on {options['host']}:{options['port']} "
                "(uvicorn logged why, above)",
            )


def _workers(count: int) -> int:
    """``-w``: a count, or -1 for as many as ``feast serve -w -1`` starts."""
    if count == -1:
        return 2 * (os.cpu_count() or 1) + 1
    if count < 1:
        raise click.BadParameter(
            f"{count} workers: give 1 or more, or -1 for twice the CPUs plus one"
        )
    return count


_REDIS_TYPES = click.Choice(["redis", "redis_cluster", "redis_sentinel"])


def _config_problem(exc: BaseException) -> str | None:
    """A feature_store.yaml that Feast refused, as one line naming what is wrong but none of
    the values it holds (a password can be among them); None for any other error."""
    import yaml

    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        return (
            f"feature_store.yaml is not valid YAML: {exc.problem} "
            f"(line {mark.line + 1}, column {mark.column + 1})"
        )
    # Feast's FeastConfigError wraps pydantic's ValidationError, whose text shows the inputs.
    errors = getattr(getattr(exc, "_error_message", None), "errors", None)
    if type(exc).__name__ != "FeastConfigError" or not callable(errors):
        return None
    problems = "; ".join(
        f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"
        for error in errors(include_url=False, include_input=False)
    )
    return f"{getattr(exc, '_config_path', 'feature_store.yaml')}: {problems}"


@contextmanager
def _clear_errors() -> Iterator[None]:
    """Our errors (already scrubbed of passwords) and a feature_store.yaml Feast refused, as
    one line and exit code 1."""
    from feast_dragonfly._admin.commands import EXIT_FAILED
    from feast_dragonfly.errors import DragonflyStoreError

    try:
        yield
    except (DragonflyStoreError, ValueError) as exc:
        _fail(EXIT_FAILED, str(exc))
    except Exception as exc:
        problem = _config_problem(exc)
        if problem is None:
            raise
        _fail(EXIT_FAILED, problem)


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
@click.option(
    "--merge-whole-keys-losing-views",
    is_flag=True,
    help="Without -C, a hash holding several views, some newer on the target and some on the "
    "source, stops the run (only the registry can say whose fields are whose). With this, "
    "such a hash is merged as a whole instead: its newest event time decides for every view "
    "both sides hold, and the other side's newer views are lost.",
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
    if options["repo"] is not None:
        options["repo"] = _feature_repo(options["repo"])
    with _clear_errors():
        # The options are commands.migrate's keyword arguments, one per flag.
        code = commands.migrate(**options, out=click.echo, err=_echo_err)
    if code:
        sys.exit(code)


@cli.command()
@_repo_option(
    "Feature repo: its online store is the server, its registry names the views.",
    show_default=". (unless --connection-string is given)",
)
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
        options["repo"] = "."  # as serve's default
    if options["repo"] is not None:
        options["repo"] = _feature_repo(options["repo"], " (or give --connection-string)")
    with _clear_errors():
        # The options are commands.stats's keyword arguments, one per flag.
        report = commands.stats(**options, err=_echo_err)
    click.echo(report)


if __name__ == "__main__":  # pragma: no cover
    cli()
