"""``_store.varints``: protobuf varints, one written, many read from one buffer at once.

* ``varint`` writes protobuf's bytes for every int64 and uint64, at every magnitude;
* every int64 (negatives as ten-byte two's complement), at any offsets, decodes to itself —
  the varints are those protobuf writes for ``Value.int64_val``;
* an empty batch gives an empty int64 array.
"""

from __future__ import annotations

import numpy as np
import pytest
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from hypothesis import given, settings
from hypothesis import strategies as st

from feast_dragonfly._store import varints
from feast_dragonfly._store.varints import varint

INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(INT64, st.binary(max_size=3)), max_size=50))
def test_varints_decode_to_the_int64s_protobuf_wrote(items):
    buffer, starts, sizes = b"", [], []
    for number, filler in items:
        varint = ValueProto(int64_val=number).SerializeToString()[1:]  # minus the tag byte
        buffer += filler
        starts.append(len(buffer))
        sizes.append(len(varint))
        buffer += varint
    decoded = varints.decode(
        np.frombuffer(buffer, dtype=np.uint8),
        np.array(starts, dtype=np.int64),
        np.array(sizes, dtype=np.int64),
    )
    assert decoded.dtype == np.int64
    assert decoded.tolist() == [number for number, _ in items]


def test_an_empty_batch():
    empty = np.zeros(0, dtype=np.int64)
    assert varints.decode(np.zeros(0, dtype=np.uint8), empty, empty).tolist() == []


@given(st.integers(min_value=-(2**63), max_value=2**64 - 1))
def test_varint_is_protobufs(value):
    if value < 2**63:
        assert ValueProto(int64_val=value).SerializeToString() == b"\x20" + varint(value)
    if value >= 0:
        assert ValueProto(
            int64_val=value - 2**64 if value >= 2**63 else value
        ).SerializeToString() == (b"\x20" + varint(value))


@pytest.mark.parametrize("bits", range(0, 64))
def test_varint_at_every_magnitude(bits):
    for value in (2**bits - 1, 2**bits, -(2**bits), -(2**bits) - 1):
        if -(2**63) <= value < 2**63:
            assert ValueProto(int64_val=value).SerializeToString() == b"\x20" + varint(value)
