"""Feast's own universal online-store tests against feast_dragonfly and Feast's Redis store.

Runs four test files of Feast's integration suite (``sdk/python/tests`` of a Feast source
checkout, ``$FEAST_SRC``) once per online store — Feast's ``RedisOnlineStore`` (``redis``),
ours with ``layout: feast`` (``ours-feast``) and ours with ``layout: compact``
(``ours-compact``) — on a throw-away redis-server, then on Dragonfly when one is found;
the offline store is Feast's local file store. Each store runs in its own pytest process
(``FULL_REPO_CONFIGS_MODULE=repo_configs``, see ``repo_configs.py``) against a flushed server.

Two suites per store and server:

* ``online``: test_universal_online.py, test_push_features_to_online_store.py,
  test_universal_e2e.py and test_universal_online_types.py, with the store registered under
  Feast's ``redis`` key, so the tests Feast marks ``only=["redis"]`` run against ours too (the
  types tests skip here: they are marked ``only=["sqlite"]``);
* ``types``: test_universal_online_types.py with the store under the ``sqlite`` key.

Then it prints passed / failed / skipped per server, store and suite, and every test whose
outcome differs from Feast's store's. Exit status: 0 when ``ours-feast`` matches Feast's store
in every test and ``ours-compact`` too except for ``EXPECTED_DIFFERENCES``; 1 when not, or
when a run ran no test, or when Feast's own store failed a test (then the environment is
broken and the comparison says nothing); 2 when the run could not start (no Feast checkout,
no server).

    make test-universal FEAST_SRC=/path/to/feast      # sets up .venv-universal, then this
    python tests/feast_universal/run.py --feast-src /path/to/feast [--dragonfly PATH]

Standard library only, plus ``feast_dragonfly.testing`` (this checkout's) for the servers.
Junit XML and one log per pytest run go to ``build/universal/``.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
DEFAULT_RESULTS = REPO / "build" / "universal"
DEFAULT_DRAGONFLY = REPO.parent / "shared" / "bin" / "dragonfly"

ONLINE_DIR = "tests/integration/online_store"
TYPES_FILE = f"{ONLINE_DIR}/test_universal_online_types.py"
# suite -> (alias in AVAILABLE_ONLINE_STORES, test files relative to FEAST_SRC/sdk/python)
SUITES: dict[str, tuple[str, tuple[str, ...]]] = {
    "online": (
        "redis",
        (
            f"{ONLINE_DIR}/test_universal_online.py",
            TYPES_FILE,
            f"{ONLINE_DIR}/test_push_features_to_online_store.py",
            f"{ONLINE_DIR}/test_universal_e2e.py",
        ),
    ),
    "types": ("sqlite", (TYPES_FILE,)),
}
# DynamoDB-only tests: they start DynamoDB Local in Docker.
DESELECT = (
    f"{ONLINE_DIR}/test_universal_online.py::test_async_online_retrieval_with_event_timestamps_dynamo",
    f"{ONLINE_DIR}/test_push_features_to_online_store.py::test_push_features_and_read_async_dynamodb",
)
BASELINE = "redis"  # Feast's own RedisOnlineStore: what ours is compared with
STORES = ("redis", "ours-feast", "ours-compact")

# Tests in which a store may differ from Feast's store, keyed by store, then by
# "file::test function" (any parametrisation), with the reason.
_COMPACT_TTL = (
    "layout: compact applies each feature view's ttl on read: a value older than its view's "
    "ttl reads as not found (None, event timestamp 0); this test writes rows with 2022 event "
    "times into a view whose ttl is 2 hours and expects them back, as Feast's store returns them"
)
EXPECTED_DIFFERENCES: dict[str, dict[str, str]] = {
    "ours-compact": {
        "test_universal_online.py::test_online_retrieval_with_event_timestamps": _COMPACT_TTL,
        "test_universal_online.py::test_async_online_retrieval_with_event_timestamps": _COMPACT_TTL,
    },
}
# A skip with this reason means Feast's conftest could not import a test dependency: every
# universal test then skips, which must not pass for "no difference".
MISSING_DEPENDENCY = "dependency is not installed"
RUN_TIMEOUT_S = 1200

NO_FEAST_SRC = """\
{problem}
Feast's packages on PyPI (sdist and wheel) do not ship its test suite, so these tests need a
Feast source checkout: FEAST_SRC is the repository root, the folder that holds sdk/python/tests.
Best a checkout of the Feast you have installed (Feast {version} here), e.g.:
    git clone --depth 1 --branch v{version} https://github.com/feast-dev/feast /tmp/feast-src
