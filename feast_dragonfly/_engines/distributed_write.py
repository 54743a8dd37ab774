"""The write step shared by the Spark and Ray engines: one partition of a view's window, exact.

The driver cuts the window into partitions by entity (every row of an entity lands in the same
partition — Spark's ``repartition`` by the join keys, Ray's group by :func:`partition_ids`), so
choosing each entity's row inside a partition is choosing it over the whole window. A
partition then goes through exactly what our single-process engine does with a batch
(``plan.ViewPlan``): ``_latest``'s rule (newest event time, newest created time, highest
value digest), column-wise conversion (``arrow``), and event-time-safe script calls
(``_write.plan_columnar_calls``) over a ``ViewWriter``'s connections. So the bytes stored are
the single-process engine's, whatever the partitioning.

What the workers need travels as a :class:`WriteSpec` of plain bytes (Feast objects do not
pickle reliably); each worker process keeps one store per online-store config, reused by
every partition it writes and closed when the process exits (or by :func:`close_stores`).
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, ClassVar

import dill
import mmh3
import numpy as np
import pyarrow as pa
from feast import Entity, FeatureView
from feast.infra.common.materialization_job import (
    MaterializationJob,
    MaterializationJobStatus,
    MaterializationTask,
)
from feast.infra.registry.base_registry import BaseRegistry
from feast.protos.feast.core.Entity_pb2 import Entity as EntityProto
from feast.protos.feast.core.FeatureView_pb2 import FeatureView as FeatureViewProto
from feast.repo_config import FeastConfigBaseModel
from pydantic import PositiveInt

from feast_dragonfly._engines import arrow
from feast_dragonfly._engines import latest as _latest
from feast_dragonfly._engines.plan import ViewPlan, delegation_reason
from feast_dragonfly._store.online_store import DragonflyOnlineStore
from feast_dragonfly.errors import DragonflyConfigError, DragonflyStoreError

logger = logging.getLogger(__name__)

#: Columns of what a partition's write returns to the driver.
RESULT_SCHEMA = pa.schema([("read", pa.int64()), ("written", pa.int64())])


class WriteSettings(FeastConfigBaseModel):
    """How each worker writes: the settings both distributed engines add to Feast's."""

    worker_write_concurrency: PositiveInt | None = None
    """Script calls in flight at once per write task, each on its own connection; default:
    the online store's ``write_concurrency``. Workers x this = connections to the server."""

    write_rows_per_call: PositiveInt | None = None
    """Rows per event-time-checked script call; default: the store's ``write_rows_per_call``."""

    batch_size: PositiveInt = 50_000
    """Rows converted and queued at a time inside a partition."""

    show_progress: bool = True
    """Print each view's rows written when it is done (always logged)."""

    stream_file_sources: bool = True
    """Read parquet ``FileSource``s of a ``file`` offline store with ``pyarrow.dataset`` on
    the driver (the single-process engine's reader) instead of the offline store's dask."""


@dataclass(frozen=True)
class WriteSpec:
    """Everything a worker needs to write one view's partitions, as picklable bytes."""

    view_proto: bytes
    entity_protos: tuple[bytes, ...]
    project: str
    repo_config: bytes  # dill, as Feast's own engines ship it
    write_concurrency: int | None = None
    write_rows_per_call: int | None = None
    batch_size: int = 50_000

    @classmethod
    def for_task(
        cls, registry: BaseRegistry, task: MaterializationTask, config: Any, settings: WriteSettings
    ) -> WriteSpec:
        view = task.feature_view
        entities = [registry.get_entity(name, task.project) for name in view.entities]
        return cls(
            view_proto=view.to_proto().SerializeToString(),
            entity_protos=tuple(e.to_proto().SerializeToString() for e in entities),
            project=task.project,
            repo_config=dill.dumps(config),
            write_concurrency=settings.worker_write_concurrency,
            write_rows_per_call=settings.write_rows_per_call,
            batch_size=settings.batch_size,
        )

    def plan(self) -> ViewPlan:
        """The view's plan, built once per worker process."""
        return _plan(self)

    def config(self) -> Any:
        return _config(self.repo_config)


@lru_cache(maxsize=16)
def _config(data: bytes) -> Any:
    return dill.loads(data)


