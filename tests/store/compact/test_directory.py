"""``_store.compact.directory``: the server-side directory of compact schemas.

* ``directory_key`` / ``schema_field``: ``feast_dragonfly:schemas:{<project>}`` and
  ``<view>:<id as 8 hex digits>``.
* ``registering`` (flows driven by hand, then on the server): ``HSETNX`` of the canonical
  text, once per process (a second flow sends nothing, even after the field was removed; a new
  ``Directory`` registers again); a field already holding the same text is fine; another text
  under the same id is a ``DragonflyDataError`` ("hash collision"), the stored text kept and
  nothing remembered as registered; the registered schema is known to readers at once.
* ``forgetting``: some views (their fields only, another view's or project's kept, a view
  named like a prefix of another kept) or the whole project (the hash deleted); the
  process's caches forget them too, so the next write registers again.
* ``learning``: ``HGETALL`` of the project's hash; fields whose text is not canonical schema
  text, or whose id does not match the text, are ignored; learned schemas add to what is
  known; another project's are not read.
* ``should_learn``: at once the first time, then not again before ``RELEARN_AFTER_S``
  (per project).
* ``run`` / ``run_async`` carry the flows on sync and asyncio redis-py clients.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import redis.asyncio as redis_asyncio
from feast.value_type import ValueType
from store_kit import calls_of

from feast_dragonfly._store.compact import directory as directory_module
from feast_dragonfly._store.compact.directory import (
    RELEARN_AFTER_S,
    Directory,
    directory_key,
    run,
    run_async,
    schema_field,
)
from feast_dragonfly._store.compact.schema import Schema
from feast_dragonfly.errors import DragonflyDataError

OLD = Schema([("a", ValueType.INT64), ("b", ValueType.STRING)])
NEW = Schema([("a", ValueType.INT64), ("b", ValueType.STRING), ("c", ValueType.DOUBLE)])
OTHER = Schema([("x", ValueType.BOOL)])


def text(schema: Schema) -> bytes:
    return schema.canonical.encode("utf-8")


class Clock:
    """A stand-in for the ``time`` module of ``directory``: ``monotonic`` is set by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


# --------------------------------------------------------------------------- no server


def test_key_and_field_names():
    assert directory_key("proj") == b"feast_dragonfly:schemas:{proj}"
    assert directory_key("prøj") == "feast_dragonfly:schemas:{prøj}".encode()
    assert schema_field("drivers", 0xAB) == b"drivers:000000ab"
    assert schema_field("fv", 0xFFFFFFFF) == b"fv:ffffffff"
    assert schema_field("fv", OLD.id) == b"fv:" + b"%08x" % OLD.id


def test_registering_sends_hsetnx_once_per_process():
    directory = Directory()
    sent = calls_of(directory.registering("proj", "fv", OLD), {"hsetnx": 1})
    assert sent == [("hsetnx", directory_key("proj"), schema_field("fv", OLD.id), text(OLD))]
    assert directory.schemas("proj", "fv") == {OLD.id: OLD}
    assert calls_of(directory.registering("proj", "fv", OLD), {}) == []  # known: nothing sent
    # another view, project or schema is registered on its own
    for project, view, schema in (("proj", "fv2", OLD), ("p2", "fv", OLD), ("proj", "fv", NEW)):
        sent = calls_of(directory.registering(project, view, schema), {"hsetnx": 1})
        assert sent == [
            ("hsetnx", directory_key(project), schema_field(view, schema.id), text(schema))
        ]
    assert directory.schemas("proj", "fv") == {OLD.id: OLD, NEW.id: NEW}


def test_a_field_already_holding_the_same_text_is_fine():
    directory = Directory()
    sent = calls_of(directory.registering("proj", "fv", OLD), {"hsetnx": 0, "hget": text(OLD)})
    assert [s[0] for s in sent] == ["hsetnx", "hget"]
    assert sent[1] == ("hget", directory_key("proj"), schema_field("fv", OLD.id))
    assert directory.schemas("proj", "fv") == {OLD.id: OLD}
    assert calls_of(directory.registering("proj", "fv", OLD), {}) == []


def test_another_text_under_the_same_id_is_a_hash_collision():
    directory = Directory()
    with pytest.raises(DragonflyDataError, match=r"feature view 'fv'.*hash collision"):
        calls_of(directory.registering("proj", "fv", OLD), {"hsetnx": 0, "hget": b"v1|z:BOOL"})
    assert directory.schemas("proj", "fv") == {}
    # not remembered as registered: the next write checks again
    sent = calls_of(directory.registering("proj", "fv", OLD), {"hsetnx": 1})
    assert [s[0] for s in sent] == ["hsetnx"]


