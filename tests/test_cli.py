"""The ``feast-dragonfly`` command line's own contract, across its subcommands: ``--version``,
one clear line instead of a traceback for a missing or broken feature repo, the documented
exit codes, ``-w -1``, the notes for a project without keys, and one log format under a global
``--log-level``. What each subcommand does is tested beside it (admin/, serve/)."""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import pytest
from migrate_kit import applied_repo, at, run, write
from store_kit import feature_view

import feast_dragonfly
from feast_dragonfly import cli as cli_module

VIEW = feature_view("fv", ("a", "b"))
PASSWORD = "s3cret-in-yaml"
#: A log line of the command line: time, level, logger, message.
LOG_LINE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.]+: "
)


@pytest.fixture(autouse=True)
def _logging_restored() -> Iterator[None]:
    """The command configures the root logger of the process it runs in: put it back."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def cli_process(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """``feast-dragonfly <args>`` as users run it: its own process, stderr and stdout apart."""
    return subprocess.run(
        [sys.executable, "-m", "feast_dragonfly.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={k: v for k, v in os.environ.items() if k != cli_module.FEAST_YAML_ENV},
    )


# --------------------------------------------------------------------------- version


def test_version_is_the_installed_packages() -> None:
    installed = metadata.version("feast-dragonfly")
    result = run("--version")
    assert result.exit_code == 0
    assert result.output.startswith(f"feast-dragonfly {installed} (feast ")
    assert feast_dragonfly.__version__ == installed


# --------------------------------------------------------------------------- missing repo


@pytest.mark.parametrize(
    "args",
    [
        ["serve"],
        ["serve", "-C", "."],
        ["stats"],
        ["stats", "-C", "."],
        ["migrate", "--source", "a:1", "--target", "b:1", "--project", "p", "-C", "."],
    ],
    ids=["serve", "serve-C", "stats", "stats-C", "migrate-C"],
)
def test_a_folder_without_feature_store_yaml_is_one_line_and_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(cli_module.FEAST_YAML_ENV, raising=False)
    result = run(*args)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"error: no feature_store.yaml in {tmp_path}: run it in a feature repo, or name one "
        "with -C REPO" + (" (or give --connection-string)" if args[0] == "stats" else "")
    ]


def test_the_installed_command_prints_no_traceback_for_it(tmp_path: Path) -> None:
    for args in (["serve"], ["stats"]):
        done = cli_process(*args, cwd=tmp_path)
        assert done.returncode == 2, done.stderr
        assert len(done.stderr.splitlines()) == 1, done.stderr
        assert done.stderr.startswith("error: no feature_store.yaml in ")


def test_feasts_yaml_path_variable_is_followed(tmp_path, monkeypatch) -> None:
    """Feast reads $FEAST_FS_YAML_FILE_PATH instead of REPO/feature_store.yaml: so do we."""
    monkeypatch.setenv(cli_module.FEAST_YAML_ENV, str(tmp_path / "elsewhere.yaml"))
    result = run("serve", "-C", str(tmp_path))
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        f"error: no feature store config at {tmp_path / 'elsewhere.yaml'} "
        f"(named by ${cli_module.FEAST_YAML_ENV})"
    )


BROKEN = {
    "not-yaml": ("project: [x\n", "feature_store.yaml is not valid YAML: "),
    "refused-by-feast": (
        "project: x\nregistry: r.db\nprovider: local\nonline_store:\n  type: redis\n"
        f"  connection_string: 3\n  password: {PASSWORD}\n",
        "feature_store.yaml: connection_string: Input should be a valid string; "
        "password: Extra inputs are not permitted",
    ),
}


@pytest.mark.parametrize("command", ["serve", "stats"])
@pytest.mark.parametrize("broken", list(BROKEN))
def test_a_broken_feature_store_yaml_is_one_line_without_its_values(
    tmp_path, monkeypatch, command, broken
) -> None:
    text, expected = BROKEN[broken]
    (tmp_path / "feature_store.yaml").write_text(text)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(cli_module.FEAST_YAML_ENV, raising=False)
    result = run(command)
    assert result.exit_code == 1
    [line] = result.stderr.splitlines()
    assert line.startswith("error: ") and expected in line
    assert PASSWORD not in result.output


# --------------------------------------------------------------------------- serve


def test_workers_minus_one_is_feast_serves_auto() -> None:
    """``feast serve -w -1``: twice the CPUs plus one (feast/cli/serve.py)."""
    assert cli_module._workers(-1) == 2 * (os.cpu_count() or 1) + 1
    assert cli_module._workers(3) == 3


@pytest.mark.parametrize("workers", ["0", "-2"])
def test_other_worker_counts_below_one_are_a_usage_error(tmp_path, workers) -> None:
    result = run("serve", "-C", str(tmp_path), "-w", workers)
    assert result.exit_code == 2
    assert f"{workers} workers: give 1 or more, or -1 for twice the CPUs plus one" in result.output


def test_workers_minus_one_passes_the_flag_check(tmp_path, monkeypatch) -> None:
    """-1 gets past option parsing (the next check, the missing repo, is what stops it)."""
    monkeypatch.delenv(cli_module.FEAST_YAML_ENV, raising=False)
    result = run("serve", "-C", str(tmp_path), "-w", "-1")
    assert result.exit_code == 2
    assert "'--workers'" not in result.output
    assert result.stderr.startswith("error: no feature_store.yaml")


@pytest.fixture
def shop_repo(store, tmp_path, server_connection_string) -> Path:
    """An applied feature repo of project shop, with 3 keys on the test server."""
    write(store, tmp_path, server_connection_string, project="shop", view=VIEW, ids=range(3),
          when=at(1), value=1)  # fmt: skip
    path = tmp_path / "repo"
    applied_repo(path, server_connection_string, "shop", [VIEW])
    return path


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port something else already listens on."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


@pytest.mark.server
@pytest.mark.parametrize("level", [None, "WARNING"])
def test_serve_that_cannot_bind_exits_1_and_logs_in_one_format(shop_repo, busy_port, level):
    """uvicorn's own code for a failed start is 3, which is --verify's here: it becomes 1,
    with one line saying so; every log line before it (ours, Feast's, uvicorn's) has the
    one format, and --log-level WARNING leaves only the error."""
    global_flags = ["--log-level", level] if level else []
    done = cli_process(*global_flags, "serve", "-p", str(busy_port), cwd=shop_repo)
    assert done.returncode == 1, done.stderr
    *logged, last = done.stderr.splitlines()
    assert last == (
        f"error: the feature server did not start on 127.0.0.1:{busy_port} "
        "(uvicorn logged why, above)"
    )
    assert logged and all(LOG_LINE.match(line) for line in logged), logged
    assert any("address already in use" in line and " ERROR " in line for line in logged)
    assert any(" INFO " in line for line in logged) is (level is None)
    assert "Traceback" not in done.stderr


# --------------------------------------------------------------------------- stats


@pytest.mark.server
def test_stats_defaults_to_the_current_folder_as_serve_does(shop_repo, monkeypatch) -> None:
    monkeypatch.chdir(shop_repo)
    result = run("stats", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["projects"]["shop"]["keys"] == 3


@pytest.mark.server
def test_stats_of_a_project_without_keys_names_the_ones_there(
    store, tmp_path, server_connection_string
) -> None:
    for project in ("shop", "myshop"):
        write(store, tmp_path, server_connection_string, project=project, view=VIEW,
              ids=range(2), when=at(1), value=1)  # fmt: skip
    result = run("stats", "--connection-string", server_connection_string, "--project", "nope",
                 "--project", "shop", "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)  # the note goes to stderr: stdout stays JSON
    assert report["projects"]["nope"]["keys"] == 0
    assert result.stderr.splitlines() == [
        f"project 'nope' has no keys on {report['server']} (names are case-sensitive); "
        "projects with keys there: myshop, shop"
    ]


@pytest.mark.server
def test_stats_of_an_empty_server_says_no_project_has_keys(server_connection_string) -> None:
    result = run("stats", "--connection-string", server_connection_string, "--project", "nope")
    assert result.exit_code == 0, result.output
    assert result.stderr.strip().endswith("; no Feast project has keys there")


@pytest.mark.server
@pytest.mark.parametrize("level", ["info", "INFO"])
def test_log_level_applies_to_feasts_lines_too_in_the_one_format(shop_repo, level) -> None:
    """stats reads the registry through Feast: its INFO lines show at --log-level info, in
    the command line's format, and not at the default (warning)."""
    quiet = run("stats", "-C", str(shop_repo))
    assert quiet.exit_code == 0 and quiet.stderr == ""
    loud = run("--log-level", level, "stats", "-C", str(shop_repo))
    assert loud.exit_code == 0
    lines = loud.stderr.splitlines()
    assert lines and all(LOG_LINE.match(line) for line in lines), lines
    assert any(" INFO feast." in line for line in lines)


# --------------------------------------------------------------------------- migrate


@pytest.mark.server
def test_migrate_of_a_project_without_keys_leaves_no_checkpoint(
    server_connection_string, tmp_path, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = run("migrate", "--source", server_connection_string,
                 "--target", f"{server_connection_string},db=1", "--project", "nope")  # fmt: skip
    assert result.exit_code == 1
    assert "project 'nope': no keys on the source" in result.output
    assert list(tmp_path.iterdir()) == []


@pytest.mark.server
def test_migrate_that_copied_keys_keeps_its_checkpoint(
    store, server_connection_string, tmp_path, monkeypatch
) -> None:
    """The checkpoint stays where there is something to resume or verify against."""
    write(store, tmp_path, server_connection_string, project="shop", view=VIEW, ids=range(2),
          when=at(1), value=1)  # fmt: skip
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    result = run("migrate", "--source", server_connection_string,
                 "--target", f"{server_connection_string},db=1", "--project", "shop")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert [p.name.startswith(".feast-dragonfly-migrate-") for p in work.iterdir()] == [True]
