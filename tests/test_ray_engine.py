"""``DragonflyRayEngine`` on a real local Ray (2 CPUs) and a real server.

Skipped, with the reason, only when ray is missing (the ``ray`` extra).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from distributed_kit import (
    check_same_bytes_as_single_engine,
    check_server_death_fails_loudly_then_rerun_completes,
    check_ties_follow_the_rule,
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


def test_same_bytes_as_the_single_process_engine(tmp_path, redis_client, server_connection_string):
    check_same_bytes_as_single_engine(
        tmp_path, redis_client, server_connection_string, {**ENGINE, "partitions": 3}
    )


def test_ties_over_files_and_partitions_follow_the_rule(
    tmp_path, redis_client, server_connection_string
):
    check_ties_follow_the_rule(tmp_path, redis_client, server_connection_string, ENGINE)


def test_a_server_killed_mid_job_fails_it_and_a_rerun_completes(
    tmp_path, redis_client, server_connection_string, server_binary
):
    check_server_death_fails_loudly_then_rerun_completes(
        tmp_path, redis_client, server_connection_string, server_binary, ENGINE
    )