or, from an existing clone, only the parts these tests use:
    mkdir -p /tmp/feast-src && git -C CLONE archive HEAD sdk/python/tests sdk/python/pytest.ini \\
        sdk/python/pyproject.toml | tar -x -C /tmp/feast-src
then:
    make test-universal FEAST_SRC=/tmp/feast-src"""


class SetupError(Exception):
    """The run cannot start: no Feast checkout, no server, a broken environment."""


@dataclass
class Run:
    """One pytest process: one server, one store, one suite."""

    server: str
    store: str
    suite: str
    log: Path
    junit: Path
    seconds: float = 0.0
    returncode: int | None = None
    # test key ("file::name", the store's name taken out) -> passed / failed / error / skipped
    outcomes: dict[str, str] = field(default_factory=dict)
    messages: dict[str, str] = field(default_factory=dict)

    def count(self, *outcomes: str) -> int:
        """How many tests ended in one of ``outcomes``."""
        return sum(1 for outcome in self.outcomes.values() if outcome in outcomes)

    @property
    def ran(self) -> int:
        """Tests that ran (passed, failed or errored)."""
        return self.count("passed", "failed", "error")


def feast_version() -> str:
    """The installed Feast's version, for messages ("unknown" when Feast is missing)."""
    try:
        from importlib.metadata import version

        return version("feast")
    except Exception:
        return "unknown"


def find_feast_tests(feast_src: str | None) -> Path:
    """``FEAST_SRC/sdk/python`` (also accepted: FEAST_SRC pointing at sdk/python itself)."""
    if not feast_src:
        raise SetupError(
            NO_FEAST_SRC.format(
                problem="FEAST_SRC is not set (make test-universal FEAST_SRC=... or --feast-src).",
                version=feast_version(),
            )
        )
    root = Path(feast_src).expanduser().resolve()
    for candidate in (root / "sdk" / "python", root):
        if (
            all((candidate / path).is_file() for path in SUITES["online"][1])
            and (candidate / "tests" / "conftest.py").is_file()
        ):
            return candidate
    raise SetupError(
        NO_FEAST_SRC.format(
            problem=f"FEAST_SRC={feast_src} holds no Feast test suite "
            f"(looked for sdk/python/{SUITES['online'][1][0]}).",
            version=feast_version(),
        )
    )


def import_dir(results: Path) -> Path:
    """A folder holding only a link to this checkout's ``feast_dragonfly``.

    It goes first on the pytest processes' ``PYTHONPATH`` (and on this process's
    ``sys.path``): the code under test is this checkout's, and the repository root, whose
    ``tests`` folder would stand in for Feast's ``tests`` package, stays off the path.
    """
    folder = results / "import"
    folder.mkdir(parents=True, exist_ok=True)
    link = folder / "feast_dragonfly"
    target = REPO / "feast_dragonfly"
    if link.is_symlink() and link.resolve() == target.resolve():
        return folder
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(target, target_is_directory=True)
    return folder


