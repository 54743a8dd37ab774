"""Feast's schema validation (``enable_validation=True``) on our engine's fast path.

Feast's local engine validates the table its dedup node hands on (one row per entity): a
feature column missing from it is a ``ValueError``; a column whose Arrow type is not the one
the feature's declared type maps to is logged as a warning (bar the pairs Feast accepts: map,
struct and JSON columns have several representations); every value of a ``Json`` feature must
parse, else a ``ValueError`` names the count and the first bad row. Same messages here.

Feast's table has been through its DataFrame backend (pandas by default) twice, and through
pandas once more in the ``file`` offline store, which changes some types (timestamps become
nanoseconds, an all-null string column becomes ``null``, an integer column with nulls becomes
``double`` unless pandas metadata says otherwise). The types it would see are found by sending
a two-row sample of the picked rows — a value and, where the column has one, a null — through
those same conversions, so the warnings are Feast's without converting the whole table.

Feast numbers its rows newest event time first (then newest created time, rows without one
last); rows equal on both come in the offline store's order, which is not stable, and here in
source order.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from feast.infra.compute_engines.backends.base import DataFrameBackend
from feast.types import PrimitiveFeastType, from_feast_to_pyarrow_type

from feast_dragonfly._engines import arrow
from feast_dragonfly._engines import latest as _latest

logger = logging.getLogger(__name__)

#: The name Feast's validation node carries, which its messages show.
NODE = "validate"


def expected_types(view: Any) -> tuple[dict[str, pa.DataType | None], list[str]]:
    """Each feature's Arrow type as Feast's validation expects it (None: not checked), and the
    features declared ``Json``, in the view's order."""
    columns: dict[str, pa.DataType | None] = {}
    json_columns: list[str] = []
    for feature in view.features:
        try:
            columns[feature.name] = from_feast_to_pyarrow_type(feature.dtype)
        except (ValueError, KeyError):
            columns[feature.name] = None
        if isinstance(feature.dtype, PrimitiveFeastType) and feature.dtype.name == "JSON":
            json_columns.append(feature.name)
    return columns, json_columns


def compatible(expected: pa.DataType, actual: pa.DataType) -> bool:
    """Whether Feast accepts ``actual`` for ``expected`` without a warning."""
    if actual == expected:
        return True
    if pa.types.is_map(expected):
        return (
            pa.types.is_map(actual)
            or pa.types.is_struct(actual)
            or pa.types.is_list(actual)
            or pa.types.is_large_list(actual)
        )
    if pa.types.is_large_string(expected):  # Json
        return pa.types.is_string(actual) or pa.types.is_large_string(actual)
    if pa.types.is_struct(expected):
        return pa.types.is_struct(actual) or pa.types.is_map(actual) or pa.types.is_list(actual)
    return False


class _Column:
    """What the sample needs of one column: a value (non-empty when it is a list), and whether
    it holds a null."""

    __slots__ = ("value", "nonempty", "null")

    def __init__(self) -> None:
        self.value: pa.Array | None = None
        self.nonempty = False
        self.null = False

    def observe(self, column: pa.Array) -> None:
        if column.null_count:
            self.null = True
        if self.nonempty:
            return
        valid = column.drop_null()
        if not len(valid):
            return
        if not _is_list(valid.type):
            self.value, self.nonempty = valid.slice(0, 1), True
            return
        at = pc.index(pc.greater(pc.list_value_length(valid), 0), True).as_py()
        if at >= 0:
            self.value, self.nonempty = valid.slice(at, 1), True
        elif self.value is None:
            self.value = valid.slice(0, 1)  # only empty lists so far


def _is_list(kind: pa.DataType) -> bool:
    return pa.types.is_list(kind) or pa.types.is_large_list(kind)


class _JsonErrors:
    """Invalid values of one ``Json`` column: how many, and the first one in Feast's order."""

    __slots__ = ("count", "first")

    def __init__(self) -> None:
        self.count = 0
        self.first: tuple[int, int, int, str] | None = None  # event, created, -row, error

    def observe(self, column: pa.Array, event: np.ndarray, created: np.ndarray, row0: int) -> None:
        if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
            return  # Feast parses only values that are strings
        for i, text in enumerate(column.to_pylist()):
            if text is None:
                continue
            try:
                json.loads(text)
            except (json.JSONDecodeError, TypeError) as exc:
                self.count += 1
                rank = (int(event[i]), int(created[i]), -(row0 + i), str(exc))
                if self.first is None or rank[:3] > self.first[:3]:
                    self.first = rank


