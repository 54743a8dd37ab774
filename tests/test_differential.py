"""Differential tests: Feast 0.67's own ``RedisOnlineStore`` and ours, side by side, one server.

Everything here runs both stores against the same real server and compares:

1. **Bytes** — the same rows through each store's ``online_write_batch`` (sync and async)
   leave identical keys, hash fields, values and TTL presence (every Feast value type, nulls,
   absent features, every entity-key value type, composite keys, naive/aware/microsecond
   event times, ``key_ttl_seconds``, large batches and very wide rows; plus a hypothesis
   property over random values, entity keys and times). ``materialize`` and
   ``write_to_online_store`` through the two repos of part 3 are compared the same way.
2. **Cross reads** — what one store wrote reads back identically through the other
   (``online_read`` and ``online_read_async``, missing entities included).
3. **Public API** — two ``FeatureStore`` repos, ``type: redis`` and
   ``type: feast_dragonfly.DragonflyOnlineStore``, same project, same server, same
   materialized data: ``get_online_features`` (sync and async) must give equal ``.proto``,
   ``to_dict()``, ``to_df()`` and ``to_arrow()``.

Event-time rules (older/equal rows skipped), update/teardown scoping, versioning, precompute
and the async lifecycle are covered elsewhere.
"""

from __future__ import annotations

import math
import struct
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any, NamedTuple

import mmh3
import pandas as pd
import pytest
import redis
from feast import (
    Entity,
    FeatureService,
    FeatureStore,
    FeatureView,
    Field,
    FileSource,
    RequestSource,
    ValueType,
)
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.redis import RedisOnlineStore
from feast.on_demand_feature_view import on_demand_feature_view
from feast.protos.feast.serving.ServingService_pb2 import FieldStatus
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import (
    BoolList,
    BytesList,
    DoubleList,
    FloatList,
    Int32List,
    Int64List,
    Int64Set,
    MapKey,
    RepeatedValue,
    ScalarMapEntry,
    StringList,
    StringSet,
    Value,
    ZonedTimestamp,
)
from feast.protos.feast.types.Value_pb2 import Map as MapProto
from feast.protos.feast.types.Value_pb2 import ScalarMap as ScalarMapProto
from feast.type_map import NULL_TIMESTAMP_INT_VALUE
from feast.types import (
    Array,
    Bool,
    Bytes,
    Float32,
    Float64,
    Int32,
    Int64,
    Json,
    Map,
    ScalarMap,
    Set,
    String,
    Struct,
    TimeUuid,
    UnixTimestamp,
    Uuid,
)
from feast.types import Decimal as DecimalType
from feast.types import ZonedTimestamp as ZonedTimestampType
from feast_repo import (
    STORE_TYPES,
    assert_same_keyspace,
    dump_keys,
    dump_keyspace,
    online_store_settings,
    repo_config,
    restore_keyspace,
    write_feature_repo,
)
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feast_dragonfly import DragonflyOnlineStore

pytestmark = [
    pytest.mark.server,
    # Feast's own notices for inputs these tests use on purpose
    pytest.mark.filterwarnings("ignore:Serialization of entity key with version < 3"),
    pytest.mark.filterwarnings("ignore:On demand feature view is an experimental feature"),
    pytest.mark.filterwarnings("ignore:Discarding nonzero nanoseconds"),
]

#: Distinct projects per section, so no test can read another section's leftovers.
PROJECT = "diffproj"
PROPERTY_PROJECT = "diffprop"
API_PROJECT = "diffapi"

NAN = float("nan")
INF = float("inf")
UTC = timezone.utc


# ============================================================================ shared pieces


def new_store(kind: str) -> RedisOnlineStore:
    return RedisOnlineStore() if kind == "feast" else DragonflyOnlineStore()


def close_sync(store: RedisOnlineStore) -> None:
    client = getattr(store, "_sync_client", None) or getattr(store, "_client", None)
    if client is not None:
        client.close()


async def close_async(store: RedisOnlineStore) -> None:
    if isinstance(store, DragonflyOnlineStore):
        await store.close()
        return
    # Feast's store never closes its async client; do it so no socket outlives the test.
    client = getattr(store, "_client_async", None)
    if client is not None:
        await client.aclose()
    close_sync(store)


def write_with(kind: str, config, table: FeatureView, rows: list) -> None:
    """One ``online_write_batch`` through a fresh store of ``kind``."""
    store = new_store(kind)
    try:
        store.online_write_batch(config, table, rows, None)
    finally:
        close_sync(store)


def int64_key(value: int, join_key: str = "driver_id") -> EntityKey:
    return EntityKey(join_keys=[join_key], entity_values=[Value(int64_val=value)])


def source(name: str = "unused") -> FileSource:
    # Never read by online_write_batch / online_read: only the views' names and features matter.
    return FileSource(name=name, path=f"/nonexistent/{name}.parquet", timestamp_field="ts")


DRIVER = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)


# ---------------------------------------------------------------- every value type, as protos


def typed_values() -> dict[str, list[Value]]:
    """Feature name -> value variants (fresh protos on every call)."""
    return {
        "f_int32": [
            Value(int32_val=0),
            Value(int32_val=-(2**31)),
            Value(int32_val=2**31 - 1),
            Value(int32_val=7),
        ],
        "f_int64": [
            Value(int64_val=0),
            Value(int64_val=-(2**63)),
            Value(int64_val=2**63 - 1),
            Value(int64_val=123_456_789_012),
        ],
        "f_float32": [Value(float_val=v) for v in (0.0, -0.0, NAN, INF, -INF, 3.4e38, 1e-45, 0.1)],
        "f_float64": [
            Value(double_val=v)
            for v in (0.0, -0.0, NAN, INF, -INF, 1.7976931348623157e308, 5e-324, 0.1)
        ],
        "f_bool": [Value(bool_val=True), Value(bool_val=False)],
        "f_string": [
            Value(string_val=v)
            for v in ("", "héllo wörld", "🐉🚀 dragon", "日本語テキスト", "nul\x00byte", "x" * 2000)
        ],
        "f_bytes": [
            Value(bytes_val=v)
            for v in (b"", b"\x00", b"\xff\xfe\x80 not utf-8 \xc3\x28", bytes(range(256)))
        ],
        "f_unix_ts": [Value(unix_timestamp_val=v) for v in (0, -1, 1_700_000_000, 253402300799)],
        "f_int32_list": [
            Value(int32_list_val=Int32List(val=[])),
            Value(int32_list_val=Int32List(val=[1, -1, 2**31 - 1, -(2**31)])),
        ],
        "f_int64_list": [
            Value(int64_list_val=Int64List(val=[])),
            Value(int64_list_val=Int64List(val=[0, -(2**63), 2**63 - 1])),
        ],
        "f_float_list": [
            Value(float_list_val=FloatList(val=[])),
            Value(float_list_val=FloatList(val=[NAN, INF, -INF, 0.5, -0.0])),
        ],
        "f_double_list": [
            Value(double_list_val=DoubleList(val=[])),
            Value(double_list_val=DoubleList(val=[NAN, -INF, 1e308, 0.1])),
        ],
        "f_bool_list": [
            Value(bool_list_val=BoolList(val=[])),
            Value(bool_list_val=BoolList(val=[True, False, True])),
        ],
        "f_string_list": [
            Value(string_list_val=StringList(val=[])),
            Value(string_list_val=StringList(val=["", "🐉", "ünïcode", "plain"])),
        ],
        "f_bytes_list": [
            Value(bytes_list_val=BytesList(val=[])),
            Value(bytes_list_val=BytesList(val=[b"", b"\xff\x00", b"ok"])),
        ],
        "f_unix_ts_list": [
            Value(unix_timestamp_list_val=Int64List(val=[])),
            Value(unix_timestamp_list_val=Int64List(val=[0, 1_700_000_000, -5])),
        ],
        # Newer Feast value kinds: the stores only see opaque protos, so these must pass too.
        "f_extra": [
            Value(null_val=0),
            Value(json_val='{"a": [1, 2, {"b": null}]}'),
            Value(map_val=MapProto(val={"k": Value(int64_val=1), "s": Value(string_val="v")})),
            Value(string_set_val=StringSet(val=["a", "b"])),
            Value(int64_set_val=Int64Set(val=[3, 1, 2])),
            Value(uuid_val="123e4567-e89b-12d3-a456-426614174000"),
            Value(decimal_val="-12345.678900"),
            Value(list_val=RepeatedValue(val=[Value(int32_val=1), Value(string_val="x")])),
            Value(zoned_timestamp_val=ZonedTimestamp(unix_timestamp=5, zone="Europe/Paris")),
        ],
    }


TYPED_FEATURES = list(typed_values())
TYPED_DTYPES = {
    "f_int32": Int32,
    "f_int64": Int64,
    "f_float32": Float32,
    "f_float64": Float64,
    "f_bool": Bool,
    "f_string": String,
    "f_bytes": Bytes,
    "f_unix_ts": UnixTimestamp,
    "f_int32_list": Array(Int32),
    "f_int64_list": Array(Int64),
    "f_float_list": Array(Float32),
    "f_double_list": Array(Float64),
    "f_bool_list": Array(Bool),
    "f_string_list": Array(String),
    "f_bytes_list": Array(Bytes),
    "f_unix_ts_list": Array(UnixTimestamp),
    "f_extra": Bytes,  # the declared dtype is irrelevant to the stores
}
TYPED_VIEW = FeatureView(
    name="typed_view",
    entities=[DRIVER],
    schema=[Field(name=name, dtype=TYPED_DTYPES[name]) for name in TYPED_FEATURES],
    source=source("typed"),
    ttl=timedelta(0),
)
BASE_TIME = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)


