"""``DragonflyMaterializationEngine``: ``feast materialize`` into ``DragonflyOnlineStore``, fast.

Enable it in ``feature_store.yaml``::

    batch_engine:
      type: feast_dragonfly.DragonflyMaterializationEngine
      batch_size: 50000         # rows per Arrow record batch (bounds memory)
      show_progress: true       # tqdm bar with rows/s on a terminal

Feast's ``local`` engine reads the whole window into one Arrow table, converts every value
into a Python protobuf object (reading only the first chunk of a multi-chunk table), and
hands one list of rows to the online store. This engine instead streams the offline data as
record batches — straight from the parquet file with ``pyarrow.dataset`` for a ``file``
offline store, applying the same inclusive window, field mapping and timestamp semantics
(``feast_dragonfly._engines.plan``, shared with the Spark and Ray engines) — converts each batch column-wise (``feast_dragonfly._engines.arrow``) and writes it through the
event-time-safe script calls over several connections (``feast_dragonfly._store.write``).

Which row is stored (``docs/materialization.md``): per entity, the newest event time, then the
newest created time, then the highest digest of its values — decided over the whole window
before anything is written (``feast_dragonfly._engines.latest``), so neither batching, concurrency nor
the order rows arrive in can change it; the server then keeps a stored row whose event time is
newer or equal, as Feast's does.

Views with ``enable_validation=True`` get Feast's schema checks, with Feast's messages
(``feast_dragonfly._engines.validation``). Everything this engine does not specialise
(``get_historical_features``, feature views with transformations, aggregations, filters,
source views or offline writes, another online store) is Feast's ``LocalComputeEngine``'s,
unchanged.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Literal, cast

from feast.infra.common.materialization_job import (
    MaterializationJobStatus,
    MaterializationTask,
)
from feast.infra.compute_engines.backends.factory import BackendFactory
from feast.infra.compute_engines.local.compute import LocalComputeEngine
from feast.infra.compute_engines.local.job import LocalMaterializationJob
from feast.infra.registry.base_registry import BaseRegistry
from feast.repo_config import FeastConfigBaseModel
from pydantic import ConfigDict, PositiveInt
from tqdm import tqdm

from feast_dragonfly._engines.plan import ViewPlan, WindowSource, delegation_reason
from feast_dragonfly._engines.validation import Validation
from feast_dragonfly._store.online_store import DragonflyOnlineStore
from feast_dragonfly.errors import DragonflyConfigError

logger = logging.getLogger(__name__)

ENGINE_TYPE: Literal["feast_dragonfly.DragonflyMaterializationEngine"] = (
    "feast_dragonfly.DragonflyMaterializationEngine"
)


class DragonflyMaterializationEngineConfig(FeastConfigBaseModel):
    """``batch_engine:`` settings (Feast finds this class by the engine's name + ``Config``)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["feast_dragonfly.DragonflyMaterializationEngine"] = ENGINE_TYPE
    """Engine type selector."""

    batch_size: PositiveInt = 50_000
    """Rows per Arrow record batch read, converted and written at a time: peak memory grows
    with this, not with the size of the table."""

    show_progress: bool = True
    """A tqdm progress bar (rows, rows/s) on stderr — shown only when stderr is a terminal."""

    write_concurrency: PositiveInt | None = None
    """Script calls in flight at once, each on its own pooled connection; default: the
    online store's ``write_concurrency``."""

    write_rows_per_call: PositiveInt | None = None
    """Rows per event-time-checked script call; default: the online store's
    ``write_rows_per_call``."""

    stream_file_sources: bool = True
    """Read parquet ``FileSource``s of a ``file`` offline store directly with
    ``pyarrow.dataset`` (streaming). False: always go through the offline store's
    ``pull_all_from_table_or_query(...).to_arrow()`` (the whole window in memory)."""

    backend: str | None = None
    """DataFrame backend for the work delegated to Feast's local engine ('pandas', 'polars')."""


class DragonflyMaterializationEngine(LocalComputeEngine):
    """Streams offline data into ``DragonflyOnlineStore`` column-wise over parallel connections."""

    def __init__(self, *, repo_config: Any, offline_store: Any, online_store: Any, **kwargs: Any):
        try:
            settings = DragonflyMaterializationEngineConfig(**kwargs)
        except Exception as exc:  # pydantic's message names the bad field
            raise DragonflyConfigError(f"batch_engine settings are invalid: {exc}") from None
        super().__init__(
            backend=settings.backend,
            repo_config=repo_config,
            offline_store=offline_store,
            online_store=online_store,
        )
        self.settings = settings

    # ------------------------------------------------------------------ dispatch

    def delegation_reason(self, feature_view: Any) -> str | None:
        """Why Feast's local engine must materialize this view, or None for the fast path."""
        return delegation_reason(self.online_store, feature_view, self.repo_config, validates=True)

    def _materialize_one(
        self, registry: BaseRegistry, task: MaterializationTask, **kwargs: Any
    ) -> LocalMaterializationJob:
        reason = self.delegation_reason(task.feature_view)
        if reason is not None:
            logger.info(
                "%s: Feast's local engine materializes it (%s)", task.feature_view.name, reason
            )
            return super()._materialize_one(registry, task, **kwargs)
        job_id = f"{task.feature_view.name}-{task.start_time}-{task.end_time}"
        try:
            self.materialize_view(registry, task)
        except Exception as exc:
            return LocalMaterializationJob(
                job_id=job_id, status=MaterializationJobStatus.ERROR, error=exc
            )
        return LocalMaterializationJob(job_id=job_id, status=MaterializationJobStatus.SUCCEEDED)

    # ------------------------------------------------------------------ the fast path

    def materialize_view(self, registry: BaseRegistry, task: MaterializationTask) -> int:
        """Materialize one feature view's window; returns the number of source rows read."""
        config = self.repo_config
        view = task.feature_view
        store = cast(DragonflyOnlineStore, self.online_store)  # checked by delegation_reason
        plan = ViewPlan.for_task(registry, task, config)
        source = WindowSource(self, plan, task, registry)
        bar = self._progress_bar(view.name, source)
        check = self._validation(plan, source) if view.enable_validation else None
        early = check if check is not None and check.before_writing else None
        read = 0
        try:
            with store.view_writer(
                config,
                plan.view_name,
                concurrency=self.settings.write_concurrency,
                rows_per_call=self.settings.write_rows_per_call,
                progress=bar.update,
                # Room for a whole batch: the next batch converts while this one is written.
                ahead_rows=self.settings.batch_size,
                schema=plan.schema,
            ) as writer:
                for table, rows_read in source.batches(early):
                    if check is not None and early is None:
                        check.observe(table)
                    read += rows_read
                    if rows_read > table.num_rows:
                        bar.update(rows_read - table.num_rows)  # superseded or no event time
                    writer.send(
                        plan.calls(table, writer.ttl_seconds, writer.rows_per_call, writer.shards)
                    )
        finally:
            bar.close()
        if check is not None and early is None:
            check.finish()  # warnings only: what would stop the run was checked first
        return read

    def _validation(self, plan: ViewPlan, source: WindowSource) -> Validation:
        """Feast's ``enable_validation`` checks, as its local engine would run them with the
        DataFrame backend it would use (``backend``, else pandas)."""
        name = self.settings.backend
        backend = (
            BackendFactory.from_name(name) if name else BackendFactory.infer_from_entity_df(None)
        )
        assert backend is not None
        return Validation(plan, backend, streamed=source.streaming)

    def _progress_bar(self, name: str, source: WindowSource) -> tqdm:
        shown = self.settings.show_progress and _is_terminal(sys.stderr)
        total = source.count_rows() if shown else None
        return tqdm(
            total=total,
            desc=name,
            unit="rows",
            unit_scale=True,
            ncols=100,
            file=sys.stderr,
            disable=not shown,
        )


def _is_terminal(stream: Any) -> bool:
    """Whether ``stream`` is a terminal (a progress bar anywhere else is noise in a log)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
