"""Many all-typed records of one view, decoded a group of features at a time with numpy.

``fast_decode.picked`` decodes a record in a few microseconds: cheap for one record, but a
read of a thousand entities over five views decodes five thousand records into tens of
thousands of ``bytes``, which the response builder then joins again, feature by feature
(Feast's layout hands over the stored bytes, ready). Here the records go into one Arrow
buffer and every step runs once for the whole batch: the headers are checked and the event
times read as arrays, and the requested features' ``FeatureVector`` entries are laid out in
one byte matrix per group of features stored alike (records × features × bytes): ``0x0A``,
the Value's length and its tag, then the copied FLOAT / DOUBLE / BOOL slot, the varint
computed from an integer slot, or a STRING / BYTES / protobuf value's stored length prefix
and bytes. :meth:`Batch.columns` joins each feature's entries for any order of records with a
few numpy calls per group, never making a ``bytes`` per value. The entries are byte for byte
those of ``fast_decode.picked(..., framed=True)`` (the tests hold the two equal).

A record this cannot read as typed is marked unread, and the caller reads it with the
per-record decoders (which also report what is wrong with it) and hands the result back with
:meth:`Batch.override`: another schema or version, a null or fallback value, a header or
length that does not fit, a stored length of 126 bytes or more (a two-byte length somewhere),
a BOOL slot above 1, an empty stored ValueProto.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
from feast.value_type import ValueType

from feast_dragonfly._protocol.record_format import SCHEMA_ID, VERSION
from feast_dragonfly._store.compact.fast_decode import all_typed
from feast_dragonfly._store.compact.schema import BOOL, LENGTH, PROTO, RAW, VARINT, Schema
from feast_dragonfly._store.value_columns import UNSET, VALUE_FIELD

#: A view is decoded as a batch from this many records and values (records × requested
#: features) on: below, numpy's fixed cost per call makes the per-record decoder as fast
#: (measured on Dragonfly through ``get_online_features``: 128 × 50 even, 200 × 50 and
#: 100 × 250 faster in a batch, 64 × 50 slower).
BATCH_FROM = 32
BATCH_VALUES = 6400
#: ... and up to this many values: a batch holds every entry in byte matrices (up to ~130
#: bytes per value, for strings); a larger read is decoded record by record instead.
BATCH_MOST = 500_000

_HEAD = VALUE_FIELD[0]
_SEVEN_BITS = np.arange(0, 70, 7, dtype=np.uint64)  # the shifts of a varint's 10 groups
_BIAS = np.uint64(1 << 63)
_SHORT = 0x80 - 2  # a stored length below this keeps every length in the entry one byte
_UNSET = np.frombuffer(UNSET, dtype=np.uint8)


class _Group:
    """The entries of features stored alike: ``matrix`` (records + 1 × features × bytes;
    the last row unset), each ``lengths`` bytes long (records + 1 × features; None: every
    entry fills its row)."""

    def __init__(self, members: list[int], matrix: np.ndarray, lengths: np.ndarray | None):
        self.members = members
        self.matrix = matrix
        self.lengths = lengths

    def unset(self, rows: np.ndarray) -> None:
        """The entries of ``rows`` become unset values."""
        if self.lengths is None:
            self.lengths = np.full(self.matrix.shape[:2], self.matrix.shape[2], dtype=np.int64)
        self.matrix[rows, :, : len(UNSET)] = _UNSET
        self.lengths[rows] = len(UNSET)

    def joined(self, rows: np.ndarray | None) -> tuple[list[bytes], np.ndarray | None]:
        """Per member, the entries of ``rows`` (None: every record, in order) joined; and
        the entries' lengths (rows × members; None: all full)."""
        matrix = self.matrix[:-1] if rows is None else self.matrix[rows]
        width = matrix.shape[2]
        by_feature = matrix.transpose(1, 0, 2)
        if self.lengths is None:
            data = by_feature.tobytes()
            size = matrix.shape[0] * width
            return [data[j * size : (j + 1) * size] for j in range(len(self.members))], None
        lengths = self.lengths[:-1] if rows is None else self.lengths[rows]
        data = by_feature[np.arange(width) < lengths.T[:, :, None]].tobytes()
        ends = np.cumsum(lengths.sum(axis=0)).tolist()
        starts = [0, *ends[:-1]]
        return [data[start:end] for start, end in zip(starts, ends)], lengths


