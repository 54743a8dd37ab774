"""``_store.compact.read``: reads answered from compact records in the HMGET shape.

No server:

* ``record_plan``: one ``GET`` (``plan.commands``) per (entity hash, view) of a read plan, in
  plan order (each hash's views in turn), the entities carried (none for a plan without).
* ``views_to_learn``: the views with a record under a schema id that is neither the view's
  current one nor a known one; missing and corrupt records ask for nothing.
* ``hash_replies``: per hash, each view's requested features (any subset, any order) as
  serialized ``ValueProto`` bytes (b"" for null) then its serialized ``Timestamp``, exactly
  what Feast's layout stores; None for a missing record; all None past the view's ttl; an old
  schema's record read by name (added / retyped features None); an unknown schema id gives
  None values; a corrupt record raises a ``DragonflyDataError`` naming view and entity.
  Every case is also read framed, and gives the same values as ``FeatureVector`` entries;
  and read with every view in a batch (``columns``), which gives the same entries, event
  times and errors.

On a real server, through ``backends.open_backend`` with ``layout: compact`` settings:

* ``fetch`` / ``fetch_async`` answer exactly as the Feast layout's HMGETs for the same rows
  (written by each layout's own planner), a missing record as not found;
* a record under an old schema is decoded after learning it from the directory (one
  ``HGETALL``), an unknown id is asked about at most once per ``RELEARN_AFTER_S``;
* a key of another type is an error naming the entity; an empty plan sends nothing.
"""

from __future__ import annotations

from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.value_type import ValueType
from google.protobuf.timestamp_pb2 import Timestamp
from store_kit import entity_key, hash_key

from feast_dragonfly._protocol import wire
from feast_dragonfly._protocol.keys import compact_key
from feast_dragonfly._store import read as _read
from feast_dragonfly._store import send
from feast_dragonfly._store import write as feast_write
from feast_dragonfly._store.backends import open_backend
from feast_dragonfly._store.compact import directory as directory_module
from feast_dragonfly._store.compact import read as compact_read
from feast_dragonfly._store.compact import views
from feast_dragonfly._store.compact import write as compact_write
from feast_dragonfly._store.compact.codec import encode_row
from feast_dragonfly._store.compact.directory import Directory, run
from feast_dragonfly._store.compact.schema import Schema
from feast_dragonfly._store.config import DragonflyOnlineStoreConfig
from feast_dragonfly._store.layout import encode_event_time
from feast_dragonfly._store.value_columns import frame
from feast_dragonfly.errors import DragonflyDataError

UTC = timezone.utc
T0 = datetime(2024, 5, 1, 12, 0, 0, 123_456, tzinfo=UTC)
NOW_MS = int(T0.timestamp() * 1000) + 10_000
SCHEMA = Schema(
    [
        ("a", ValueType.INT64),
        ("score", ValueType.DOUBLE),
        ("name", ValueType.STRING),
        ("tags", ValueType.INT64_LIST),
    ]
)
OTHER = Schema([("c", ValueType.BOOL)])


def values(k):
    tags = ValueProto()
    tags.int64_list_val.val.extend([k, -k])
    return {
        "a": ValueProto(int64_val=k),
        "score": ValueProto(double_val=k / 3),
        "name": ValueProto(string_val=f"n{k}") if k % 2 else ValueProto(),  # null
        "tags": tags,
    }


def record(k, when=T0, schema=SCHEMA, data=None):
    return encode_row(schema, values(k) if data is None else data, when)


def stamp(when):
    return encode_event_time(when)[0]


def request(view, names, keys, *, ttl=0, schema=SCHEMA):
    return _read.view_request(view, names, [entity_key(k) for k in keys], ttl, schema)


def make_plan(*requests):
    return _read.plan_read(list(requests), project="proj", key_version=3)


ALL = ("a", "score", "name", "tags")


def expected(k, names=ALL, when=T0):
    data = values(k)
    return [data[n].SerializeToString() for n in names] + [stamp(when)]


# --------------------------------------------------------------------------- record_plan


