"""``DragonflySparkEngine`` on a real Spark (``local[2]``) and a real server.

Skipped, with the reason, only when no Java runtime is available (``make install`` installs
OpenJDK 17 when it runs as root with apt-get) or pyspark is missing (the ``spark`` extra).
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from distributed_kit import (  # noqa: F401 (the shared tests, collected here)
    single_engine_dump,
    test_a_server_killed_mid_job_fails_it_and_a_rerun_completes,
    test_compact_records_equal_the_single_process_engines,
    test_same_bytes_as_the_single_process_engine,
    test_ties_over_files_and_partitions_follow_the_rule,
    tie_frames,
)
from exactness_kit import PROJECT, SCHEMA, TieRepo, materialize
from feast import FeatureStore, FeatureView
from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource
from feast_repo import assert_same_keyspace, dump_keyspace

if shutil.which("java") is None:
    pytest.skip(
        "no Java runtime: install OpenJDK 17 (`apt-get install -y openjdk-17-jre-headless`, "
        "which `make install` does as root) to run the Spark engine tests",
        allow_module_level=True,
    )
pytest.importorskip("pyspark", reason="pip install -e '.[spark]' to run the Spark engine tests")

from pyspark.sql import SparkSession  # noqa: E402

SPARK_CONF = {
    "spark.master": "local[2]",
    "spark.ui.enabled": "false",
    "spark.sql.shuffle.partitions": "4",
    "spark.sql.session.timeZone": "UTC",
}
ENGINE = {"type": "feast_dragonfly.DragonflySparkEngine", "spark_conf": SPARK_CONF}


@pytest.fixture(scope="module", autouse=True)
def spark() -> Iterator[SparkSession]:
    """One local Spark for the module (it takes seconds to start); the engine reuses it."""
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # local workers: this venv
    builder = SparkSession.builder
    for key, value in SPARK_CONF.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    try:
        yield session
    finally:
        session.stop()


@pytest.fixture
def engine() -> dict:
    """The ``batch_engine`` settings the shared tests (``distributed_kit``) run with."""
    return ENGINE


def test_the_spark_offline_store_feeds_the_same_bytes(
    tmp_path, redis_client, server_connection_string, capsys
):
    """A ``SparkSource`` through Feast's Spark offline store: the window comes as a Spark
    DataFrame; the stored bytes are the single engine's on the same rows."""
    frames = tie_frames(entities=300, seed=3)
    reference = TieRepo(tmp_path / "file", server_connection_string)
    reference.write_files(frames, row_group_size=50)
    expected = single_engine_dump(redis_client, lambda e: materialize(reference.store(**e)))

    path = tmp_path / "spark" / "data.parquet"
    path.parent.mkdir()
    table = pa.concat_tables([pa.Table.from_pandas(f, preserve_index=False) for f in frames])
    pq.write_table(table, path, coerce_timestamps="us")
    source = SparkSource(
        name="exact_source",
        path=str(path),
        file_format="parquet",
        timestamp_field="event_timestamp",
        created_timestamp_column="created",
    )
    view = FeatureView(
        name="exact", entities=[reference.driver], schema=SCHEMA, source=source, ttl=None
    )
    settings: dict[str, Any] = {
        "project": PROJECT,
        "registry": str(path.parent / "registry.db"),
        "provider": "local",
        "offline_store": {"type": "spark", "spark_conf": SPARK_CONF},
        "online_store": {
            "type": "feast_dragonfly.DragonflyOnlineStore",
            "connection_string": server_connection_string,
        },
        "batch_engine": {**ENGINE, "partitions": 2},
        "entity_key_serialization_version": 3,
    }
    (path.parent / "feature_store.yaml").write_text(yaml.safe_dump(settings))
    store = FeatureStore(repo_path=str(path.parent))
    store.apply([reference.driver, view])
    redis_client.flushall()
    materialize(store)
    assert_same_keyspace(expected, dump_keyspace(redis_client))
    assert f"exact: 300 rows written ({table.num_rows} source rows read) by Spark" in (
        capsys.readouterr().out
    )
