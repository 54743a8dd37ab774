"""``_store.feast_serve_hook``: inside ``feast serve``, our responses' JSON from the replies.

With a stand-in for ``feast.feature_server`` (the real server is ``tests/serve``'s):

* ``install`` takes over ``convert_response_to_dict`` only when Feast's server module is
  loaded and has that name, keeps Feast's function (installing twice never wraps itself),
  and says whether it is in place.
* A remembered response is converted by its own ``document()``, once; any other response —
  and a remembered one past ``MAX_PENDING`` newer ones — goes to Feast's function unchanged.
* Threads remembering and converting at once each get their own document.
"""

from __future__ import annotations

import sys
import threading
from collections import OrderedDict
from types import ModuleType

import pytest

from feast_dragonfly._store import feast_serve_hook as hook


class Proto:
    """A response object: converted by identity, whatever it holds."""

    def __init__(self, label: str) -> None:
        self.label = label


def feasts_conversion(proto: Proto) -> dict:
    return {"by": "feast", "label": proto.label}


@pytest.fixture
def server(monkeypatch) -> ModuleType:
    """A stand-in ``feast.feature_server`` module, and the hook's state reset around the test."""
    module = ModuleType("feast.feature_server")
    module.convert_response_to_dict = feasts_conversion  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "feast.feature_server", module)
    monkeypatch.setattr(hook, "_original", None)
    monkeypatch.setattr(hook, "_pending", OrderedDict())
    return module


def ours(label: str):
    return lambda: {"by": "ours", "label": label}


def test_nothing_is_installed_outside_feast_serve(monkeypatch):
    monkeypatch.delitem(sys.modules, "feast.feature_server", raising=False)
    monkeypatch.setattr(hook, "_original", None)
    assert hook.install() is False
    assert hook.installed() is False


def test_a_server_module_without_the_hook_is_left_alone(server, monkeypatch):
    monkeypatch.delattr(server, "convert_response_to_dict")
    assert hook.install() is False
    assert hook.installed() is False
    assert not hasattr(server, "convert_response_to_dict")


def test_install_takes_the_name_over_once(server):
    assert hook.install() is True
    assert hook.installed() is True
    assert server.convert_response_to_dict is hook._convert
    assert hook.install() is True  # again: Feast's function stays the one called through
    assert hook._original is feasts_conversion


def test_remembered_responses_use_their_document_once_others_go_to_feast(server):
    hook.install()
    convert = server.convert_response_to_dict
    mine, other = Proto("mine"), Proto("other")
    hook.remember(mine, ours("mine"))
    assert convert(other) == {"by": "feast", "label": "other"}
    assert convert(mine) == {"by": "ours", "label": "mine"}
    assert convert(mine) == {"by": "feast", "label": "mine"}  # forgotten once converted
    assert len(hook._pending) == 0


def test_past_max_pending_the_oldest_goes_to_feast(server):
    hook.install()
    protos = [Proto(f"p{i}") for i in range(hook.MAX_PENDING + 1)]
    for proto in protos:
        hook.remember(proto, ours(proto.label))
    assert len(hook._pending) == hook.MAX_PENDING
    assert hook._convert(protos[0]) == {"by": "feast", "label": "p0"}
    assert all(hook._convert(p) == {"by": "ours", "label": p.label} for p in protos[1:])


def test_threads_get_their_own_documents(server):
    hook.install()
    results: dict[str, list] = {}

    def serve(name: str) -> None:
        got = []
        for i in range(300):
            proto = Proto(f"{name}-{i}")
            hook.remember(proto, ours(proto.label))
            got.append(hook._convert(proto) == {"by": "ours", "label": proto.label})
        results[name] = got

    threads = [threading.Thread(target=serve, args=(f"t{n}",)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(results) == [f"t{n}" for n in range(8)]
    assert all(all(got) for got in results.values())