def test_the_record_plan_is_one_get_per_entity_and_view_in_plan_order():
    plan = make_plan(request("fv", ALL, [1, 2]), request("fv2", ("c",), [2, 3], schema=OTHER))
    assert plan.keys == [hash_key(1), hash_key(2), hash_key(3)]
    records = compact_read.record_plan(plan)
    assert records.records and records.views == []
    assert records.keys == [
        compact_key(hash_key(1), "fv"),
        compact_key(hash_key(2), "fv"),
        compact_key(hash_key(2), "fv2"),
        compact_key(hash_key(3), "fv2"),
    ]
    assert records.key_entities == [entity_key(k) for k in (1, 2, 2, 3)]
    assert records.key_fieldsets == [[]] * 4
    assert records.commands(0, 4) == b"".join(wire.command(b"GET", key) for key in records.keys)
    assert records.commands(1, 3) == b"".join(wire.command(b"GET", k) for k in records.keys[1:3])
    assert records.describe(2) == "entity driver_id=2"


def test_a_plan_without_entities_carries_none():
    fieldset = request("fv", ("a",), []).fieldset
    plan = _read.ReadPlan(views=[], keys=[hash_key(1), hash_key(2)], key_fieldsets=[[fieldset]] * 2)
    records = compact_read.record_plan(plan)
    assert records.keys == [compact_key(hash_key(k), "fv") for k in (1, 2)]
    assert records.key_entities == []


# --------------------------------------------------------------------------- views_to_learn


def test_views_to_learn_are_those_with_an_unknown_schema_id():
    old = Schema([("a", ValueType.INT64)])
    older = Schema([("a", ValueType.STRING)])
    plan = make_plan(request("fv", ALL, [1, 2, 3, 4]), request("fv2", ("c",), [1], schema=OTHER))
    # record order: (1, fv), (1, fv2), (2, fv), (3, fv), (4, fv)
    current = [record(1), encode_row(OTHER, {}, T0), None, record(3), b"\x01short"]
    assert compact_read.views_to_learn(plan, current, {}) == set()  # current, missing, corrupt
    with_old = [record(1), encode_row(OTHER, {}, T0), encode_row(old, {}, T0), None, None]
    assert compact_read.views_to_learn(plan, with_old, {}) == {"fv"}
    assert compact_read.views_to_learn(plan, with_old, {"fv": {old.id: old}}) == set()
    assert compact_read.views_to_learn(plan, with_old, {"fv": {older.id: older}}) == {"fv"}
    assert compact_read.views_to_learn(plan, with_old, {"fv2": {old.id: old}}) == {"fv"}
    both = [None, encode_row(old, {}, T0), encode_row(old, {}, T0), None, None]
    assert compact_read.views_to_learn(plan, both, {}) == {"fv", "fv2"}


# --------------------------------------------------------------------------- hash_replies


def hash_replies(plan, records, known, now):
    """``compact_read.hash_replies``, held to its framed form (the same replies with every
    feature value, not the event times, as its ``FeatureVector`` entry) and to its batched
    form (``columns``, every view in a batch): the same entries and event times per view,
    and the same error."""
    outcomes = []
    for mode in ({}, {"framed": True}, {"columns": True}):
        try:
            with every_view_batched():
                outcomes.append(compact_read.hash_replies(plan, records, known, now, **mode))
        except DragonflyDataError as exc:
            outcomes.append(exc)
    errors = [outcome for outcome in outcomes if isinstance(outcome, Exception)]
    if errors:
        assert len(errors) == 3 and len({str(error) for error in errors}) == 1, errors
        raise errors[0]
    plain, framed, batched = outcomes
    expected_framed = []
    for reply, fieldsets in zip(plain, plan.key_fieldsets):
        out, offset = [], 0
        for fieldset in fieldsets:
            width = len(fieldset.fields)
            out += [frame(raw) for raw in reply[offset : offset + width - 1]]
            out.append(reply[offset + width - 1])
            offset += width
        expected_framed.append(out)
    assert framed == expected_framed
    assert_batches_match(plan, framed, batched)
    return plain


@contextmanager
def every_view_batched():
    saved = compact_read.BATCH_FROM, compact_read.BATCH_VALUES
    compact_read.BATCH_FROM = compact_read.BATCH_VALUES = 1
    try:
        yield
    finally:
        compact_read.BATCH_FROM, compact_read.BATCH_VALUES = saved


