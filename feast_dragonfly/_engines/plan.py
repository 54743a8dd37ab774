"""The plan every engine of this package shares: which views it specialises, and one view's window.

``delegation_reason`` decides which views our engines write and which stay Feast's;
``ViewPlan`` is one view's columns and byte layout (rebuilt from plain inputs on a Spark / Ray
worker); ``WindowSource`` reads the view's window — streamed from parquet when the offline
store is a local ``file`` one, else through the offline store (``window_job``). The local
engine (``local``) and the distributed ones (``spark``, ``ray``, ``distributed_write``) all
build on this, so they store the same rows, byte for byte.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlparse

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
from feast import utils as feast_utils
from feast.data_format import ParquetFormat
from feast.feature_view import DUMMY_ENTITY_NAME
from feast.infra.common.materialization_job import MaterializationTask
from feast.infra.compute_engines.dag.context import ColumnInfo
from feast.infra.compute_engines.utils import create_offline_store_retrieval_job
from feast.infra.offline_stores.dask import DaskOfflineStoreConfig
from feast.infra.offline_stores.file_source import FileSource
from feast.infra.offline_stores.offline_store import RetrievalJob
from feast.infra.registry.base_registry import BaseRegistry

from feast_dragonfly._engines import arrow
from feast_dragonfly._engines import latest as _latest
from feast_dragonfly._engines.validation import Validation
from feast_dragonfly._protocol import keys as _keys
from feast_dragonfly._protocol.shards import ShardMap
from feast_dragonfly._store import feast_hooks, wide, write
from feast_dragonfly._store import layout as _layout
from feast_dragonfly._store.compact import columns as compact_columns
from feast_dragonfly._store.compact import views as compact_views
from feast_dragonfly._store.compact import write as compact_write
from feast_dragonfly._store.online_store import DragonflyOnlineStore
from feast_dragonfly.errors import DragonflyDataError

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------- which views


def delegation_reason(
    online_store: Any, feature_view: Any, config: Any = None, *, validates: bool = False
) -> str | None:
    """Why Feast's own engine must materialize this view, or None when ours can: shared by
    every engine of this package (local, Spark, Ray), so they specialise the same views.
    ``config``: the repo config (a compact record has no width limit); ``validates``: the
    engine runs Feast's ``enable_validation`` checks itself (``validation``)."""
    if not isinstance(online_store, DragonflyOnlineStore):
        return "the online store is not feast_dragonfly.DragonflyOnlineStore"
    if not feast_hooks.present(feast_hooks.COLUMN_NAMES):
        return "this Feast has no feast.utils._get_column_names"
    if not getattr(feature_view, "online", True):
        return "the feature view is not online"
    if getattr(feature_view, "offline", False):
        return "the feature view also writes to the offline store"
    if getattr(feature_view, "feature_transformation", None):
        return "the feature view has a transformation"
    if getattr(feature_view, "aggregations", None):
        return "the feature view has aggregations"
    if getattr(feature_view, "enable_validation", False) and not validates:
        return "the feature view enables validation"
    if getattr(feature_view, "filter", None):
        return "the feature view has a filter"
    if getattr(feature_view, "source_views", None):
        return "the feature view reads other feature views"
    if feature_view.batch_source is None:
        return "the feature view has no batch source"
    if list(feature_view.entities) == [DUMMY_ENTITY_NAME]:
        return "the feature view has no entities"
    if wide.is_wide_view(len(feature_view.features)) and not _compact(config):
        return "a row has more features than one server command carries"
    return None


def _compact(config: Any) -> bool:
    """Whether the repo config's online store writes compact records."""
    return getattr(getattr(config, "online_store", None), "layout", "feast") == "compact"


# --------------------------------------------------------------------------- per view