class Validation:
    """Feast's validation of one view's picked rows, fed batch by batch (``observe``) and
    concluded once (``finish``). ``before_writing``: the view has ``Json`` features, whose
    errors must stop the run before anything is written, so the engine validates in a pass of
    its own; otherwise it observes the batches it writes and ``finish`` only warns."""

    def __init__(self, plan: Any, backend: DataFrameBackend, *, streamed: bool) -> None:
        self.plan = plan
        self.backend = backend
        self.streamed = streamed  # read from parquet here, not through the offline store
        self.expected, self.json_columns = expected_types(plan.view)
        self.before_writing = bool(self.json_columns)
        self._schema: pa.Schema | None = None
        self._columns: dict[str, _Column] = {}
        self._first_rows: pa.Table | None = None  # two picked rows: keys and timestamps
        self._ordering = set(plan.ordering_columns)  # taken from two whole picked rows
        self._json = {name: _JsonErrors() for name in self.json_columns}
        self._orders: list[tuple[np.ndarray, np.ndarray]] = []  # (event, created) per batch
        self._rows = 0

    def observe(self, batch: pa.Table) -> None:
        """One batch of picked rows, as read (before the field mapping renames columns)."""
        table = batch.combine_chunks()
        if self._schema is None:
            self._schema = table.schema
            self._check_missing(table)
        if not table.num_rows:
            return
        if self._first_rows is None or self._first_rows.num_rows < 2:
            head = table.slice(0, 2)
            if self._first_rows is not None:
                head = pa.concat_tables([self._first_rows, head]).slice(0, 2)
            self._first_rows = head
        for name in table.column_names:
            if name not in self._ordering:
                self._columns.setdefault(name, _Column()).observe(table[name].chunk(0))
        if self.json_columns:
            self._observe_json(self.plan.rename(table))
        self._rows += table.num_rows

    def _observe_json(self, table: pa.Table) -> None:
        event = arrow.event_time_micros(table[self.plan.event_column(table)])
        created_name = self.plan.created_column(table)
        created = (
            _latest.created_micros(table[created_name], created_name)
            if created_name
            else np.full(table.num_rows, _latest.NO_CREATED, dtype=np.int64)
        )
        self._orders.append((event, created))
        for name, errors in self._json.items():
            errors.observe(table[name].chunk(0), event, created, self._rows)

    def _check_missing(self, table: pa.Table) -> None:
        actual = set(self._as_feast_sees(self._ascending(table.slice(0, 2))).column_names)
        missing = set(self.expected) - actual
        if missing:
            raise ValueError(
                f"[Validation: {NODE}] Missing expected columns: {missing}. "
                f"Actual columns: {sorted(actual)}"
            )

    def finish(self) -> None:
        """Warn about the types Feast would warn about; raise Feast's error for invalid JSON."""
        if self._schema is None:
            return  # no rows: nothing was validated, nothing is written
        seen = self._as_feast_sees(self._sample()).schema
        for name, expected in self.expected.items():
            actual = seen.field(name).type
            if expected is not None and not compatible(expected, actual):
                logger.warning(
                    "[Validation: %s] Column '%s' type mismatch: expected %s, got %s",
                    NODE,
                    name,
                    expected,
                    actual,
                )
        for name, errors in self._json.items():
            if errors.first is not None:
                raise ValueError(
                    f"[Validation: {NODE}] Column '{name}' declared as Json "
                    f"contains {errors.count} invalid JSON value(s). "
                    f"First error at row {self._position(errors.first)}: {errors.first[3]}"
                )

    def _position(self, first: tuple[int, int, int, str]) -> int:
        """Where Feast's table has this row: rows before it, newest event (then created) time
        first, equal ones in source order."""
        event = np.concatenate([e for e, _ in self._orders])
        created = np.concatenate([c for _, c in self._orders])
        rows = np.arange(len(event))
        t, c, row = first[0], first[1], -first[2]
        before = (event > t) | ((event == t) & (created > c))
        before |= (event == t) & (created == c) & (rows < row)
        return int(before.sum())

    def _sample(self) -> pa.Table:
        """Up to two rows standing for every picked row: each feature's value in the first,
        a null in the second where the feature has one; keys and times of two picked rows."""
        assert self._schema is not None and self._first_rows is not None
        first = self._ascending(self._first_rows)
        rows = first.num_rows
        arrays = []
        for field in self._schema:
            column = self._columns.get(field.name)
            if column is None:  # keys and times: two picked rows as they are
                arrays.append(first[field.name].combine_chunks())
                continue
            null = pa.nulls(1, field.type)
            value = column.value if column.value is not None else null
            parts = [value, null if column.null else value][:rows]
            arrays.append(pa.concat_arrays(parts))
        return pa.Table.from_arrays(arrays, schema=self._schema)

    def _ascending(self, table: pa.Table) -> pa.Table:
        """Rows oldest first, so that Feast's dedup reorders them as it reorders a real window
        (a reordered pandas index becomes a column of its table, which its messages list)."""
        return table.take(pc.sort_indices(table, [(self.plan.source_ts_column, "ascending")]))

    def _as_feast_sees(self, table: pa.Table) -> pa.Table:
        """``table`` (as read) after the conversions Feast's rows go through before its
        validation: the ``file`` offline store's (pandas, leaving an index that is not a
        range), the field mapping, its filter node's and its dedup node's (the backend's)."""
        if self.streamed:
            frame = table.to_pandas()
            frame.index = pd.Index(np.arange(len(frame)))
            table = pa.Table.from_pandas(frame)
        table = self.plan.rename(table)
        backend = self.backend
        table = backend.to_arrow(backend.from_arrow(table))  # the filter node
        frame = backend.from_arrow(table)
        mapped = self.plan.field_mapping.get
        keys = [mapped(name, name) for name in self.plan.join_keys]
        order = [self.plan.dedup_ts]
        if self.plan.dedup_created and self.plan.dedup_created in table.column_names:
            order.append(self.plan.dedup_created)
        frame = backend.drop_duplicates(frame, keys=keys, sort_by=order, ascending=False)
        return backend.to_arrow(frame)  # the dedup node's
