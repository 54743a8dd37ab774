"""Cross reads: what one store wrote reads back identically through the other — Feast 0.67's
``RedisOnlineStore`` and ours, ``online_read`` and ``online_read_async``.

Equal bytes (``test_differential_bytes.py``) do not settle the read side: it decides which
fields are fetched and what comes back for a missing entity, an unknown or unrequested feature,
a duplicate key, an empty request. Each store reads what either wrote, over several feature
selections with missing and duplicate entities interleaved, and the shared answer is also
checked against the rows written, so two stores that agree on nothing (both empty) fail.
"""

from __future__ import annotations

from datetime import datetime

import pytest
from differential_kit import (
    COMPOSITE_VIEW,
    DIFFERENTIAL_MARKS,
    ENTITY_KEY_CASES,
    TYPED_FEATURES,
    TYPED_VIEW,
    UTC,
    close_async,
    close_sync,
    comparable_rows,
    int64_key,
    new_store,
    rows_for_keys,
    typed_rows,
    write_with,
)
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value
from feast_repo import STORE_TYPES

pytestmark = DIFFERENTIAL_MARKS


MISSING_KEYS = [int64_key(10_000), int64_key(-10_000)]
READ_SELECTIONS = {
    "all (None)": None,
    "subset": ["f_int64", "f_string", "f_float_list"],
    "reordered": ["f_string_list", "f_bytes", "f_int32"],
    "one": ["f_float64"],
    "every feature reversed": list(reversed(TYPED_FEATURES)),
    "a name the view lacks": ["f_int64", "no_such_feature"],
}


def read_keys() -> list[EntityKey]:
    written = [row[0] for row in typed_rows()]
    # missing entities interleaved, and a duplicate of a present one
    return [written[0], MISSING_KEYS[0], *written[1:], MISSING_KEYS[1], written[3]]


def check_read_back(result: list, rows_written: list, requested: list[str] | None) -> None:
    """The read returns what was written: guards against two stores agreeing on nothing."""
    names = requested or TYPED_FEATURES
    by_key = {row[0].SerializeToString(): row for row in rows_written}
    for key, (event_time, features) in zip(read_keys(), result):
        row = by_key.get(key.SerializeToString())
        if row is None:
            assert event_time == datetime.fromtimestamp(0, tz=UTC)
            assert features == {name: b"" for name in names}
            continue
        _, values, written_time, _ = row
        assert event_time == written_time
        assert features == {
            name: values[name].SerializeToString(deterministic=True) if name in values else b""
            for name in names
        }


def write_typed_and_composite(kind: str, config) -> list:
    rows = typed_rows()
    write_with(kind, config, TYPED_VIEW, rows)
    write_with(
        kind, config, COMPOSITE_VIEW, rows_for_keys(ENTITY_KEY_CASES["composite_int_string"])
    )
    return rows


@pytest.mark.parametrize("writer", list(STORE_TYPES))
def test_online_read_is_identical_whoever_wrote(redis_client, make_configs, writer):
    configs = make_configs()
    rows = write_typed_and_composite(writer, configs[writer])
    stores = {kind: new_store(kind) for kind in STORE_TYPES}
    try:
        for label, requested in READ_SELECTIONS.items():
            results = {
                kind: comparable_rows(
                    store.online_read(
                        configs[kind], TYPED_VIEW, read_keys(), list(requested or []) or None
                    )
                )
                for kind, store in stores.items()
            }
            assert results["ours"] == results["feast"], label
            check_read_back(results["feast"], rows, requested)

        for kind, store in stores.items():  # degenerate requests: no entities, [] = all
            assert store.online_read(configs[kind], TYPED_VIEW, []) == [], kind
            everything = store.online_read(configs[kind], TYPED_VIEW, read_keys()[:3], [])
            check_read_back(comparable_rows(everything), rows, None)

        composite_keys = ENTITY_KEY_CASES["composite_int_string"] + [
            EntityKey(
                join_keys=["user_id", "merchant"],
                entity_values=[Value(int64_val=1), Value(string_val="nope")],
            )
        ]
        composite = {
            kind: comparable_rows(store.online_read(configs[kind], COMPOSITE_VIEW, composite_keys))
            for kind, store in stores.items()
        }
        assert composite["ours"] == composite["feast"]
        assert composite["feast"][0][1]["label"] == Value(string_val="row 0 ✓").SerializeToString()
    finally:
        for store in stores.values():
            close_sync(store)


@pytest.mark.parametrize("writer", list(STORE_TYPES))
async def test_online_read_async_is_identical_whoever_wrote(redis_client, make_configs, writer):
    configs = make_configs()
    rows = write_typed_and_composite(writer, configs[writer])
    stores = {kind: new_store(kind) for kind in STORE_TYPES}
    try:
        for label, requested in READ_SELECTIONS.items():
            results = {}
            for kind, store in stores.items():
                async_rows = await store.online_read_async(
                    configs[kind], TYPED_VIEW, read_keys(), list(requested or []) or None
                )
                sync_rows = store.online_read(
                    configs[kind], TYPED_VIEW, read_keys(), list(requested or []) or None
                )
                assert comparable_rows(async_rows) == comparable_rows(sync_rows), (kind, label)
                results[kind] = comparable_rows(async_rows)
            assert results["ours"] == results["feast"], label
            check_read_back(results["feast"], rows, requested)
    finally:
        for store in stores.values():
            await close_async(store)
