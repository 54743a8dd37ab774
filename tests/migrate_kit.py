"""Builders shared by ``test_migrate.py`` and ``test_stats.py``: Feast-layout data written by
the store's own ``online_write_batch`` (so the bytes are the real ones), an applied feature
repo (a registry to map fields to views), and the CLI run in-process."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import redis
from click.testing import CliRunner, Result
from feast import FeatureView
from feast_repo import write_feature_repo
from store_kit import OURS, entity, feature_view, repo_config, row

from feast_dragonfly import DragonflyOnlineStore
from feast_dragonfly.cli import cli

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def at(hours: int) -> datetime:
    return T0 + timedelta(hours=hours)


def write(
    store: DragonflyOnlineStore,
    tmp_path: Path,
    connection_string: str,
    *,
    project: str,
    view: FeatureView,
    ids: range | list[int],
    when: datetime,
    value: int,
    ttl: int | None = None,
    **options: Any,
) -> None:
    """Rows for ``ids`` of one view, each feature = ``value``, with the store's own writer."""
    extra = {"key_ttl_seconds": ttl} if ttl else {}
    config = repo_config(
        tmp_path / f"cfg-{project}", connection_string, project=project, **extra, **options
    )
    features = tuple(f.name for f in view.features)
    rows = [row(i, when, value, features) for i in ids]
    store.online_write_batch(config, view, rows, None)


def shop_and_myshop(
    store: DragonflyOnlineStore,
    tmp_path: Path,
    connection_string: str,
    view: FeatureView,
    *,
    expiring: int,
    lasting: int,
    myshop: int,
) -> None:
    """Project shop: ``expiring`` keys with a one-hour TTL, then ``lasting`` without; project
    myshop (whose name ends like shop's: the suffix trap): ``myshop`` keys."""
    write(store, tmp_path, connection_string, project="shop", view=view,
          ids=range(expiring), when=at(1), value=1, ttl=3600)  # fmt: skip
    write(store, tmp_path, connection_string, project="shop", view=view,
          ids=range(expiring, expiring + lasting), when=at(1), value=2)  # fmt: skip
    write(store, tmp_path, connection_string, project="myshop", view=view, ids=range(myshop),
          when=at(1), value=3)  # fmt: skip


def applied_repo(path: Path, connection_string: str, project: str, views: list[FeatureView]):
    """A feature repo whose registry holds ``views`` (``feast apply``'s effect)."""
    store = write_feature_repo(
        path,
        project=project,
        online_store={"type": OURS, "connection_string": connection_string},
    )
    store.apply([entity(), *views])
    return store


def two_views() -> tuple[FeatureView, FeatureView]:
    return feature_view("fv1", ("a", "b")), feature_view("fv2", ("c", "d"))


def run(*args: str) -> Result:
    """``feast-dragonfly <args>`` in this process (the subprocess tests pay Feast's import)."""
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def everything(client: redis.Redis) -> dict[bytes, tuple[Any, bool]]:
    """Every key: (hash contents or type name, whether it expires)."""
    out: dict[bytes, tuple[Any, bool]] = {}
    for key in client.scan_iter(count=1000):
        kind = client.type(key)
        kind = kind.decode() if isinstance(kind, bytes) else kind
        content = client.hgetall(key) if kind == "hash" else kind
        out[key] = (content, client.pttl(key) >= 0)
    return out
