"""What the differential tests (``test_differential_*.py``) feed Feast 0.67's own
``RedisOnlineStore`` and ours, and how they open, close and compare the two.

Every differential module puts the same inputs through both stores and compares one kind of
output; the inputs live here, once, so a value kind or key kind added to them is exercised by
all of those comparisons (and by the cluster tests, which import them too) rather than by
whichever module someone remembered to extend. The comparisons that more than one module makes
(``online_read`` rows as bytes, ``get_online_features`` responses through every public
conversion) live here for the same reason: two copies would drift into two standards.

The builders that only make sense with the two applied repos (parquet data, feature services,
on-demand views) are in ``differential_repos.py``; the fixtures both kinds of module share are
in ``conftest.py``.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pandas as pd
import pytest
from feast import Entity, FeatureView, Field, FileSource, ValueType
from feast.infra.online_stores.redis import RedisOnlineStore
from feast.protos.feast.types import Value_pb2
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import (
    BoolList,
    BytesList,
    DoubleList,
    FloatList,
    Int32List,
    Int64List,
    Int64Set,
    RepeatedValue,
    StringList,
    StringSet,
    Value,
)
from feast.protos.feast.types.Value_pb2 import Map as MapProto
from feast.types import (
    Array,
    Bool,
    Bytes,
    Float32,
    Float64,
    Int32,
    Int64,
    String,
    UnixTimestamp,
)
from hypothesis import strategies as st

from feast_dragonfly import DragonflyOnlineStore

#: Every differential module's ``pytestmark``: a real server, and silence for Feast's own
#: notices about inputs these tests use on purpose.
DIFFERENTIAL_MARKS = [
    pytest.mark.server,
    pytest.mark.filterwarnings("ignore:Serialization of entity key with version < 3"),
    pytest.mark.filterwarnings("ignore:On demand feature view is an experimental feature"),
    pytest.mark.filterwarnings("ignore:Discarding nonzero nanoseconds"),
]

#: Distinct projects per kind of test, so no test can read another's leftovers (the property
#: test and the applied repos have their own: ``diffprop``, ``diffapi``).
PROJECT = "diffproj"

NAN = float("nan")
INF = float("inf")
UTC = timezone.utc


# ============================================================================ the two stores


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


# ============================================================================ inputs


def int64_key(value: int, join_key: str = "driver_id") -> EntityKey:
    return EntityKey(join_keys=[join_key], entity_values=[Value(int64_val=value)])


def source(name: str = "unused") -> FileSource:
    # Never read by online_write_batch / online_read: only the views' names and features matter.
    return FileSource(name=name, path=f"/nonexistent/{name}.parquet", timestamp_field="ts")


DRIVER = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)


def same_json(a: Any, b: Any) -> bool:
    """Equal documents, NaN equal to NaN: Feast's JSON conversion keeps non-finite floats as
    floats before 0.67 (``"NaN"`` strings from 0.67 on), and ``nan != nan``."""
    if isinstance(a, float) and isinstance(b, float) and a != a and b != b:
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_json(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_json(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


# ---------------------------------------------------------------- every value type, as protos


def _zoned_values() -> list[Value]:
    """A zoned timestamp, on a Feast that has the kind (0.65 on): none on 0.64."""
    zoned = getattr(Value_pb2, "ZonedTimestamp", None)
    if zoned is None:
        return []
    return [Value(zoned_timestamp_val=zoned(unix_timestamp=5, zone="Europe/Paris"))]


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
            *_zoned_values(),
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


# ---------------------------------------------------------------- random inputs (hypothesis)

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


# ============================================================================ comparing outputs


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
