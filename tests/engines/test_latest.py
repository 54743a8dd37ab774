"""``_latest``: the row per entity, against a brute-force reading of the rule (no server)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feast_dragonfly import DragonflyDataError
from feast_dragonfly._engines import latest as _latest

NO = _latest.NO_CREATED


def brute_force(keys, events, created, digests) -> list[int]:
    best: dict[bytes, tuple] = {}
    for row, (key, event, made, digest) in enumerate(zip(keys, events, created, digests)):
        rank = (event, made, digest, -row)
        if key not in best or rank > best[key]:
            best[key] = rank
    return sorted(-rank[3] for rank in best.values())


def decide(keys, events, created, digests, parts: int) -> list[int]:
    latest = _latest.LatestRows()
    n = len(keys)
    bounds = np.linspace(0, n, parts + 1).astype(int)
    for a, b in zip(bounds, bounds[1:]):
        latest.add(
            pa.array(keys[a:b], pa.binary()),
            np.array(events[a:b], dtype=np.int64),
            np.array(created[a:b], dtype=np.int64),
            np.arange(a, b, dtype=np.int64),
        )
    decision = latest.decide()
    assert len(set(decision.rows) & set(decision.tied_rows)) == 0
    chosen = _latest.settle_ties(decision, {int(r): digests[r] for r in decision.tied_rows})
    return chosen.tolist()


rows = st.lists(
    st.tuples(
        st.sampled_from([b"a", b"b", b"c", b"d\x00", b""]),
        st.integers(0, 2),
        st.sampled_from([NO, 0, 1]),
        st.sampled_from([b"\x01", b"\x02", b"\x02"]),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(rows=rows, parts=st.integers(1, 7), compact_at=st.sampled_from([1, 3, 10**6]))
def test_decision_is_the_rule_however_the_rows_are_split(rows, parts, compact_at):
    keys, events, created, digests = (list(c) for c in zip(*rows)) if rows else ([], [], [], [])
    want = brute_force(keys, events, created, digests)
    saved, _latest.COMPACT_AT = _latest.COMPACT_AT, compact_at
    try:
        got = decide(keys, events, created, digests, parts)
    finally:
        _latest.COMPACT_AT = saved
    # Equal digests stand for equal values: either row stores the same bytes, so compare
    # what each chosen row would store, not its number.
    assert [(keys[r], events[r], created[r], digests[r]) for r in got] == [
        (keys[r], events[r], created[r], digests[r]) for r in want
    ]


def test_a_row_without_a_created_time_loses_to_one_with_it():
    created = pa.array([None, 5, None], pa.timestamp("us"))
    micros = _latest.created_micros(created, "created")
    assert micros.tolist() == [NO, 5, NO]
    assert decide([b"k"] * 3, [1, 1, 1], micros.tolist(), [b"z", b"a", b"z"], 1) == [1]


def test_created_times_of_other_units_are_microseconds():
    column = pa.array([1_500, None], pa.timestamp("ns", tz="UTC"))
    assert _latest.created_micros(column, "c").tolist() == [1, NO]
    assert _latest.created_micros(pa.nulls(2), "c").tolist() == [NO, NO]


@pytest.mark.parametrize(
    "column", [pa.array(["2024-01-01"]), pa.array([3]), pa.array([1.5])], ids=str
)
def test_a_created_column_of_another_type_is_refused_by_name(column):
    with pytest.raises(DragonflyDataError, match="created timestamp column 'made_at'"):
        _latest.created_micros(column, "made_at")


def test_content_digests_length_prefix_every_value():
    a = _latest.content_digests([pa.array([b"ab"]), pa.array([b"c"])])
    b = _latest.content_digests([pa.array([b"a"]), pa.array([b"bc"])])
    assert a != b and len(a[0]) == 16
