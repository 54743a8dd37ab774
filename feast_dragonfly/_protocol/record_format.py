"""What every part of the package must agree on about compact records, without Feast: their
header (format version, event time, schema id), where a project's schemas live, the clock
expiries are computed from.

The record itself is encoded and decoded by ``_store/compact/codec.py`` (docs/data-layout.md
specifies it byte by byte); the admin tools (``migrate``, ``stats``) only read its header and
copy it whole, so they take these facts from here and load no Feast to do it.
"""

from __future__ import annotations

import time

#: Byte 0 of every record: the format version.
VERSION = 1
#: Version (1) + event time (12) + schema id (4): the bytes every record starts with.
HEADER_SIZE = 17
#: Bytes 1..12: the event time, in an order that compares byte-wise (the write script's rule).
EVENT_TIME = slice(1, 13)
#: Bytes 13..16: the schema id, u32 little-endian.
SCHEMA_ID = slice(13, 17)


def schema_id(record: bytes) -> int:
    """The schema id of a record (its header must be there)."""
    return int.from_bytes(record[SCHEMA_ID], "little")


def directory_key(project: str) -> bytes:
    """The hash of a project's schemas (a hash tag keeps it in one slot; it matches neither
    the project's hash keys, ``*<project>``, nor its records, ``*<project>:*``)."""
    return b"feast_dragonfly:schemas:{" + project.encode("utf-8") + b"}"


def schema_field(view_name: str, schema_id: int) -> bytes:
    """The directory field of one schema of one view: ``<view>:<id as 8 hex digits>``."""
    return b"%s:%08x" % (view_name.encode("utf-8"), schema_id)


def now_ms() -> int:
    """The client's clock, in Unix milliseconds (what expiries are computed against)."""
    return time.time_ns() // 1_000_000
