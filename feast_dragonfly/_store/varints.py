"""Protobuf varints read from many places of one byte buffer at once (numpy).

Used where a batch of serialized protobufs is read a field at a time: the int64 values of
serialized ``EntityKey`` messages (``layout.entity_hash_keys``) and of serialized ``Value``
messages (``compact.proto_columns``).
"""

from __future__ import annotations

import numpy as np


def decode(data: np.ndarray, starts: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """The varints of ``sizes`` bytes (1..10) at ``starts`` in ``data`` (uint8), as int64:
    two's complement, what ``int64_val`` / ``int32_val`` hold."""
    out = np.zeros(len(starts), dtype=np.uint64)
    if not len(starts):
        return out.view(np.int64)
    for k in range(int(sizes.max())):
        more = sizes > k
        group = (data[starts[more] + k] & 0x7F).astype(np.uint64)
        out[more] |= group << np.uint64(7 * k)
    return out.view(np.int64)