def typed_rows() -> list:
    """Rows exercising every variant, plus all-null, absent-feature and empty rows."""
    values = typed_values()
    width = max(len(variants) for variants in values.values())
    rows = []
    for i in range(width):
        row = {name: variants[i % len(variants)] for name, variants in values.items()}
        rows.append((int64_key(i), row, BASE_TIME + timedelta(microseconds=i), None))
    rows.append((int64_key(100), {name: Value() for name in values}, BASE_TIME, None))
    rows.append((int64_key(101), {"f_int64": Value(int64_val=5)}, BASE_TIME, BASE_TIME))
    rows.append((int64_key(102), {"f_string": Value(), "f_bytes": Value()}, BASE_TIME, None))
    rows.append((int64_key(103), {}, BASE_TIME, None))
    return rows


# ---------------------------------------------------------------- entity keys of every kind

USER = Entity(name="user", join_keys=["user_id"], value_type=ValueType.INT64)
MERCHANT = Entity(name="merchant", join_keys=["merchant"], value_type=ValueType.STRING)
SMALL_VIEW_SCHEMA = [Field(name="amount", dtype=Float64), Field(name="label", dtype=String)]


def small_view(name: str, entities: list[Entity]) -> FeatureView:
    return FeatureView(name=name, entities=entities, schema=SMALL_VIEW_SCHEMA, source=source(name))


COMPOSITE_VIEW = small_view("user_merchant", [USER, MERCHANT])

ENTITY_KEY_CASES: dict[str, list[EntityKey]] = {
    "int64": [int64_key(v, "k") for v in (0, -1, 2**63 - 1, -(2**63), 42)],
    "int32": [
        EntityKey(join_keys=["k"], entity_values=[Value(int32_val=v)]) for v in (0, -7, 2**31 - 1)
    ],
    "string": [
        EntityKey(join_keys=["k"], entity_values=[Value(string_val=v)])
        for v in ("", "plain", "ünï", "🐉", "glob*?[chars]\\", "diffproj")
    ],
    "bytes": [
        EntityKey(join_keys=["k"], entity_values=[Value(bytes_val=v)])
        for v in (b"", b"\x00\xff", b"*[x]?", bytes(range(40)))
    ],
    "unix_timestamp": [
        EntityKey(join_keys=["k"], entity_values=[Value(unix_timestamp_val=v)])
        for v in (0, 1_700_000_000, -1)
    ],
    "composite_int_string": [
        EntityKey(
            join_keys=["user_id", "merchant"],
            entity_values=[Value(int64_val=u), Value(string_val=m)],
        )
        for u, m in ((1, "a"), (1, "b"), (2, "a"), (-3, "🐉"), (0, ""))
    ],
    # serialize_entity_key sorts the join keys: the order in the proto must not matter
    "composite_unsorted": [
        EntityKey(
            join_keys=["zeta", "alpha", "mid"],
            entity_values=[Value(string_val="z"), Value(int64_val=9), Value(int32_val=4)],
        )
    ],
}


def rows_for_keys(keys: list[EntityKey]) -> list:
    return [
        (
            key,
            {"amount": Value(double_val=i + 0.5), "label": Value(string_val=f"row {i} ✓")},
            BASE_TIME - timedelta(hours=i),
            None,
        )
        for i, key in enumerate(keys)
    ]


# ---------------------------------------------------------------- event times

TZ_PLUS_0530 = timezone(timedelta(hours=5, minutes=30))
TZ_MINUS_0800 = timezone(timedelta(hours=-8))
EVENT_TIMES = {
    "naive": datetime(2024, 1, 2, 3, 4, 5),
    "naive_micros": datetime(2024, 1, 2, 3, 4, 5, 678901),
    "aware_utc": datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),
    "aware_utc_micros": datetime(2024, 1, 2, 3, 4, 5, 1, tzinfo=UTC),
    "aware_plus_0530": datetime(2024, 1, 2, 3, 4, 5, 999999, tzinfo=TZ_PLUS_0530),
    "aware_minus_0800": datetime(2024, 1, 2, 3, 4, 5, 500000, tzinfo=TZ_MINUS_0800),
    "epoch": datetime(1970, 1, 1, tzinfo=UTC),
    "epoch_plus_1us": datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=UTC),
    "before_epoch": datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    "year_1": datetime(1, 1, 1, tzinfo=UTC),
    "year_9999": datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    "pandas_nanos_utc": pd.Timestamp("2024-01-02 03:04:05.123456789", tz="UTC"),
    "pandas_naive": pd.Timestamp("2024-01-02 03:04:05.000001"),
}


def event_time_rows() -> list:
    rows = []
    for i, (name, moment) in enumerate(EVENT_TIMES.items()):
        values = {"amount": Value(double_val=float(i)), "label": Value(string_val=name)}
        created = moment if i % 2 else None
        rows.append((int64_key(i, "user_id"), values, moment, created))
    return rows


USER_VIEW = small_view("user_view", [USER])


# ============================================================================ 1. byte identity


@pytest.fixture
def make_configs(tmp_path, server_connection_string):
    """``make(**online_store_options)`` -> {'feast': RepoConfig, 'ours': RepoConfig}.

    ``ours_options`` go to our store only (Feast's config rejects unknown keys).
    """

    def make(entity_key_serialization_version: int = 3, ours_options=None, **options):
        return {
            kind: repo_config(
                tmp_path / f"{kind}-{entity_key_serialization_version}",
                project=PROJECT,
                online_store=online_store_settings(
                    kind,
                    server_connection_string,
                    **options,
                    **((ours_options or {}) if kind == "ours" else {}),
                ),
                entity_key_serialization_version=entity_key_serialization_version,
            )
            for kind in STORE_TYPES
        }

    return make


def written_by_each(client: redis.Redis, configs, batches) -> dict[str, Any]:
    """Run the same ``(view, make_rows)`` batches through each store on a clean server."""
    dumps = {}
    for kind in STORE_TYPES:
        client.flushall()
        for table, make_rows in batches:
            write_with(kind, configs[kind], table, make_rows())
        dumps[kind] = dump_keyspace(client)
    client.flushall()
    return dumps


def test_every_value_type_writes_identical_bytes(redis_client, make_configs):
    dumps = written_by_each(redis_client, make_configs(), [(TYPED_VIEW, typed_rows)])
    assert_same_keyspace(dumps["feast"], dumps["ours"])
    # Sanity: the dump holds what was written (17 features + _ts for full rows).
    full_row_key = serialize_entity_key(int64_key(0), 3) + PROJECT.encode()
    assert len(dumps["feast"][full_row_key][0]) == len(TYPED_FEATURES) + 1
    assert len(dumps["feast"]) == len(typed_rows())


@pytest.mark.parametrize("case", sorted(ENTITY_KEY_CASES))
@pytest.mark.parametrize("key_version", [3, 2])
def test_every_entity_key_kind_writes_identical_bytes(
    redis_client, make_configs, case, key_version
):
    keys = ENTITY_KEY_CASES[case]
    view = small_view(f"view_{case}", [])
    dumps = written_by_each(
        redis_client,
        make_configs(entity_key_serialization_version=key_version),
        [(view, lambda: rows_for_keys(keys))],
    )
    assert_same_keyspace(dumps["feast"], dumps["ours"])
    assert len(dumps["ours"]) == len(keys)


def test_event_times_write_identical_bytes(redis_client, make_configs):
    """Naive (= UTC), aware in several offsets, micro/nanosecond, pre-1970 and extreme years."""
    dumps = written_by_each(redis_client, make_configs(), [(USER_VIEW, event_time_rows)])
    assert_same_keyspace(dumps["feast"], dumps["ours"])
    assert len(dumps["ours"]) == len(EVENT_TIMES)


def test_key_ttl_seconds_sets_the_same_expiry(redis_client, make_configs):
    configs = make_configs(key_ttl_seconds=3600)
    dumps = written_by_each(
        redis_client,
        configs,
        [
            (TYPED_VIEW, typed_rows),
            (COMPOSITE_VIEW, lambda: rows_for_keys(ENTITY_KEY_CASES["composite_int_string"])),
        ],
    )
    assert_same_keyspace(dumps["feast"], dumps["ours"], ttl_seconds=3600)


def test_key_ttl_on_a_hash_shared_with_a_view_written_without_ttl(redis_client, make_configs):
    """A TTL store writing into a hash another (TTL-less) write created expires the whole hash."""
    plain, with_ttl = make_configs(), make_configs(key_ttl_seconds=600)
    view_a, view_b = small_view("view_a", [USER]), small_view("view_b", [USER])
    keys = ENTITY_KEY_CASES["int64"]
    dumps = {}
    for kind in STORE_TYPES:
        redis_client.flushall()
        write_with(kind, plain[kind], view_a, rows_for_keys(keys))
        write_with(kind, with_ttl[kind], view_b, rows_for_keys(keys))
        dumps[kind] = dump_keyspace(redis_client)
    assert_same_keyspace(dumps["feast"], dumps["ours"], ttl_seconds=600)


