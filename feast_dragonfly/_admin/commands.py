"""What ``feast-dragonfly migrate`` and ``stats`` do once their arguments are parsed.

The command line (``feast_dragonfly.cli``) only parses arguments and prints: these functions
open the servers, run the tool and hand back text (through ``out`` / ``err``, as it happens,
for a migration that runs for hours) and an exit code. Errors are raised as
``DragonflyStoreError`` / ``ValueError``, already scrubbed of passwords, for the command line
to print.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

from feast_dragonfly._admin import cleanup, stats_report
from feast_dragonfly._admin import migrate as migration
from feast_dragonfly._admin import report as migration_report
from feast_dragonfly._admin import stats as server_stats
from feast_dragonfly._admin.convert import Conversion
from feast_dragonfly._admin.registry_views import RepoViews, load_repo_views
from feast_dragonfly._admin.scan import open_deployment, same_server

#: Exit codes (besides 0, done).
EXIT_FAILED = 1
EXIT_USAGE = 2  # click's, for a bad flag; also: no feature_store.yaml where a repo is needed
EXIT_MISMATCH = 3
EXIT_INTERRUPTED = 130  # the shell's code for Ctrl-C

#: Prints one message (a line, or several joined by newlines).
Echo = Callable[[str], None]


def repo_views(repo: str | None) -> RepoViews | None:
    """The registry's views of the feature repo at ``repo`` (None: no repo given)."""
    if repo is None:
        return None
    return load_repo_views(os.path.abspath(repo))


def migrate(
    *,
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
    out: Echo,
    err: Echo,
    to_layout: str | None = None,
    remove_source: bool = False,
    merge_whole_keys_losing_views: bool = False,
) -> int:
    """Run a migration (then its verification); returns the exit code. ``out``: the report,
    ``err``: progress notes and warnings. ``to_layout``: convert into that layout;
    ``remove_source``: then remove the source keys the target holds (after a clean verify);
    ``merge_whole_keys_losing_views``: merge a multi-view hash whose views are newer on
    each side as a whole (the older side's newer views are lost) instead of stopping."""
    if remove_source and (to_layout is None or dry_run):
        raise ValueError("--remove-source goes with --to-layout, and not with --dry-run")
    views = repo_views(repo)
    conversion = None
    if to_layout is not None:
        if views is None:
            raise ValueError(
                f"--to-layout {to_layout} needs the feature repo (-C REPO): converting takes "
                "each feature view's features, types and ttl from its registry"
            )
        others = [p for p in projects if p != views.project]
        if others:
            raise ValueError(
                f"the feature repo describes project '{views.project}', not "
                f"{', '.join(repr(p) for p in others)}: a conversion needs the registry of "
                "each project it converts (run once per repo)"
            )
        conversion = Conversion(views, to_layout)
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
        same = same_server(src, dst)
        if same and conversion is None:
            raise migration_report.MigrationError(
                f"source and target are the same server and database ({dst.address}, "
                f"db {dst.db}); a migration needs two different ones (or --to-layout, which "
                "converts a project in place)"
            )
        default_checkpoint = migration.checkpoint_path(src, dst, projects, to_layout)
        options = migration.MigrateOptions(
            projects=projects,
            checkpoint=Path(checkpoint or default_checkpoint),
            resume=resume,
            dry_run=dry_run,
            verify_sample=verify_sample if verify_sample else (0 if verify else None),
            concurrency=concurrency,
            batch=batch,
            owners=owners,
            conversion=conversion,
            same_server=same,
            merge_whole_keys_losing_views=merge_whole_keys_losing_views,
        )
        run = migration.Migration(src, dst, options, err)
        where = f"on {src.address}" if same else f"from {src.address} to {dst.address}"
        into = f" into the {to_layout} layout" if to_layout else ""
        verb = "converting" if to_layout else "migrating"
        err(f"{'dry run: ' if dry_run else ''}{verb} {', '.join(projects)} {where}{into}")
        with src.errors():
            total = sum(int(e.client.dbsize()) for e in src.endpoints)
        try:
            report = run.run(total)
        except KeyboardInterrupt:
            err(
                "\ninterrupted: every batch the target confirmed is in the checkpoint; run "
                "the same command with --resume to continue"
            )
            return EXIT_INTERRUPTED
        out(migration_report.summary(report, dry_run, to_layout))
        empty = migration_report.empty_projects(report, projects)
        if len(empty) == len(projects):  # nothing found, nothing to resume: no file left behind
            options.checkpoint.unlink(missing_ok=True)
        for project in empty:
            out(
                f"project '{project}': no keys on the source {src.address} "
                "(is the name right? project names are case-sensitive)"
            )
        if options.verify_sample is not None:
            checked = run.verify()
            for line in migration_report.verify_summary(checked):
                out(line)
            assert checked.verify is not None
            if checked.verify.mismatch:
                if remove_source:
                    out("nothing was removed from the source: --verify found mismatches")
                return EXIT_MISMATCH
        if remove_source and not empty:
            try:
                removed = cleanup.remove_source(run)
            except KeyboardInterrupt:
                err("\ninterrupted while removing: run the same command again to finish")
                return EXIT_INTERRUPTED
            out(migration_report.removal_summary(removed, to_layout))
        return EXIT_FAILED if empty else 0
    finally:
        src.close()
        dst.close()


def empty_project_note(project: str, server: str, found: list[str], shown: int = 20) -> str:
    """A project asked for that has no keys on ``server``, and the ``found`` ones it has."""
    names = ", ".join(found[:shown]) + (f" and {len(found) - shown} more" if found[shown:] else "")
    there = f"projects with keys there: {names}" if found else "no Feast project has keys there"
    return f"project '{project}' has no keys on {server} (names are case-sensitive); {there}"


def stats(
    *,
    repo: str | None,
    connection_string: str | None,
    redis_type: str | None,
    sentinel_master: str | None,
    projects: tuple[str, ...],
    as_json: bool,
    sample: int,
    err: Echo | None = None,
) -> str:
    """The ``stats`` report (a table, or JSON) of the repo's server or ``connection_string``;
    one of the two must be given. ``err``: a note per project asked for without keys there,
    naming the projects the server does hold."""
    views = repo_views(repo)
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
        collected, limits = server_stats.collect(deployment, wanted, owners, sample_size=sample)
        empty = [p for p, s in collected.items() if not s.keys and not s.records]
        if empty and err is not None:
            with deployment.errors():
                found = server_stats.projects_on(deployment)
            for project in empty:
                err(empty_project_note(project, deployment.address, found))
    finally:
        deployment.close()
    report = stats_report.as_json(collected, deployment.address, registries, limits)
    return json.dumps(report, indent=2) if as_json else stats_report.as_table(report)
