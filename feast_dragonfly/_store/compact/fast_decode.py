"""The read hot path: a record whose every feature holds a typed value (the common case),
decoded by straight-line code written once per schema.

``codec.decode`` walks a schema's steps in a loop, dispatching on each feature's kind and
state; for a record read thousands of times per second that loop costs more than the work.
When every state is 1 — one comparison of the bitmap with the all-typed bitmap — the layout of
the record is fixed up to its variable-length values, so a function generated from the
schema unpacks the integer slots in one call, slices the raw slots, walks the variable values
in order and checks the record ends where it should: the same bytes as the loop (the tests
hold the two equal), and the same errors for a record that does not fit.

Framed (``framed=True``), each value comes out as the ``Value`` entry of a ``FeatureVector``
(``0x0A``, its length, the serialized ValueProto: ``value_columns.frame``) built in the same
step, so the response builder joins a feature's column instead of framing it value by value.

A read usually asks for some of a view's features (50 of a 250-feature view, say):
:func:`picked` writes the decoder of just those, in the order asked. It unpacks the integer
slots as the full decoder does, slices only the raw slots asked for, and steps over the
variable values it does not need without transcoding them — still walking every length, so a
truncated or overlong record raises exactly as with the full decoder.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable
from typing import Any

from feast_dragonfly._store.compact.schema import (
    BOOL,
    LENGTH,
    PROTO,
    RAW,
    SMALL_VARINTS,
    VARINT,
    Schema,
)
from feast_dragonfly._store.value_columns import VALUE_FIELD, frame
from feast_dragonfly._store.varints import varint
from feast_dragonfly.errors import DragonflyDataError

#: Decodes a record (and its length) into the features' serialized ValueProtos; raises
#: IndexError (truncated) or DragonflyDataError (the reason) when the record does not fit.
FastDecoder = Callable[[bytes, int], tuple[bytes, ...]]

_DECODERS: dict[Schema, tuple[bytes, FastDecoder]] = {}
_PICKED: dict[tuple[Schema, tuple[int, ...], bool], FastDecoder] = {}
_MAX_LENGTH_BYTES = 5  # varint lengths up to 2**35: more than any Redis string holds


def all_typed(schema: Schema) -> tuple[bytes, FastDecoder]:
    """The bitmap of a record whose every feature is a typed value, and the decoder of such
    records (built once per schema)."""
    entry = _DECODERS.get(schema)
    if entry is None:
        if len(_DECODERS) >= 256:
            _DECODERS.clear()
        entry = _DECODERS[schema] = (_bitmap(schema), _compile(schema))
    return entry


def picked(schema: Schema, pick: tuple[int, ...], framed: bool = False) -> FastDecoder:
    """The decoder of an all-typed record that returns only the features at ``pick``
    (positions in the schema, each at least 0; repeats allowed), in that order, ``framed`` or
    not (built once per schema, pick and framing)."""
    if not framed and pick == tuple(range(len(schema))):
        return all_typed(schema)[1]
    key = (schema, pick, framed)
    decoder = _PICKED.get(key)
    if decoder is None:
        if len(_PICKED) >= 1024:
            _PICKED.clear()
        decoder = _PICKED[key] = _compile(schema, pick, framed)
    return decoder


def _bitmap(schema: Schema) -> bytes:
    states = bytearray(schema.bitmap_size)
    for i in range(len(schema)):
        states[i // 4] |= 1 << (2 * (i % 4))
    return bytes(states)


def _compile(
    schema: Schema, pick: tuple[int, ...] | None = None, framed: bool = False
) -> FastDecoder:
    """The straight-line decoder of ``schema``'s all-typed records: every feature and a check
    of the record's end, or (``pick``) only the features asked for; ``framed``: each as its
    ``FeatureVector`` entry."""
    wanted = set(range(len(schema))) if pick is None else set(pick)
    constants: dict[str, Any] = {
        "varint": varint,
        "long_length": long_length,
        "error": error,
        "step": _step,
        "frame": frame,
        "VALUE_FIELD": VALUE_FIELD,
    }
    lines = ["def decode(record, size):"]
    integers = {schema.steps[k][1] for k in wanted if schema.steps[k][0] in (VARINT, BOOL)}
    where: dict[int, int] = {}
    if integers:
        unpack, where = _integer_reader(schema, integers)
        constants["unpack"] = unpack.unpack_from
        lines.append(f"    ints = unpack(record, {schema.fixed_offset})")
    lines.append(f"    pos = {schema.var_offset}")
    for k, (kind, a, b, tag) in enumerate(schema.steps):
        if k not in wanted and kind not in (LENGTH, PROTO):
            continue  # a fixed slot not asked for
        out = f"v{k}"
        constants[f"tag{k}"] = tag
        if kind == VARINT:
            constants[f"small{k}"] = framed_table(b) if framed else b
            if framed:  # 0x0A, the Value's length, the tag: by the varint's length (1-10)
                constants[f"heads{k}"] = varint_heads(tag)
                big = f"heads{k}[len(varint_n := varint(n))] + varint_n"
            else:
                big = f"tag{k} + varint(n)"
            lines += [
                f"    n = ints[{where[a]}]",
                f"    {out} = small{k}[n] if 0 <= n < {SMALL_VARINTS} else {big}",
            ]
        elif kind == BOOL:
            constants[f"small{k}"] = framed_table(b) if framed else b
            lines += [
                f"    n = ints[{where[a]}]",
                "    if n > 1:",
                "        raise error(f'bool slot holds {n}')",
                f"    {out} = small{k}[n]",
            ]
        elif kind == RAW:
            constants[f"head{k}"] = frame(tag + bytes(b - a))[: -(b - a)] if framed else tag
            lines.append(f"    {out} = head{k} + record[{a}:{b}]")
        else:  # LENGTH (tag + the length-prefixed bytes) or PROTO (the bytes: a ValueProto)
            assert kind in (LENGTH, PROTO)
            if k not in wanted:  # stepped over, not transcoded (overruns: the end check)
                lines += [
                    "    n = record[pos]",
                    "    pos += n + 1 if n < 0x80 else step(record, pos)",
                ]
                continue
            lines += [
                "    n = record[pos]",
                "    if n > 0x7F:",
                "        n, start = long_length(record, pos)",
                "    else:",
                "        start = pos + 1",
                "    end = start + n",
                "    if end > size:",
                "        raise IndexError",
            ]
            if kind == LENGTH and framed:  # 0x0A, length, tag, the length-prefixed bytes
                constants[f"heads{k}"] = length_heads(tag)
                lines += [
                    "    m = end - pos",
                    f"    {out} = (heads{k}[m] if m < {SMALL_VARINTS} "
                    f"else frame(tag{k} + bytes(m))[: -m]) + record[pos:end]",
                ]
            elif kind == LENGTH:
                lines.append(f"    {out} = tag{k} + record[pos:end]")
            else:
                lines += [
                    "    if not n:",
                    "        raise error('an empty ValueProto stored as a value')",
                    # framed: 0x0A then the stored length and bytes, already a Value entry
                    f"    {out} = {'VALUE_FIELD + record[pos:end]' if framed else 'record[start:end]'}",
                ]
            lines.append("    pos = end")
    lines += [
        "    if pos != size:",
        "        if pos > size:",
        "            raise IndexError",
        "        raise error(f'{size - pos} bytes past its last value')",
    ]
    if pick is None:
        pick = tuple(range(len(schema)))
    names = [f"v{k}" for k in pick]
    lines.append(f"    return ({', '.join(names)}{',' if len(names) == 1 else ''})")
    exec("\n".join(lines), constants)  # noqa: S102 - our own code, built from the schema alone
    decoder: FastDecoder = constants["decode"]
    return decoder


_FRAMED: dict[tuple[bytes, int], tuple[bytes, ...]] = {}
_LENGTH_HEADS: dict[bytes, tuple[bytes, ...]] = {}


def framed_table(table: tuple[bytes, ...]) -> tuple[bytes, ...]:
    """A table of serialized values (``schema.small_varints``, a BOOL pair) framed entry by
    entry; built once per table."""
    key = (table[0], len(table))  # the tag's value 0, and how many: one table per tag and size
    framed = _FRAMED.get(key)
    if framed is None:
        framed = _FRAMED[key] = tuple(map(frame, table))
    return framed


def varint_heads(tag: bytes) -> tuple[bytes, ...]:
    """For an integer Value whose varint takes ``m`` bytes (index ``m``, 1 to 10): what
    precedes the varint in its framed entry, ``0x0A``, the Value's length (``m`` + 1) and
    ``tag``."""
    return tuple(VALUE_FIELD + bytes((m + 1,)) + tag for m in range(11))


def length_heads(tag: bytes) -> tuple[bytes, ...]:
    """For a STRING / BYTES value whose stored length prefix and bytes take ``m`` bytes
    (``m`` < ``SMALL_VARINTS``): what precedes them in its framed entry, ``0x0A``, the
    Value's length (``m`` + 1) and ``tag``; built once per tag."""
    heads = _LENGTH_HEADS.get(tag)
    if heads is None:
        heads = _LENGTH_HEADS[tag] = tuple(
            VALUE_FIELD + varint(m + 1) + tag for m in range(SMALL_VARINTS)
        )
    return heads