class Batch:
    """A view's records decoded for the response builders: per record whether it was read
    here and its event time; :meth:`columns` joins the picked features' entries."""

    def __init__(
        self,
        pick: tuple[int, ...],
        read: np.ndarray,
        seconds: np.ndarray,
        nanos: np.ndarray,
        groups: list[_Group],
    ) -> None:
        self.pick = pick
        self.read = read
        self.seconds = seconds
        self.nanos = nanos
        self._groups = groups
        self._overrides: dict[int, Sequence[bytes | None]] = {}

    def live(self, ttl: int, now: int) -> np.ndarray:
        """Per record, whether its event time is within ``ttl`` seconds of ``now`` (Unix
        ms; ttl 0: forever), as ``views.expired`` decides (meaningless where not read)."""
        if ttl <= 0:
            return np.ones(len(self.seconds), dtype=bool)
        # expired: seconds * 1000 + nanos // 10**6 <= now - ttl * 1000, without overflow
        whole, millis = divmod(now - ttl * 1000, 1000)
        expired = (self.seconds < whole) | (
            (self.seconds == whole) & (self.nanos // 1_000_000 <= millis)
        )
        return ~expired  # type: ignore[no-any-return]

    def override(self, index: int, entries: Sequence[bytes | None]) -> None:
        """Record ``index``'s entries (one per picked feature), read elsewhere."""
        self._overrides[index] = entries

    def clear(self, indexes: Sequence[int]) -> None:
        """Records whose values read as unset (absent, or past their view's ttl)."""
        if indexes:
            rows = np.asarray(indexes, dtype=np.int64)
            for group in self._groups:
                group.unset(rows)

    def columns(self, order: Sequence[int]) -> list[bytes]:
        """Per picked feature, the entries of the records at ``order`` (-1: an unset value)
        joined. A record neither read here nor overridden gives an unset value."""
        records = len(self.read)
        asked = np.asarray(order, dtype=np.int64)
        in_order = len(order) == records and np.array_equal(asked, np.arange(records))
        rows = None if in_order else asked  # None: every record, in order (no gather)
        overrides = self._overrides
        spliced = (
            [(position, index) for position, index in enumerate(order) if index in overrides]
            if overrides
            else []
        )
        joined: dict[int, bytes] = {}
        for group in self._groups:
            if rows is not None and group.lengths is None and (rows < 0).any():
                group.unset(np.array([records]))  # the unset row now differs in length
            data, lengths = group.joined(rows)
            for j, k in enumerate(group.members):
                joined[k] = data[j]
                if spliced:
                    sizes = (  # None: every entry full width
                        lengths[:, j]
                        if lengths is not None
                        else np.full(len(order), group.matrix.shape[2])
                    )
                    joined[k] = self._splice(data[j], sizes, spliced, self.pick.index(k))
        return [joined[k] for k in self.pick]

    def _splice(
        self, data: bytes, lengths: np.ndarray, spliced: list[tuple[int, int]], j: int
    ) -> bytes:
        """``data`` (entries of ``lengths`` bytes) with the entries of the overridden records
        in their places (``j``: the feature's place in the pick)."""
        ends = np.cumsum(lengths).tolist()
        parts: list[bytes] = []
        at = 0
        for position, index in spliced:
            entry = self._overrides[index][j]
            assert entry is not None  # framed values: never None
            parts += [data[at : ends[position - 1] if position else 0], entry]
            at = ends[position]
        parts.append(data[at:])
        return b"".join(parts)


def decode_batch(schema: Schema, pick: tuple[int, ...], records: Sequence[bytes | None]) -> Batch:
    """The picked features (positions in ``schema``, each at least 0) of ``records`` (None:
    absent), framed (see the module docstring)."""
    m = len(records)
    array = pa.array(records, pa.binary())
    offsets = np.frombuffer(array.buffers()[1], dtype=np.int32, count=m + 1).astype(np.int64)
    stored = array.buffers()[2]
    body = np.frombuffer(stored, dtype=np.uint8)[: offsets[-1]] if stored is not None else None
    reader = _Reader(schema, offsets, body)
    reader.check_headers()
    wanted = sorted(set(pick))
    variable = reader.walk_variable(set(wanted))
    groups = reader.fixed_groups(wanted)
    if variable:
        groups.append(reader.variable_group(variable))
    unread = np.flatnonzero(~reader.read)
    for group in groups:
        if len(unread):
            group.unset(unread)
        if group.lengths is not None:  # else made unset when asked for (``columns``)
            group.unset(np.array([m]))
    seconds, nanos = reader.event_time()
    return Batch(pick, reader.read, seconds, nanos, groups)


class _Reader:
    """The batch's records in one buffer (padded so that no read of a record that does not
    fit leaves it), and which of them are read as typed."""

    def __init__(self, schema: Schema, offsets: np.ndarray, body: np.ndarray | None) -> None:
        self.schema = schema
        self.starts = offsets[:-1]
        self.sizes = np.diff(offsets)
        records = body if body is not None else np.zeros(0, dtype=np.uint8)
        # A walk over a record that does not fit steps at most 256 bytes per variable value
        # (a length byte of up to 255, and itself), and a value's gather reads fewer.
        variable = sum(kind in (LENGTH, PROTO) for kind in schema.kinds)
        padding = np.zeros(schema.var_offset + 0x100 * (variable + 1), dtype=np.uint8)
        self.buffer = np.concatenate([records, padding])
        self.read = self.sizes >= schema.var_offset
        self.header = self.buffer[0:0]

    def at(self, relative: np.ndarray | int, width: int) -> np.ndarray:
        """(records × width) bytes of every record from ``relative`` (its own offset)."""
        spots = (self.starts + relative)[:, None] + np.arange(width)
        return self.buffer[spots]

    def check_headers(self) -> None:
        """Version, schema id, all-typed bitmap and nanos of every record."""
        schema = self.schema
        expected = np.frombuffer(
            bytes((VERSION,)) + bytes(SCHEMA_ID.start - 1) + schema.id_bytes + all_typed(schema)[0],
            dtype=np.uint8,
        )
        header = self.header = self.at(0, schema.fixed_offset)
        self.read &= header[:, 0] == expected[0]
        self.read &= (header[:, SCHEMA_ID.start :] == expected[SCHEMA_ID.start :]).all(axis=1)
        nanos = np.ascontiguousarray(header[:, 9:13]).view(">u4")[:, 0]
        self.read &= nanos < 1_000_000_000

    def event_time(self) -> tuple[np.ndarray, np.ndarray]:
        """Seconds and nanos of every record (meaningless where not read)."""
        stamp = self.header[:, 1:13]
        biased = np.ascontiguousarray(stamp[:, :8]).view(">u8")[:, 0].astype(np.uint64)
        nanos = np.ascontiguousarray(stamp[:, 8:]).view(">u4")[:, 0].astype(np.int64)
        return (biased ^ _BIAS).view(np.int64), nanos

    def walk_variable(self, wanted: set[int]) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """Per wanted variable-width feature: where its length prefix sits in each record,
        and its stored length; every record is checked to end where its last value does
        (and to hold only lengths below 126: one byte each)."""
        position = self.starts + self.schema.var_offset
        longest = np.zeros(len(position), dtype=np.uint8)
        out = {}
        for k, kind in enumerate(self.schema.kinds):
            if kind not in (LENGTH, PROTO):
                continue
            n = self.buffer[position]
            np.maximum(longest, n, out=longest)
            if k in wanted:
                if kind == PROTO:
                    self.read &= n > 0
                out[k] = (position - self.starts, n.astype(np.int64))
            position = position + n + 1
        self.read &= (longest < _SHORT) & (position - self.starts == self.sizes)
        return out

    def fixed_groups(self, wanted: list[int]) -> list[_Group]:
        """The entries of the wanted fixed-width features, a group of features stored alike
        at a time (one gather per group)."""
        schema = self.schema
        alike: dict[tuple[int, int], list[int]] = {}  # (kind, slot width) -> features
        for k in wanted:
            kind, a, b, _ = schema.steps[k]
            if kind == RAW:
                alike.setdefault((RAW, b - a), []).append(k)
            elif kind == BOOL:
                alike.setdefault((BOOL, 1), []).append(k)
            elif kind == VARINT:
                width = 4 if schema.types[k] == ValueType.INT32 else 8
                alike.setdefault((VARINT, width), []).append(k)
        groups = []
        for (kind, width), members in alike.items():
            slots = self.slots(members, width)  # (records, features, width)
            tags = np.array([schema.steps[k][3][0] for k in members], dtype=np.uint8)
            if kind == VARINT:
                values = np.ascontiguousarray(slots).view(f"<i{width}")[:, :, 0]
                groups.append(_Group(members, *_varints(values.astype(np.int64), tags)))
                continue
            if kind == BOOL:
                self.read &= (slots[:, :, 0] <= 1).all(axis=1)
            # 0x0A, the Value's length (tag + slot), the tag, then the slot as stored
            matrix = np.empty((len(self.starts) + 1, len(members), 3 + width), dtype=np.uint8)
            matrix[:, :, 0] = _HEAD
            matrix[:, :, 1] = 1 + width
            matrix[:, :, 2] = tags
            matrix[:-1, :, 3:] = slots
            groups.append(_Group(members, matrix, None))
        return groups

    def slots(self, features: list[int], width: int) -> np.ndarray:
        """(records × features × width) bytes: the fixed slots of ``features``."""
        schema = self.schema
        offsets = np.array([schema.fixed_offset + schema.slots[k] for k in features])
        spots = self.starts[:, None, None] + (offsets[:, None] + np.arange(width))[None]
        return self.buffer[spots]

    def variable_group(self, variable: dict[int, tuple[np.ndarray, np.ndarray]]) -> _Group:
        """The entries of the wanted variable-width features: 0x0A (and for STRING / BYTES
        the Value's length and the tag), then the stored length prefix and bytes."""
        members = sorted(variable)
        m = len(self.starts)
        prefixes = np.stack([variable[k][0] for k in members], axis=1)  # records × features
        lengths = np.stack([variable[k][1] for k in members], axis=1)
        most = int(lengths[self.read].max(initial=0)) + 1  # the longest prefix + bytes
        typed = np.array([self.schema.kinds[k] == LENGTH for k in members])
        tags = [self.schema.steps[k][3][0] if typed[j] else 0 for j, k in enumerate(members)]
        matrix = np.empty((m + 1, len(members), 3 + most), dtype=np.uint8)
        matrix[:, :, 0] = _HEAD
        matrix[:-1, :, 1] = lengths + 2  # a STRING / BYTES Value: tag, prefix, bytes
        matrix[:, :, 2] = tags
        span = np.arange(most)
        for j in range(len(members)):  # a gather per feature keeps its index array small
            stored = self.buffer[(self.starts + prefixes[:, j])[:, None] + span]
            # A protobuf value is a Value entry as stored: it starts right after the 0x0A.
            start = 3 if typed[j] else 1
            matrix[:-1, j, start : start + most] = stored
        entry_lengths = np.zeros((m + 1, len(members)), dtype=np.int64)
        entry_lengths[:-1] = lengths + np.where(typed, 4, 2)
        return _Group(members, matrix, entry_lengths)


def _varints(values: np.ndarray, tags: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per record and feature (``values``: records × features, int64): 0x0A, the Value's
    length, the feature's tag and the varint of the value (two's complement), left-aligned
    in a matrix with a row more (unset), and each entry's length."""
    m, features = values.shape
    unsigned = values.view(np.uint64)
    count = np.ones((m, features), dtype=np.int64)  # the varint's bytes: 7 bits each
    for shift in _SEVEN_BITS[1:]:
        more = unsigned >= (np.uint64(1) << shift)
        if not more.any():
            break
        count += more
    most = int(count.max(initial=1))
    matrix = np.empty((m + 1, features, 3 + most), dtype=np.uint8)
    matrix[:m, :, 0] = _HEAD
    matrix[:m, :, 1] = count + 1
    matrix[:m, :, 2] = tags
    groups = matrix[:m, :, 3:]
    groups[:] = (unsigned[:, :, None] >> _SEVEN_BITS[:most]) & np.uint64(0x7F)
    groups[np.arange(most) < (count - 1)[:, :, None]] |= 0x80
    lengths = np.zeros((m + 1, features), dtype=np.int64)
    lengths[:m] = count + 3
    return matrix, lengths
