"""The schemas compact records were written under, kept on the server so any reader can decode
a record written before ``feast apply`` changed its view.

A record names its schema by a 32-bit id (``Schema.id``). Readers know the *current* schema
of each view from the registry; a record with another id was written under an older one, whose
canonical text lives in one hash per project, ``feast_dragonfly:schemas:{<project>}``, field
``<view>:<id as 8 hex digits>``. Writers add their schema before their first write (``HSETNX``:
the same id always names the same text — a different text under an existing id is a hash
collision, refused rather than risk decoding one schema's bytes with another), ``feast apply``
adds every kept view's, and dropping a view or tearing the project down removes them.

The I/O is written once, as flows of :class:`~feast_dragonfly._protocol.flow.Call` requests on
a redis-py client; :func:`run` and :func:`run_async` drive them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from typing import Any

from feast_dragonfly._protocol import flow
from feast_dragonfly._protocol.flow import Call, Flow
from feast_dragonfly._protocol.record_format import directory_key, schema_field
from feast_dragonfly._store.compact.schema import Schema
from feast_dragonfly.errors import DragonflyDataError

#: How often, at most, a reader asks the server again about a schema id it does not know.
RELEARN_AFTER_S = 1.0


class Directory:
    """What this process knows of one deployment's schema directory."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._registered: set[tuple[str, str, int]] = set()
        self._known: dict[tuple[str, str], dict[int, Schema]] = {}
        self._learned_at: dict[str, float] = {}

    # ------------------------------------------------------------------ writers

    def registering(self, project: str, view_name: str, schema: Schema) -> Flow[None]:
        """Make sure the server knows ``schema`` for this view (once per process)."""
        entry = (project, view_name, schema.id)
        if entry in self._registered:
            return
        key, field = directory_key(project), schema_field(view_name, schema.id)
        text = schema.canonical.encode("utf-8")
        if not (yield Call("hsetnx", key, field, text)):
            stored = yield Call("hget", key, field)
            if stored != text:
                raise DragonflyDataError(
                    f"feature view '{view_name}': its compact schema id {schema.id:#010x} "
                    "already names another schema on the server (a hash collision); rename "
                    "a feature or the view to change the id"
                )
        with self._lock:
            self._registered.add(entry)
            self._known.setdefault((project, view_name), {})[schema.id] = schema

    def forgetting(self, project: str, view_names: Iterable[str] | None = None) -> Flow[None]:
        """Drop these views' schemas (None: the whole project's) from the server."""
        key = directory_key(project)
        names = set(view_names) if view_names is not None else set()
        with self._lock:
            if view_names is None:
                self._registered = {e for e in self._registered if e[0] != project}
                self._known = {k: v for k, v in self._known.items() if k[0] != project}
            else:
                self._registered = {
                    e for e in self._registered if e[0] != project or e[1] not in names
                }
                self._known = {
                    k: v for k, v in self._known.items() if k[0] != project or k[1] not in names
                }
        if view_names is None:
            yield Call("delete", key)
            return
        stored = yield Call("hkeys", key)
        encoded = {name.encode("utf-8") for name in names}
        doomed = [f for f in stored or () if f[-9:-8] == b":" and f[:-9] in encoded]
        if doomed:
            yield Call("hdel", key, *doomed)

    # ------------------------------------------------------------------ readers

    def schemas(self, project: str, view_name: str) -> dict[int, Schema]:
        """The schemas known for this view (id -> schema)."""
        return self._known.get((project, view_name), {})

    def should_learn(self, project: str) -> bool:
        """Whether an unknown id is worth a trip to the server now (not more than once per
        :data:`RELEARN_AFTER_S`: foreign bytes would otherwise cost one per read)."""
        return time.monotonic() - self._learned_at.get(project, -RELEARN_AFTER_S) >= (
            RELEARN_AFTER_S
        )

    def learning(self, project: str) -> Flow[None]:
        """Read every schema of the project from the server."""
        self._learned_at[project] = time.monotonic()
        reply = yield Call("hgetall", directory_key(project))
        learned: dict[tuple[str, str], dict[int, Schema]] = {}
        for field, text in (reply or {}).items():
            view, _, hex_id = field.rpartition(b":")
            try:
                schema = Schema.from_canonical(text.decode("utf-8"))
                if not view or schema.id != int(hex_id, 16):
                    continue
            except (DragonflyDataError, UnicodeDecodeError, ValueError):
                continue  # not ours to read: never decode with it
            learned.setdefault((project, view.decode("utf-8")), {})[schema.id] = schema
        with self._lock:
            for where, found in learned.items():
                self._known.setdefault(where, {}).update(found)


def run(steps: Flow[None], client: Any) -> None:
    """Carry a directory flow out on a sync redis-py client."""
    flow.run(steps, lambda call: call.on(client))


async def run_async(steps: Flow[None], client: Any) -> None:
    """Carry a directory flow out on an asyncio redis-py client."""
    await flow.run_async(steps, lambda call: call.on_async(client))