_CODE = re.compile(r"(\d*)([a-zA-Z?])")


def _integer_reader(schema: Schema, wanted: set[int]) -> tuple[struct.Struct, dict[int, int]]:
    """The fixed region read for the integer slots in ``wanted`` only (by their index among
    the schema's integer slots; every other slot is padding, so it costs no Python int), and
    where each wanted one lands in the unpacked tuple."""
    codes: list[str] = []
    where: dict[int, int] = {}
    integer = 0
    for count, code in _CODE.findall(schema.integers.format.lstrip("<")):
        if code == "x":  # a copied slot (DOUBLE / FLOAT): padding already
            codes.append(count + code)
            continue
        if integer in wanted:
            where[integer] = len(where)
            codes.append(code)
        else:
            codes.append(f"{struct.calcsize('<' + code)}x")
        integer += 1
    return struct.Struct("<" + "".join(codes)), where


def _step(record: bytes, pos: int) -> int:
    """The bytes a length-prefixed value with a long length takes at ``pos``, prefix included."""
    length, start = long_length(record, pos)
    return start - pos + length


def error(problem: str) -> DragonflyDataError:
    """What a record that does not fit its schema raises."""
    return DragonflyDataError(f"malformed compact record: {problem}")


def long_length(record: bytes, pos: int) -> tuple[int, int]:
    """A varint length of two or more bytes at ``pos``: (value, position after it)."""
    value = shift = 0
    for count in range(_MAX_LENGTH_BYTES):
        byte = record[pos + count]  # IndexError past the end: truncated
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            if byte == 0:
                raise error("a length is not a minimal varint")
            return value, pos + count + 1
    raise error("a length varint is too long")
