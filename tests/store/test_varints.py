"""``_store.varints``: protobuf varints read from many places of one buffer at once.

* every int64 (negatives as ten-byte two's complement), at any offsets, decodes to itself —
  the varints are those protobuf writes for ``Value.int64_val``;
* an empty batch gives an empty int64 array.
"""

from __future__ import annotations

import numpy as np
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from hypothesis import given, settings
from hypothesis import strategies as st

from feast_dragonfly._store import varints

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