def assert_batches_match(plan, framed, batched):
    """Each view of ``batched`` (``hash_replies(columns=True)``) gives the framed replies'
    entries and event times: from its batch, or from its replies where it has none."""
    batches = batched.batches
    for view in plan.views:
        width = view.fieldset.width
        view_batch = batches.get(id(view.fieldset))
        if view_batch is None:
            for command, offset in view.positions:
                assert (
                    batched[command][offset : offset + width + 1]
                    == framed[command][offset : offset + width + 1]
                )
            continue
        order = [view_batch.records[command] for command, _ in view.positions]
        columns = view_batch.batch.columns(order)
        for j in range(width):
            assert columns[j] == b"".join(framed[c][o + j] for c, o in view.positions)
        for (command, offset), index in zip(view.positions, order):
            at = view_batch.stamp_of[index]
            stamp = view_batch.distinct_stamps[at] if at >= 0 else None
            assert stamp == framed[command][offset + width]


def test_replies_hold_feasts_value_and_timestamp_bytes():
    plan = make_plan(request("fv", ALL, [1, 2, 3]))
    later = T0 + timedelta(seconds=1, microseconds=7)
    replies = hash_replies(plan, [record(1), record(2, later), None], {}, NOW_MS)
    assert replies == [expected(1), expected(2, when=later), [None] * 5]
    assert replies[1][2] == b""  # a null feature, as Feast's layout stores it
    parsed = Timestamp.FromString(replies[1][4])
    assert (parsed.seconds, parsed.nanos) == (int(later.timestamp()), 123_463_000)


def test_replies_follow_the_requested_features():
    names = ("tags", "a")
    plan = make_plan(request("fv", names, [1, 2]))
    replies = hash_replies(plan, [record(1), record(2)], {}, NOW_MS)
    assert replies == [expected(1, names), expected(2, names)]
    plan = make_plan(request("fv", (), [1]))
    assert hash_replies(plan, [record(1)], {}, NOW_MS) == [[stamp(T0)]]


def test_a_hash_read_by_several_views_gets_their_replies_in_turn():
    plan = make_plan(request("fv", ("a",), [1, 2]), request("fv2", ("c",), [1], schema=OTHER))
    other = encode_row(OTHER, {"c": ValueProto(bool_val=True)}, T0 - timedelta(days=1))
    replies = hash_replies(plan, [record(1), other, record(2)], {}, NOW_MS)
    assert replies == [
        expected(1, ("a",))
        + [ValueProto(bool_val=True).SerializeToString(), stamp(T0 - timedelta(days=1))],
        expected(2, ("a",)),
    ]
    assert hash_replies(plan, [None, other, None], {}, NOW_MS)[0][:2] == [None, None]


def test_a_value_past_its_views_ttl_is_not_found():
    plan = make_plan(request("fv", ("a", "name"), [1, 2, 3], ttl=60))
    fresh, stale = T0 - timedelta(seconds=49), T0 - timedelta(seconds=50)  # NOW_MS = T0 + 10 s
    records = [record(1, fresh), record(2, stale), record(3, stale)]  # 2: a null name
    replies = hash_replies(plan, records, {}, NOW_MS)
    assert replies == [expected(1, ("a", "name"), when=fresh), [None] * 3, [None] * 3]
    no_ttl = make_plan(request("fv", ("a", "name"), [2]))
    assert hash_replies(no_ttl, [record(2, stale)], {}, NOW_MS)[0][0] is not None


def test_an_old_schemas_record_is_read_by_name():
    old = Schema(
        [("tags", ValueType.INT64_LIST), ("name", ValueType.INT64), ("a", ValueType.INT64)]
    )
    data = values(5)
    written = encode_row(
        old, {"tags": data["tags"], "name": ValueProto(int64_val=9), "a": data["a"]}, T0
    )
    plan = make_plan(request("fv", ALL, [5]))
    [reply] = hash_replies(plan, [written], {"fv": {old.id: old}}, NOW_MS)
    # a and tags moved: found; name was an INT64: not found; score is new: not found
    assert reply == [
        data["a"].SerializeToString(),
        None,
        None,
        data["tags"].SerializeToString(),
        stamp(T0),
    ]