@lru_cache(maxsize=16)
def _plan(spec: WriteSpec) -> ViewPlan:
    proto = FeatureViewProto()
    proto.ParseFromString(spec.view_proto)
    view = FeatureView.from_proto(proto, skip_udf=True)
    entities = []
    for data in spec.entity_protos:
        entity = EntityProto()
        entity.ParseFromString(data)
        entities.append(Entity.from_proto(entity))
    return ViewPlan(view, entities, spec.project, spec.config())


# --------------------------------------------------------------------------- stores per process

_stores: dict[str, DragonflyOnlineStore] = {}
_stores_lock = threading.Lock()


def store_for(config: Any) -> DragonflyOnlineStore:
    """This process's store for ``config``'s online store: one per config, reused by every
    partition (its pools stay warm), closed at exit."""
    key = config.online_store.model_dump_json()
    with _stores_lock:
        store = _stores.get(key)
        if store is None:
            if not _stores:
                atexit.register(close_stores)
            store = _stores[key] = DragonflyOnlineStore()
        return store


def close_stores() -> None:
    """Close every store this process opened (their pools and threads)."""
    with _stores_lock:
        stores = list(_stores.values())
        _stores.clear()
    for store in stores:
        asyncio.run(store.close())


# --------------------------------------------------------------------------- one partition


def partition_ids(spec: WriteSpec, table: pa.Table, partitions: int) -> np.ndarray:
    """Per row, which of ``partitions`` its entity goes to: a hash of the entity's key bytes
    (what ``_latest`` groups by), the same in every process."""
    plan = spec.plan()
    table = plan.rename(table)
    keys = arrow.entity_key_bytes(
        {name: table[name] for name in plan.join_key_types},
        plan.join_key_types,
        b"",
        plan.key_version,
    )
    hashes = np.fromiter(
        (mmh3.hash(key, signed=False) for key in keys.to_pylist()),
        dtype=np.uint64,
        count=len(keys),
    )
    return (hashes % partitions).astype(np.int64)


def key_columns(plan: ViewPlan, columns: list[str]) -> list[str]:
    """The join keys' names among a window's ``columns`` (field-mapped or not)."""
    mapped = plan.field_mapping.get
    return [key if key in columns else mapped(key, key) for key in plan.join_keys]


def latest_rows(plan: ViewPlan, table: pa.Table) -> pa.Table:
    """The rows of ``table`` to store: per entity, the one ``_latest``'s rule picks (all of an
    entity's rows must be in ``table``)."""
    latest = _latest.LatestRows()
    plan.add_candidates(latest, table, 0)
    decision = latest.decide()
    keep = decision.rows
    if len(decision.tied_rows):
        tied = table.take(pa.array(decision.tied_rows))
        keep = _latest.settle_ties(decision, plan.tie_digests(tied, decision.tied_rows))
    return table.take(pa.array(keep))


def write_partition(spec: WriteSpec, batches: Iterable[pa.RecordBatch | pa.Table]) -> pa.Table:
    """Write one partition (every row of its entities); returns one row: source rows read and
    rows the server wrote. A failure raises, naming the view (never a password)."""
    plan = spec.plan()
    tables = [b if isinstance(b, pa.Table) else pa.Table.from_batches([b]) for b in batches]
    tables = [t for t in tables if t.num_rows]
    read = sum(t.num_rows for t in tables)
    written = 0
    if read:
        config = spec.config()
        chosen = latest_rows(plan, pa.concat_tables(tables, promote_options="none"))
        try:
            with store_for(config).view_writer(
                config,
                plan.view_name,
                concurrency=spec.write_concurrency,
                rows_per_call=spec.write_rows_per_call,
                ahead_rows=spec.batch_size,
                schema=plan.schema,
            ) as writer:
                for batch in chosen.to_batches(max_chunksize=spec.batch_size):
                    table = pa.Table.from_batches([batch])
                    writer.send(
                        plan.calls(table, writer.ttl_seconds, writer.rows_per_call, writer.shards)
                    )
        except DragonflyStoreError as exc:
            raise type(exc)(f"{plan.view.name}: {exc}") from exc
        written = writer.written
    return pa.table({"read": [read], "written": [written]}, schema=RESULT_SCHEMA)


# --------------------------------------------------------------------------- on the driver

