"""``_protocol.record_format``: the compact record facts shared without Feast.

* the header constants describe what ``_store.compact.codec`` writes (version byte, event time
  at bytes 1..12 comparing byte-wise in time order, schema id at 13..16);
* the directory key and schema fields have the documented shape, and the directory key never
  matches a project's hash-key or record-key SCAN pattern;
* ``now_ms`` is the wall clock in milliseconds.
"""

from __future__ import annotations

import fnmatch
import time
from datetime import datetime, timedelta, timezone

from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.value_type import ValueType

from feast_dragonfly._protocol import record_format
from feast_dragonfly._store.compact import codec
from feast_dragonfly._store.compact.schema import Schema

SCHEMA = Schema([("a", ValueType.INT64), ("s", ValueType.STRING)])


def record_at(when: datetime) -> bytes:
    return codec.encode_row(SCHEMA, {"a": ValueProto(int64_val=1)}, when)


def test_the_header_is_where_the_codec_writes_it():
    record = record_at(datetime(2026, 12, 1, tzinfo=timezone.utc))
    assert record[0] == record_format.VERSION
    assert len(record) > record_format.HEADER_SIZE
    seconds, nanos, schema_id = codec.read_header(record)
    assert record[record_format.EVENT_TIME] == codec.event_time_bytes(seconds, nanos)
    assert record_format.schema_id(record) == schema_id == SCHEMA.id


def test_event_time_bytes_sort_in_time_order():
    base = datetime(1969, 12, 31, 23, 59, 59, tzinfo=timezone.utc)
    moments = [base + timedelta(microseconds=step * 700_001) for step in range(-5, 6)]
    heads = [record_at(moment)[record_format.EVENT_TIME] for moment in moments]
    assert heads == sorted(heads)


def test_the_directory_key_and_fields():
    key = record_format.directory_key("shop")
    assert key == b"feast_dragonfly:schemas:{shop}"
    assert record_format.schema_field("fv", 0xAB) == b"fv:000000ab"
    for pattern in ("*shop", "*shop:*"):  # the project's hashes, the project's records
        assert not fnmatch.fnmatchcase(key.decode(), pattern)


def test_now_ms_is_the_wall_clock():
    assert abs(record_format.now_ms() - time.time() * 1000) < 1000
