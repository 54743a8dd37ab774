"""Admission control of ``feast-dragonfly serve``: at most ``max_in_flight`` requests at once
per worker; beyond that an immediate 503 with ``Retry-After``, counted in Feast's request
counter, and the server serves normally again as soon as the load drops.

A real app serves a materialized repo over HTTP (uvicorn in a thread). A request whose body has
not fully arrived is in flight for as long as its client wants, which makes "the limit is
reached" exact; a flood of concurrent requests then checks the same under real load.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator

import orjson
import pytest
import requests
from click.testing import CliRunner
from feast import metrics as feast_metrics
from test_feature_server import ThreadedServer
from test_serving_metrics import _materialized_repo

from feast_dragonfly._serve import env, run
from feast_dragonfly._serve.admission import Admission
from feast_dragonfly._serve.app import FeatureServer
from feast_dragonfly.cli import cli

READ = {"features": ["admitted:a", "admitted:b"], "entities": {"driver_id": [1, 2, 3]}}


@pytest.fixture
def metrics_on() -> Iterator[None]:
    saved = feast_metrics._config
    feast_metrics._config = feast_metrics.build_metrics_flags()
    try:
        yield
    finally:
        feast_metrics._config = saved


def _rejected(endpoint: str) -> float:
    counter = feast_metrics.request_count.labels(endpoint=endpoint, status="rejected")
    return counter._value.get()


@pytest.fixture
def serve(tmp_path, server_connection_string):
    """``serve(limit)``: a served app over a 100-driver repo, as a context manager."""
    store = _materialized_repo(tmp_path, "ours", server_connection_string, "admitted", 100)

    def start(limit: int) -> tuple[FeatureServer, ThreadedServer]:
        app = FeatureServer(store, registry_ttl_sec=0, max_in_flight=limit)
        return app, ThreadedServer(app)

    return start


class HeldRequest:
    """A POST whose body is sent in two parts: in flight from the first to the second."""

    def __init__(self, port: int, body: bytes) -> None:
        self.socket = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.body = body
        head = (
            b"POST /get-online-features HTTP/1.1\r\nhost: test\r\n"
            b"content-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(body)
        )
        self.socket.sendall(head + body[:5])

    def finish(self) -> int:
        self.socket.sendall(self.body[5:])
        answer = self.socket.recv(65536)
        self.socket.close()
        return int(answer[9:12])


def _wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def test_a_request_beyond_the_limit_is_refused_at_once_with_retry_after(serve, metrics_on):
    app, server = serve(1)
    with server:
        before = _rejected("/get-online-features"), _rejected("/push")
        held = HeldRequest(server.port, orjson.dumps(READ))
        _wait_for(lambda: app.admission.in_flight == 1, "the held request is not in flight")
        started = time.monotonic()
        refused = requests.post(server.url + "/get-online-features", json=READ, timeout=10)
        assert time.monotonic() - started < 1
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "1"
        assert "--max-in-flight" in refused.json()["detail"]
        pushed = requests.post(server.url + "/push", json={}, timeout=10)
        assert pushed.status_code == 503  # refused before its body is even read
        # An overloaded worker is busy, not broken: its health check still passes.
        assert requests.get(server.url + "/health", timeout=10).status_code == 200
        after = _rejected("/get-online-features"), _rejected("/push")
        assert (after[0] - before[0], after[1] - before[1]) == (1, 1)
        assert app.admission.rejected == {"/get-online-features": 1, "/push": 1}
        # The held request is answered; its slot is free again.
        assert held.finish() == 200
        assert app.admission.in_flight == 0
        again = requests.post(server.url + "/get-online-features", json=READ, timeout=10)
        assert again.status_code == 200, again.text


def test_zero_means_no_bound(serve):
    app, server = serve(0)
    with server:
        held = [HeldRequest(server.port, orjson.dumps(READ)) for _ in range(3)]
        _wait_for(lambda: app.admission.in_flight == 3, "the held requests are not in flight")
        answer = requests.post(server.url + "/get-online-features", json=READ, timeout=10)
        assert answer.status_code == 200
        assert [request.finish() for request in held] == [200, 200, 200]


async def _flood(port: int, connections: int, per_connection: int) -> list[tuple[int, bool]]:
    """Every connection sends its requests back to back, all connections at once: (status,
    has Retry-After) per answer."""
    body = orjson.dumps({**READ, "entities": {"driver_id": list(range(1, 101))}})
    request = (
        b"POST /get-online-features HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\n\r\n%b" % (len(body), body)
    )
    answers: list[tuple[int, bool]] = []

    async def one_connection() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(per_connection):
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            answers.append((int(head[9:12]), b"retry-after: 1" in head.lower()))
        writer.close()

    await asyncio.gather(*(one_connection() for _ in range(connections)))
    return answers


def test_a_flood_is_answered_in_part_with_503s_and_the_server_recovers(serve, metrics_on):
    app, server = serve(2)
    with server:
        before = _rejected("/get-online-features")
        answers = asyncio.run(_flood(server.port, connections=48, per_connection=10))
        statuses = [status for status, _ in answers]
        assert set(statuses) == {200, 503}, sorted(set(statuses))
        assert all(retry for status, retry in answers if status == 503)
        assert not any(retry for status, retry in answers if status == 200)
        refused = statuses.count(503)
        assert _rejected("/get-online-features") - before == refused
        assert app.admission.rejected["/get-online-features"] == refused
        assert app.admission.in_flight == 0
        # Load gone: every request is answered again, promptly.
        for _ in range(20):
            started = time.monotonic()
            answer = requests.post(server.url + "/get-online-features", json=READ, timeout=10)
            assert answer.status_code == 200, answer.text
            assert time.monotonic() - started < 1


def test_the_admission_count_never_goes_past_the_limit():
    admission = Admission(2)
    assert [admission.enter("/push") for _ in range(3)] == [True, True, False]
    admission.leave()
    assert admission.enter("/get-online-features")
    assert admission.in_flight == 2
    assert admission.rejected == {"/push": 1}
    status, body, headers = admission.refusal()
    assert status == 503 and (b"retry-after", b"1") in headers
    assert "2 requests in flight" in orjson.loads(body)["detail"]


# --------------------------------------------------------------------------- the option


def test_the_worker_reads_its_bound_from_the_environment():
    assert env.max_in_flight({}) == env.DEFAULT_MAX_IN_FLIGHT
    assert env.max_in_flight({env.MAX_IN_FLIGHT_ENV: "0"}) == 0
    assert env.max_in_flight({env.MAX_IN_FLIGHT_ENV: " 12 "}) == 12
    with pytest.raises(SystemExit, match=f"{env.MAX_IN_FLIGHT_ENV}='lots'"):
        env.max_in_flight({env.MAX_IN_FLIGHT_ENV: "lots"})


@pytest.mark.parametrize(
    ("args", "environ", "expected"),
    [
        ([], {}, env.DEFAULT_MAX_IN_FLIGHT),
        (["--max-in-flight", "7"], {}, 7),
        ([], {env.MAX_IN_FLIGHT_ENV: "9"}, 9),
        (["--max-in-flight", "3"], {env.MAX_IN_FLIGHT_ENV: "9"}, 3),
    ],
    ids=["default", "flag", "env", "flag-over-env"],
)
def test_the_cli_takes_the_bound_from_the_flag_or_the_environment(
    tmp_path, monkeypatch, args, environ, expected
):
    seen = []
    monkeypatch.delenv(env.MAX_IN_FLIGHT_ENV, raising=False)
    monkeypatch.setattr(run, "serve", lambda options, *_, **__: seen.append(options))
    (tmp_path / "feature_store.yaml").write_text("project: unused\n")
    result = CliRunner().invoke(cli, ["serve", "-C", str(tmp_path), *args], env=environ)
    assert result.exit_code == 0, result.output
    assert seen[0].max_in_flight == expected


def test_the_cli_refuses_a_negative_bound(tmp_path):
    result = CliRunner().invoke(cli, ["serve", "-C", str(tmp_path), "--max-in-flight", "-1"])
    assert result.exit_code == 2
    assert "--max-in-flight" in result.output
