"""The two applied feature repos of the public-API differential tests: what they declare and
the data they are filled with.

``conftest.py``'s ``api`` fixture applies these objects to a ``type: redis`` repo and a
``type: feast_dragonfly.DragonflyOnlineStore`` repo (same project, same server) and has each
materialize the same parquet data. The data is shaped to reach the corners Feast's own
conversion has: nullable and mistyped columns, NaN / inf, several rows per entity around the
materialization window's edges, created-time ties, every serializable entity-key kind, values
materialization cannot produce (written as protos instead), views with a short TTL. A corner
only counts once it is here: both the materialization module (same bytes stored) and the
responses module (same answers) then cover it.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
from differential_kit import INF, NAN, TZ_MINUS_0800, UTC, int64_key
from feast import (
    Entity,
    FeatureService,
    FeatureView,
    Field,
    FileSource,
    RequestSource,
    ValueType,
)
from feast import types as feast_types
from feast.on_demand_feature_view import on_demand_feature_view
from feast.protos.feast.types import Value_pb2
from feast.protos.feast.types.Value_pb2 import (
    BoolList,
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

API_PROJECT = "diffapi"

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
    return {**_exotic_values(), **_zoned_values()}


def _zoned_values() -> dict[str, tuple[Any, list[Value]]]:
    """Zoned timestamps, on a Feast that has the kind (0.65 on): none on 0.64."""
    zoned = getattr(Value_pb2, "ZonedTimestamp", None)
    zoned_type = getattr(feast_types, "ZonedTimestamp", None)
    if zoned is None or zoned_type is None:
        return {}
    null_ts = NULL_TIMESTAMP_INT_VALUE
    return {
        "e_zoned": (
            zoned_type,
            [
                Value(zoned_timestamp_val=zoned(unix_timestamp=1_700_000_000, zone="Europe/Paris")),
                Value(zoned_timestamp_val=zoned(unix_timestamp=5, zone="+05:30")),
                Value(zoned_timestamp_val=zoned(unix_timestamp=null_ts, zone="UTC")),
            ],
        )
    }


def _exotic_values() -> dict[str, tuple[Any, list[Value]]]:
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
