"""The request shapes of the public-API differential tests, shared by every module that
compares an answer with Feast's (the store's responses, the feature server's JSON)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, NamedTuple

from differential_repos import DAY, EXOTIC_IDS, N_DRIVERS, N_WIDE_FEATURES, exotic_values
from feast import FeatureStore


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
