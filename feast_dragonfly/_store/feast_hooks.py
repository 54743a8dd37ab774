"""The private Feast hooks the fast paths use, detected once at import, each with a fallback.

Feast's public API has no place for a batched read, a cached request context or a faster
JSON conversion, so a few private Feast names are used. Feast renames such names between
minors without notice; then the fast path must step aside, never fail: every user of a hook
asks :func:`present` first and, when it is absent, takes Feast's public path (slower, the
same answer), and the first such fallback of each hook is logged once, at WARNING (INFO
when the fallback is just what that Feast does itself). docs/compatibility.md lists them.

Detection looks at names and parameters only (no version strings), so a Feast that keeps
a hook keeps its speed. :func:`detect` re-runs it (tests simulate an absent hook by
removing or changing Feast's attribute, then swap :data:`HOOKS` for a fresh detection).
"""

from __future__ import annotations

import importlib
import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass

logger = logging.getLogger(__name__)

#: Names of the hooks (the keys of :data:`HOOKS`).
REQUEST_CONTEXT = "request_context"
READ_PER_VIEW = "read_per_view"
FEATURE_TYPES = "feature_types"
RESPONSE_TYPES = "response_types"
READ_METRICS = "read_metrics"
SERVE_CONVERSION = "serve_conversion"
COLUMN_NAMES = "column_names"
VECTOR_LENGTHS = "vector_lengths"
FEATURE_COUNT_BINS = "feature_count_bins"
FEATURE_COUNTS = "feature_counts"

#: The parameters Feast passes to ``OnlineStore._read_features_per_fv[_async]``.
READ_PER_VIEW_PARAMETERS = (
    "self",
    "config",
    "grouped_refs",
    "join_key_values",
    "entity_name_to_join_key_map",
    "online_features_response",
    "full_feature_names",
    "include_feature_view_version_metadata",
)


@dataclass(frozen=True)
class Hook:
    """One private Feast name: what uses it, what runs without it, whether Feast has it."""

    feast_name: str
    used_for: str
    fallback: str
    present: bool
    #: Whether the fallback is slower (logged as a WARNING) or just what this Feast does
    #: itself (logged as INFO).
    slower: bool = True


def _attribute(path: str) -> object | None:
    """``module.attr[.attr]`` from Feast, or None when any part is missing."""
    module_name, _, attrs = path.partition(":")
    try:
        value: object = importlib.import_module(module_name)
    except Exception:  # noqa: BLE001 - a module Feast dropped, or one that fails to import
        return None
    for name in attrs.split("."):
        value = getattr(value, name, None)
        if value is None:
            return None
    return value


def _parameters(function: object | None) -> tuple[str, ...] | None:
    if not callable(function):
        return None
    try:
        return tuple(inspect.signature(function).parameters)
    except (TypeError, ValueError):
        return None


def _takes(path: str, *names: str) -> bool:
    """Whether Feast has ``path`` and it takes at least the parameters ``names``."""
    parameters = _parameters(_attribute(path))
    return parameters is not None and set(names) <= set(parameters)


def _read_per_view() -> bool:
    online_store = "feast.infra.online_stores.online_store:OnlineStore."
    return (
        _parameters(_attribute(online_store + "_read_features_per_fv")) == READ_PER_VIEW_PARAMETERS
        and _parameters(_attribute(online_store + "_read_features_per_fv_async"))
        == READ_PER_VIEW_PARAMETERS
        and _takes("feast.utils:_get_unique_entities", "table", "join_key_values")
        and _takes("feast.utils:_get_entity_key_protos", "entity_rows")
    )


def _response_types() -> bool:
    """Whether ``OnlineResponse`` keeps its ``feature_types`` as ``_feature_types``."""
    try:
        from feast.online_response import OnlineResponse
        from feast.protos.feast.serving.ServingService_pb2 import GetOnlineFeaturesResponse

        response = OnlineResponse(GetOnlineFeaturesResponse(), feature_types={})
    except Exception:  # noqa: BLE001 - a constructor that changed: the hook is absent
        return False
    return isinstance(getattr(response, "_feature_types", None), dict)


def _hook(
    feast_name: str, used_for: str, fallback: str, check: Callable[[], bool], slower: bool = True
) -> Hook:
    return Hook(feast_name, used_for, fallback, bool(check()), slower)


