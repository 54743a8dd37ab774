"""The checks every endpoint's JSON body goes through before Feast sees it.

A body that is not JSON, not an object, holds fields the endpoint does not know, or whose
columns (a read's ``entities``, a write's ``df``) are not lists of one length is answered
with a 4xx naming what is wrong and what was expected — the same words on every endpoint.
"""

from __future__ import annotations

from typing import Any

import orjson


class RequestError(ValueError):
    """A request this server will not answer (a write: refused before any write): ``status``
    and ``message`` go back as JSON."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def json_object(body: bytes, keys: frozenset[str]) -> dict[str, Any]:
    """The body as a JSON object whose fields are among ``keys``."""
    try:
        request = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise RequestError(400, f"the request body is not valid JSON: {exc}") from None
    if not isinstance(request, dict):
        raise RequestError(422, "the request body must be a JSON object")
    unknown = sorted(set(request) - keys)
    if unknown:
        raise RequestError(
            422,
            f"unknown request field(s) {', '.join(unknown)}; expected {', '.join(sorted(keys))}",
        )
    return request


def equal_length_lists(value: Any, field: str, example: str) -> int:
    """The length of the lists of ``value``, which must be a non-empty object of name -> list,
    all of one length (``entities`` of a read, ``df`` of a write); else a 422 naming ``field``
    and showing ``example``."""
    if not isinstance(value, dict) or not value:
        raise RequestError(422, f"'{field}' must be an object of {example}")
    lengths = set()
    for name, values in value.items():
        if not isinstance(values, list):
            raise RequestError(422, f"{field}['{name}'] must be a list of values")
        lengths.add(len(values))
    if len(lengths) > 1:
        raise RequestError(
            422, f"every {field} list must have the same length, got {sorted(lengths)}"
        )
    return lengths.pop()
