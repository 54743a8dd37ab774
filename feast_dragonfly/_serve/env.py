"""How ``feast-dragonfly serve`` hands its options to the feature server's worker processes.

uvicorn imports the app once per worker, so the CLI passes the repo and options through the
environment. This module holds the names and defaults both sides use, and imports nothing
heavy: the CLI's ``migrate`` and ``stats`` load it too, and should not wait for Feast.
"""

from __future__ import annotations

from collections.abc import Mapping

#: Where ``feature_server.app()`` finds the feature repo in each worker process.
REPO_ENV = "FEAST_DRAGONFLY_SERVE_REPO"
REGISTRY_TTL_ENV = "FEAST_DRAGONFLY_SERVE_REGISTRY_TTL"
MAX_ROWS_ENV = "FEAST_DRAGONFLY_SERVE_MAX_ENTITY_ROWS"
METRICS_ENV = "FEAST_DRAGONFLY_SERVE_METRICS"
#: ``--max-in-flight``: read by the CLI as the flag's default, and by each worker.
MAX_IN_FLIGHT_ENV = "FEAST_DRAGONFLY_SERVE_MAX_IN_FLIGHT"

#: Entity rows one request may ask for (``--max-entity-rows``): a bound on the work and memory
#: one request can cost.
DEFAULT_MAX_ENTITY_ROWS = 10_000
#: Requests one worker works on at once (``--max-in-flight``); more are answered 503 at once.
#: Measured (docs/serving.md, "Admission control"): a worker is saturated at 100×50 from 2 in
#: flight, and at twice that rate the answered requests' p99 stays under 20 ms with 4.
DEFAULT_MAX_IN_FLIGHT = 4


def max_in_flight(environ: Mapping[str, str]) -> int:
    """``$FEAST_DRAGONFLY_SERVE_MAX_IN_FLIGHT`` (0: no bound), else the default; a value that
    is not a whole number ≥ 0 is refused with a message naming the variable."""
    text = environ.get(MAX_IN_FLIGHT_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_IN_FLIGHT
    if not text.isdigit():
        raise SystemExit(
            f"{MAX_IN_FLIGHT_ENV}={text!r}: expected a whole number of requests (0: no bound)"
        )
    return int(text)


def feast_registry_ttl() -> int:
    """``feast serve``'s default registry refresh interval, in seconds (read from Feast when
    asked, so that importing this costs nothing)."""
    from feast.constants import DEFAULT_FEATURE_SERVER_REGISTRY_TTL

    return int(DEFAULT_FEATURE_SERVER_REGISTRY_TTL)
