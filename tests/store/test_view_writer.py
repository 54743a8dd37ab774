"""``_store.view_writer``: the bulk writers' interface (``DragonflyOnlineStore.view_writer``).

On the real server, with script calls planned by ``_store.write`` as the engines plan them:

* It carries the store's settings: ``rows_per_call`` (or the one asked for), ``ttl_seconds``
  from ``key_ttl_seconds``; what it sends lands in Feast's layout (read back through the
  store), with the key TTL, and ``written`` / ``progress`` count every row once the block is
  left, with one round trip or several in flight.
* The event-time rule holds: an older row sent later never replaces a newer one.
* Leaving the block stops its threads, whether it ends normally, by an exception of the
  caller's (which propagates, nothing more is sent), or by a server error (raised as the
  store's error naming the entity, the key left alone).
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

import pytest
from store_kit import feature_view, hash_key, repo_config, row, stored_values

from feast_dragonfly import DragonflyDataError, ViewWriter
from feast_dragonfly._store import write

pytestmark = pytest.mark.server

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)


class Stop(Exception):
    pass


def calls(out: ViewWriter, rows: list, project: str = "proj"):
    return write.plan_calls(
        rows,
        view_name=out.view_name,
        project=project,
        key_version=3,
        ttl_seconds=out.ttl_seconds,
        rows_per_call=out.rows_per_call,
    )


def writer_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("feast-dragonfly-mat")]


def test_it_carries_the_stores_settings(tmp_path, server_connection_string, store):
    config = repo_config(
        tmp_path, server_connection_string, write_rows_per_call=7, key_ttl_seconds=300
    )
    with store.view_writer(config, "fv") as out:
        assert (out.view_name, out.rows_per_call, out.ttl_seconds, out.written) == (
            "fv",
            7,
            300,
            0,
        )
    with store.view_writer(config, "fv", rows_per_call=3) as out:
        assert out.rows_per_call == 3


@pytest.mark.parametrize("concurrency", [1, 4])
def test_what_it_sends_is_stored_and_counted(
    tmp_path, server_connection_string, store, redis_client, concurrency
):
    config = repo_config(
        tmp_path, server_connection_string, write_rows_per_call=5, key_ttl_seconds=600
    )
    view = feature_view()
    progress: list[int] = []
    with store.view_writer(
        config, "fv", concurrency=concurrency, progress=progress.append, ahead_rows=100
    ) as out:
        for start in range(0, 1000, 250):
            out.send(calls(out, [row(k, T0, k) for k in range(start, start + 250)]))
        if concurrency > 1:
            assert writer_threads(), "round trips run on the writer's threads"
    assert out.written == 1000 and sum(progress) == 1000
    assert stored_values(store, config, view, [0, 499, 999]) == [
        (T0, {"a": k, "b": k}) for k in (0, 499, 999)
    ]
    assert 0 < redis_client.ttl(hash_key(999)) <= 600
    assert writer_threads() == []


def test_an_older_row_sent_later_never_wins(tmp_path, server_connection_string, store):
    config = repo_config(tmp_path, server_connection_string)
    view = feature_view()
    later = T0 + timedelta(minutes=1)
    with store.view_writer(config, "fv") as out:
        out.send(calls(out, [row(k, later, 100 + k) for k in range(10)]))
    with store.view_writer(config, "fv") as out:
        out.send(calls(out, [row(k, T0, k) for k in range(20)]))
    values = stored_values(store, config, view, list(range(20)))
    assert values[:10] == [(later, {"a": 100 + k, "b": 100 + k}) for k in range(10)]
    assert values[10:] == [(T0, {"a": k, "b": k}) for k in range(10, 20)]


def test_an_exception_in_the_block_propagates_and_stops_the_threads(
    tmp_path, server_connection_string, store
):
    config = repo_config(tmp_path, server_connection_string, write_rows_per_call=1)
    with pytest.raises(Stop):
        with store.view_writer(config, "fv", concurrency=4) as out:
            out.send(calls(out, [row(k, T0, k) for k in range(50)]))
            raise Stop
    assert out.written == 0  # never finished: nothing is reported as written
    assert writer_threads() == []


def test_a_server_error_names_the_entity_and_leaves_its_key_alone(
    tmp_path, server_connection_string, store, redis_client
):
    config = repo_config(tmp_path, server_connection_string, write_rows_per_call=1)
    redis_client.set(hash_key(13), b"not a hash")
    with pytest.raises(DragonflyDataError, match="driver_id=13"):
        with store.view_writer(config, "fv", concurrency=2) as out:
            out.send(calls(out, [row(k, T0, k) for k in range(40)]))
    assert redis_client.get(hash_key(13)) == b"not a hash"
    assert writer_threads() == []
