"""Write the quickstart's offline data: ``data/driver_stats.parquet``.

Eight drivers (ids 1001-1008) x three days of hourly rows ending at the start of the current
UTC hour. Values come from a fixed seed, so every run writes the same numbers; only the
timestamps move with the clock (``feast materialize-incremental`` loads the last ``ttl`` of
data, so the rows must be recent). Pass ``--end 2025-01-01T00:00:00`` for byte-identical output.

    python generate_data.py [--repo PATH] [--end ISO_TIMESTAMP]
"""

from __future__ import annotations

import argparse
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

DRIVER_IDS = list(range(1001, 1009))
HOURS = 3 * 24
SEED = 20240607

_NAMES = ["Ana", "Bo", "Chidi", "Dana", "Emre", "Fatima", "Goran", "Hiro"]
_VEHICLES = [
    ["sedan"],
    ["sedan", "suv"],
    ["van"],
    ["suv"],
    ["sedan", "van"],
    ["bike"],
    ["suv", "van"],
    ["sedan"],
]

SCHEMA = pa.schema(
    [
        ("driver_id", pa.int64()),
        ("event_timestamp", pa.timestamp("us", tz="UTC")),
        ("created", pa.timestamp("us", tz="UTC")),
        ("conv_rate", pa.float32()),
        ("acc_rate", pa.float32()),
        ("avg_daily_trips", pa.int64()),
        ("name", pa.string()),
        ("rating", pa.float64()),
        ("is_active", pa.bool_()),
        ("vehicle_types", pa.list_(pa.string())),
    ]
)


def build_frame(end: datetime) -> pd.DataFrame:
    """All rows, hourly from ``end - HOURS + 1h`` to ``end`` inclusive, for every driver."""
    end = end.astimezone(timezone.utc).replace(minute=0, second=0, microsecond=0)
    rng = np.random.default_rng(SEED)
    rows = []
    for index, driver_id in enumerate(DRIVER_IDS):
        base_rating = 3.6 + 0.18 * index
        conv = rng.uniform(0.05, 0.95, HOURS)
        acc = rng.uniform(0.30, 1.00, HOURS)
        trips = rng.integers(5, 40, HOURS)
        jitter = rng.normal(0.0, 0.03, HOURS)
        for hour in range(HOURS):
            stamp = end - timedelta(hours=HOURS - 1 - hour)
            rows.append(
                {
                    "driver_id": driver_id,
                    "event_timestamp": stamp,
                    "created": stamp + timedelta(minutes=5),
                    "conv_rate": float(conv[hour]),
                    "acc_rate": float(acc[hour]),
                    "avg_daily_trips": int(trips[hour]),
                    "name": _NAMES[index],
                    "rating": round(min(5.0, base_rating + float(jitter[hour])), 3),
                    # Driver 1004 went inactive halfway through the window.
                    "is_active": not (driver_id == 1004 and hour >= HOURS // 2),
                    "vehicle_types": _VEHICLES[index],
                }
            )
    return pd.DataFrame(rows)


def write(repo: Path, end: datetime) -> Path:
    frame = build_frame(end)
    target = repo / "data" / "driver_stats.parquet"
    target.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(frame, schema=SCHEMA, preserve_index=False)
    pq.write_table(table, target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--repo",
        type=Path,
        default=Path(__file__).resolve().parent,
        help="feature repo to write data/driver_stats.parquet into (default: this directory)",
    )
    parser.add_argument(
        "--end",
        type=datetime.fromisoformat,
        default=None,
        help="last event hour, ISO 8601, naive = UTC (default: start of the current UTC hour)",
    )
    args = parser.parse_args(argv)
    end = args.end or datetime.now(timezone.utc)
    if end.tzinfo is None:
        end = end.replace(tzinfo=timezone.utc)
    target = write(args.repo, end)
    print(f"wrote {len(DRIVER_IDS) * HOURS} rows for {len(DRIVER_IDS)} drivers to {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