def pytest_env(feast_tests: Path, imports: Path) -> dict[str, str]:
    """The environment every pytest process shares (the store's variables come on top)."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("UNIVERSAL_") and key != "PYTHONPATH"
    }
    env.update(
        FULL_REPO_CONFIGS_MODULE="repo_configs",
        FEAST_IS_LOCAL_TEST="True",  # no cloud offline stores or online stores in Docker
        FEAST_USAGE="False",
        IS_TEST="True",
        PYTHONPATH=os.pathsep.join([str(imports), str(HERE), str(feast_tests)]),
    )
    return env


def check_environment(feast_tests: Path, env: dict[str, str]) -> str:
    """Import what the pytest processes will, from where they will; return a description."""
    probe = (
        "import feast, feast_dragonfly, repo_configs, tests.conftest, tests.universal;"
        "print(feast.__version__);"
        "print(feast_dragonfly.__file__);"
        "print(tests.universal.__file__)"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=feast_tests,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise SetupError(
            "the test environment is incomplete (is this .venv-universal's Python? "
            "`make test-universal` sets it up):\n" + result.stderr.strip()[-2000:]
        )
    version, ours, theirs = result.stdout.split()[-3:]
    if not Path(ours).resolve().is_relative_to((REPO / "feast_dragonfly").resolve()):
        raise SetupError(f"feast_dragonfly imports from {ours}, not from {REPO}")
    if not Path(theirs).resolve().is_relative_to(feast_tests.resolve()):
        raise SetupError(f"Feast's tests package imports from {theirs}, not from {feast_tests}")
    return f"Feast {version}, its tests from {feast_tests}"


def parse_junit(path: Path) -> tuple[dict[str, str], dict[str, str]]:
    """Outcome and failure message per test key from pytest's junit XML."""
    outcomes: dict[str, str] = {}
    messages: dict[str, str] = {}
    rank = {"passed": 0, "skipped": 1, "failed": 2, "error": 3}
    for case in ET.parse(path).getroot().iter("testcase"):
        module = (case.get("classname") or "").rsplit(".", 1)[-1]
        key = f"{module}.py::{normalise(case.get('name') or '')}"
        outcome, message = "passed", ""
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = {"failure": "failed"}.get(child.tag, child.tag)
                message = (child.get("message") or child.text or "").strip()
        # A test that failed in teardown too appears twice: keep the worse outcome.
        if rank[outcome] >= rank.get(outcomes.get(key, "passed"), 0):
            outcomes[key] = outcome
            if message:
                messages[key] = message.splitlines()[0][:200]
    return outcomes, messages


def normalise(name: str) -> str:
    """A test id without the online store's name, its Feast repo config shortened.

    ``t[ParameterSet(values=(LOCAL:File:redis:python_fs:False,), marks=[], id=None)-True]``
    becomes ``t[LOCAL:File:<store>:python_fs:False-True]``.
    """
    name = re.sub(r"ParameterSet\(values=\((.*?),\), marks=\[\], id=None\)", r"\1", name)
    return re.sub(r"\b([A-Z]+:\w+:)[\w.\-]+(:python_fs:)", r"\1<store>\2", name)


def function_of(key: str) -> str:
    """``file::test`` of a test key, without its parametrisation."""
    return key.split("[", 1)[0]


def run_pytest(
    run: Run,
    feast_tests: Path,
    env: dict[str, str],
    address: str,
    extra_config: str,
    pytest_args: Sequence[str],
) -> None:
    """One pytest process for ``run``; fills in its outcomes from the junit XML."""
    alias, files = SUITES[run.suite]
    command = [
        sys.executable,
        "-m",
        "pytest",
        *files,
        "--integration",
        *(arg for test in DESELECT for arg in ("--deselect", test)),
        "-p",
        "no:cacheprovider",
        f"--junitxml={run.junit}",
        *pytest_args,
    ]
    run_env = dict(
        env,
        UNIVERSAL_STORE=run.store,
        UNIVERSAL_ADDRESS=address,
        UNIVERSAL_ALIAS=alias,
        UNIVERSAL_EXTRA=extra_config if run.store != BASELINE else "",
    )
    run.junit.unlink(missing_ok=True)
    started = time.monotonic()
    with run.log.open("w") as log:
        try:
            run.returncode = subprocess.run(
                command,
                cwd=feast_tests,
                env=run_env,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=RUN_TIMEOUT_S,
                check=False,
            ).returncode
        except subprocess.TimeoutExpired:
            log.write(f"\n== run.py: pytest killed after {RUN_TIMEOUT_S} s ==\n")
    run.seconds = time.monotonic() - started
    if run.junit.is_file():
        run.outcomes, run.messages = parse_junit(run.junit)