def test_views_sharing_an_entity_hash_mix_freely(redis_client, make_configs):
    """Two views in one hash: any mix of writers gives the bytes Feast alone gives."""
    configs = make_configs()
    view_a, view_b = small_view("view_a", [USER]), small_view("view_b", [USER])
    keys = ENTITY_KEY_CASES["int64"]
    results = {}
    for writer_a in STORE_TYPES:
        for writer_b in STORE_TYPES:
            redis_client.flushall()
            write_with(writer_a, configs[writer_a], view_a, rows_for_keys(keys))
            write_with(writer_b, configs[writer_b], view_b, rows_for_keys(keys))
            results[writer_a, writer_b] = dump_keyspace(redis_client)
    reference = results["feast", "feast"]
    assert all(len(fields) == 6 for fields, _ in reference.values())  # 2 views x (2 + _ts)
    for dump in results.values():
        assert_same_keyspace(reference, dump)


def wide_view(name: str, n_features: int) -> FeatureView:
    return FeatureView(
        name=name,
        entities=[USER],
        schema=[Field(name=f"f{j}", dtype=Int64) for j in range(n_features)],
        source=source(name),
    )


def wide_rows(n_rows: int, n_features: int, first_id: int = 0) -> list:
    return [
        (
            int64_key(first_id + i, "user_id"),
            {f"f{j}": Value(int64_val=i * n_features + j) for j in range(n_features)},
            BASE_TIME + timedelta(seconds=i),
            None,
        )
        for i in range(n_rows)
    ]


@pytest.mark.parametrize("rows_per_call", [None, 7])
def test_large_batches_and_wide_rows_write_identical_bytes(
    redis_client, make_configs, rows_per_call
):
    """Sizes that cross our chunking: many rows per batch, rows of >1000 fields (split HSETs),
    and one row of more arguments than one of our server calls normally carries."""
    configs = make_configs(
        ours_options={"write_rows_per_call": rows_per_call} if rows_per_call else None
    )
    narrow, wide, huge = wide_view("narrow", 3), wide_view("wide", 1100), wide_view("huge", 16_500)
    dumps = written_by_each(
        redis_client,
        configs,
        [
            (narrow, lambda: wide_rows(350, 3)),
            (wide, lambda: wide_rows(6, 1100)),
            (huge, lambda: wide_rows(1, 16_500, first_id=5)),
        ],
    )
    assert_same_keyspace(dumps["feast"], dumps["ours"])
    assert len(dumps["ours"]) == 350
    key = serialize_entity_key(int64_key(5, "user_id"), 3) + PROJECT.encode()
    assert len(dumps["ours"][key][0]) == 3 + 1 + 1100 + 1 + 16_500 + 1


async def test_async_writes_identical_bytes(redis_client, make_configs):
    """``online_write_batch_async`` of each store writes what the sync path writes."""
    configs = make_configs(key_ttl_seconds=900)
    batches = [(TYPED_VIEW, typed_rows), (USER_VIEW, event_time_rows)]
    dumps = {}
    for kind in STORE_TYPES:
        redis_client.flushall()
        store = new_store(kind)
        try:
            for table, make_rows in batches:
                await store.online_write_batch_async(configs[kind], table, make_rows(), None)
        finally:
            await close_async(store)
        dumps[kind] = dump_keyspace(redis_client)
    assert_same_keyspace(dumps["feast"], dumps["ours"], ttl_seconds=900)
    sync_dumps = written_by_each(redis_client, configs, batches)
    assert_same_keyspace(sync_dumps["feast"], dumps["ours"], ttl_seconds=900)


ODD_NAMES_VIEW = FeatureView(
    name="vïew 名前:x",
    entities=[USER],
    schema=[
        Field(name=name, dtype=Int64)
        # (not "_ts:<view>": Feast's reader drops a feature named like the view's timestamp
        # field, where ours returns it; too contrived to copy)
        for name in ("ünïcode_特征", "with:colon", "_ts:other", "x" * 300, " ", "")
    ],
    source=source("odd_names"),
)


def test_odd_view_and_feature_names_hash_and_read_alike(redis_client, make_configs):
    """Non-ASCII, colons, a ``_ts:`` name, 300 chars, blank, empty."""
    configs = make_configs()
    names = [f.name for f in ODD_NAMES_VIEW.features]

    def rows():
        return [
            (
                int64_key(i, "user_id"),
                {n: Value(int64_val=i * 10 + j) for j, n in enumerate(names)},
                BASE_TIME,
                None,
            )
            for i in range(3)
        ]

    dumps = written_by_each(redis_client, configs, [(ODD_NAMES_VIEW, rows)])
    assert_same_keyspace(dumps["feast"], dumps["ours"])
    restore_keyspace(redis_client, dumps["ours"])
    keys = [int64_key(i, "user_id") for i in range(4)]
    reads = {}
    for kind in STORE_TYPES:
        store = new_store(kind)
        try:
            reads[kind] = comparable_rows(store.online_read(configs[kind], ODD_NAMES_VIEW, keys))
        finally:
            close_sync(store)
    assert reads["ours"] == reads["feast"]
    assert reads["feast"][2][1]["with:colon"] == Value(int64_val=21).SerializeToString()


def test_connection_string_db_option_is_honoured_alike(redis_server, redis_client, tmp_path):
    """``host:port,db=N`` puts (and finds) the data in database N with either store."""
    other_db = 3 if redis_server.db != 3 else 4
    parts = [p for p in redis_server.connection_string.split(",") if not p.startswith("db=")]
    connection_string = ",".join([*parts, f"db={other_db}"])
    configs = {
        kind: repo_config(
            tmp_path / kind,
            project=PROJECT,
            online_store=online_store_settings(kind, connection_string),
        )
        for kind in STORE_TYPES
    }
    other = redis_server.client(db=other_db, decode_responses=False)
    try:
        dumps = {}
        for kind in STORE_TYPES:
            other.flushdb()
            write_with(
                kind,
                configs[kind],
                COMPOSITE_VIEW,
                rows_for_keys(ENTITY_KEY_CASES["composite_int_string"]),
            )
            dumps[kind] = dump_keyspace(other)
            assert redis_client.dbsize() == 0, f"{kind} wrote outside db {other_db}"
        assert_same_keyspace(dumps["feast"], dumps["ours"])
        reads = {}
        for kind in STORE_TYPES:
            store = new_store(kind)
            try:
                rows = store.online_read(
                    configs[kind], COMPOSITE_VIEW, ENTITY_KEY_CASES["composite_int_string"]
                )
            finally:
                close_sync(store)
            reads[kind] = comparable_rows(rows)
        assert reads["ours"] == reads["feast"]
        assert all(features["label"] for _, features in reads["ours"])
    finally:
        other.flushdb()
        other.close()


# ---------------------------------------------------------------- hypothesis property

PROPERTY_FEATURES = ["p0", "p1", "p2", "p3"]
PROPERTY_VIEW = FeatureView(
    name="property_view",
    entities=[],
    schema=[Field(name=n, dtype=Bytes) for n in PROPERTY_FEATURES],
    source=source("property"),
)
INT64 = st.integers(-(2**63), 2**63 - 1)
SCALAR_VALUES = st.one_of(
    st.just(Value()),
    st.integers(-(2**31), 2**31 - 1).map(lambda v: Value(int32_val=v)),
    INT64.map(lambda v: Value(int64_val=v)),
    st.floats(width=32).map(lambda v: Value(float_val=v)),
    st.floats().map(lambda v: Value(double_val=v)),
    st.booleans().map(lambda v: Value(bool_val=v)),
    st.text().map(lambda v: Value(string_val=v)),
    st.binary().map(lambda v: Value(bytes_val=v)),
    INT64.map(lambda v: Value(unix_timestamp_val=v)),
    st.lists(INT64, max_size=5).map(lambda v: Value(int64_list_val=Int64List(val=v))),
    st.lists(st.floats(), max_size=5).map(lambda v: Value(double_list_val=DoubleList(val=v))),
    st.lists(st.text(max_size=8), max_size=5).map(
        lambda v: Value(string_list_val=StringList(val=v))
    ),
)
TIMEZONES = st.none() | st.integers(-23 * 60 - 59, 23 * 60 + 59).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
EVENT_TIME_STRATEGY = st.datetimes(
    min_value=datetime(1900, 1, 2), max_value=datetime(2200, 1, 1), timezones=TIMEZONES
)
ENTITY_VALUES = st.one_of(
    INT64.map(lambda v: Value(int64_val=v)),
    st.text(max_size=16).map(lambda v: Value(string_val=v)),
    st.binary(max_size=16).map(lambda v: Value(bytes_val=v)),
)


@pytest.fixture(scope="module")
def property_env(redis_server, tmp_path_factory):
    base = tmp_path_factory.mktemp("property")
    configs = {
        kind: repo_config(
            base / kind,
            project=PROPERTY_PROJECT,
            online_store=online_store_settings(kind, redis_server.connection_string),
        )
        for kind in STORE_TYPES
    }
    stores = {kind: new_store(kind) for kind in STORE_TYPES}
    client = redis_server.client(decode_responses=False)
    yield SimpleNamespace(configs=configs, stores=stores, client=client)
    for store in stores.values():
        close_sync(store)
    client.close()


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    values=st.dictionaries(st.sampled_from(PROPERTY_FEATURES), SCALAR_VALUES),
    event_time=EVENT_TIME_STRATEGY,
    entity_value=ENTITY_VALUES,
)
def test_random_values_write_identical_bytes(property_env, values, event_time, entity_value):
    env = property_env
    entity_key = EntityKey(join_keys=["pk"], entity_values=[entity_value])
    key = serialize_entity_key(entity_key, 3) + PROPERTY_PROJECT.encode()
    missing = EntityKey(join_keys=["pk"], entity_values=[Value(string_val="\x00absent")])
    written, reads = {}, {}
    for writer in STORE_TYPES:
        env.client.delete(key)
        row = (entity_key, dict(values), event_time, None)
        env.stores[writer].online_write_batch(env.configs[writer], PROPERTY_VIEW, [row], None)
        written[writer] = dump_keys(env.client, [key])
        for reader in STORE_TYPES:  # and it reads back the same through either store
            rows = env.stores[reader].online_read(
                env.configs[reader], PROPERTY_VIEW, [entity_key, missing]
            )
            reads[writer, reader] = comparable_rows(rows)
    env.client.delete(key)
    assert written["ours"] == written["feast"]
    assert len(written["feast"][key][0]) == len(values) + 1
    reference = reads["feast", "feast"]
    assert all(result == reference for result in reads.values())
    assert reference[0][1] == {
        name: values[name].SerializeToString(deterministic=True) if name in values else b""
        for name in PROPERTY_FEATURES
    }


