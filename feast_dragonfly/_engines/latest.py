"""Which source row of each entity a materialization run stores: Feast's rule, made exact.

Feast keeps, per entity, the row with the newest event time, breaking ties by the newest
created time (a row without one loses). Its Redis store then refuses to replace a stored row
whose event time is newer or equal, and stores only the event time (``_ts``). So a row that
ties the winner's event time but loses on created time must never reach the server: whichever
of the two were written first would stay. Batches are converted and written concurrently, so
the decision cannot be left to write order; it is made here, over the whole window, before
anything is written.

Rows equal on both timestamps are told apart by what they would store: the row whose
feature values hash highest (:func:`content_digests`) wins. Source order would not do —
offline stores do not return a window in a stable order (Feast's file store re-sorts it with
dask, differently from run to run), and a Spark or Ray job splits it arbitrarily — while the
values are the same wherever the row comes from. Rows with the same digest hold the same
values, so which of them is written does not show.

``LatestRows`` reduces as it goes: each part of (key, event time, created time, row number)
is cut down to the rows that still can win before it is kept, so memory follows the number of
distinct entities (plus the rows that tie at the top), not the number of rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import mmh3
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from feast_dragonfly._engines import arrow
from feast_dragonfly.errors import DragonflyDataError

# Stands for a missing created time: below every real one, so such a row loses to any row
# that has one, and two rows without one compare equal.
NO_CREATED = np.iinfo(np.int64).min
# Candidates kept before they are reduced together again (bounds memory on long windows
# whose parts each hold different entities).
COMPACT_AT = 1_000_000


def created_micros(column: pa.Array | pa.ChunkedArray, name: str) -> np.ndarray:
    """Created times as int64 microseconds; ``NO_CREATED`` where a row has none.

    Anything but a timestamp column is refused up front: ordering strings or numbers as if
    they were instants would silently store the wrong row.
    """
    kind = column.type
    if pa.types.is_null(kind):
        return np.full(len(column), NO_CREATED, dtype=np.int64)
    if not pa.types.is_timestamp(kind):
        raise DragonflyDataError(
            f"created timestamp column {name!r} has type {kind}, not a timestamp: Feast "
            "orders rows that share an event time by it, so it must hold timestamps"
        )
    micros = arrow.event_time_micros(column)
    if column.null_count:
        valid = column.is_valid()
        if isinstance(valid, pa.ChunkedArray):
            valid = valid.combine_chunks()
        micros = np.where(valid.to_numpy(zero_copy_only=False), micros, NO_CREATED)
    return micros


def _top_rows(table: pa.Table) -> pa.Table:
    """The rows of ``table`` (key, event, created, row) equal to their key's best (newest
    event time, then newest created time), in key order."""
    n = table.num_rows
    if n < 2 or pc.count_distinct(table["key"]).as_py() == n:
        return table  # one row per key (the common case): every row is its key's best
    order = pc.sort_indices(
        table,
        sort_keys=[("key", "ascending"), ("event", "descending"), ("created", "descending")],
    )
    table = table.take(order)
    keys = (
        table["key"].combine_chunks() if isinstance(table["key"], pa.ChunkedArray) else table["key"]
    )
    starts = np.ones(n, dtype=bool)
    starts[1:] = pc.not_equal(keys.slice(1), keys.slice(0, n - 1)).to_numpy(zero_copy_only=False)
    group = np.cumsum(starts) - 1
    first = np.flatnonzero(starts)
    event = table["event"].to_numpy()
    created = table["created"].to_numpy()
    top = (event == event[first][group]) & (created == created[first][group])
    return table.filter(pa.array(top))


@dataclass(frozen=True)
class Decision:
    """What a run stores: ``rows``, one per entity whose best row is unique; and, per entity
    whose best is shared, ``tied_rows`` (ascending) with ``tied_groups`` (the same number for
    the rows of one entity), to be settled by :func:`settle_ties`."""

    rows: np.ndarray
    tied_rows: np.ndarray
    tied_groups: np.ndarray


class LatestRows:
    """Collects (key, event time, created time, row number) over a window; decides which
    source rows to store."""

    def __init__(self) -> None:
        self._parts: list[pa.Table] = []
        self._pending = 0

    def add(
        self, keys: pa.Array, event_micros: np.ndarray, created: np.ndarray, rows: np.ndarray
    ) -> None:
        """Candidate rows: keys, event times, created times (``NO_CREATED`` for none) and
        source row numbers."""
        part = pa.table(
            {
                "key": keys,
                "event": pa.array(event_micros, pa.int64()),
                "created": pa.array(created, pa.int64()),
                "row": pa.array(rows, pa.int64()),
            }
        )
        self._parts.append(_top_rows(part))
        self._pending += self._parts[-1].num_rows
        if self._pending >= COMPACT_AT and len(self._parts) > 1:
            self._parts = [_top_rows(pa.concat_tables(self._parts))]
            self._pending = self._parts[0].num_rows

    def decide(self) -> Decision:
        empty = np.empty(0, dtype=np.int64)
        if not self._parts:
            return Decision(empty, empty, empty)
        top = _top_rows(pa.concat_tables(self._parts))
        self._parts = []
        rows = top["row"].to_numpy()
        n = len(rows)
        if n == 0 or pc.count_distinct(top["key"]).as_py() == n:
            return Decision(np.sort(rows), empty, empty)
        # _top_rows sorted them by key: equal keys are neighbours.
        keys = top["key"].combine_chunks()
        starts = np.ones(n, dtype=bool)
        starts[1:] = pc.not_equal(keys.slice(1), keys.slice(0, n - 1)).to_numpy(
            zero_copy_only=False
        )
        group = np.cumsum(starts) - 1
        size = np.bincount(group)
        single = size[group] == 1
        tied = np.argsort(rows[~single], kind="stable")
        return Decision(np.sort(rows[single]), rows[~single][tied], group[~single][tied])


def content_digests(values: list[pa.BinaryArray]) -> list[bytes]:
    """Per row, a 128-bit MurmurHash3 of its stored feature values (each length-prefixed,
    in the view's feature order): what tells rows with equal timestamps apart."""
    columns = [column.to_pylist() for column in values]
    digests = []
    for fields in zip(*columns):
        joined = b"".join(len(v).to_bytes(4, "little") + v for v in fields)
        digests.append(mmh3.hash_bytes(joined))
    return digests


def settle_ties(decision: Decision, digests: dict[int, bytes]) -> np.ndarray:
    """All rows to store, ascending: the untied ones, plus per tied entity the row whose
    digest (``digests[row]``) is highest; the smallest row number among equal digests."""
    best: dict[int, tuple[bytes, int]] = {}
    for row, group in zip(decision.tied_rows.tolist(), decision.tied_groups.tolist()):
        candidate = (digests[row], -row)
        if group not in best or candidate > best[group]:
            best[group] = candidate
    chosen = np.array([-row for _, row in best.values()], dtype=np.int64)
    return np.sort(np.concatenate([decision.rows, chosen]))
