"""Feast's online-features response as JSON-ready Python objects, quickly.

``feast.feature_server_utils.convert_response_to_dict`` is what ``feast serve`` answers (and
what Feast's remote client parses): per value it dispatches on the value's kind, and per value
it formats the event timestamp again, with ``strftime`` — two thirds of a 10×50 request's time
in our server. Here the result is the same, value for value:

* a timestamp is formatted once per distinct value (protobuf's own RFC 3339 form, which is the
  format Feast's function reproduces) and reused;
* a feature vector whose values are all plain scalars (integers, strings, booleans, finite
  floats, unset) is read in one pass;
* anything else (lists, bytes, maps, non-finite floats, ...) is converted by Feast's own
  function, so rarely used types can never drift from Feast's answer.
"""

from __future__ import annotations

import math
from typing import Any

from feast.feature_server_utils import convert_response_to_dict
from feast.protos.feast.serving.ServingService_pb2 import FieldStatus, GetOnlineFeaturesResponse

_STATUS = {number: name for name, number in FieldStatus.items()}
_PLAIN = frozenset({"int64_val", "int32_val", "string_val", "bool_val"})
_FLOATS = frozenset({"float_val", "double_val"})


def response_dict(response: GetOnlineFeaturesResponse) -> dict[str, Any]:
    """``convert_response_to_dict(response)``, computed faster (see the module docstring)."""
    stamps: dict[tuple[int, int], str] = {}
    results = []
    for vector in response.results:
        entry: dict[str, Any] = {
            "values": _values(vector),
            "statuses": [_STATUS.get(status, "INVALID") for status in vector.statuses],
        }
        if vector.event_timestamps:
            texts = []
            for stamp in vector.event_timestamps:
                key = (stamp.seconds, stamp.nanos)
                text = stamps.get(key)
                if text is None:
                    text = stamps[key] = stamp.ToJsonString()
                texts.append(text)
            entry["event_timestamps"] = texts
        results.append(entry)
    # Metadata and status: Feast's function on a response without its (large) results.
    head = GetOnlineFeaturesResponse()
    head.metadata.CopyFrom(response.metadata)
    head.status = response.status
    out = convert_response_to_dict(head)
    if not response.HasField("metadata"):
        out.pop("metadata", None)
    out["results"] = results
    return {key: out[key] for key in ("results", "metadata", "status") if key in out}


def _values(vector: Any) -> list[Any]:
    values = vector.values
    out: list[Any] = []
    for value in values:
        kind = value.WhichOneof("val")
        if kind is None or kind == "null_val":
            out.append(None)
        elif kind in _PLAIN:
            out.append(getattr(value, kind))
        elif kind in _FLOATS and math.isfinite(number := getattr(value, kind)):
            out.append(number)
        else:
            return _values_by_feast(vector)
    return out


def _values_by_feast(vector: Any) -> list[Any]:
    single = GetOnlineFeaturesResponse()
    single.results.append(vector)
    return convert_response_to_dict(single)["results"][0]["values"]
