"""``DragonflyRayEngine`` on a real local Ray (2 CPUs) and a real server.

Skipped, with the reason, only when ray is missing (the ``ray`` extra).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from distributed_kit import (  # noqa: F401 (the shared tests, collected here)
    test_a_server_killed_mid_job_fails_it_and_a_rerun_completes,
    test_compact_records_equal_the_single_process_engines,
    test_same_bytes_as_the_single_process_engine,
    test_ties_over_files_and_partitions_follow_the_rule,
)

ray = pytest.importorskip("ray", reason="pip install -e '.[ray]' to run the Ray engine tests")

ENGINE = {"type": "feast_dragonfly.DragonflyRayEngine"}


@pytest.fixture(scope="module", autouse=True)
def local_ray() -> Iterator[None]:
    """One local Ray for the module (seconds to start); the engine finds it running."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture
def engine() -> dict:
    """The ``batch_engine`` settings the shared tests (``distributed_kit``) run with."""
    return ENGINE