# ============================================================================ 2. cross reads


def comparable_rows(rows: list) -> list:
    """online_read output with values as deterministic bytes (NaN-safe, exact)."""
    out = []
    for event_time, features in rows:
        if features is None:
            out.append((event_time, None))
        else:
            out.append(
                (
                    event_time,
                    {n: v.SerializeToString(deterministic=True) for n, v in features.items()},
                )
            )
    return out


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


# ============================================================================ 3. public API

NOW = datetime.now(UTC).replace(microsecond=654321)
N_DRIVERS = 300
N_WIDE_FEATURES = 60
CUSTOMERS = ["c-0", "c-1", "ünï-2", "🐉-3", ""]
UUID_1 = "123e4567-e89b-12d3-a456-426614174000"
UUID_2 = "00000000-0000-4000-8000-000000000001"
TIME_UUID = "a8098c1a-f86e-11da-bd1a-00112444be1e"

API_DRIVER = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
API_CUSTOMER = Entity(name="customer", join_keys=["customer_id"], value_type=ValueType.STRING)
SHARD = Entity(name="shard", join_keys=["shard"], value_type=ValueType.INT32)
BLOB = Entity(name="blob", join_keys=["blob"], value_type=ValueType.BYTES)
DAY_ENTITY = Entity(name="day", join_keys=["day"], value_type=ValueType.UNIX_TIMESTAMP)
DAY = datetime(2024, 3, 4, 5, 6, 7, tzinfo=UTC)


WINDOW_START = NOW - timedelta(days=10)
WINDOW_END = NOW + timedelta(seconds=1)


def _timestamps(n: int, age: timedelta) -> list[datetime]:
    return [NOW - age - timedelta(seconds=i, microseconds=i) for i in range(n)]


def build_api_frames() -> dict[str, pd.DataFrame]:
    """The offline data of the materialized views (small, except the wide 300 x 60 view)."""
    ids = list(range(1, 41))
    n = len(ids)
    stats = pd.DataFrame(
        {
            "driver_id": ids,
            "conv_rate": pd.array([i / 7 if i % 9 else None for i in ids], dtype="Float32"),
            "acc_rate": [i / 3 if i % 11 else NAN for i in ids],
            "trips": pd.array([i * 1000 if i % 8 else None for i in ids], dtype="Int64"),
            "rank": pd.array([-i for i in ids], dtype="Int32"),
            "active": [bool(i % 2) for i in ids],
            "event_timestamp": _timestamps(n, timedelta(minutes=5)),
            "created": [NOW] * n,
        }
    )
    profile = pd.DataFrame(
        {
            "driver_id": ids,
            "name": [f"driver {i} 🐉" if i % 5 else ("" if i % 10 else None) for i in ids],
            "avatar": [bytes([i, 0, 255, i]) if i % 6 else None for i in ids],
            "signup": [NOW - timedelta(days=i, microseconds=i) for i in ids],
            "tags": [[f"t{j}" for j in range(i % 4)] for i in ids],
            "scores": [[i / 2, NAN, INF][: i % 4] for i in ids],
            "counts": [[i, -i, 2**40] if i % 3 else [] for i in ids],
            "flags": [[bool(i % 2), True] for i in ids],
            "blobs": [[b"\x00\xff", bytes([i])] for i in ids],
            "event_timestamp": _timestamps(n, timedelta(minutes=7)),
            "created": [NOW] * n,
        }
    )
    wide_ids = list(range(1, N_DRIVERS + 1))
    wide: dict[str, Any] = {"driver_id": wide_ids}
    for j in range(N_WIDE_FEATURES):
        if j % 3 == 0:
            wide[f"w{j}"] = [i * j for i in wide_ids]
        elif j % 3 == 1:
            wide[f"w{j}"] = [(i + j) / 10 for i in wide_ids]
        else:
            wide[f"w{j}"] = [f"{i}:{j}" for i in wide_ids]
    wide["event_timestamp"] = _timestamps(N_DRIVERS, timedelta(minutes=3))
    wide["created"] = [NOW] * N_DRIVERS
    # Rows far older than the view's 1 h TTL for even drivers, fresh for odd ones.
    old = pd.DataFrame(
        {
            "driver_id": ids,
            "old_value": [i * 1.5 for i in ids],
            "event_timestamp": [
                NOW - (timedelta(days=2) if i % 2 == 0 else timedelta(minutes=1)) for i in ids
            ],
            "created": [NOW] * n,
        }
    )
    pairs = [(d, c) for d in ids[:10] for c in CUSTOMERS]
    driver_customer = pd.DataFrame(
        {
            "driver_id": [d for d, _ in pairs],
            "customer_id": [c for _, c in pairs],
            "orders": [d * 10 + k for k, (d, _) in enumerate(pairs)],
            "spend": [d * 1.25 for d, _ in pairs],
            "note": [f"{d}/{c}" for d, c in pairs],
            "event_timestamp": _timestamps(len(pairs), timedelta(minutes=2)),
            "created": [NOW] * len(pairs),
        }
    )
    customer = pd.DataFrame(
        {
            "customer_id": CUSTOMERS,
            "lifetime": [100.5, 0.0, -1.0, NAN, 1e300],
            "segment": ["gold", "silver", "ünï", "🐉", ""],
            "event_timestamp": _timestamps(len(CUSTOMERS), timedelta(minutes=1)),
            "created": [NOW] * len(CUSTOMERS),
        }
    )
    odd_keys = pd.DataFrame(
        {
            "shard": pd.array([1, -2, 2**31 - 1, 0], dtype="int32"),
            "blob": [b"\x00\xff", b"", b"*?[glob]", "🐉".encode()],
            "day": [DAY, DAY - timedelta(days=1), DAY - timedelta(days=2), DAY],
            "v": [1.5, -2.5, 3.5, 4.5],
            "event_timestamp": _timestamps(4, timedelta(minutes=4)),
            "created": [NOW] * 4,
        }
    )
    # Several rows per entity, out of order, and rows on / just outside the window's edges:
    # only the latest row inside the window may reach the online store.
    hour = timedelta(hours=1)
    history_rows = [(d, NOW - k * hour, 10 * d + k) for d in range(1, 6) for k in (2, 1, 3)]
    history_rows += [
        (6, WINDOW_START, 60),
        (7, WINDOW_END, 70),
        (8, WINDOW_START - timedelta(microseconds=1), 80),
        (9, WINDOW_END + timedelta(microseconds=1), 90),
        (9, NOW - hour, 91),
    ]
    history = pd.DataFrame(
        {
            "driver_id": [d for d, _, _ in history_rows],
            "h": [v for _, _, v in history_rows],
            "event_timestamp": [t for _, t, _ in history_rows],
            "created": [NOW] * len(history_rows),
        }
    )
    # Same event time, different created times: the latest created row wins in Feast.
    tie_time = NOW - timedelta(minutes=30)
    ties = pd.DataFrame(
        {
            "driver_id": [1, 1, 2, 2, 3, 3],
            "t": [1, 2, 4, 3, 5, 6],
            "event_timestamp": [tie_time] * 6,
            "created": [NOW - hour, NOW, NOW, NOW - hour, NOW - 2 * hour, NOW - hour],
        }
    )
    # Columns whose Arrow type is not the declared one, nullable extension types, NaT,
    # nanosecond / naive timestamps, dictionary-encoded strings: Feast's conversion quirks.
    q = list(range(1, 9))
    quirks = pd.DataFrame(
        {
            "driver_id": pd.array(q, dtype="int32"),  # entity declared INT64
            "big": pd.array([2**53 + 1, None, -(2**62), 0, 1, None, 7, 8], dtype="Int64"),
            "maybe": pd.array([True, None, False, True, None, False, True, True], dtype="boolean"),
            "when": [NOW, pd.NaT, datetime(1960, 1, 1, tzinfo=UTC), NOW, NOW, NOW, NOW, NOW],
            "category": pd.Categorical(["a", "b", "a", None, "c", "a", "🐉", ""]),
            "float_as_int": [1.5, 2.0, NAN, 4.0, -5.9, 6.0, 7.0, 8.0],
            "int_as_double": [1, 2, 3, 4, 5, 6, 7, 2**40],
            "double_as_float": [0.1, 1e39, NAN, -0.0, 5.0, 6.0, 7.0, 8.0],
            "event_timestamp": (
                pd.to_datetime(_timestamps(8, timedelta(minutes=6)))
                + pd.to_timedelta([1, 999, 0, 500, 1, 2, 3, 4], unit="ns")
            ),
            "created": [NOW.replace(tzinfo=None)] * 8,  # naive
        }
    )
    return {
        "driver_quirks": quirks,
        "driver_stats": stats,
        "driver_profile": profile,
        "driver_wide": pd.DataFrame(wide),
        "driver_old": old,
        "driver_customer": driver_customer,
        "customer_stats": customer,
        "odd_keys": odd_keys,
        "driver_history": history,
        "driver_ties": ties,
    }


