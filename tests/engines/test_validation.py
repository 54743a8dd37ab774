"""Views with ``enable_validation=True``: our engine's fast path against Feast's local engine.

Each case materializes the same data with Feast's engine + ``RedisOnlineStore`` and with ours,
and compares what users see: the stored bytes, the validation warnings (type mismatches), the
error (its type and message) and that no view was handed to Feast's engine.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from engine_kit import T0, TYPED_SCHEMA, Repo, typed_frame, window
from feast import FeatureView, Field, FileSource
from feast.driver_test_data import create_driver_hourly_stats_df
from feast.types import Float32, Int64, Json, Map, String, Struct
from feast_repo import dump_keyspace

from feast_dragonfly._engines.plan import delegation_reason

DELEGATED = "Feast's local engine materializes it"
STREAMING = pytest.mark.parametrize("streaming", [True, False], ids=["streamed", "offline-store"])


@dataclass
class Outcome:
    warnings: list[str]
    delegated: bool
    error: tuple[type, str] | None
    keyspace: dict


def materialize(redis_client, repo: Repo, caplog, kind: str, **engine) -> Outcome:
    redis_client.flushall()
    store = repo.store(kind, **engine)
    caplog.clear()
    error = None
    with caplog.at_level(logging.INFO):
        try:
            window(store)
        except Exception as exc:  # compared with the other engine's
            error = (type(exc), str(exc))
    messages = [record.getMessage() for record in caplog.records]
    return Outcome(
        warnings=sorted(m for m in messages if m.startswith("[Validation")),
        delegated=any(DELEGATED in m for m in messages),
        error=error,
        keyspace=dump_keyspace(redis_client),
    )


def compare(redis_client, repo: Repo, caplog, **engine) -> Outcome:
    """Feast's outcome and ours must be the same; ours must not have delegated. Returns ours."""
    feast = materialize(redis_client, repo, caplog, "feast")
    ours = materialize(redis_client, repo, caplog, "ours", **engine)
    assert not ours.delegated
    assert ours.error == feast.error
    assert ours.warnings == feast.warnings
    assert ours.keyspace == feast.keyspace
    return ours


def without_pandas_metadata(repo: Repo, frame: pd.DataFrame) -> None:
    """The parquet file as Spark or another writer leaves it: no pandas metadata, so an
    integer column with nulls comes back from pandas as float64."""
    table = pa.Table.from_pandas(frame, preserve_index=False).replace_schema_metadata(None)
    pq.write_table(table, repo.path / "data.parquet")


def json_repo(tmp_path, connection_string: str, docs: list) -> Repo:
    frame = typed_frame(len(docs))
    frame["doc"] = docs
    schema = TYPED_SCHEMA[:6] + [Field(name="doc", dtype=Json)]
    return Repo(tmp_path, connection_string, frame, schema=schema, enable_validation=True)


# --------------------------------------------------------------------------- the fast path


def test_only_feasts_distributed_engines_delegate_validated_views(
    tmp_path, server_connection_string
):
    repo = Repo(tmp_path, server_connection_string, typed_frame(10), enable_validation=True)
    store = repo.store("ours")
    engine = store._get_provider().batch_engine
    assert engine.delegation_reason(repo.view) is None
    # The Spark and Ray engines do not run the checks: they still hand such views to Feast.
    reason = delegation_reason(engine.online_store, repo.view, store.config)
    assert reason is not None and "validation" in reason


@STREAMING
def test_every_type_takes_the_fast_path_with_feasts_warnings_and_bytes(
    tmp_path, redis_client, server_connection_string, caplog, streaming
):
    repo = Repo(tmp_path, server_connection_string, typed_frame(), enable_validation=True)
    ours = compare(redis_client, repo, caplog, batch_size=37, stream_file_sources=streaming)
    assert ours.error is None and len(ours.keyspace) > 100
    # Feast's pandas step turns the file's nanosecond timestamps into a mismatch it reports.
    assert any("Column 'when' type mismatch" in w for w in ours.warnings)


