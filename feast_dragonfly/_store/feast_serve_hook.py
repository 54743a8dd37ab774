"""``feast serve`` with our store: answer its JSON from the stored bytes.

Feast's server turns every response into JSON with ``convert_response_to_dict(response.proto)``
(in a worker thread): a Python call per value and a ``strftime`` per timestamp — 291 µs of a
1×50 request, 1.65 ms of a 10×50 one, more than our store's whole read. A response our
direct path built (``DragonflyOnlineStore._direct_response``) can say the same thing from the
replies it came from (``_direct_json.document``: one C-level parse per view, the same document
value for value — ``tests/serve/test_direct_json.py``).

So, inside a ``feast serve`` process, :func:`install` puts :func:`_convert` in the place of the
name ``convert_response_to_dict`` in ``feast.feature_server`` (a private Feast hook: feast
0.67 calls it by that name; ``tests/serve/test_feature_server.py`` fails if it stops). Our direct
responses are remembered until converted; every other response — Feast's path, another
store's — goes to Feast's function unchanged. On a Feast whose server converts by another name
(``feast_hooks``), nothing is installed and Feast converts every response itself.
"""

from __future__ import annotations

import sys
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from feast_dragonfly._store import feast_hooks

#: Responses built but not converted yet. Feast converts each right after building it, so
#: this holds about as many as requests in flight; past the bound the oldest is forgotten
#: (it is then converted by Feast's function: slower, the same answer).
MAX_PENDING = 64

_original: Callable[[Any], dict[str, Any]] | None = None
_pending: OrderedDict[int, tuple[Any, Callable[[], dict[str, Any]]]] = OrderedDict()
_lock = threading.Lock()


def install() -> bool:
    """Take over Feast's server's conversion when Feast's server is loaded (``feast serve``);
    whether it is in place."""
    global _original
    server = sys.modules.get("feast.feature_server")
    if server is None or not feast_hooks.present(feast_hooks.SERVE_CONVERSION):
        return False
    with _lock:
        current = getattr(server, "convert_response_to_dict", None)
        if current is None:
            return False
        if current is not _convert:
            _original = current
            server.convert_response_to_dict = _convert  # type: ignore[attr-defined]
    return True


def installed() -> bool:
    return _original is not None


def remember(proto: Any, document: Callable[[], dict[str, Any]]) -> None:
    """``document()`` is what Feast's conversion makes of ``proto``."""
    with _lock:
        _pending[id(proto)] = (proto, document)
        if len(_pending) > MAX_PENDING:
            _pending.popitem(last=False)


def _convert(proto: Any) -> dict[str, Any]:
    with _lock:
        entry = _pending.pop(id(proto), None)
    if entry is not None and entry[0] is proto:
        return entry[1]()
    assert _original is not None
    return _original(proto)