def test_forgetting_views_clears_the_caches_and_removes_only_their_fields():
    directory = Directory()
    for project, view in (("proj", "fv"), ("proj", "fv2"), ("p2", "fv")):
        calls_of(directory.registering(project, view, OLD), {"hsetnx": 1})
    stored = [
        schema_field("fv", OLD.id),
        schema_field("fv", NEW.id),
        schema_field("fv2", OLD.id),
        schema_field("f", OLD.id),  # a prefix of "fv"
        schema_field("xfv", OLD.id),
        b"fv:not-an-id",
    ]
    sent = calls_of(directory.forgetting("proj", ["fv"]), {"hkeys": stored, "hdel": 2})
    key = directory_key("proj")
    assert sent == [("hkeys", key), ("hdel", key, stored[0], stored[1])]
    assert directory.schemas("proj", "fv") == {}
    assert directory.schemas("proj", "fv2") == {OLD.id: OLD}
    assert directory.schemas("p2", "fv") == {OLD.id: OLD}
    assert calls_of(directory.registering("proj", "fv", OLD), {"hsetnx": 1}) != []  # again
    assert calls_of(directory.registering("proj", "fv2", OLD), {}) == []  # still registered
    # nothing stored for the view: no HDEL
    assert calls_of(directory.forgetting("proj", ["gone"]), {"hkeys": stored}) == [("hkeys", key)]
    assert calls_of(directory.forgetting("proj", ["gone"]), {"hkeys": []}) == [("hkeys", key)]


def test_forgetting_a_project_deletes_its_hash_and_its_caches():
    directory = Directory()
    for project, view in (("proj", "fv"), ("proj", "fv2"), ("p2", "fv")):
        calls_of(directory.registering(project, view, OLD), {"hsetnx": 1})
    assert calls_of(directory.forgetting("proj"), {"delete": 1}) == [
        ("delete", directory_key("proj"))
    ]
    assert directory.schemas("proj", "fv") == directory.schemas("proj", "fv2") == {}
    assert directory.schemas("p2", "fv") == {OLD.id: OLD}
    assert calls_of(directory.registering("proj", "fv", OLD), {"hsetnx": 1}) != []
    assert calls_of(directory.registering("p2", "fv", OLD), {}) == []


def test_learning_keeps_only_canonical_texts_under_their_own_id():
    directory = Directory()
    calls_of(directory.registering("proj", "fv", NEW), {"hsetnx": 1})
    stored = {
        schema_field("fv", OLD.id): text(OLD),
        schema_field("fv2", OTHER.id): text(OTHER),
        schema_field("wrong", OLD.id): text(OTHER),  # id of another text
        schema_field("junk", 7): b"hello",  # not a schema
        schema_field("bad", 7): b"v1|a:NOPE",  # unknown type
        b"esc:%08x" % Schema([("%a", ValueType.INT64)]).id: b"v1|%a:INT64",  # not canonical
        schema_field("latin", 9): b"v1|\xff:INT64",  # not UTF-8
    }
    sent = calls_of(directory.learning("proj"), {"hgetall": stored})
    assert sent == [("hgetall", directory_key("proj"))]
    assert directory.schemas("proj", "fv") == {OLD.id: OLD, NEW.id: NEW}  # added to
    assert directory.schemas("proj", "fv2") == {OTHER.id: OTHER}
    for view in ("wrong", "junk", "bad", "esc", "latin"):
        assert directory.schemas("proj", view) == {}, view
    assert directory.schemas("p2", "fv") == {}
    calls_of(directory.learning("empty"), {"hgetall": {}})
    assert directory.schemas("empty", "fv") == {}


def test_learning_ignores_a_field_whose_id_is_not_hex():
    directory = Directory()
    stored = {b"fv:zzzzzzzz": text(OLD), schema_field("fv2", OLD.id): text(OLD)}
    calls_of(directory.learning("proj"), {"hgetall": stored})
    assert directory.schemas("proj", "fv2") == {OLD.id: OLD}
    assert directory.schemas("proj", "fv") == {}