def exotic_values() -> dict[str, tuple[Any, list[Value]]]:
    """Values materialization cannot produce from parquet, written as protos, with the dtype
    each is *declared* as (Feast's ``to_dict`` uses the declared type as a conversion hint)."""
    null_ts = NULL_TIMESTAMP_INT_VALUE
    return {
        "e_json": (
            Json,
            [
                Value(json_val='{"a": [1, 2.5, null], "b": "🐉"}'),
                Value(json_val="not json {"),
                Value(json_val="42"),
            ],
        ),
        "e_json_list": (Array(Json), [Value(json_list_val=StringList(val=['{"x": 1}', "bad{"]))]),
        "e_map": (
            Map,
            [
                Value(
                    map_val=MapProto(
                        val={
                            "k": Value(int64_val=1),
                            "s": Value(string_val="v"),
                            "n": Value(map_val=MapProto(val={"deep": Value(double_val=NAN)})),
                        }
                    )
                ),
                Value(map_val=MapProto()),
            ],
        ),
        "e_struct": (
            Struct({"a": Int64, "b": String}),
            [Value(struct_val=MapProto(val={"a": Value(int64_val=3), "b": Value(string_val="x")}))],
        ),
        "e_scalar_map": (
            ScalarMap,
            [
                Value(
                    scalar_map_val=ScalarMapProto(
                        val=[
                            ScalarMapEntry(key=MapKey(int64_key=5), value=Value(string_val="five"))
                        ]
                    )
                )
            ],
        ),
        "e_string_set": (Set(String), [Value(string_set_val=StringSet(val=["b", "a", "🐉"]))]),
        "e_ts_set": (
            Set(UnixTimestamp),
            [Value(unix_timestamp_set_val=Int64Set(val=[0, 1_700_000_000, null_ts]))],
        ),
        # uuid_val, and a UUID-declared feature stored as a plain string (Feast's hint path)
        "e_uuid": (Uuid, [Value(uuid_val=UUID_1), Value(string_val=UUID_2)]),
        "e_uuid_list": (
            Array(Uuid),
            [
                Value(uuid_list_val=StringList(val=[UUID_1])),
                Value(string_list_val=StringList(val=[UUID_2, UUID_1])),
            ],
        ),
        "e_time_uuid": (TimeUuid, [Value(time_uuid_val=TIME_UUID), Value(string_val=TIME_UUID)]),
        "e_decimal": (
            DecimalType,
            [Value(decimal_val="-12345.678900"), Value(decimal_val="1E-30")],
        ),
        "e_ts": (
            UnixTimestamp,
            [
                Value(unix_timestamp_val=null_ts),
                Value(unix_timestamp_val=0),
                Value(unix_timestamp_val=-86_400),
            ],
        ),
        "e_ts_list": (
            Array(UnixTimestamp),
            [Value(unix_timestamp_list_val=Int64List(val=[null_ts, 5, 1_700_000_000]))],
        ),
        "e_zoned": (
            ZonedTimestampType,
            [
                Value(
                    zoned_timestamp_val=ZonedTimestamp(
                        unix_timestamp=1_700_000_000, zone="Europe/Paris"
                    )
                ),
                Value(zoned_timestamp_val=ZonedTimestamp(unix_timestamp=5, zone="+05:30")),
                Value(zoned_timestamp_val=ZonedTimestamp(unix_timestamp=null_ts, zone="UTC")),
            ],
        ),
        "e_nested": (
            Array(Array(Int64)),
            [
                Value(
                    list_val=RepeatedValue(
                        val=[
                            Value(int64_list_val=Int64List(val=[1, 2])),
                            Value(int64_list_val=Int64List(val=[])),
                        ]
                    )
                )
            ],
        ),
        "e_null": (Int64, [Value(null_val=0), Value()]),
        # stored kind differs from the declared dtype
        "e_mismatch": (Int64, [Value(double_val=2.5), Value(string_val="declared int64")]),
        # serialized lengths 127 / 128 (1- vs 2-byte length prefix), >16383 (3 bytes), ~70 kB
        "e_long_string": (
            String,
            [
                Value(string_val="a" * 125),
                Value(string_val="a" * 126),
                Value(string_val="é" * 9000),
                Value(string_val="z" * 70_000),
            ],
        ),
        "e_long_bytes": (
            Bytes,
            [Value(bytes_val=b"\x00" * 16_380), Value(bytes_val=bytes(range(256)) * 300)],
        ),
        "e_big_list": (
            Array(Float64),
            [Value(double_list_val=DoubleList(val=[i / 3 for i in range(5000)] + [NAN]))],
        ),
        "e_float32": (
            Float32,
            [Value(float_val=v) for v in (0.1, NAN, -INF, -0.0, 3.4e38)],
        ),
        "e_small_lists": (
            Array(Int32),
            [
                Value(int32_list_val=Int32List(val=[-(2**31), 0, 2**31 - 1])),
                Value(float_list_val=FloatList(val=[0.1, NAN])),
                Value(bool_list_val=BoolList(val=[])),
            ],
        ),
    }


