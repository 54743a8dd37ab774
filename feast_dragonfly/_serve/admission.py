"""Admission control: a bound on the requests one worker works on at once.

Past its saturated rate a server without a bound takes every request it is sent: each waits
behind all the others, so every answer comes late (seconds, under a sustained overload), and
each waiting request holds its parsed body and its half-built answer, so memory grows for as
long as the overload lasts. With a bound, a request arriving while ``limit`` others are in
flight is answered at once — 503 with ``Retry-After`` — at the cost of parsing its headers;
the admitted ones are answered as fast as when the server is not overloaded, and memory stays
flat. Clients (and load balancers) retry the 503s elsewhere or later.

``GET /health`` is never refused: an overloaded worker is busy, not broken, and a health check
that failed under load would have it restarted and lose the work in flight.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: What a refused request is told: retry after this many seconds.
RETRY_AFTER_SECONDS = 1
#: The answer's ``status`` label in Feast's ``feast_feature_server_request_total`` counter.
REJECTED_STATUS = "rejected"


@dataclass
class Admission:
    """Counts the requests in flight in one worker; ``limit`` of them at most (0: no bound)."""

    limit: int
    in_flight: int = 0
    #: Requests refused since start, per endpoint (also counted in Feast's metrics when on).
    rejected: dict[str, int] = field(default_factory=dict)

    def enter(self, endpoint: str) -> bool:
        """True (and counted in flight until ``leave``) when the request may run now."""
        if self.limit and self.in_flight >= self.limit:
            self.rejected[endpoint] = self.rejected.get(endpoint, 0) + 1
            _count_rejection(endpoint)
            return False
        self.in_flight += 1
        return True

    def leave(self) -> None:
        self.in_flight -= 1

    def refusal(self) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        """Status, JSON body and extra headers of the answer to a refused request."""
        detail = (
            f'{{"detail": "server busy: {self.limit} requests in flight in this worker '
            f'(--max-in-flight); retry after {RETRY_AFTER_SECONDS} s"}}'
        )
        return 503, detail.encode(), [(b"retry-after", b"%d" % RETRY_AFTER_SECONDS)]


def _count_rejection(endpoint: str) -> None:
    """``feast_feature_server_request_total{endpoint=..., status="rejected"}``, when
    ``--metrics`` is on (a flag check otherwise)."""
    from feast import metrics as feast_metrics

    if feast_metrics._config.request:
        feast_metrics.request_count.labels(endpoint=endpoint, status=REJECTED_STATUS).inc()