def detect() -> dict[str, Hook]:
    """Look every hook up in the Feast installed now."""
    return {
        REQUEST_CONTEXT: _hook(
            "feast.utils._get_cached_request_context",
            "the direct read path (plain requests answered from the stored bytes)",
            "every request goes through Feast's get_online_features",
            lambda: (
                _parameters(_attribute("feast.utils:_get_cached_request_context"))
                == ("registry", "project", "features", "full_feature_names")
            ),
        ),
        READ_PER_VIEW: _hook(
            "OnlineStore._read_features_per_fv[_async]",
            "one HMGET per entity hash for all views of a request on Feast's path",
            "Feast reads view by view through the store's online_read",
            _read_per_view,
        ),
        FEATURE_TYPES: _hook(
            "OnlineStore._build_feature_types",
            "the response's feature types, memoized per request shape",
            "Feast builds them per request",
            lambda: (
                _parameters(
                    _attribute(
                        "feast.infra.online_stores.online_store:OnlineStore._build_feature_types"
                    )
                )
                == ("grouped_refs",)
            ),
        ),
        RESPONSE_TYPES: _hook(
            "OnlineResponse._feature_types",
            "the faster OnlineResponse.to_dict",
            "Feast's own to_dict",
            _response_types,
        ),
        READ_METRICS: _hook(
            "feast.metrics._config",
            "Feast's read-latency metric on the direct read path",
            "the direct path records no read latency (nor does Feast's read path without it)",
            lambda: (
                _attribute("feast.metrics:_config.online_features") is not None
                and _attribute("feast.metrics:track_online_store_read") is not None
            ),
        ),
        SERVE_CONVERSION: _hook(
            "feast.feature_server.convert_response_to_dict",
            "feast serve's JSON made from the stored bytes",
            "feast serve converts every response itself",
            lambda: (
                len(_parameters(_attribute("feast.feature_server:convert_response_to_dict")) or ())
                == 1
            ),
        ),
        COLUMN_NAMES: _hook(
            "feast.utils._get_column_names",
            "our materialization engines' column selection",
            "every view is materialized by Feast's own engine",
            lambda: _takes("feast.utils:_get_column_names", "feature_view", "entities"),
        ),
        VECTOR_LENGTHS: _hook(
            "feast.utils._validate_vector_field_lengths",
            "the vector-width check of materialization, as Feast makes it",
            "no width check (this Feast's own materialization makes none either)",
            lambda: (
                _parameters(_attribute("feast.utils:_validate_vector_field_lengths")) is not None
            ),
            slower=False,
        ),
        FEATURE_COUNT_BINS: _hook(
            "feast.feature_server.bin_feature_count",
            "feast-dragonfly serve --metrics: feature-count labels as feast serve bins them",
            "the raw feature count as the label (what feast serve of this Feast labels)",
            lambda: _parameters(_attribute("feast.feature_server:bin_feature_count")) is not None,
            slower=False,
        ),
        FEATURE_COUNTS: _hook(
            "feast.feature_server._resolve_feature_counts",
            "feast-dragonfly serve --metrics: feature and view counts as request labels",
            "the labels are left empty (Feast's defaults)",
            lambda: _takes("feast.feature_server:_resolve_feature_counts", "features"),
            slower=False,
        ),
    }


HOOKS: dict[str, Hook] = detect()

_logged: set[str] = set()


def present(name: str) -> bool:
    """Whether Feast has hook ``name``; when not, log the fallback (once per hook)."""
    hook = HOOKS[name]
    if not hook.present:
        fallback(name)
    return hook.present


def fallback(name: str, why: str = "") -> None:
    """Log, once per hook, that ``name``'s fallback runs (``why``: when the hook exists but
    answered in a shape we do not know)."""
    if name in _logged:
        return
    _logged.add(name)
    hook = HOOKS[name]
    logger.log(
        logging.WARNING if hook.slower else logging.INFO,
        "feast-dragonfly: this Feast has no usable %s (%s), so %s%s",
        hook.feast_name,
        why or "renamed or removed",
        hook.fallback,
        ": the same answers, only slower" if hook.slower else "",
    )


def missing() -> list[Hook]:
    """The hooks this Feast lacks."""
    return [hook for hook in HOOKS.values() if not hook.present]