def test_an_unknown_schemas_record_gives_no_values():
    old = Schema([("a", ValueType.INT64)])
    plan = make_plan(request("fv", ("a", "score"), [1]))
    [reply] = hash_replies(plan, [encode_row(old, {"a": ValueProto(int64_val=1)}, T0)], {}, NOW_MS)
    assert reply[:2] == [None, None]
    assert reply[2] == stamp(T0)


def test_which_views_are_read_in_batches(monkeypatch):
    """A view is decoded as one batch from ``BATCH_FROM`` records and ``BATCH_VALUES`` values
    up to ``BATCH_MOST`` values, and only when every requested feature is in its schema;
    the others record by record, in the same replies."""
    monkeypatch.setattr(compact_read, "BATCH_FROM", 3)
    monkeypatch.setattr(compact_read, "BATCH_VALUES", 6)
    monkeypatch.setattr(compact_read, "BATCH_MOST", 12)
    keys = [1, 3, 5, 7]
    cases = {
        "4 records x 2 features": (("a", "score"), keys, True),
        "2 records": (("a", "score"), keys[:2], False),
        "4 x 1 values": (("a",), keys, False),
        "4 x 4 values": (ALL, keys, False),
        "a feature not in the schema": (("a", "gone"), keys, False),
    }
    for label, (names, some, batched) in cases.items():
        plan = make_plan(request("fv", names, some), request("fv2", ("c",), keys, schema=OTHER))
        other = encode_row(OTHER, {"c": ValueProto(bool_val=True)}, T0)
        records = [r for k in some for r in (record(k), other)] + [other] * (4 - len(some))
        replies = compact_read.hash_replies(plan, records, {}, NOW_MS, columns=True)
        assert (id(plan.views[0].fieldset) in replies.batches) is batched, label
        assert id(plan.views[1].fieldset) not in replies.batches, label  # 4 x 1 values
        framed = compact_read.hash_replies(plan, records, {}, NOW_MS, framed=True)
        assert_batches_match(plan, framed, replies)


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda rec: rec[:-2], id="truncated"),
        pytest.param(lambda rec: rec + b"\x00", id="too long"),
        pytest.param(lambda rec: b"\x02" + rec[1:], id="another version"),
        pytest.param(lambda rec: rec[:10], id="shorter than its header"),
    ],
)
def test_a_corrupt_record_names_its_view_and_entity(damage):
    plan = make_plan(request("fv", ("a",), [1, 7]))
    with pytest.raises(
        DragonflyDataError, match=r"feature view 'fv' for entity driver_id=7.*malformed"
    ):
        hash_replies(plan, [record(1), damage(record(7))], {}, NOW_MS)


# --------------------------------------------------------------------------- on the server


@pytest.fixture
def backend(server_connection_string):
    settings = DragonflyOnlineStoreConfig(
        connection_string=server_connection_string, layout="compact", read_chunk_size=3
    ).settings()
    opened = open_backend(settings.client)
    try:
        yield SimpleNamespace(backend=opened, settings=settings)
    finally:
        opened.close()


def write_both_layouts(client, rows, schema=SCHEMA, view="fv"):
    """The rows in Feast's layout (hashes) and as compact records, each by its own planner."""
    sender = send.Sender(client.connection_pool, view, executor=None, concurrency=1, progress=None)
    feast_calls = feast_write.plan_calls(
        rows, view_name=view, project="proj", key_version=3, ttl_seconds=None, rows_per_call=7
    )
    assert send.send_all(sender, feast_calls) == len(rows)
    compact_calls = compact_write.plan_calls(
        rows,
        schema=schema,
        view_name=view,
        project="proj",
        key_version=3,
        view_ttl=0,
        key_ttl=None,
        rows_per_call=7,
    )
    sender = send.Sender(client.connection_pool, view, executor=None, concurrency=1, progress=None)
    assert send.send_all(sender, compact_calls) == len(rows)