@STREAMING
def test_types_changed_by_nulls_warn_as_feast_warns(
    tmp_path, redis_client, server_connection_string, caplog, streaming
):
    """Without pandas metadata an integer column with nulls reaches Feast's check as double;
    an all-null string column as null, a list column of empty lists as list<null>."""
    frame = typed_frame()
    frame["text"] = None
    frame["names"] = [[] if i % 2 else None for i in range(len(frame))]
    repo = Repo(tmp_path, server_connection_string, frame, enable_validation=True)
    without_pandas_metadata(repo, frame)
    ours = compare(redis_client, repo, caplog, batch_size=50, stream_file_sources=streaming)
    for column, got in [("i64", "double"), ("text", "null"), ("names", "list<item: null>")]:
        assert any(
            f"Column '{column}' type mismatch" in w and w.endswith(got) for w in ours.warnings
        )


def test_nulls_in_one_batch_only_count_for_the_whole_view(
    tmp_path, redis_client, server_connection_string, caplog
):
    frame = typed_frame(200, seed=7).drop_duplicates(["driver_id", "city"])
    frame["i64"] = pd.array(range(len(frame)), dtype="Int64")
    frame.loc[frame.index[-1], "i64"] = pd.NA  # one null, in the last batch
    repo = Repo(tmp_path, server_connection_string, frame, enable_validation=True)
    without_pandas_metadata(repo, frame)
    ours = compare(redis_client, repo, caplog, batch_size=10)
    assert any("Column 'i64' type mismatch: expected int64, got double" in w for w in ours.warnings)


# --------------------------------------------------------------------------- errors


@STREAMING
def test_valid_json_is_stored_like_feast(
    tmp_path, redis_client, server_connection_string, caplog, streaming
):
    docs = [None if i % 5 == 0 else f'{{"n": {i}, "s": "ä"}}' for i in range(120)]
    repo = json_repo(tmp_path, server_connection_string, docs)
    ours = compare(redis_client, repo, caplog, stream_file_sources=streaming)
    assert ours.error is None and ours.keyspace


@STREAMING
def test_invalid_json_stops_the_view_with_feasts_error_before_writing(
    tmp_path, redis_client, server_connection_string, caplog, streaming
):
    docs = [None if i % 7 == 0 else f'{{"n": {i}}}' for i in range(240)]
    for i in (41, 99, 150):
        docs[i] = "{oops"
    docs[200] = "[1,"
    repo = json_repo(tmp_path, server_connection_string, docs)
    ours = compare(redis_client, repo, caplog, batch_size=30, stream_file_sources=streaming)
    assert ours.error is not None and ours.error[0] is ValueError
    assert "Column 'doc' declared as Json contains" in ours.error[1]
    assert "First error at row 0:" not in ours.error[1]  # a row Feast's order puts further on
    assert ours.keyspace == {}


@STREAMING
def test_a_feature_renamed_away_is_a_missing_column_as_in_feast(
    tmp_path, redis_client, server_connection_string, caplog, streaming
):
    repo = Repo(
        tmp_path, server_connection_string, typed_frame(60), enable_validation=True,
        schema=TYPED_SCHEMA[:4],
    )  # fmt: skip
    repo.view.batch_source = repo.source = FileSource(
        path=repo.source.path,
        timestamp_field="event_timestamp",
        created_timestamp_column="created",
        field_mapping={"f32": "renamed"},
    )
    ours = compare(redis_client, repo, caplog, stream_file_sources=streaming)
    assert ours.error is not None and ours.error[0] is ValueError
    assert "Missing expected columns: {'f32'}" in ours.error[1]


@STREAMING
def test_feast_init_templates_view_takes_the_fast_path(
    tmp_path, redis_client, server_connection_string, caplog, streaming
):
    """``feast init``'s ``driver_hourly_stats``: validation on, with Map, Json and Struct
    features, on the template's own sample data."""
    frame = create_driver_hourly_stats_df(
        [1001, 1002, 1003, 1004, 1005], T0, T0 + timedelta(days=2)
    )
    repo = Repo(tmp_path, server_connection_string, frame, enable_validation=True)
    repo.view = FeatureView(
        name="driver_hourly_stats",
        entities=[repo.driver],
        ttl=timedelta(days=1),
        schema=[
            Field(name="conv_rate", dtype=Float32),
            Field(name="acc_rate", dtype=Float32),
            Field(name="avg_daily_trips", dtype=Int64),
            Field(name="driver_metadata", dtype=Map),
            Field(name="driver_config", dtype=Json),
            Field(name="driver_profile", dtype=Struct({"name": String, "age": String})),
        ],
        source=repo.source,
        enable_validation=True,
    )
    repo.city = repo.driver
    ours = compare(redis_client, repo, caplog, stream_file_sources=streaming)
    assert ours.error is None and len(ours.keyspace) == 5