def servers(dragonfly: str | None, no_dragonfly: bool) -> list[tuple[str, str]]:
    """(kind, binary) of each server to run on: redis-server, then Dragonfly when found."""
    from feast_dragonfly.testing import LocalServerError, find_server_binary

    try:
        found = [("redis", find_server_binary("redis").path)]
    except LocalServerError as error:
        raise SetupError(str(error)) from error
    if no_dragonfly:
        return found
    if dragonfly:
        if not os.access(dragonfly, os.X_OK):
            raise SetupError(f"--dragonfly {dragonfly}: no executable there")
        found.append(("dragonfly", dragonfly))
    elif os.access(DEFAULT_DRAGONFLY, os.X_OK):
        found.append(("dragonfly", str(DEFAULT_DRAGONFLY)))
    else:
        print(f"== Dragonfly skipped: no executable at {DEFAULT_DRAGONFLY} (--dragonfly PATH) ==")
    return found


def differences(runs: Sequence[Run]) -> list[tuple[Run, str, str, str, str | None]]:
    """(run, test, Feast's outcome, this store's outcome, expected reason or None) per
    test whose outcome differs from the same server and suite's Feast store run."""
    baselines = {(r.server, r.suite): r for r in runs if r.store == BASELINE}
    found = []
    for run in runs:
        baseline = baselines.get((run.server, run.suite))
        if run.store == BASELINE or baseline is None:
            continue
        expected = EXPECTED_DIFFERENCES.get(run.store, {})
        for test in sorted(set(run.outcomes) | set(baseline.outcomes)):
            theirs = baseline.outcomes.get(test, "absent")
            ours = run.outcomes.get(test, "absent")
            if theirs != ours:
                found.append((run, test, theirs, ours, expected.get(function_of(test))))
    return found