#: Event times of the exotic rows: pre-1970, exactly the epoch, sub-second rounding edges.
EXOTIC_TIMES = [
    NOW - timedelta(microseconds=1),
    datetime(1969, 7, 20, 20, 17, 40, 500000, tzinfo=UTC),
    datetime(2999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    datetime(2024, 2, 29, 12, 0, 0, 999999, tzinfo=UTC),
    datetime(1970, 1, 1, tzinfo=UTC),
    datetime(1970, 1, 1, 0, 0, 0, 1),  # naive
    datetime(2038, 1, 19, 3, 14, 8, 1, tzinfo=TZ_MINUS_0800),
]
EXOTIC_IDS = list(range(1, len(EXOTIC_TIMES) + 1))


def exotic_rows() -> list:
    values = exotic_values()
    rows = []
    for i, (driver_id, moment) in enumerate(zip(EXOTIC_IDS, EXOTIC_TIMES)):
        row = {name: variants[i % len(variants)] for name, (_, variants) in values.items()}
        rows.append((int64_key(driver_id), row, moment, None))
    return rows


#: Declared dtypes matter to ``to_dict`` (conversion hints), not to the stored bytes.
RANDOM_FEATURES = {"r0": Bytes, "r1": Float64, "r2": Array(Int64), "r3": Uuid}


def build_api_objects(data_dir: Path) -> dict[str, Any]:
    frames = build_api_frames()
    sources = {}
    for name, frame in frames.items():
        path = data_dir / f"{name}.parquet"
        frame.to_parquet(path)
        sources[name] = FileSource(
            name=f"{name}_source",
            path=str(path),
            timestamp_field="event_timestamp",
            created_timestamp_column="created",
        )
    ttl = timedelta(days=30)
    views = {
        "driver_stats": FeatureView(
            name="driver_stats",
            entities=[API_DRIVER],
            ttl=ttl,
            schema=[
                Field(name="conv_rate", dtype=Float32),
                Field(name="acc_rate", dtype=Float64),
                Field(name="trips", dtype=Int64),
                Field(name="rank", dtype=Int32),
                Field(name="active", dtype=Bool),
            ],
            source=sources["driver_stats"],
        ),
        "driver_profile": FeatureView(
            name="driver_profile",
            entities=[API_DRIVER],
            ttl=ttl,
            schema=[
                Field(name="name", dtype=String),
                Field(name="avatar", dtype=Bytes),
                Field(name="signup", dtype=UnixTimestamp),
                Field(name="tags", dtype=Array(String)),
                Field(name="scores", dtype=Array(Float64)),
                Field(name="counts", dtype=Array(Int64)),
                Field(name="flags", dtype=Array(Bool)),
                Field(name="blobs", dtype=Array(Bytes)),
            ],
            source=sources["driver_profile"],
        ),
        "driver_wide": FeatureView(
            name="driver_wide",
            entities=[API_DRIVER],
            ttl=ttl,
            schema=[
                Field(name=f"w{j}", dtype=(Int64, Float64, String)[j % 3])
                for j in range(N_WIDE_FEATURES)
            ],
            source=sources["driver_wide"],
        ),
        "driver_old": FeatureView(
            name="driver_old",
            entities=[API_DRIVER],
            ttl=timedelta(hours=1),
            schema=[Field(name="old_value", dtype=Float64)],
            source=sources["driver_old"],
        ),
        "driver_customer": FeatureView(
            name="driver_customer",
            entities=[API_DRIVER, API_CUSTOMER],
            ttl=ttl,
            schema=[
                Field(name="orders", dtype=Int64),
                Field(name="spend", dtype=Float64),
                Field(name="note", dtype=String),
            ],
            source=sources["driver_customer"],
        ),
        "customer_stats": FeatureView(
            name="customer_stats",
            entities=[API_CUSTOMER],
            ttl=ttl,
            schema=[Field(name="lifetime", dtype=Float64), Field(name="segment", dtype=String)],
            source=sources["customer_stats"],
        ),
        # Written through online_write_batch (not materialized): every exotic value kind.
        "driver_exotic": FeatureView(
            name="driver_exotic",
            entities=[API_DRIVER],
            ttl=timedelta(0),
            schema=[Field(name=name, dtype=dtype) for name, (dtype, _) in exotic_values().items()],
            source=sources["driver_stats"],
        ),
    }
    # Entity keys of the other serializable kinds: int32 + bytes (composite), unix timestamp.
    views["shard_blob"] = FeatureView(
        name="shard_blob",
        entities=[SHARD, BLOB],
        ttl=ttl,
        schema=[Field(name="v", dtype=Float64)],
        source=sources["odd_keys"],
    )
    views["daily"] = FeatureView(
        name="daily",
        entities=[DAY_ENTITY],
        ttl=ttl,
        schema=[Field(name="v", dtype=Float64)],
        source=sources["odd_keys"],
    )
    views["driver_history"] = FeatureView(
        name="driver_history",
        entities=[API_DRIVER],
        ttl=ttl,
        schema=[Field(name="h", dtype=Int64)],
        source=sources["driver_history"],
    )
    # Filled by the API property test only (random values of every kind).
    views["driver_random"] = FeatureView(
        name="driver_random",
        entities=[API_DRIVER],
        ttl=ttl,
        schema=[Field(name=name, dtype=dtype) for name, dtype in RANDOM_FEATURES.items()],
        source=sources["driver_stats"],
    )
    views["driver_quirks"] = FeatureView(
        name="driver_quirks",
        entities=[API_DRIVER],
        ttl=ttl,
        schema=[
            Field(name="big", dtype=Int64),
            Field(name="maybe", dtype=Bool),
            Field(name="when", dtype=UnixTimestamp),
            Field(name="category", dtype=String),
            Field(name="float_as_int", dtype=Int64),
            Field(name="int_as_double", dtype=Float64),
            Field(name="double_as_float", dtype=Float32),
        ],
        source=sources["driver_quirks"],
    )
    views["driver_ties"] = FeatureView(
        name="driver_ties",
        entities=[API_DRIVER],
        ttl=ttl,
        schema=[Field(name="t", dtype=Int64)],
        source=sources["driver_ties"],
    )
    request = RequestSource(name="bonus_request", schema=[Field(name="bonus", dtype=Float64)])

    @on_demand_feature_view(
        sources=[views["driver_stats"], request],
        schema=[Field(name="adjusted_acc", dtype=Float64)],
        mode="python",
    )
    def adjusted_acc(inputs: dict[str, Any]) -> dict[str, Any]:
        return {
            "adjusted_acc": [
                (a if a is not None else 0.0) + b
                for a, b in zip(inputs["acc_rate"], inputs["bonus"])
            ]
        }

    # An on-demand view whose output is stored in the online store and read back from it.
    @on_demand_feature_view(
        entities=[API_DRIVER],
        sources=[views["driver_stats"]],
        schema=[Field(name="conv_x2", dtype=Float64)],
        mode="python",
        write_to_online_store=True,
    )
    def stored_conv(inputs: dict[str, Any]) -> dict[str, Any]:
        return {"conv_x2": [None if v is None else v * 2 for v in inputs["conv_rate"]]}

    services = [
        FeatureService(
            name="svc_all",
            features=[views["driver_stats"], views["driver_profile"], views["customer_stats"]],
        ),
        FeatureService(
            name="svc_projection",
            features=[
                views["driver_stats"][["trips", "conv_rate"]],
                views["driver_profile"][["tags"]],
                views["driver_wide"][["w5", "w1"]],
            ],
        ),
        FeatureService(
            name="svc_alias",
            features=[
                views["driver_stats"].with_name("stats_alias")[["acc_rate"]],
                views["driver_customer"],
            ],
        ),
        FeatureService(
            name="svc_join_key_map",
            features=[
                views["driver_stats"].with_name("own_stats")[["rank"]],
                views["driver_stats"]
                .with_name("courier_stats")
                .with_join_key_map({"driver_id": "courier_id"})[["rank", "trips"]],
            ],
        ),
        FeatureService(
            name="svc_same_view_twice",
            features=[
                # (both aliased: Feast 0.67 cannot sort an aliased and a bare projection)
                views["driver_stats"].with_name("stats_once")[["rank"]],
                views["driver_stats"].with_name("stats_again")[["rank", "active"]],
            ],
        ),
    ]
    return {
        "entities": [API_DRIVER, API_CUSTOMER, SHARD, BLOB, DAY_ENTITY],
        "views": views,
        "odfvs": [adjusted_acc, stored_conv],
        "request": request,
        "services": services,
    }


MATERIALIZED_VIEWS = [
    "driver_stats",
    "driver_profile",
    "driver_wide",
    "driver_old",
    "driver_customer",
    "customer_stats",
    "shard_blob",
    "daily",
    "driver_history",
    "driver_ties",
    "driver_quirks",
]
#: Rows pushed through the stored on-demand view (its transformation runs on write).
STORED_ODFV_PUSH = pd.DataFrame(
    {
        "driver_id": [500, 501, 3],
        "conv_rate": [0.25, None, 0.5],
        "acc_rate": [1.0, 2.0, 3.0],
        "trips": [1, 2, 3],
        "rank": pd.array([1, 2, 3], dtype="int32"),
        "active": [True, False, True],
        "event_timestamp": [NOW, NOW, NOW + timedelta(microseconds=1)],
        "created": [NOW] * 3,
    }
)


@pytest.fixture(scope="module")
def api(redis_server, tmp_path_factory):
    """Two applied repos on one server; the data written by each store in turn.

    Each store materializes the same parquet data (and writes the exotic rows) into an empty
    server and the keyspace is dumped: a test compares the two dumps, and one of them is
    restored before each read test (the per-test FLUSHALL would otherwise lose it).
    """
    base = tmp_path_factory.mktemp("api")
    data_dir = base / "data"
    data_dir.mkdir()
    objects = build_api_objects(data_dir)
    stores: dict[str, FeatureStore] = {}
    for kind in STORE_TYPES:
        stores[kind] = write_feature_repo(
            base / kind,
            project=API_PROJECT,
            online_store=online_store_settings(kind, redis_server.connection_string),
        )
        stores[kind].apply(
            [
                *objects["entities"],
                *objects["views"].values(),
                *objects["odfvs"],
                objects["request"],
                *objects["services"],
            ]
        )
    client = redis_server.client(decode_responses=False)
    dumps = {}
    try:
        for kind, store in stores.items():
            client.flushall()
            store.materialize(WINDOW_START, WINDOW_END, MATERIALIZED_VIEWS)
            store._get_provider().online_store.online_write_batch(
                store.config, store.get_feature_view("driver_exotic"), exotic_rows(), None
            )
            store.write_to_online_store("stored_conv", df=STORED_ODFV_PUSH.copy())
            dumps[kind] = dump_keyspace(client)
        client.flushall()
    finally:
        client.close()
    yield SimpleNamespace(
        stores=stores,
        dumps=dumps,
        paths={k: base / k for k in STORE_TYPES},
        base=base,
        objects=objects,
        connection_string=redis_server.connection_string,
    )
    for store in stores.values():
        close_sync(store._get_provider().online_store)


@pytest.fixture
def api_data(api, redis_client):
    """Feast's materialized data, back on the server after this test's FLUSHALL."""
    restore_keyspace(redis_client, api.dumps["feast"])
    return api


WALL_CLOCK_FIELD = b"_ts:stored_conv"


def without_wall_clock_stamps(dump):
    """Feast stamps rows written through an on-demand view with the wall clock (``now``), so
    that one field legitimately differs between the two writes: check presence, drop value."""
    masked = {}
    for key, (fields, pttl) in dump.items():
        fields = dict(fields)
        if WALL_CLOCK_FIELD in fields:
            assert len(fields.pop(WALL_CLOCK_FIELD)) > 0
            fields[WALL_CLOCK_FIELD] = b"<wall clock>"
        masked[key] = (fields, pttl)
    return masked


def test_materialize_writes_identical_bytes(api):
    feast_dump, ours_dump = (without_wall_clock_stamps(api.dumps[k]) for k in STORE_TYPES)
    assert_same_keyspace(feast_dump, ours_dump)
    assert sum(WALL_CLOCK_FIELD in fields for fields, _ in feast_dump.values()) == 3
    # 300 drivers (+2 pushed), 5 customers, 10 x 5 driver/customer pairs, 4 + 3 odd keys.
    # (Materializing the stored on-demand view would stamp rows with the wall clock, so it
    # is only pushed, with event times from the data.)
    assert len(api.dumps["feast"]) == N_DRIVERS + 2 + len(CUSTOMERS) + 50 + 4 + 3


ENGINE_VARIANTS = {
    "defaults": {},
    "batches of 7, 3 rows per call": {"batch_size": 7, "write_rows_per_call": 3},
    "through the offline store": {"stream_file_sources": False},
}


@pytest.mark.parametrize("variant", list(ENGINE_VARIANTS))
def test_our_materialization_engine_writes_what_feasts_local_engine_writes(
    api, redis_client, variant
):
    """``batch_engine: feast_dragonfly.DragonflyMaterializationEngine`` + our store vs Feast's
    local engine + Feast's store: same parquet data, same window, same bytes."""
    settings = ENGINE_VARIANTS[variant]
    views = list(MATERIALIZED_VIEWS)
    if "batch_size" in settings:
        # Documented: equal event times in *different* batches keep the first row written,
        # whatever its created time; Feast keeps the latest created. Not compared here.
        views.remove("driver_ties")
    engine_store = write_feature_repo(
        api.base / f"engine-{list(ENGINE_VARIANTS).index(variant)}",
        project=API_PROJECT,
        online_store=online_store_settings("ours", api.connection_string),
        batch_engine={
            "type": "feast_dragonfly.DragonflyMaterializationEngine",
            "show_progress": False,
            **settings,
        },
    )
    objects = api.objects
    engine_store.apply([*objects["entities"], *objects["views"].values(), objects["request"]])
    dumps = {}
    try:
        for kind, store in (("feast", api.stores["feast"]), ("engine", engine_store)):
            redis_client.flushall()
            store.materialize(WINDOW_START, WINDOW_END, views)
            dumps[kind] = dump_keyspace(redis_client)
    finally:
        close_sync(engine_store._get_provider().online_store)
    assert_same_keyspace(dumps["feast"], dumps["engine"])


class Req(NamedTuple):
    features: Any  # feature refs, or the name of a FeatureService
    rows: Any  # entity rows: a list of dicts or a columnar dict
    full_names: bool = False
    version_metadata: bool = False


STATS = [f"driver_stats:{f}" for f in ("conv_rate", "acc_rate", "trips", "rank", "active")]
PROFILE = [
    f"driver_profile:{f}"
    for f in ("name", "avatar", "signup", "tags", "scores", "counts", "flags", "blobs")
]
WIDE = [f"driver_wide:w{j}" for j in range(N_WIDE_FEATURES)]
EXOTIC = [f"driver_exotic:{name}" for name in exotic_values()]
DRIVER_ROWS = [{"driver_id": i} for i in (1, 2, 9, 10, 11, 40)]
MIXED_ROWS = [{"driver_id": i} for i in (3, 9999, 1, -5, 3, 3, 40, 0, 9999)]
PAIR_ROWS = [
    {"driver_id": d, "customer_id": c}
    for d, c in ((1, "c-0"), (2, "🐉-3"), (3, "nope"), (77, "c-1"), (1, "c-0"), (10, ""))
]

REQUESTS: dict[str, Req] = {
    "one view, all features": Req(STATS, DRIVER_ROWS),
    "subset of a view, reordered": Req(
        ["driver_stats:trips", "driver_stats:conv_rate"], DRIVER_ROWS
    ),
    "typed lists, bytes, timestamps, nulls": Req(PROFILE, DRIVER_ROWS),
    "exotic kinds, long values, odd event times": Req(
        EXOTIC, [{"driver_id": i} for i in [*EXOTIC_IDS, 0, 3]]
    ),
    "exotic kinds, full names": Req(EXOTIC[::-1], [{"driver_id": i} for i in EXOTIC_IDS], True),
    "missing and duplicate entities": Req(STATS + PROFILE[:3], MIXED_ROWS),
    "all entities missing": Req(STATS, [{"driver_id": 5000 + i} for i in range(4)]),
    "single entity row": Req(PROFILE, [{"driver_id": 7}]),
    "five views sharing the driver": Req(
        [STATS[0], PROFILE[3], WIDE[2], "driver_old:old_value", "driver_customer:note"], PAIR_ROWS
    ),
    "composite keys only": Req(
        ["driver_customer:orders", "driver_customer:spend", "driver_customer:note"], PAIR_ROWS
    ),
    "composite with each entity alone": Req(
        ["driver_customer:orders", "customer_stats:segment", "customer_stats:lifetime", STATS[1]],
        PAIR_ROWS,
        True,
    ),
    "full feature names": Req(STATS + PROFILE + ["driver_wide:w3"], MIXED_ROWS, True),
    "view ttl exceeded for even drivers": Req(
        ["driver_old:old_value", STATS[0]], [{"driver_id": i} for i in range(1, 13)]
    ),
    "composite view, a join key absent from the rows": Req(
        ["driver_customer:orders", STATS[3]], DRIVER_ROWS
    ),
    "columnar entity rows": Req(STATS[:2] + PROFILE[:2], {"driver_id": [4, 4, 8, 123456]}),
    "service: whole views": Req("svc_all", PAIR_ROWS),
    "service: projection subset": Req("svc_projection", MIXED_ROWS),
    "service: projection, full names": Req("svc_projection", MIXED_ROWS, True),
    "service: aliased view, full names": Req("svc_alias", PAIR_ROWS, True),
    "service: a view read through a join key map": Req(
        "svc_join_key_map",
        [
            {"driver_id": d, "courier_id": c}
            for d, c in ((1, 2), (2, 1), (3, 3), (999, 4), (5, 999))
        ],
        True,
    ),
    "service: one view under two names": Req("svc_same_view_twice", MIXED_ROWS, True),
    "view version metadata flag": Req(
        STATS[:1] + ["customer_stats:segment"], PAIR_ROWS, False, True
    ),
    "int32 + bytes composite entity keys": Req(
        ["shard_blob:v"],
        [
            {"shard": 1, "blob": b"\x00\xff"},
            {"shard": 0, "blob": "🐉".encode()},
            {"shard": -2, "blob": b""},
            {"shard": 1, "blob": b""},
            {"shard": 2**31 - 1, "blob": b"*?[glob]"},
        ],
    ),
    "unix-timestamp entity keys": Req(
        ["daily:v"],
        [{"day": DAY}, {"day": DAY + timedelta(seconds=1)}, {"day": DAY - timedelta(days=2)}],
    ),
    "latest row per entity, window edges, created-time ties": Req(
        ["driver_history:h", "driver_ties:t"], [{"driver_id": i} for i in range(1, 11)]
    ),
    "conversion quirks": Req(
        [f"driver_quirks:{f}" for f in ("big", "maybe", "when", "category")]
        + [f"driver_quirks:{f}" for f in ("float_as_int", "int_as_double", "double_as_float")],
        [{"driver_id": i} for i in range(10)],
    ),
    "stored on-demand view": Req(
        ["stored_conv:conv_x2", STATS[0]],
        [{"driver_id": i} for i in (1, 3, 9, 500, 501, 777)],
    ),
    "on-demand view": Req(
        ["adjusted_acc:adjusted_acc", STATS[1]],
        [{"driver_id": i, "bonus": i / 10} for i in (1, 11, 22, 404)],
    ),
    "300 entities x 60 features": Req(
        WIDE, [{"driver_id": i} for i in range(N_DRIVERS, 0, -1)] + [{"driver_id": 0}]
    ),
    "300 entities x 60 features, full names": Req(
        WIDE[::-1], [{"driver_id": i} for i in range(1, N_DRIVERS + 1)], True
    ),
    # error paths: whatever Feast raises, ours raises too
    "error: unknown feature": Req(["driver_stats:nope"], DRIVER_ROWS),
    "error: no entity rows": Req(STATS, {"driver_id": []}),
}


#: Requests that find no stored value at all (the others must find some).
NO_VALUES_EXPECTED = {"all entities missing"}
SOME_VALUES_EXPECTED = set(REQUESTS) - NO_VALUES_EXPECTED


def canonical(obj: Any) -> Any:
    """Type-exact, NaN-safe form for equality (1 != 1.0 != True, nan == nan, -0.0 != 0.0)."""
    if isinstance(obj, dict):
        return ("dict", {key: canonical(value) for key, value in obj.items()})
    if isinstance(obj, (list, tuple)):
        return (type(obj).__name__, [canonical(value) for value in obj])
    if isinstance(obj, (set, frozenset)):
        return (type(obj).__name__, sorted((canonical(v) for v in obj), key=repr))
    if isinstance(obj, (str, bytes, bool, int, type(None))):
        return (type(obj).__name__, obj)
    if hasattr(obj, "tolist"):  # numpy arrays and scalars
        return ("numpy", type(obj).__name__, canonical(obj.tolist()))
    return (type(obj).__name__, repr(obj))  # float (nan, -0.0), datetime, UUID, Decimal, ...


def outcome(produce) -> Any:
    """``produce()``'s value, or the type of the exception it raised."""
    try:
        return ("ok", produce())
    except Exception as exc:  # noqa: BLE001 - the two stores must fail alike
        return ("raised", type(exc).__name__)


def frame_summary(frame: pd.DataFrame) -> Any:
    return (
        list(frame.columns),
        frame.dtypes.astype(str).tolist(),
        canonical(frame.to_dict("list")),
    )


def arrow_summary(table) -> Any:
    return (table.schema.to_string(), canonical(table.to_pylist()))


def assert_same_response(reference, ours, label: str = "") -> None:
    """``.proto`` identical (as messages and as bytes), and every public conversion equal."""
    assert ours.proto == reference.proto, label
    assert ours.proto.SerializeToString(deterministic=True) == reference.proto.SerializeToString(
        deterministic=True
    ), label
    for with_times in (False, True):
        # (Feast's to_dict raises for some stored values, e.g. a non-UUID string in a
        # Uuid-declared feature: then ours must raise the same error.)
        assert outcome(lambda w=with_times: canonical(ours.to_dict(w))) == outcome(
            lambda w=with_times: canonical(reference.to_dict(w))
        ), label
    assert outcome(lambda: frame_summary(ours.to_df(True))) == outcome(
        lambda: frame_summary(reference.to_df(True))
    ), label
    assert outcome(lambda: arrow_summary(ours.to_arrow())) == outcome(
        lambda: arrow_summary(reference.to_arrow())
    ), label


def request_args(store: FeatureStore, request: Req) -> dict[str, Any]:
    features = request.features
    features = store.get_feature_service(features) if isinstance(features, str) else list(features)
    rows = request.rows
    rows = (
        {k: list(v) for k, v in rows.items()} if isinstance(rows, dict) else [dict(r) for r in rows]
    )
    return {
        "features": features,
        "entity_rows": rows,
        "full_feature_names": request.full_names,
        "include_feature_view_version_metadata": request.version_metadata,
    }


def online_features(store: FeatureStore, request: Req):
    return store.get_online_features(**request_args(store, request))


def present_count(response) -> int:
    return sum(
        status == FieldStatus.PRESENT
        for vector in response.proto.results
        for status in vector.statuses
    )


@pytest.mark.parametrize("label", list(REQUESTS))
def test_get_online_features_equal(api_data, label):
    request = REQUESTS[label]
    if label.startswith("error:"):
        failures = {
            kind: outcome(lambda store=store: online_features(store, request))
            for kind, store in api_data.stores.items()
        }
        assert failures["feast"][0] == "raised", "the request was meant to fail"
        assert failures["ours"] == failures["feast"]
        return
    responses = {kind: online_features(store, request) for kind, store in api_data.stores.items()}
    assert_same_response(responses["feast"], responses["ours"], label)
    if label in SOME_VALUES_EXPECTED:
        # Guard against comparing two empty answers: real values came back.
        values = [v for vector in responses["feast"].proto.results for v in vector.values]
        assert any(v.WhichOneof("val") for v in values), label


def test_expected_values_come_back(api_data):
    """Spot-check the shared answer against the source data (both stores give it)."""
    frames = build_api_frames()
    for store in api_data.stores.values():
        result = store.get_online_features(
            features=[
                "driver_stats:rank",
                "driver_profile:tags",
                "driver_wide:w4",
                "driver_customer:note",
                "driver_exotic:e_uuid",
                "driver_exotic:e_long_string",
            ],
            entity_rows=[
                {"driver_id": 3, "customer_id": "🐉-3"},
                {"driver_id": 9999, "customer_id": "x"},
            ],
        ).to_dict()
        assert result["rank"] == [-3, None]
        assert result["tags"] == [["t0", "t1", "t2"], None]
        assert result["w4"] == [frames["driver_wide"]["w4"][2], None]
        assert result["note"] == ["3/🐉-3", None]
        assert result["e_uuid"] == [uuid.UUID(UUID_1), None]
        assert result["e_long_string"] == ["é" * 9000, None]


def test_feature_view_ttl_status_is_the_same(api_data):
    """Rows older than the view TTL: whatever Feast reports, ours reports the same."""
    rows = [{"driver_id": i} for i in range(1, 9)]
    responses = {
        kind: store.get_online_features(features=["driver_old:old_value"], entity_rows=rows)
        for kind, store in api_data.stores.items()
    }
    assert_same_response(responses["feast"], responses["ours"])
    statuses = {kind: list(r.proto.results[0].statuses) for kind, r in responses.items()}
    assert statuses["ours"] == statuses["feast"]


ASYNC_REQUESTS = [
    "missing and duplicate entities",
    "exotic kinds, long values, odd event times",
    "five views sharing the driver",
    "composite with each entity alone",
    "service: projection, full names",
    "300 entities x 60 features",
    "on-demand view",
]


async def test_get_online_features_async_equals_sync(api_data):
    """Fresh FeatureStore objects for this loop: Feast's async client binds to its first loop."""
    async_stores = {
        kind: FeatureStore(repo_path=str(path)) for kind, path in api_data.paths.items()
    }
    try:
        for label in ASYNC_REQUESTS:
            request = REQUESTS[label]
            sync_responses = {
                kind: online_features(store, request) for kind, store in api_data.stores.items()
            }
            async_responses = {
                kind: await store.get_online_features_async(**request_args(store, request))
                for kind, store in async_stores.items()
            }
            for kind in STORE_TYPES:
                assert_same_response(
                    sync_responses[kind], async_responses[kind], f"{kind}: {label}"
                )
            assert_same_response(async_responses["feast"], async_responses["ours"], label)
    finally:
        for store in async_stores.values():
            await close_async(store._get_provider().online_store)


def test_data_written_by_ours_reads_the_same_through_both(api, redis_client):
    """Ours wrote this keyspace (not Feast's): both stores still answer identically."""
    restore_keyspace(redis_client, api.dumps["ours"])
    for label in (
        "missing and duplicate entities",
        "exotic kinds, full names",
        "service: whole views",
        "full feature names",
    ):
        request = REQUESTS[label]
        responses = {kind: online_features(store, request) for kind, store in api.stores.items()}
        assert_same_response(responses["feast"], responses["ours"], label)
        assert present_count(responses["feast"]) > 0


def test_write_to_online_store_writes_identical_bytes(api, redis_client):
    """The public push-style write path, through each store on an empty server."""
    frame = build_api_frames()["driver_profile"].head(12)
    dumps = {}
    for kind, store in api.stores.items():
        redis_client.flushall()
        store.write_to_online_store("driver_profile", df=frame.copy())
        dumps[kind] = dump_keyspace(redis_client)
    assert_same_keyspace(dumps["feast"], dumps["ours"])
    assert len(dumps["ours"]) == 12


RANDOM_ID_BASE = 20_000_000
RANDOM_VALUES = st.one_of(
    SCALAR_VALUES,
    st.sampled_from([value for variants in typed_values().values() for value in variants]),
    st.sampled_from([v for _, variants in exotic_values().values() for v in variants]),
    st.uuids().map(lambda u: Value(string_val=str(u))),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    writer=st.sampled_from(list(STORE_TYPES)),
    rows=st.lists(
        st.tuples(
            st.integers(0, 7),
            st.dictionaries(st.sampled_from(list(RANDOM_FEATURES)), RANDOM_VALUES),
            EVENT_TIME_STRATEGY,
        ),
        max_size=6,
    ),
    requested=st.lists(st.sampled_from(list(RANDOM_FEATURES)), min_size=1, unique=True),
    lookups=st.lists(st.integers(0, 9), min_size=1, max_size=8),
    full_names=st.booleans(),
)
def test_random_rows_answer_identically_through_the_api(
    api, redis_server, writer, rows, requested, lookups, full_names
):
    """Random stored values (every kind), event times, request shapes: same response."""
    store = api.stores[writer]
    view = store.get_feature_view("driver_random")
    batch = [
        (int64_key(RANDOM_ID_BASE + entity), values, moment, None)
        for entity, values, moment in rows
    ]
    client = redis_server.client(decode_responses=False)
    try:
        keys = [
            serialize_entity_key(int64_key(RANDOM_ID_BASE + i), 3) + API_PROJECT.encode()
            for i in range(10)
        ]
        client.delete(*keys)
        store._get_provider().online_store.online_write_batch(store.config, view, batch, None)
        request = Req(
            [f"driver_random:{name}" for name in requested],
            [{"driver_id": RANDOM_ID_BASE + i} for i in lookups],
            full_names,
        )
        responses = {kind: online_features(s, request) for kind, s in api.stores.items()}
        assert_same_response(responses["feast"], responses["ours"])
    finally:
        client.delete(*keys)
        client.close()


def _field(view: str, feature: str) -> bytes:
    return struct.pack("<I", mmh3.hash(f"{view}:{feature}", signed=False))


_STAMP = Timestamp(seconds=1_700_000_000, nanos=5000).SerializeToString()
_RANK = Value(int32_val=5).SerializeToString()
#: Hash contents another writer could have left: forward-compatible ones must read the same,
#: corrupt ones must fail in both stores (never come back as plausible values).
FOREIGN_HASHES = {
    "unknown field in a value": {_field("driver_stats", "rank"): _RANK + b"\xf8\x3f\x01"},
    "only an unknown field": {_field("driver_stats", "rank"): b"\xf8\x3f\x01"},
    "two oneof members (last wins)": {
        _field("driver_stats", "rank"): _RANK + Value(string_val="x").SerializeToString()
    },
    "non-canonical varint": {_field("driver_stats", "rank"): b"\x18\x85\x80\x00"},
    "timestamp with an unknown field": {b"_ts:driver_stats": _STAMP + b"\x18\x07"},
    "truncated value": {_field("driver_stats", "rank"): b"\x0a\x05ab"},
    "garbage value": {_field("driver_stats", "rank"): b"\xff\xff\xff"},
    "garbage timestamp": {b"_ts:driver_stats": b"\xff\xff"},
}


@pytest.mark.parametrize("case", list(FOREIGN_HASHES))
def test_foreign_hash_contents_read_alike(api_data, redis_client, case):
    key = serialize_entity_key(int64_key(1), 3) + API_PROJECT.encode()
    redis_client.hset(key, mapping={b"_ts:driver_stats": _STAMP, **FOREIGN_HASHES[case]})
    request = Req(STATS, [{"driver_id": 1}, {"driver_id": 2}])
    results = {
        kind: outcome(lambda s=store: online_features(s, request))
        for kind, store in api_data.stores.items()
    }
    if results["feast"][0] == "raised":
        assert results["ours"] == results["feast"]  # the same exception type
    else:
        assert results["ours"][0] == "ok", results["ours"]
        assert_same_response(results["feast"][1], results["ours"][1], case)


def test_float_special_values_survive_the_round_trip(api_data):
    """NaN / inf come back the same from both (checked by ``canonical``); lists keep NaN while
    Feast's materialization turns a scalar NaN into a null."""
    rows = [{"driver_id": i} for i in (3, 11, 22, 33)]
    responses = {
        kind: store.get_online_features(
            features=["driver_profile:scores", "driver_stats:acc_rate"], entity_rows=rows
        )
        for kind, store in api_data.stores.items()
    }
    assert_same_response(responses["feast"], responses["ours"])
    result = responses["ours"].to_dict()
    assert math.isnan(result["scores"][0][1]) and result["scores"][0][2] == INF
    assert result["acc_rate"][1] is None  # driver 11: NaN offline
