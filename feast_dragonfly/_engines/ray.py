"""``DragonflyRayEngine``: Feast's Ray engine, with an exact, fast write into our store.

Enable it in ``feature_store.yaml`` (every option of Feast's ``ray.engine`` still applies)::

    batch_engine:
      type: feast_dragonfly.DragonflyRayEngine
      ray_address: ray://head:10001   # none: a local Ray
      partitions: 16                  # write partitions (0: the cluster's CPUs x multiplier)
      worker_write_concurrency: 8     # connections per write task (default: the store's)

Feast's Ray engine writes each batch through ``online_write_batch`` and only logs a batch that
failed (the job succeeds with rows missing). Here the window is grouped by a hash of each
entity's key bytes (:func:`distributed_write.partition_ids`: every row of an entity in one
group), each group goes through ``distributed_write`` — our rule, column-wise conversion,
event-time-safe calls over several connections — and any failure fails the job, naming the
view. Historical retrieval and the views our engines do not specialise
(``plan.delegation_reason``) stay Feast's.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Literal

import pyarrow as pa
import ray
import ray.data
from feast.infra.common.materialization_job import MaterializationTask
from feast.infra.compute_engines.ray.compute import RayComputeEngine
from feast.infra.compute_engines.ray.config import RayComputeEngineConfig
from feast.infra.compute_engines.ray.job import RayMaterializationJob
from feast.infra.registry.base_registry import BaseRegistry
from pydantic import NonNegativeInt

from feast_dragonfly._engines import distributed_write
from feast_dragonfly._engines.distributed_write import DistributedEngine, WriteSettings, WriteSpec
from feast_dragonfly._engines.plan import ViewPlan, WindowSource, window_job

ENGINE_TYPE: Literal["feast_dragonfly.DragonflyRayEngine"] = "feast_dragonfly.DragonflyRayEngine"
#: The column carrying each row's write partition between the two Ray stages.
PARTITION_COLUMN = "__feast_dragonfly_partition"


class DragonflyRayEngineConfig(RayComputeEngineConfig, WriteSettings):
    """Feast's ``ray.engine`` settings, plus how the write is partitioned and each task
    writes (Feast's ``write_concurrency`` still bounds the write tasks running at once)."""

    type: Literal["feast_dragonfly.DragonflyRayEngine"] = ENGINE_TYPE  # type: ignore[assignment]
    """Engine type selector."""

    partitions: NonNegativeInt = 0
    """Write partitions (each holds every row of its entities); 0: the cluster's CPUs times
    ``max_parallelism_multiplier``."""


class DragonflyRayEngine(DistributedEngine, RayComputeEngine):
    """Feast's Ray engine; materialization into ``DragonflyOnlineStore`` is ours."""

    engine_name = "Ray"
    settings_class = DragonflyRayEngineConfig
    job_class = RayMaterializationJob

    def write_window(
        self, registry: BaseRegistry, task: MaterializationTask, spec: WriteSpec
    ) -> list[dict[str, Any]]:
        view = task.feature_view
        dataset = self._window(registry, task, ViewPlan.for_task(registry, task, self.repo_config))
        if dataset is None:
            return []
        partitions = self.settings.partitions or self._default_partitions()
        written = (
            dataset.map_batches(partial(_tag_partitions, spec, partitions), batch_format="pyarrow")
            .groupby(PARTITION_COLUMN)
            .map_groups(
                partial(_write_group, spec),
                batch_format="pyarrow",
                concurrency=self.settings.write_concurrency,
            )
        )
        try:
            return written.take_all()
        except Exception as exc:
            raise distributed_write.job_failed("Ray", view.name, exc) from None

    def _window(
        self, registry: BaseRegistry, task: MaterializationTask, plan: ViewPlan
    ) -> ray.data.Dataset | None:
        """The window as a Ray dataset (None when empty): the offline store's own when it
        makes one, else the window's Arrow table."""
        source = WindowSource(self, plan, task, registry)
        if not source.streaming:
            job = window_job(self, registry, task, plan)
            if hasattr(job, "to_ray_dataset"):
                return job.to_ray_dataset()
        table = source.table()
        return None if table is None else ray.data.from_arrow(table)

    def _default_partitions(self) -> int:
        cpus = int(ray.cluster_resources().get("CPU", 1))
        return max(1, cpus * self.settings.max_parallelism_multiplier)


def _tag_partitions(spec: WriteSpec, partitions: int, table: pa.Table) -> pa.Table:
    ids = distributed_write.partition_ids(spec, table, partitions)
    return table.append_column(PARTITION_COLUMN, pa.array(ids, pa.int64()))


def _write_group(spec: WriteSpec, table: pa.Table) -> pa.Table:
    return distributed_write.write_partition(spec, [table.drop_columns([PARTITION_COLUMN])])