class ViewPlan:
    """Column names, types and byte-layout constants for one feature view (built from the
    view, its entities and the project alone, so a Spark / Ray worker can rebuild it)."""

    def __init__(self, view: Any, entities: list[Any], project: str, config: Any) -> None:
        join_keys, feature_cols, ts_col, created_col = feast_utils._get_column_names(view, entities)
        self.view = view
        self.join_keys = join_keys
        self.config = config
        self.source_columns = list(dict.fromkeys(join_keys + feature_cols + [ts_col]))
        if created_col:
            self.source_columns.append(created_col)
        # What deciding the stored row per entity reads (``_latest``): keys and timestamps.
        self.ordering_columns = list(
            dict.fromkeys(join_keys + [ts_col] + ([created_col] if created_col else []))
        )
        self.source_ts_column = ts_col
        # Feast's source-read node renames columns through the field mapping (the stream
        # source's when there is one), exactly as here.
        source = view.stream_source or view.batch_source
        self.field_mapping = dict(source.field_mapping or {}) if source else {}
        mapped = self.field_mapping.get
        self.dedup_ts = mapped(ts_col, ts_col)
        self.dedup_created = mapped(created_col, created_col) if created_col else None
        # ...and its converter reads the event time by the batch source's field name.
        assert view.batch_source is not None  # views without one are delegated to Feast
        self.event_ts = view.batch_source.timestamp_field
        self.join_key_types = {
            column.name: column.dtype.to_value_type() for column in view.entity_columns
        }
        self.features = [(f.name, f.dtype.to_value_type()) for f in view.features]
        self.view_name = _layout.storage_view_name(view, config)
        self.fields = [_keys.feature_field(self.view_name, name) for name, _ in self.features]
        self.suffix = project.encode("utf-8")
        self.key_version = config.entity_key_serialization_version
        #: With ``layout: compact``: the record schema and the view's ttl (seconds, 0: never).
        self.schema = compact_views.schema_of(view) if _compact(config) else None
        self.view_ttl = compact_views.ttl_seconds(view)
        #: What a compact record's key adds to the entity's hash key.
        self.record_suffix = _keys.record_suffix(self.view_name)

    @classmethod
    def for_task(cls, registry: BaseRegistry, task: MaterializationTask, config: Any) -> ViewPlan:
        view = task.feature_view
        entities = [registry.get_entity(name, task.project) for name in view.entities]
        return cls(view, entities, task.project, config)

    def rename(self, batch: pa.RecordBatch | pa.Table) -> pa.Table:
        table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
        if self.field_mapping:
            table = table.rename_columns([self.field_mapping.get(c, c) for c in table.column_names])
        return table

    def event_column(self, table: pa.Table) -> str:
        return self.event_ts if self.event_ts in table.column_names else self.dedup_ts

    def created_column(self, table: pa.Table) -> str | None:
        created = self.dedup_created
        return created if created and created in table.column_names else None

    def add_candidates(self, latest: _latest.LatestRows, batch: pa.Table, first_row: int) -> None:
        """Hand rows ``first_row, first_row + 1, ...`` of the source to ``latest`` (rows
        without an event time are never candidates: Feast skips them)."""
        table = self.rename(batch).combine_chunks()
        rows = np.arange(first_row, first_row + table.num_rows, dtype=np.int64)
        event = table[self.event_column(table)]
        if event.null_count:
            valid = pc.is_valid(event)
            table = table.filter(valid)
            rows = rows[valid.to_numpy(zero_copy_only=False)]
            event = table[self.event_column(table)]
        keys = arrow.entity_key_bytes(
            {name: table[name] for name in self.join_key_types},
            self.join_key_types,
            b"",  # one project: the suffix would not tell keys apart
            self.key_version,
        )
        created_name = self.created_column(table)
        created = (
            _latest.created_micros(table[created_name], created_name)
            if created_name
            else np.full(table.num_rows, _latest.NO_CREATED, dtype=np.int64)
        )
        latest.add(keys, arrow.event_time_micros(event), created, rows)

    def tie_digests(self, table: pa.Table, numbers: np.ndarray) -> dict[int, bytes]:
        """Source row number -> digest of its stored values, for rows ``numbers`` (the rows
        of ``table``): what settles entities whose best rows tie on both timestamps."""
        values = self.value_columns(self.feature_table(table))
        return dict(zip(numbers.tolist(), _latest.content_digests(values)))

    def value_columns(self, table: pa.Table) -> list[pa.BinaryArray]:
        """Each feature's stored bytes, in the view's feature order."""
        return [arrow.value_bytes(table[name], value_type) for name, value_type in self.features]

    def feature_table(self, batch: pa.Table) -> pa.Table:
        """``batch`` renamed and checked as Feast checks it before converting."""
        table = self.rename(batch).combine_chunks()  # every chunk (Feast's converter: the first)
        if feast_hooks.present(feast_hooks.VECTOR_LENGTHS):  # else: this Feast checks none
            feast_utils._validate_vector_field_lengths(table, self.view)
        for name, _ in self.features:
            if name not in table.column_names:
                raise ValueError(f"Column {name} not found in table")
        return table

    def calls(
        self,
        batch: pa.Table,
        ttl_seconds: int | None,
        rows_per_call: int,
        shards: ShardMap | None = None,
    ) -> Iterator[write.ScriptCall]:
        """Script calls writing ``batch``: rows already chosen by ``_latest``, one per entity,
        each with an event time; grouped by Dragonfly shard with a ``shards`` map."""
        if batch.num_rows == 0:
            return
        table = self.feature_table(batch)
        keys = arrow.entity_key_bytes(
            {name: table[name] for name in self.join_key_types},
            self.join_key_types,
            self.suffix,
            self.key_version,
        )
        if shards is not None and len(keys) > 1:
            suffix = b"" if self.schema is None else self.record_suffix
            order = pa.array(shards.order([key + suffix for key in keys.to_pylist()]))
            table, keys = table.take(order), keys.take(order)
        micros = arrow.event_time_micros(table[self.event_column(table)])
        seconds, nanos = arrow.timestamp_parts(micros)
        if self.schema is not None:
            yield from self._compact_calls(table, keys, seconds, nanos, ttl_seconds, rows_per_call)
            return
        stamps = arrow.timestamp_bytes(seconds, nanos)
        values = list(zip(self.fields, self.value_columns(table)))
        yield from write.plan_columnar_calls(
            keys,
            seconds,
            nanos,
            stamps,
            values,
            view_name=self.view_name,
            ttl_seconds=ttl_seconds,
            rows_per_call=rows_per_call,
        )

    def _compact_calls(
        self,
        table: pa.Table,
        keys: pa.BinaryArray,
        seconds: np.ndarray,
        nanos: np.ndarray,
        key_ttl: int | None,
        rows_per_call: int,
    ) -> Iterator[write.ScriptCall]:
        """``layout: compact``: one record per row, encoded column-wise."""
        assert self.schema is not None
        records = compact_columns.encode_columns(
            self.schema, {name: table[name] for name, _ in self.features}, seconds, nanos
        )
        now = compact_views.now_ms()
        expire_at = compact_views.expire_at_ms_array(
            seconds, nanos, view_ttl=self.view_ttl, key_ttl=key_ttl, now=now
        )
        yield from compact_write.plan_columnar_calls(
            keys,
            records,
            expire_at,
            view_name=self.view_name,
            rows_per_call=rows_per_call,
            now=now,
        )


