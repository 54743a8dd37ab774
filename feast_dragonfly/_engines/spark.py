"""``DragonflySparkEngine``: Feast's Spark engine, with an exact, fast write into our store.

Enable it in ``feature_store.yaml`` (every option of Feast's ``spark.engine`` still applies)::

    batch_engine:
      type: feast_dragonfly.DragonflySparkEngine
      spark_conf: {spark.master: "local[4]"}
      partitions: 16                # write partitions (0: Spark's default parallelism)
      worker_write_concurrency: 8   # connections per task (default: the store's)

Feast's Spark engine keeps one row per entity with ``row_number()`` over event and created
time — among rows equal on both, whichever Spark meets first — and writes each Arrow batch
through ``online_write_batch`` row by row. Here the window is repartitioned by the join keys
(every row of an entity in one partition) and each partition goes through
``distributed_write``: our rule, column-wise conversion, event-time-safe calls over several
connections; a failed write fails the job, naming the view. Historical retrieval and the
views our engines do not specialise (``plan.delegation_reason``) stay Feast's.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from typing import Any, Literal

import pyarrow as pa
from feast.infra.common.materialization_job import MaterializationTask
from feast.infra.compute_engines.spark.compute import (
    SparkComputeEngine,
    SparkComputeEngineConfig,
)
from feast.infra.compute_engines.spark.job import SparkMaterializationJob
from feast.infra.compute_engines.spark.utils import get_or_create_new_spark_session
from feast.infra.offline_stores.contrib.spark_offline_store.spark import SparkRetrievalJob
from feast.infra.registry.base_registry import BaseRegistry
from pyspark.sql import DataFrame, SparkSession

from feast_dragonfly._engines import distributed_write
from feast_dragonfly._engines.distributed_write import DistributedEngine, WriteSettings, WriteSpec
from feast_dragonfly._engines.plan import ViewPlan, WindowSource, window_job

ENGINE_TYPE: Literal["feast_dragonfly.DragonflySparkEngine"] = (
    "feast_dragonfly.DragonflySparkEngine"
)


class DragonflySparkEngineConfig(SparkComputeEngineConfig, WriteSettings):
    """Feast's ``spark.engine`` settings (``partitions``: write partitions, 0 for Spark's
    default parallelism), plus how each task writes."""

    type: Literal["feast_dragonfly.DragonflySparkEngine"] = ENGINE_TYPE  # type: ignore[assignment]
    """Engine type selector."""


class DragonflySparkEngine(DistributedEngine, SparkComputeEngine):
    """Feast's Spark engine; materialization into ``DragonflyOnlineStore`` is ours."""

    engine_name = "Spark"
    settings_class = DragonflySparkEngineConfig
    job_class = SparkMaterializationJob

    def _get_feature_view_spark_session(self, feature_view: Any) -> SparkSession:
        """The session with ``spark_conf`` applied (Feast's hands Spark the whole engine
        section instead), and the driver's Python for local workers."""
        merged = self._get_feature_view_engine_config(feature_view)
        conf = dict(merged.get("spark_conf") or self.settings.spark_conf or {})
        master = conf.get("spark.master", os.environ.get("MASTER", "local"))
        if master.startswith("local") and "spark.pyspark.python" not in conf:
            # Local workers otherwise start whatever `python3` is on PATH, without this venv
            # (read when the SparkContext starts; a running session keeps its own).
            os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        return get_or_create_new_spark_session(conf)

    def write_window(
        self, registry: BaseRegistry, task: MaterializationTask, spec: WriteSpec
    ) -> list[dict[str, Any]]:
        view = task.feature_view
        plan = ViewPlan.for_task(registry, task, self.repo_config)
        session = self._get_feature_view_spark_session(view)
        frame = self._window(session, registry, task, plan)
        if frame is None:
            return []
        partitions = self.settings.partitions or session.sparkContext.defaultParallelism
        keys = distributed_write.key_columns(plan, frame.columns)
        written = frame.repartition(partitions, *keys).mapInArrow(
            lambda batches: _write_partition(spec, batches), "read long, written long"
        )
        session.sparkContext.setJobDescription(f"feast-dragonfly: materialize {view.name}")
        try:
            return [row.asDict() for row in written.collect()]
        except Exception as exc:
            raise distributed_write.job_failed("Spark", view.name, exc) from None
        finally:
            session.sparkContext.setJobDescription(None)  # type: ignore[arg-type]

    def _window(
        self,
        session: SparkSession,
        registry: BaseRegistry,
        task: MaterializationTask,
        plan: ViewPlan,
    ) -> DataFrame | None:
        """The window as a DataFrame (None when empty): the Spark offline store's own, else
        the window's Arrow table handed to Spark."""
        source = WindowSource(self, plan, task, registry)
        if not source.streaming:
            job = window_job(self, registry, task, plan)
            if isinstance(job, SparkRetrievalJob):
                return job.to_spark_df()
        table = source.table()
        return None if table is None else session.createDataFrame(table)


def _write_partition(
    spec: WriteSpec, batches: Iterator[pa.RecordBatch]
) -> Iterator[pa.RecordBatch]:
    yield from distributed_write.write_partition(spec, batches).to_batches()
