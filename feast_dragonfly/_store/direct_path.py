"""The store's direct read path: a plain ``get_online_features`` request answered from the
stored bytes, without Feast's per-request machinery.

The store asks :func:`prepare` first; ``None`` means Feast's own path must answer (the shape
is one ``direct_read`` cannot answer exactly). The store sends the prepared HMGETs through its
backend and hands the replies to :func:`respond`. No I/O here.
"""

from __future__ import annotations

import time
from typing import Any

from feast import RepoConfig
from feast import metrics as feast_metrics
from feast.infra.registry.base_registry import BaseRegistry
from feast.online_response import OnlineResponse

from feast_dragonfly._store import (
    direct_json,
    direct_read,
    feast_hooks,
    feast_serve_hook,
    feature_types,
    response_builder,
)
from feast_dragonfly._store.online_response import FastOnlineResponse

#: ``get_online_features``'s parameters, passed on by name (to Feast's path or ``prepare``).
REQUEST_ARGS = (
    "config",
    "features",
    "entity_rows",
    "registry",
    "project",
    "full_feature_names",
    "include_feature_view_version_metadata",
)


def request_args(scope: dict[str, Any]) -> dict[str, Any]:
    """A ``get_online_features`` call's arguments, by name, to pass on."""
    return {name: scope[name] for name in REQUEST_ARGS}


def prepare(
    *,
    config: RepoConfig,
    features: Any,
    entity_rows: Any,
    registry: BaseRegistry,
    project: str,
    full_feature_names: bool,
    include_feature_view_version_metadata: bool,
) -> direct_read.Prepared | None:
    """The request planned for the direct path, or None if Feast's path must answer it."""
    if include_feature_view_version_metadata:
        return None
    entities = direct_read.columnar(entity_rows)
    if entities is None:
        return None
    plan = direct_read.plan_request(config, registry, project, features, full_feature_names)
    return None if plan is None else direct_read.prepare(plan, entities)


def framing(compact: bool) -> bool:
    """Whether replies for :func:`respond` may come framed (``compact.read.hash_replies``):
    with compact records, unless ``feast serve``'s JSON is also built from them."""
    return compact and not feast_serve_hook.installed()


def respond(
    prepared: direct_read.Prepared, replies: list, started: float, framed: bool = False
) -> OnlineResponse:
    """Feast's response for ``prepared`` from its HMGET replies (``framed``: see
    :func:`framing`); ``started``: when the read began (``time.monotonic()``), for Feast's
    read-latency metric."""
    response = response_builder.direct_response(prepared, replies, framed)
    if (  # as Feast's read path records it
        feast_hooks.present(feast_hooks.READ_METRICS) and feast_metrics._config.online_features
    ):
        feast_metrics.track_online_store_read(time.monotonic() - started)
    if not framed and feast_serve_hook.installed():  # feast serve: JSON from the replies
        feast_serve_hook.remember(response, lambda: direct_json.document(prepared, replies))
    types = feature_types.build(prepared.plan.grouped_refs)
    return FastOnlineResponse(response, feature_types=types)