def report(runs: Sequence[Run], seconds: float) -> int:
    """Print the table and the differences; return the exit status."""
    status = 0
    header = ("server", "store", "suite", "passed", "failed", "skipped", "seconds")
    rows = [
        (
            r.server,
            r.store,
            f"{r.suite} (as {SUITES[r.suite][0]})",
            str(r.count("passed")),
            str(r.count("failed", "error")),
            str(r.count("skipped")),
            f"{r.seconds:.0f}",
        )
        for r in runs
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    print("\n== Feast's universal online-store tests ==")
    for row in [header, *rows]:
        print(
            "  ".join(
                cell.rjust(width) if i >= 3 else cell.ljust(width)
                for i, (cell, width) in enumerate(zip(row, widths))
            ).rstrip()
        )
    print(f"total: {seconds:.0f} s; junit XML and logs: {runs[0].log.parent if runs else '-'}")

    for run in runs:
        if not run.junit.is_file():
            print(f"!! {run.server} / {run.store} / {run.suite}: no junit XML (see {run.log})")
            status = 1
        elif run.ran == 0:
            print(f"!! {run.server} / {run.store} / {run.suite}: no test ran (see {run.log})")
            status = 1
        elif run.store == BASELINE and run.count("failed", "error"):
            # The comparison means nothing when Feast's own store fails: a broken environment
            # (a missing pytest plugin, no server) fails every store alike.
            print(
                f"!! {run.server} / {run.suite}: Feast's own store failed "
                f"{run.count('failed', 'error')} test(s) (see {run.log})"
            )
            status = 1
        missing = [m for m in run.messages.values() if MISSING_DEPENDENCY in m]
        if missing:
            print(f"!! {run.server} / {run.store} / {run.suite}: {missing[0]}")
            status = 1

    found = differences(runs)
    print(f"\n== tests whose outcome differs from Feast's store ({BASELINE}): {len(found)} ==")
    explained: set[str] = set()
    for run, test, theirs, ours, reason in found:
        tag = "expected" if reason else "UNEXPECTED"
        print(f"{tag}: {run.server} / {run.store} / {run.suite}: {test}")
        print(f"    Feast's store {theirs}, {run.store} {ours}")
        message = run.messages.get(test) if ours != "passed" else None
        if message:
            print(f"    {message}")
        if reason and function_of(test) not in explained:
            explained.add(function_of(test))
            print(f"    why: {reason}")
        elif not reason:
            status = 1
    seen = {(run.store, function_of(test)) for run, test, *_ in found}
    for store, tests in EXPECTED_DIFFERENCES.items():
        for test in tests:
            if any(r.store == store for r in runs) and (store, test) not in seen:
                print(f"note: {store}: {test} did not differ (listed in EXPECTED_DIFFERENCES)")
    print(
        "\nresult: "
        + ("no unexpected difference" if status == 0 else "see the !! / UNEXPECTED lines above")
    )
    return status


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command line; arguments after ``--`` go to every pytest process."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--feast-src",
        default=os.environ.get("FEAST_SRC", ""),
        help="Feast source checkout (the folder holding sdk/python/tests); default $FEAST_SRC",
    )
    parser.add_argument(
        "--dragonfly",
        help=f"Dragonfly binary for the second pass (default: {DEFAULT_DRAGONFLY} when present)",
    )
    parser.add_argument("--no-dragonfly", action="store_true", help="redis-server only")
    parser.add_argument("--stores", nargs="+", choices=STORES, default=list(STORES))
    parser.add_argument("--suites", nargs="+", choices=list(SUITES), default=list(SUITES))
    parser.add_argument(
        "--extra-config",
        default="",
        help="JSON merged into our stores' online_store config, e.g. '{\"enforce_view_ttl\": true}'",
    )
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS, help="output folder")
    parser.add_argument("pytest_args", nargs="*", help="after --: passed to pytest")
    args = parser.parse_args(argv)
    if BASELINE not in args.stores:
        args.stores.insert(0, BASELINE)  # the differences are taken against it
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the suites on each server and store; print the report; return the exit status."""
    args = parse_args(argv)
    started = time.monotonic()
    try:
        feast_tests = find_feast_tests(args.feast_src)
        results = args.results.resolve()
        imports = import_dir(results)
        sys.path.insert(0, str(imports))
        env = pytest_env(feast_tests, imports)
        print(f"== {check_environment(feast_tests, env)} ==")
        from feast_dragonfly.testing import LocalServerError, start_server

        runs: list[Run] = []
        for kind, binary in servers(args.dragonfly, args.no_dragonfly):
            try:
                server_cm = start_server(binary)
            except LocalServerError as error:
                raise SetupError(f"could not start {kind} ({binary}): {error}") from error
            with server_cm as server:
                label = f"{server.kind} {server.version}"
                print(f"== {label} ({binary}) on {server.address} ==")
                client = server.client()
                for suite in args.suites:
                    for store in args.stores:
                        tag = f"{server.kind}-{store}-{suite}"
                        run = Run(
                            label, store, suite, results / f"{tag}.log", results / f"{tag}.xml"
                        )
                        client.flushall()
                        run_pytest(
                            run,
                            feast_tests,
                            env,
                            server.connection_string,
                            args.extra_config,
                            args.pytest_args,
                        )
                        runs.append(run)
                        print(
                            f"   {store:<12} {suite:<6} {run.count('passed')} passed, "
                            f"{run.count('failed', 'error')} failed, {run.count('skipped')} "
                            f"skipped ({run.seconds:.0f} s, exit {run.returncode})",
                            flush=True,
                        )
                client.close()
    except SetupError as error:
        print(f"test-universal: {error}", file=sys.stderr)
        return 2
    return report(runs, time.monotonic() - started)


if __name__ == "__main__":
    sys.exit(main())