def both_plans(*requests_args):
    """The same request planned twice (a plan's views record their positions)."""
    return make_plan(*[request(*a) for a in requests_args]), make_plan(
        *[request(*a) for a in requests_args]
    )


@pytest.mark.server
def test_fetch_answers_as_feasts_layout(redis_client, backend):
    rows = [(entity_key(k), values(k), T0 + timedelta(seconds=k), None) for k in range(10)]
    write_both_layouts(redis_client, rows)
    args = [("fv", ("name", "a", "tags"), list(range(12))), ("fv", ALL, [3, 99])]
    ours, theirs = both_plans(*args)
    feast = backend.backend.fetch(theirs, 100, 1)
    got = compact_read.fetch(backend.backend, ours, backend.settings, "proj")
    assert got == feast
    assert got[3] == expected(3, ("name", "a", "tags"), T0 + timedelta(seconds=3)) + expected(
        3, when=T0 + timedelta(seconds=3)
    )
    assert got[10] == got[11] == [None] * 4 and got[12] == [None] * 5  # never written
    assert _read.decode_rows(ours.views[0], got) == _read.decode_rows(theirs.views[0], feast)
    framed = compact_read.fetch(backend.backend, ours, backend.settings, "proj", framed=True)
    for view in range(2):
        assert _read.decode_rows(ours.views[view], framed, framed=True) == _read.decode_rows(
            theirs.views[view], feast
        )


@pytest.mark.server
async def test_fetch_async_answers_the_same(redis_client, backend):
    rows = [(entity_key(k), values(k), T0, None) for k in range(5)]
    write_both_layouts(redis_client, rows)
    ours, theirs = both_plans(("fv", ALL, list(range(7))))
    try:
        got = await compact_read.fetch_async(backend.backend, ours, backend.settings, "proj")
        assert got == await backend.backend.fetch_async(theirs, 100)
        assert got == [expected(k) for k in range(5)] + [[None] * 5] * 2
    finally:
        await backend.backend.aclose()


@pytest.mark.server
def test_fetch_applies_the_views_ttl_before_the_server_expires_the_key(redis_client, backend):
    fresh = datetime.fromtimestamp(views.now_ms() / 1000, UTC) - timedelta(seconds=30)
    redis_client.set(compact_key(hash_key(1), "fv"), record(1, fresh))  # no expiry on the key
    redis_client.set(compact_key(hash_key(2), "fv"), record(2, fresh - timedelta(seconds=31)))
    plan = make_plan(request("fv", ("a",), [1, 2], ttl=60))
    got = compact_read.fetch(backend.backend, plan, backend.settings, "proj")
    assert got == [expected(1, ("a",), fresh), [None, None]]
    assert redis_client.exists(compact_key(hash_key(2), "fv"))  # still stored


@pytest.mark.server
def test_an_old_schema_is_learned_from_the_directory(redis_client, backend, monkeypatch):
    old = Schema([("a", ValueType.INT64), ("gone", ValueType.STRING)])
    run(Directory().registering("proj", "fv", old), redis_client)  # another writer's
    data = {"a": ValueProto(int64_val=4), "gone": ValueProto(string_val="x")}
    redis_client.set(compact_key(hash_key(4), "fv"), encode_row(old, data, T0))
    redis_client.set(compact_key(hash_key(5), "fv"), record(5))
    learned = []
    directory = backend.backend.compact_schemas
    real = directory.learning
    monkeypatch.setattr(
        directory, "learning", lambda project: learned.append(project) or real(project)
    )
    plan = make_plan(request("fv", ("a", "score"), [4, 5]))
    got = compact_read.fetch(backend.backend, plan, backend.settings, "proj")
    assert got == [[data["a"].SerializeToString(), None, stamp(T0)], expected(5, ("a", "score"))]
    assert learned == ["proj"] and directory.schemas("proj", "fv") == {old.id: old}
    compact_read.fetch(
        backend.backend, make_plan(request("fv", ("a",), [4])), backend.settings, "proj"
    )
    assert learned == ["proj"]  # known now: not asked again


