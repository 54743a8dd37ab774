"""Feature definitions for the driver-ranking quickstart.

One entity (``driver``), one parquet source, two feature views of different shapes and a
feature service that bundles them — enough to show several views sharing one entity hash in
the online store. ``driver_hourly_stats`` is fed by a push source too (its batch source is
the parquet file, which ``feast materialize`` loads), so fresh rows can also be pushed to it:
``POST /push`` on ``feast-dragonfly serve`` or ``FeatureStore.push``.
"""

from datetime import timedelta

from feast import Entity, FeatureService, FeatureView, Field, FileSource, PushSource, ValueType
from feast.types import Array, Bool, Float32, Float64, Int64, String

driver = Entity(
    name="driver",
    join_keys=["driver_id"],
    value_type=ValueType.INT64,
    description="A driver on the platform",
)

# Written by generate_data.py; a relative path resolves against the feature repo.
driver_stats_source = FileSource(
    name="driver_stats_source",
    path="data/driver_stats.parquet",
    timestamp_field="event_timestamp",
    created_timestamp_column="created",
)

# Rows pushed online (``POST /push`` with push_source_name "driver_stats_push"); materialization
# still reads the parquet file, the push source's batch source.
driver_stats_push = PushSource(name="driver_stats_push", batch_source=driver_stats_source)

driver_hourly_stats = FeatureView(
    name="driver_hourly_stats",
    entities=[driver],
    ttl=timedelta(days=1),
    schema=[
        Field(name="conv_rate", dtype=Float32, description="Conversion rate in the hour"),
        Field(name="acc_rate", dtype=Float32, description="Acceptance rate in the hour"),
        Field(name="avg_daily_trips", dtype=Int64, description="Average trips per day"),
    ],
    online=True,
    source=driver_stats_push,
    tags={"team": "driver_performance"},
)

driver_profile = FeatureView(
    name="driver_profile",
    entities=[driver],
    ttl=timedelta(days=7),
    schema=[
        Field(name="name", dtype=String),
        Field(name="rating", dtype=Float64, description="Average customer rating, 1-5"),
        Field(name="is_active", dtype=Bool),
        Field(name="vehicle_types", dtype=Array(String)),
    ],
    online=True,
    source=driver_stats_source,
    tags={"team": "driver_profile"},
)

driver_ranking_v1 = FeatureService(
    name="driver_ranking_v1",
    features=[
        driver_hourly_stats[["conv_rate", "acc_rate"]],
        driver_profile[["rating", "is_active"]],
    ],
    description="The features the ranking model reads at request time",
)