# --------------------------------------------------------------------------- reading


class WindowSource:
    """Record batches of one view's window: streamed from parquet, or via the offline store.

    ``engine``: any of this package's engines (``settings.batch_size`` and
    ``settings.stream_file_sources``, Feast's ``repo_config`` and execution context)."""

    def __init__(
        self,
        engine: Any,
        plan: ViewPlan,
        task: MaterializationTask,
        registry: BaseRegistry,
    ):
        self.engine = engine
        self.registry = registry
        self.plan = plan
        self.task = task
        self.batch_size = engine.settings.batch_size
        self._dataset: ds.Dataset | None = None
        self._filter: ds.Expression | None = None
        self._table: pa.Table | None = None  # the offline store's window, pulled once
        if engine.settings.stream_file_sources:
            self._prepare_stream()

    # -- streaming a local parquet FileSource ---------------------------------------------

    def _prepare_stream(self) -> None:
        config = self.engine.repo_config
        source = self.plan.view.batch_source
        if not isinstance(config.offline_store, DaskOfflineStoreConfig):
            return
        if not isinstance(source, FileSource) or type(source) is not FileSource:
            return
        if source.file_format is not None and not isinstance(source.file_format, ParquetFormat):
            return
        if config.materialization_config.pull_latest_features:
            return
        resolve_credentials = getattr(source, "resolve_credentials", None)  # Feast 0.67 on
        if source.s3_endpoint_override or (resolve_credentials and resolve_credentials()):
            return
        uri = FileSource.get_uri_for_file_path(config.repo_path, source.path)
        scheme = urlparse(uri).scheme
        if scheme and scheme != "file" and len(scheme) > 1:  # len 1: a Windows drive letter
            return
        try:
            dataset = ds.dataset(uri.removeprefix("file://"), format="parquet")
        except (OSError, pa.ArrowInvalid) as exc:
            logger.info("streaming %s is not possible (%s); using the offline store", uri, exc)
            return
        ts_col = self.plan.source_ts_column
        if ts_col not in dataset.schema.names:
            return
        ts_type = dataset.schema.field(ts_col).type
        if not pa.types.is_timestamp(ts_type):
            return  # Feast's pandas path parses other types; let it
        missing = [c for c in self.plan.source_columns if c not in dataset.schema.names]
        if missing:
            return  # the offline store raises Feast's own error for this
        self._dataset = dataset
        self._filter = _window_filter(ts_col, ts_type, self.task.start_time, self.task.end_time)

    @property
    def streaming(self) -> bool:
        return self._dataset is not None

    def table(self) -> pa.Table | None:
        """The whole window as one table (None: no rows), for the distributed engines to hand
        to Spark / Ray: parquet read with pyarrow when streaming is possible (much faster
        than the file offline store's dask), else the offline store's table."""
        if self._dataset is None:
            table = self._pull()
        else:
            tables = list(self._stream(self.plan.source_columns))
            table = pa.concat_tables(tables) if tables else None
        return table if table is not None and table.num_rows else None

    def count_rows(self) -> int | None:
        if self._dataset is None:
            return None
        return self._dataset.count_rows(filter=self._filter)

    def batches(self, check: Validation | None = None) -> Iterator[tuple[pa.Table, int]]:
        """The rows to store, batch by batch, each with how many source rows it stands for.
        ``check``: a validation to run over every picked row before the first is handed on.

        The first pass reads only keys and timestamps and picks the row per entity
        (``_latest``); only if some entity's best rows tie on both timestamps, a second pass
        converts just those rows to compare their values; the last pass reads every column and
        keeps the picked rows. Every pass numbers the rows in the same order (one reading
        thread, files in path order; the offline store's table is pulled once), and a source
        whose row count changed in between is an error.
        """
        latest = _latest.LatestRows()
        seen = 0
        for table in self._tables(self.plan.ordering_columns):
            self.plan.add_candidates(latest, table, seen)
            seen += table.num_rows
        decision = latest.decide()
        keep = decision.rows
        if len(decision.tied_rows):
            # Entities whose best rows tie on both timestamps: their values decide.
            digests: dict[int, bytes] = {}
            for table, numbers, _ in self._select(decision.tied_rows, seen):
                if len(numbers):
                    digests.update(self.plan.tie_digests(table, numbers))
            keep = _latest.settle_ties(decision, digests)
        if check is not None:
            for table, _, _ in self._select(keep, seen):
                check.observe(table)
            check.finish()
        for table, _, n in self._select(keep, seen):
            yield table, n

    def _select(
        self, rows: np.ndarray, expected: int
    ) -> Iterator[tuple[pa.Table, np.ndarray, int]]:
        """Every batch cut down to the source rows numbered ``rows`` (ascending), with those
        rows' numbers and how many source rows the batch held."""
        for table, offset, n in self._numbered(expected):
            lo, hi = np.searchsorted(rows, [offset, offset + n])
            wanted = rows[lo:hi]
            if len(wanted) < n:
                table = table.take(pa.array(wanted - offset))
            yield table, wanted, n

    def _numbered(self, expected: int) -> Iterator[tuple[pa.Table, int, int]]:
        """Every batch (all columns) with its first row's number and its row count; the
        numbers are the first pass's, so a source that changed in between is an error."""
        offset = 0
        for table in self._tables(self.plan.source_columns):
            n = table.num_rows
            yield table, offset, n
            offset += n
        if offset != expected:
            raise DragonflyDataError(
                f"{self.plan.view.name}: the source changed while it was materialized "
                f"({expected} rows, then {offset}); run the materialization again"
            )

    def _tables(self, columns: list[str]) -> Iterator[pa.Table]:
        if self._dataset is not None:
            yield from self._stream(columns)
        else:
            yield from self._through_offline_store()

    def _stream(self, columns: list[str]) -> Iterator[pa.Table]:
        assert self._dataset is not None
        # No pre-buffering, no decoding threads racing ahead: with them the scanner held most
        # of a large file in memory at the start (2M rows: 1.1 GB peak RSS instead of ~0.5).
        # One thread also keeps the row order fixed, which ``batches`` relies on.
        scanner = self._dataset.scanner(
            columns=columns,
            filter=self._filter,
            batch_size=self.batch_size,
            batch_readahead=1,
            fragment_readahead=1,
            fragment_scan_options=ds.ParquetFragmentScanOptions(pre_buffer=False),
            use_threads=False,
        )
        pending: list[pa.RecordBatch] = []
        rows = 0
        for batch in scanner.to_batches():
            if batch.num_rows == 0:
                continue
            pending.append(batch)
            rows += batch.num_rows
            if rows >= self.batch_size:
                yield pa.Table.from_batches(pending)
                pending, rows = [], 0
        if pending:
            yield pa.Table.from_batches(pending)

    # -- any other source --------------------------------------------------------------

    def _through_offline_store(self) -> Iterator[pa.Table]:
        if self._table is None:
            self._table = self._pull()
        # Every chunk of a multi-chunk table, in batches of at most batch_size rows.
        for batch in self._table.to_batches(max_chunksize=self.batch_size):
            yield pa.Table.from_batches([batch])

    def _pull(self) -> pa.Table:
        return window_job(self.engine, self.registry, self.task, self.plan).to_arrow()