def test_should_learn_at_most_once_per_interval_per_project(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(directory_module, "time", SimpleNamespace(monotonic=clock.monotonic))
    directory = Directory()
    assert directory.should_learn("proj")  # never learned: at once
    calls_of(directory.learning("proj"), {"hgetall": {}})
    assert not directory.should_learn("proj")
    clock.now += RELEARN_AFTER_S * 0.9
    assert not directory.should_learn("proj")
    assert directory.should_learn("p2")  # per project
    clock.now += RELEARN_AFTER_S * 0.1
    assert directory.should_learn("proj")
    calls_of(directory.learning("proj"), {"hgetall": {}})
    assert not directory.should_learn("proj")
    assert RELEARN_AFTER_S == 1.0


# --------------------------------------------------------------------------- on the server


@pytest.mark.server
def test_registering_on_the_server_once_per_process(redis_client):
    key = directory_key("proj")
    directory = Directory()
    run(directory.registering("proj", "fv", OLD), redis_client)
    run(directory.registering("proj", "fv", NEW), redis_client)
    run(directory.registering("p2", "fv", OTHER), redis_client)
    assert redis_client.hgetall(key) == {
        schema_field("fv", OLD.id): text(OLD),
        schema_field("fv", NEW.id): text(NEW),
    }
    assert redis_client.hgetall(directory_key("p2")) == {schema_field("fv", OTHER.id): text(OTHER)}
    redis_client.delete(key)
    run(directory.registering("proj", "fv", OLD), redis_client)
    assert not redis_client.exists(key)  # registered already: nothing sent
    run(Directory().registering("proj", "fv", OLD), redis_client)  # another process
    assert redis_client.hgetall(key) == {schema_field("fv", OLD.id): text(OLD)}
    run(Directory().registering("proj", "fv", OLD), redis_client)  # HSETNX 0, same text
    assert redis_client.hgetall(key) == {schema_field("fv", OLD.id): text(OLD)}


@pytest.mark.server
def test_a_hash_collision_on_the_server_is_refused_and_keeps_the_stored_text(redis_client):
    key, field = directory_key("proj"), schema_field("fv", OLD.id)
    redis_client.hset(key, field, text(OTHER))
    directory = Directory()
    with pytest.raises(DragonflyDataError, match="hash collision"):
        run(directory.registering("proj", "fv", OLD), redis_client)
    assert redis_client.hgetall(key) == {field: text(OTHER)}
    assert directory.schemas("proj", "fv") == {}


@pytest.mark.server
def test_forgetting_on_the_server(redis_client):
    directory = Directory()
    for project in ("proj", "p2"):
        for view, schema in (("fv", OLD), ("fv", NEW), ("fv2", OLD), ("f", OTHER)):
            run(directory.registering(project, view, schema), redis_client)
    key = directory_key("proj")
    run(directory.forgetting("proj", ["fv", "nothing"]), redis_client)
    assert redis_client.hgetall(key) == {
        schema_field("fv2", OLD.id): text(OLD),
        schema_field("f", OTHER.id): text(OTHER),
    }
    assert len(redis_client.hkeys(directory_key("p2"))) == 4
    run(directory.registering("proj", "fv", OLD), redis_client)  # forgotten: sent again
    assert redis_client.hexists(key, schema_field("fv", OLD.id))
    run(directory.forgetting("proj"), redis_client)
    assert not redis_client.exists(key)
    assert len(redis_client.hkeys(directory_key("p2"))) == 4
    run(directory.forgetting("proj", ["fv"]), redis_client)  # no hash at all: fine
    run(directory.forgetting("proj"), redis_client)
    assert not redis_client.exists(key)


@pytest.mark.server
def test_learning_on_the_server(redis_client):
    writer, reader = Directory(), Directory()
    run(writer.registering("proj", "fv", OLD), redis_client)
    run(writer.registering("proj", "fv", NEW), redis_client)
    run(writer.registering("p2", "fv2", OTHER), redis_client)
    redis_client.hset(directory_key("proj"), schema_field("fv", 1), text(OTHER))  # wrong id
    redis_client.hset(directory_key("proj"), schema_field("fv", 2), b"v2|a:INT64")
    assert reader.schemas("proj", "fv") == {}
    run(reader.learning("proj"), redis_client)
    assert reader.schemas("proj", "fv") == {OLD.id: OLD, NEW.id: NEW}
    assert reader.schemas("p2", "fv2") == {}  # another project: not read
    assert not reader.should_learn("proj")


@pytest.mark.server
async def test_the_flows_run_on_an_asyncio_client(redis_client, redis_server):
    client = redis_asyncio.Redis(
        host=redis_server.host,
        port=redis_server.port,
        db=redis_server.db,
        username=redis_server.username,
        password=redis_server.password,
    )
    try:
        directory = Directory()
        await run_async(directory.registering("proj", "fv", OLD), client)
        await run_async(directory.registering("proj", "fv2", NEW), client)
        assert redis_client.hgetall(directory_key("proj")) == {
            schema_field("fv", OLD.id): text(OLD),
            schema_field("fv2", NEW.id): text(NEW),
        }
        reader = Directory()
        await run_async(reader.learning("proj"), client)
        assert reader.schemas("proj", "fv2") == {NEW.id: NEW}
        await run_async(directory.forgetting("proj", ["fv"]), client)
        assert redis_client.hkeys(directory_key("proj")) == [schema_field("fv2", NEW.id)]
        await run_async(directory.forgetting("proj"), client)
        assert not redis_client.exists(directory_key("proj"))
    finally:
        await client.aclose()