@pytest.mark.server
def test_an_unknown_schema_id_is_asked_about_at_most_once_per_interval(
    redis_client, backend, monkeypatch
):
    clock = SimpleNamespace(now=1000.0)
    monkeypatch.setattr(directory_module, "time", SimpleNamespace(monotonic=lambda: clock.now))
    learned = []
    directory = backend.backend.compact_schemas
    real = directory.learning
    monkeypatch.setattr(
        directory, "learning", lambda project: learned.append(project) or real(project)
    )
    foreign = Schema([("a", ValueType.INT64), ("zzz", ValueType.BOOL)])
    redis_client.set(
        compact_key(hash_key(1), "fv"), encode_row(foreign, {"a": ValueProto(int64_val=1)}, T0)
    )

    def read():
        plan = make_plan(request("fv", ("a",), [1]))
        return compact_read.fetch(backend.backend, plan, backend.settings, "proj")

    assert read() == [[None, stamp(T0)]] and learned == ["proj"]
    clock.now += directory_module.RELEARN_AFTER_S / 2
    assert read() == [[None, stamp(T0)]] and learned == ["proj"]  # too soon: not asked
    run(Directory().registering("proj", "fv", foreign), redis_client)
    clock.now += directory_module.RELEARN_AFTER_S / 2
    value = ValueProto(int64_val=1).SerializeToString()
    assert read() == [[value, stamp(T0)]] and learned == ["proj", "proj"]


@pytest.mark.server
def test_a_key_of_another_type_reads_as_not_found(redis_client, backend):
    """Records come by MGET, which answers nil for a key of another type: never its bytes."""
    redis_client.set(compact_key(hash_key(1), "fv"), record(1, T0))
    redis_client.hset(compact_key(hash_key(2), "fv"), "x", "y")
    plan = make_plan(request("fv", ("a",), [1, 2]))
    got = compact_read.fetch(backend.backend, plan, backend.settings, "proj")
    assert got == [expected(1, ("a",), T0), [None, None]]


def test_an_empty_plan_sends_nothing():
    settings = DragonflyOnlineStoreConfig(
        connection_string="127.0.0.1:1", layout="compact"
    ).settings()
    backend = open_backend(settings.client)  # nothing listens there
    try:
        assert compact_read.fetch(backend, make_plan(), settings, "proj") == []
    finally:
        backend.close()


async def test_an_empty_plan_sends_nothing_async():
    settings = DragonflyOnlineStoreConfig(
        connection_string="127.0.0.1:1", layout="compact"
    ).settings()
    backend = open_backend(settings.client)
    try:
        assert await compact_read.fetch_async(backend, make_plan(), settings, "proj") == []
    finally:
        await backend.aclose()


@pytest.mark.server
def test_records_split_over_several_mgets_come_back_in_plan_order(
    redis_client, backend, monkeypatch
):
    monkeypatch.setattr(_read, "MGET_KEYS", 2)  # 3 records per chunk: MGETs of 2 and 1
    rows = [(entity_key(k), values(k), T0 + timedelta(seconds=k), None) for k in range(7)]
    write_both_layouts(redis_client, rows)
    ours, theirs = both_plans(("fv", ("a", "name"), [6, 0, 99, 3, 1, 5, 2, 4]))
    got = compact_read.fetch(backend.backend, ours, backend.settings, "proj")
    assert got == backend.backend.fetch(theirs, 100, 1)


def test_an_mget_error_reply_stands_for_each_of_its_keys(monkeypatch):
    monkeypatch.setattr(_read, "MGET_KEYS", 2)
    refused = ConnectionError("NOPERM")
    assert _read._flattened([[b"a", None], refused], 3) == [b"a", None, refused]
    assert _read._flattened([refused, [b"c"]], 3) == [refused, refused, b"c"]


def test_a_chunk_holds_the_records_of_read_chunk_size_entities():
    plan = compact_read.record_plan(
        make_plan(request("fv", ("a",), [1, 2]), request("gv", ("b",), [1, 2]))
    )
    assert len(plan.keys) == 4
    assert compact_read.FetchRecords(plan, hashes=2).chunk_size(100) == 200
    assert compact_read.FetchRecords(plan, hashes=0).chunk_size(100) == 400