# A worker's error as its traceback ends: ``feast_dragonfly.errors.DragonflyConnectionError:
# typed: ...``; ours first (they never carry a password), else the last Python one.
_OUR_ERROR = re.compile(r"(Dragonfly\w*Error): (.+)")
_PYTHON_ERROR = re.compile(r"^\s*((?:[a-z_]\w*\.)*[A-Z]\w*(?:Error|Exception)): (.+)$", re.M)


def job_failed(engine: str, view: str, exc: BaseException) -> DragonflyStoreError:
    """The error a failed Spark / Ray job raises on the driver: the view, the engine, the
    worker's own error and what to do."""
    text = str(exc)
    ours = _OUR_ERROR.findall(text)
    python = [m for m in _PYTHON_ERROR.findall(text) if not m[0].startswith(("org.", "java."))]
    if ours:
        cause = ours[-1][1].strip()
    elif python:
        cause = f"{python[-1][0]}: {python[-1][1].strip()}"
    else:
        cause = f"{type(exc).__name__}: {_first_line(text)}"
    return DragonflyStoreError(
        f"materializing feature view {view!r} with {engine} failed: {cause}. Rows of this "
        "window may be missing from the online store; run the same materialization again "
        "(writes are event-time-safe, so a re-run completes it)"
    )


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0][:500] if lines else "(no message)"


def report(
    engine: str, view: str, results: Iterable[dict[str, Any]], show: bool
) -> tuple[int, int]:
    """Sum the partitions' results; log (and print when ``show``) rows read and written."""
    read = written = 0
    for row in results:
        read += int(row["read"])
        written += int(row["written"])
    message = f"{view}: {written} rows written ({read} source rows read) by {engine}"
    logger.info(message)
    if show:
        print(message, flush=True)
    return read, written


class DistributedEngine:
    """What the Spark and Ray engines share around their write: settings parsing, and the
    dispatch of each view to our write or to Feast's engine (the next class in the MRO)."""

    #: 'Spark' / 'Ray', in messages.
    engine_name: ClassVar[str]
    settings_class: ClassVar[type[WriteSettings]]
    job_class: ClassVar[type[Any]]
    repo_config: Any  # set by Feast's ComputeEngine
    online_store: Any
    settings: Any  # an instance of settings_class

    def __init__(self, *, repo_config: Any, offline_store: Any, online_store: Any, **kwargs: Any):
        try:
            settings = self.settings_class(**kwargs)
        except Exception as exc:  # pydantic's message names the bad field
            raise DragonflyConfigError(f"batch_engine settings are invalid: {exc}") from None
        super().__init__(  # type: ignore[call-arg]
            repo_config=repo_config, offline_store=offline_store, online_store=online_store
        )
        self.settings = settings

    def _materialize_one(
        self,
        registry: BaseRegistry,
        task: MaterializationTask,
        from_offline_store: bool = False,
        **kwargs: Any,
    ) -> MaterializationJob:
        view = task.feature_view
        reason = delegation_reason(self.online_store, view, self.repo_config)
        if from_offline_store or reason is not None:
            logger.info(
                "%s: Feast's %s engine materializes it (%s)",
                view.name,
                self.engine_name,
                reason or "from_offline_store",
            )
            return super()._materialize_one(  # type: ignore[misc]
                registry, task, from_offline_store, **kwargs
            )
        job_id = f"{view.name}-{task.start_time}-{task.end_time}"
        try:
            results = self.write_window(registry, task, self.spec(registry, task))
            report(self.engine_name, view.name, results, self.settings.show_progress)
        except Exception as exc:
            return self.job_class(job_id=job_id, status=MaterializationJobStatus.ERROR, error=exc)
        return self.job_class(job_id=job_id, status=MaterializationJobStatus.SUCCEEDED)

    def spec(self, registry: BaseRegistry, task: MaterializationTask) -> WriteSpec:
        return WriteSpec.for_task(registry, task, self.repo_config, self.settings)

    def write_window(
        self, registry: BaseRegistry, task: MaterializationTask, spec: WriteSpec
    ) -> list[dict[str, Any]]:
        """Write the task's window through :func:`write_partition`; every partition's
        result. A failed job raises :func:`job_failed`'s error."""
        raise NotImplementedError
