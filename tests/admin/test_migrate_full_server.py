"""``feast-dragonfly migrate`` onto a target out of memory: a plain copy, and a conversion into
the compact layout.

The run stops with one error line naming the target, its limit and ``--resume``, never the
target's password, and no traceback; what was copied reads back whole; once the limit is
raised, ``--resume --verify`` completes with exactly the source's rows. How the servers
differ: ``tests/full_server_kit.py``.
"""

from __future__ import annotations

import pytest
from full_server_kit import (
    CARS,
    SECRET,
    TRIPS,
    capped,
    expected,
    limit_named,
    read,
    rows,
)
from migrate_kit import applied_repo, everything, run
from store_kit import repo_config

pytestmark = [pytest.mark.server, pytest.mark.valkey]

PROJECT = "shop"
#: Entities, each with both views: several times what the capped target takes.
N = 2_000


@pytest.fixture(scope="module")
def target_server(small):
    """What this module copies to (see ``conftest.target``): the capped server."""
    return small


def source_data(stores, tmp_path, connection_string: str) -> None:
    config = repo_config(tmp_path / "source", connection_string, project=PROJECT)
    for view in (CARS, TRIPS):
        stores().online_write_batch(config, view, rows(view, range(N)), None)


def on_target(stores, tmp_path, target, layout: str) -> list:
    config = repo_config(
        tmp_path / f"read-{layout}", target.connection_string, project=PROJECT, layout=layout
    )
    return [read(stores(), config, view, range(N)) for view in (CARS, TRIPS)]


@pytest.mark.parametrize("layout", ["feast", "compact"])
def test_a_full_target_stops_the_run_once_then_resume_completes_it(
    stores, tmp_path, server_connection_string, redis_client, target, target_client, layout
):
    source_data(stores, tmp_path, server_connection_string)
    args = ["migrate", "--source", server_connection_string, "--target", target.connection_string,
            "--project", PROJECT, "--checkpoint", str(tmp_path / "cp.json"), "--batch", "100"]  # fmt: skip
    if layout == "compact":
        repo = tmp_path / "repo"
        applied_repo(repo, server_connection_string, PROJECT, [CARS, TRIPS])
        args += ["-C", str(repo), "--to-layout", "compact"]

    with capped(target_client):
        stopped = run(*args)
        assert stopped.exit_code == 1, stopped.output
        assert SECRET not in stopped.output and "Traceback" not in stopped.output
        [error] = [line for line in stopped.output.splitlines() if line.startswith("error:")]
        assert limit_named(error, target, "the target"), error
        assert error.endswith("then run the same command with --resume to continue"), error
        copied = on_target(stores, tmp_path, target, layout)
        for view, found in zip((CARS, TRIPS), copied):
            assert [i for i, got in enumerate(found) if got not in (None, expected(view, i))] == []
        assert None in copied[0] + copied[1]

    resumed = run(*args, "--resume", "--verify")
    assert resumed.exit_code == 0, resumed.output
    assert on_target(stores, tmp_path, target, layout) == [
        [expected(view, i) for i in range(N)] for view in (CARS, TRIPS)
    ]
    if layout == "feast":
        assert everything(target_client) == everything(redis_client)  # byte for byte