def window_job(
    engine: Any, registry: BaseRegistry, task: MaterializationTask, plan: ViewPlan
) -> RetrievalJob:
    """The offline store's job reading ``task``'s window of the view's source: the columns
    Feast's source-read node asks for, with its field mapping (every engine here reads the
    window through this when it does not stream the files itself)."""
    context = engine.get_execution_context(registry, task)
    join_keys, feature_cols, ts_col, created_col = feast_utils._get_column_names(
        plan.view, context.entity_defs
    )
    assert plan.view.batch_source is not None
    return create_offline_store_retrieval_job(
        data_source=plan.view.batch_source,
        context=context,
        start_time=task.start_time,
        end_time=task.end_time,
        column_info=ColumnInfo(
            join_keys=join_keys,
            feature_cols=feature_cols,
            ts_col=ts_col,
            created_ts_col=created_col,
            field_mapping=plan.field_mapping or None,
        ),
    )


def _window_filter(
    column: str, kind: pa.TimestampType, start: datetime, end: datetime
) -> ds.Expression:
    """``start <= column <= end`` as Feast's file offline store applies it: both ends
    inclusive, a naive column read as UTC, compared as instants at full precision."""
    field = ds.field(column)
    if kind.unit in ("s", "ms"):
        field = field.cast(pa.timestamp("us", tz=kind.tz))

    def bound(moment: datetime) -> pa.Scalar:
        aware = _layout.as_utc(moment).astimezone(timezone.utc)
        if kind.tz is None:
            return pa.scalar(aware.replace(tzinfo=None), pa.timestamp("us"))
        return pa.scalar(aware, pa.timestamp("us", tz=kind.tz))

    return (field >= bound(start)) & (field <= bound(end))
