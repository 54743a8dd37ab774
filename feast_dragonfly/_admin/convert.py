"""Layout conversions for ``migrate --to-layout``: Feast's entity hashes into compact records
and back, per entity and feature view, with the store's own record codec.

* **feast → compact**: each view a hash holds (its ``_ts:<view>`` field) that the registry
  knows becomes one record, ``<hash key>:<view>``, encoded with the view's current schema from
  the registry (a value of a feature whose type changed since is kept whole, as a fallback),
  written with ``compact_write.lua`` (a record the target holds at the same or a later event
  time wins) and expiring at the earlier of event time + the view's ``ttl`` and the hash's
  remaining TTL. Fields no registry feature hashes to (deleted features) are left behind.
* **compact → feast**: each record is decoded with the schema it names (the registry's
  current one, or the source's schema directory) and merged into the entity's hash as its
  view's fields and ``_ts:<view>`` by ``migrate_merge.lua``, per view by event time, so the
  records of one entity come together in one hash. Features the registry's view no longer has
  are left behind. The hash lives as long as the longest-lived record written into it: a
  record's remaining TTL extends the hash's expiry (never shortens it), a record without one
  removes it.

Values already past their view's ``ttl`` are not converted (the compact layout never returns
them). This is the one admin module that needs Feast's types: it imports the codec only when
a conversion starts (``Conversion``), so ``migrate`` and ``stats`` start without Feast.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from typing import Any, NamedTuple

from google.protobuf.timestamp_pb2 import Timestamp

from feast_dragonfly._admin import batch, records
from feast_dragonfly._admin.merge import Group, KeyPlan
from feast_dragonfly._admin.records import RecordWrite
from feast_dragonfly._admin.registry_views import RepoViews
from feast_dragonfly._admin.report import MigrationError, Report
from feast_dragonfly._admin.scan import pairs
from feast_dragonfly._protocol import record_format
from feast_dragonfly._protocol.deployment import Deployment
from feast_dragonfly._protocol.keys import (
    TIMESTAMP_PREFIX,
    compact_key,
    describe_key,
    feature_field,
    timestamp_field,
)
from feast_dragonfly.errors import DragonflyStoreError

LAYOUTS = ("feast", "compact")
#: Records are encoded at this time, then given their own event time (spliced in as bytes
#: 1..12: exact to the nanosecond, and for any time a Timestamp holds, unlike a datetime).
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


class Converted(NamedTuple):
    """One view of one source hash as a record, and what ``--verify`` compares it with: the
    source's stored value of each of the schema's features (b"" when absent or null)."""

    write: RecordWrite
    source: tuple[bytes, ...]


def _timestamp(raw: bytes) -> tuple[int, int]:
    stamp = Timestamp()
    stamp.ParseFromString(raw)
    return stamp.seconds, stamp.nanos


def _event_ms(seconds: int, nanos: int) -> int:
    return seconds * 1000 + nanos // 1_000_000


class Conversion:
    """The registry's views as compact schemas, and what each server's schema directory holds;
    shared by the batches of one run (the directory caches are thread-safe)."""

    def __init__(self, views: RepoViews, to_layout: str) -> None:
        # Feast's types and the codec, only now: see the contracts in pyproject.toml.
        from feast.protos.feast.types.Value_pb2 import Value
        from feast.value_type import ValueType

        from feast_dragonfly._store.compact import codec, directory, schema

        self.to_layout = to_layout
        self.value = Value
        self.codec = codec
        self.directory = directory
        self.ttls = dict(views.ttls)
        self.schemas: dict[str, Any] = {}
        refused: list[str] = []
        for name, features in views.views.items():
            types = views.types.get(name, ())
            pairs_ = tuple((f, ValueType(t)) for f, t in zip(features, types))
            try:
                schema.require_supported(pairs_, view=name)
                self.schemas[name] = schema.Schema(pairs_)
            except DragonflyStoreError as exc:
                refused.append(str(exc))
        if refused and to_layout == "compact":
            raise MigrationError("; ".join(refused))
        self.books: dict[str, Any] = {}  # role -> that server's _store.compact.directory.Directory

    # ------------------------------------------------------------------ schema directories

    def _book(self, role: str) -> Any:
        if role not in self.books:
            self.books[role] = self.directory.Directory()
        return self.books[role]

    def register(self, target: Deployment, projects: Iterable[str]) -> None:
        """Give the target's directory every view's current schema (before any record of it is
        written; ``HSETNX``, and a different text under the same id is refused)."""
        book = self._book("target")
        for project in projects:
            key = self.directory.directory_key(project)
            client = target.endpoint_for(key).client
            for view, schema in self.schemas.items():
                with target.errors():
                    try:
                        self.directory.run(book.registering(project, view, schema), client)
                    except DragonflyStoreError as exc:
                        raise MigrationError(f"project '{project}': {exc}") from None

    def _schema(self, deployment: Deployment, role: str, project: str, view: str, sid: int) -> Any:
        """The schema a record names: the registry's current one, else the server's directory
        (read again when it does not know the id, at most once a second)."""
        current = self.schemas.get(view)
        if current is not None and current.id == sid:
            return current
        book = self._book(role)
        known = book.schemas(project, view).get(sid)
        if known is None and book.should_learn(project):
            key = self.directory.directory_key(project)
            with deployment.errors():
                self.directory.run(book.learning(project), deployment.endpoint_for(key).client)
            known = book.schemas(project, view).get(sid)
        return known

    # ------------------------------------------------------------------ feast -> compact

    def to_records(
        self, keys: Sequence[bytes], hashes: Sequence[tuple[Any, Any]], out: Report
    ) -> list[Converted]:
        """The records of one batch of source hashes (``(HGETALL, PTTL)`` each); every view
        that is not converted is counted, and unreadable ones named."""
        now = record_format.now_ms()
        converted: list[Converted] = []
        for key, (flat, pttl) in zip(keys, hashes):
            if not batch.readable_hash(key, flat, out):
                continue
            fields = dict(pairs(flat))
            stamps = [(n[len(TIMESTAMP_PREFIX) :], v) for n, v in fields.items()
                      if n.startswith(TIMESTAMP_PREFIX)]  # fmt: skip
            if not stamps:
                out.add("skipped_no_views")
                out.note(f"skipped {describe_key(key)}: the hash has no _ts:<view> field")
                continue
            key_expiry = records.expire_at(pttl, now)
            for raw_view, stamp in stamps:
                view = raw_view.decode("utf-8", errors="replace")
                one = self._record(key, view, stamp, fields, key_expiry, now, out)
                if one is not None:
                    converted.append(one)
        return converted

    def _record(
        self,
        key: bytes,
        view: str,
        stamp: bytes,
        fields: dict[bytes, bytes],
        key_expiry: int,
        now: int,
        out: Report,
    ) -> Converted | None:
        schema = self.schemas.get(view)
        if schema is None:
            out.add(f"unknown_view:{view}")
            return None
        try:
            seconds, nanos = _timestamp(stamp)
            expiry = key_expiry
            ttl = self.ttls.get(view, 0)
            if ttl > 0:
                by_ttl = _event_ms(seconds, nanos) + ttl * 1000
                expiry = by_ttl if not expiry else min(expiry, by_ttl)
            if 0 < expiry <= now:
                out.add("views_expired")
                return None
            source = tuple(fields.get(feature_field(view, name)) or b"" for name in schema.names)
            values = {n: self.value.FromString(v) for n, v in zip(schema.names, source) if v}
            record = self.codec.encode_row(schema, values, _EPOCH)
            record = record[:1] + self.codec.event_time_bytes(seconds, nanos) + record[13:]
        except Exception as exc:  # noqa: BLE001 - a corrupt value or timestamp: named, skipped
            out.add("views_unreadable")
            out.note(f"skipped {describe_key(key)}, view {view}: {exc}")
            return None
        return Converted(RecordWrite(compact_key(key, view), record, expiry, view), source)

    def verify_records(
        self, target: Deployment, project: str, converted: Sequence[Converted], out: Report
    ) -> None:
        """Compare the target's records with the source hashes, value by value after decoding:
        identical, kept (the target's event time is the same or later), or a mismatch."""
        assert out.verify is not None
        with target.errors():
            stored = records.read_routed(target, [c.write.key for c in converted])
        for one, there in zip(converted, stored):
            mine = one.write.record[record_format.EVENT_TIME]
            theirs = records.event_time(there)
            same = theirs == mine and self._same(target, project, one, there)
            name = f"{describe_key(one.write.key)}, view {one.write.view}"
            records.tally(out, mine, theirs, same, name)

    def _same(self, target: Deployment, project: str, one: Converted, there: bytes) -> bool:
        view = one.write.view
        current = self.schemas[view]
        own = self._schema(target, "target", project, view, record_format.schema_id(there))
        if own is None:
            return False
        try:
            decoded = self.codec.decode_by_name(there, {own.id: own}, current).values
        except DragonflyStoreError:
            return False
        return all(self._equal(a, b) for a, b in zip(one.source, decoded))

    def _equal(self, stored: bytes, decoded: bytes | None) -> bool:
        if decoded is None:
            return False
        if stored == decoded:
            return True
        try:  # the same value, serialized differently (field order, a default made explicit)
            return bool(self.value.FromString(stored) == self.value.FromString(decoded))
        except Exception:  # noqa: BLE001 - not a ValueProto: they differ
            return False

    # ------------------------------------------------------------------ compact -> feast

    def to_hashes(
        self,
        source: Deployment,
        project: str,
        found: Sequence[tuple[bytes, str]],
        replies: Sequence[tuple[Any, Any]],
        out: Report,
    ) -> list[KeyPlan]:
        """The merge plans of one batch of source records (``(GET, PTTL)`` each): one view of
        one entity hash per record; the others counted, unreadable ones named."""
        now = record_format.now_ms()
        plans: list[KeyPlan] = []
        for (key, view), (value, pttl) in zip(found, replies):
            if value is None:
                out.add("skipped_vanished")
                continue
            current = self.schemas.get(view)
            if current is None:
                out.add(f"unknown_view:{view}")
                continue
            decoded, problem = self._decode(source, project, view, value)
            if decoded is None:
                out.add("views_unreadable")
                out.note(f"skipped {describe_key(key)}, view {view}: {problem}")
                continue
            names, values, (seconds, nanos) = decoded
            ttl = self.ttls.get(view, 0)
            if ttl > 0 and now >= _event_ms(seconds, nanos) + ttl * 1000:
                out.add("views_expired")
                continue
            keep = set(current.names)
            features = tuple(
                (feature_field(view, name), data)
                for name, data in zip(names, values)
                if name in keep
            )
            stamp = ((timestamp_field(view), self.codec.timestamp_bytes(seconds, nanos)),)
            hash_key = key[: len(key) - len(view.encode("utf-8")) - 1]
            remaining = batch.remaining(pttl)
            # 0: the record never expires, so neither may the hash it goes into.
            plans.append(KeyPlan(hash_key, (Group(stamp, features),), False, max(remaining, 0)))
        return plans

    def merge(
        self, plans: Sequence[KeyPlan], target: Deployment, per_call: int, out: Report
    ) -> None:
        """Merge converted records into the target's hashes (``migrate_merge.lua``), counted
        as conversions (hashes copied as they are count as copies)."""
        merged = Report()
        try:
            batch.merge(plans, target, per_call, merged)
        finally:
            out.add("converted", merged.counters.get("views_written", 0))
            out.add("converted_kept", merged.counters.get("views_kept_newer", 0))
            out.add("errors", merged.counters.get("errors", 0))
            for problem in merged.problems:
                out.note(problem)

    def _decode(self, source: Deployment, project: str, view: str, value: Any) -> tuple[Any, str]:
        """(feature names, serialized values, event time) of a record, or None and why not."""
        if isinstance(value, Exception):
            return None, f"the source key is not a string ({value})"
        if records.event_time(value) is None:
            return None, "the source key is not a compact record"
        sid = record_format.schema_id(value)
        own = self._schema(source, "source", project, view, sid)
        if own is None:
            return None, (
                f"written under schema {sid:#010x}, which the source's schema directory "
                "does not hold"
            )
        try:
            decoded = self.codec.decode(own, value)
        except DragonflyStoreError as exc:
            return None, str(exc)
        return (own.names, decoded.values, decoded.event_time), ""
