"""The admin tools' Feast-free view of compact records and the registry, held to the store's
own definitions (``_store.compact``): one format, even where the admin side must not import it."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from feast import FeatureView, Field
from feast.infra.offline_stores.file_source import FileSource
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.types import Array, Float32, Int64, String
from store_kit import entity, hash_key

from feast_dragonfly._admin import records
from feast_dragonfly._protocol import record_format
from feast_dragonfly._protocol.keys import compact_key
from feast_dragonfly._store.compact import codec, directory, views
from feast_dragonfly._store.compact.schema import Schema


def test_the_record_header_read_here_is_the_codecs():
    assert directory.directory_key is record_format.directory_key  # one definition
    schema = Schema([("a", 4), ("s", 2)])
    when = datetime(2026, 12, 1, 3, 4, 5, 123456, tzinfo=timezone.utc)
    record = codec.encode_row(schema, {"a": ValueProto(int64_val=3)}, when)
    assert record[0] == record_format.VERSION and len(record) >= record_format.HEADER_SIZE
    seconds, nanos, schema_id = codec.read_header(record)
    assert records.event_time(record) == codec.event_time_bytes(seconds, nanos)
    assert record_format.schema_id(record) == schema_id == schema.id
    assert records.event_time(b"\x02" + record[1:]) is None  # another format version
    assert records.event_time(record[:10]) is None


def test_a_page_splits_into_hashes_and_records_of_exactly_the_project():
    shop, myshop = hash_key(1, "shop"), hash_key(2, "myshop")
    keys = [
        shop,
        myshop,
        compact_key(shop, "fv"),
        compact_key(myshop, "fv"),
        shop + b":",  # no view
        b"shop:fv",  # no entity part
        compact_key(hash_key(3, "shop"), "fv:odd"),
    ]
    hashes, found = records.split_page(keys, b"shop")
    assert hashes == [shop]
    assert found == [(compact_key(shop, "fv"), "fv"), (compact_key(hash_key(3, "shop"), "fv:odd"),
                                                      "fv:odd")]  # fmt: skip


def test_the_registry_gives_the_schema_and_ttl_the_store_would(tmp_path):
    """``registry_views`` reads types and ttls without the store; they must be the store's."""
    from feast_repo import write_feature_repo

    from feast_dragonfly._admin.registry_views import load_repo_views

    source = FileSource(path="/nonexistent/unused.parquet", timestamp_field="event_timestamp")
    fv = FeatureView(
        name="fv",
        entities=[entity()],
        schema=[
            Field(name="driver_id", dtype=Int64),
            Field(name="a", dtype=Float32),
            Field(name="b", dtype=Array(String)),
        ],
        source=source,
        ttl=timedelta(hours=2, seconds=1),
    )
    store = write_feature_repo(
        tmp_path,
        project="shop",
        online_store={"type": "feast_dragonfly.DragonflyOnlineStore", "connection_string": "x:1"},
    )
    store.registry.apply_entity(entity(), "shop")
    store.registry.apply_feature_view(fv, "shop")
    repo = load_repo_views(str(tmp_path))
    features = tuple(zip(repo.views["fv"], repo.types["fv"]))
    assert Schema(features) == views.schema_of(fv)
    assert repo.ttls["fv"] == views.ttl_seconds(fv) == 7201
