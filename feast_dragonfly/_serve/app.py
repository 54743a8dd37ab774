"""``feast-dragonfly serve``: Feast's HTTP feature server, reduced to the online path.

Feast's server (FastAPI) validates every request with pydantic, converts the response protobuf
value by value in a thread pool and encodes it with the stdlib ``json``. This one is a bare
ASGI application run by uvicorn (uvloop, httptools): the request is parsed by ``orjson``,
checked by hand, answered by the store's async path, and encoded by ``orjson``. The JSON is
Feast's, value for value (``_response_json``: ``convert_response_to_dict``'s result, faster),
so Feast's own ``online_store: type: remote`` client reads it unchanged.

Endpoints: ``POST /get-online-features``, ``POST /push`` and ``POST /write-to-online-store``
(``writes``), ``GET /health``. Everything else ``feast serve`` offers (materialize, documents,
chat, UI) answers 404 naming ``feast serve``. A worker works on at most ``max_in_flight``
requests at once and refuses more with a 503 (``admission``).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson
from feast import FeatureStore
from feast.errors import FeastError

from feast_dragonfly._serve import env as _serve_env
from feast_dragonfly._serve import writes
from feast_dragonfly._serve.admission import Admission
from feast_dragonfly._serve.request_checks import RequestError, equal_length_lists, json_object
from feast_dragonfly._serve.response_json import response_dict
from feast_dragonfly._store import direct_json, direct_read, feast_hooks
from feast_dragonfly._store.online_store import DragonflyOnlineStore
from feast_dragonfly.errors import (
    DragonflyConnectionError,
    DragonflyServerFullError,
    DragonflyStoreError,
)

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

#: Largest request body accepted, in bytes.
MAX_BODY_BYTES = 16 * 1024 * 1024

_JSON_HEADERS = [(b"content-type", b"application/json")]
_REQUEST_KEYS = frozenset(
    {
        "entities",
        "features",
        "feature_service",
        "full_feature_names",
        "include_feature_view_version_metadata",
    }
)


class FeatureServer:
    """The ASGI application. ``store`` must be a ``FeatureStore`` whose online store is ours
    (or any with an async read path)."""

    def __init__(
        self,
        store: FeatureStore,
        *,
        registry_ttl_sec: int = 5,
        max_entity_rows: int = _serve_env.DEFAULT_MAX_ENTITY_ROWS,
        max_in_flight: int = _serve_env.DEFAULT_MAX_IN_FLIGHT,
    ) -> None:
        self.store = store
        self.registry_ttl_sec = registry_ttl_sec
        self.max_entity_rows = max_entity_rows
        self.admission = Admission(max_in_flight)
        self._endpoints: dict[str, Callable[[bytes], Awaitable[tuple[int, bytes]]]] = {
            "/get-online-features": self._read,
            "/push": self.push,
            "/write-to-online-store": self.write_to_online_store,
        }
        self._refresher: asyncio.Task | None = None
        self._online_store = store.provider.online_store
        # Plain requests are answered from the stored bytes (``direct_json``) when the
        # store is ours; anything else goes through Feast's request handling.
        self._direct = isinstance(self._online_store, DragonflyOnlineStore)
        self._request_metrics = RequestMetrics.if_enabled(store)

    # ------------------------------------------------------------------ ASGI

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        endpoint = self._endpoints.get(path)
        if endpoint is not None and method == "POST" and not self.admission.enter(path):
            await _respond(send, *self.admission.refusal())
            return
        try:
            if endpoint is not None:
                if method != "POST":
                    raise RequestError(405, f"use POST {path}")
                try:
                    status, payload = await endpoint(await _read_body(receive))
                finally:
                    self.admission.leave()
            elif path == "/health":
                status, payload = await self.health()
            else:
                raise RequestError(
                    404,
                    f"{path} is not served by feast-dragonfly serve, which answers "
                    "POST /get-online-features, POST /push, POST /write-to-online-store and "
                    "GET /health; run `feast serve` for the other endpoints of Feast's "
                    "feature server",
                )
        except RequestError as exc:
            status, payload = exc.status, orjson.dumps({"detail": exc.message})
        except FeastError as exc:
            # Feast's own server answers these with the error's status and detail document.
            status, payload = exc.http_status_code(), orjson.dumps(exc.to_error_detail())
        except DragonflyConnectionError as exc:
            status, payload = 503, orjson.dumps({"detail": f"online store unavailable: {exc}"})
        except DragonflyServerFullError as exc:
            # 507 Insufficient Storage: nothing wrong with the request, and retrying will not
            # help until the server's maxmemory is raised.
            status, payload = 507, orjson.dumps({"detail": str(exc)})
        except DragonflyStoreError as exc:
            status, payload = 500, orjson.dumps({"detail": str(exc)})
        except (ValueError, TypeError, KeyError) as exc:
            # Raised by Feast while it resolves features and turns entities into keys, or
            # converts pushed columns to stored values.
            what = "features and entity values" if path == "/get-online-features" else "df"
            detail = f"{_describe(exc)} (check the request's {what})"
            status, payload = 400, orjson.dumps({"detail": detail})
        except Exception as exc:  # noqa: BLE001 - the server keeps serving
            logger.exception("request to %s failed", path)
            status, payload = 500, orjson.dumps({"detail": _describe(exc)})
        await _respond(send, status, payload)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:  # noqa: BLE001 - reported to uvicorn, which exits
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # ------------------------------------------------------------------ lifecycle

    async def startup(self) -> None:
        """Load the registry and open the online store's pool (so the first request is not
        the one that pays for it), then refresh the registry every ``registry_ttl_sec``."""
        await asyncio.to_thread(self.store.refresh_registry)
        await self.store.initialize()
        if self.registry_ttl_sec:
            self._refresher = asyncio.ensure_future(self._refresh_registry())

    async def shutdown(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            await asyncio.gather(self._refresher, return_exceptions=True)
        await self.store.close()

    async def _refresh_registry(self) -> None:
        while True:
            await asyncio.sleep(self.registry_ttl_sec)
            try:
                await asyncio.to_thread(self.store.refresh_registry)
            except Exception:  # noqa: BLE001 - keep serving from the cached registry
                logger.warning("registry refresh failed; serving the cached one", exc_info=True)

    # ------------------------------------------------------------------ endpoints

    async def health(self) -> tuple[int, bytes]:
        """200 when the registry answers (as Feast's ``/health``), else 503."""
        try:
            await asyncio.to_thread(self.store.registry.list_projects, allow_cache=True)
        except Exception:  # noqa: BLE001 - any failure means "not healthy"
            return 503, b""
        return 200, b""

    async def _read(self, body: bytes) -> tuple[int, bytes]:
        return 200, await self.get_online_features(body)

    async def push(self, body: bytes) -> tuple[int, bytes]:
        """Feast's ``POST /push``: 200 and no body once the rows are written."""
        from feast import metrics as feast_metrics

        with feast_metrics.track_request_latency("/push"):
            request = writes.parse_push(body)
            await writes.push(self.store, request)
            feast_metrics.track_push(request.name, request.to)
        return 200, b""

    async def write_to_online_store(self, body: bytes) -> tuple[int, bytes]:
        """Feast's ``POST /write-to-online-store``: 200 and JSON ``null`` once written."""
        await writes.write_to_online_store(self.store, writes.parse_write(body))
        return 200, writes.WRITE_ANSWER

    async def get_online_features(self, body: bytes) -> bytes:
        request = self._parse(body)
        features: Any = request.get("features") or []
        if request.get("feature_service"):
            features = self.store.get_feature_service(request["feature_service"], allow_cache=True)
        if self._request_metrics is None:
            return await self._answer(request, features)
        # ``feast serve --metrics``'s request latency, request count and entity count.
        from feast import metrics as feast_metrics

        with feast_metrics.track_request_latency("/get-online-features") as measured:
            feature_count, view_count = self._request_metrics.feature_counts(features)
            measured.feature_count = feature_count
            measured.feature_view_count = view_count
            feast_metrics.track_online_features_entities(_row_count(request))
            return await self._answer(request, features)

    async def _answer(self, request: dict[str, Any], features: Any) -> bytes:
        full_names = request.get("full_feature_names", False)
        with_versions = request.get("include_feature_view_version_metadata", False)
        if self._direct and not with_versions:
            store = self.store
            plan = direct_read.plan_request(
                store.config, store.registry, store.project, features, full_names
            )
            if plan is not None:
                answer = await direct_json.answer(
                    self._online_store, self.store.config, plan, request["entities"]
                )
                if answer is not None:
                    return orjson.dumps(answer)
        response = await self.store.get_online_features_async(
            features=features,
            entity_rows=request["entities"],
            full_feature_names=full_names,
            include_feature_view_version_metadata=with_versions,
        )
        return orjson.dumps(response_dict(response.proto))

    def _parse(self, body: bytes) -> dict[str, Any]:
        """The request, checked as Feast's ``GetOnlineFeaturesRequest`` checks it."""
        request = json_object(body, _REQUEST_KEYS)
        entities = request.get("entities")
        rows = equal_length_lists(
            entities, "entities", 'join key -> list of values, e.g. {"driver_id": [1001, 1002]}'
        )
        if rows > self.max_entity_rows:
            raise RequestError(
                413,
                f"{rows} entity rows requested; this server answers at most "
                f"{self.max_entity_rows} per request (--max-entity-rows)",
            )
        features = request.get("features", [])
        service = request.get("feature_service")
        if service is not None and not isinstance(service, str):
            raise RequestError(422, "'feature_service' must be a string")
        if not isinstance(features, list) or not all(isinstance(f, str) for f in features):
            raise RequestError(422, "'features' must be a list of 'view:feature' strings")
        if not features and not service:
            raise RequestError(
                422, "name 'features' (a list of 'view:feature') or 'feature_service'"
            )
        for key in ("full_feature_names", "include_feature_view_version_metadata"):
            if not isinstance(request.get(key, False), bool):
                raise RequestError(422, f"'{key}' must be true or false")
        return request


def _row_count(request: dict[str, Any]) -> int:
    return len(next(iter(request["entities"].values())))


class RequestMetrics:
    """Labels of Feast's request-latency histogram, computed as ``feast serve`` computes them
    (its feature-count bins from ``feature_server.metrics`` in ``feature_store.yaml``)."""

    def __init__(self, bins: list[int]) -> None:
        from feast import feature_server as feast_server  # FastAPI & co: only with --metrics

        self._bins = bins
        # Private Feast hooks (``feast_hooks``): without them, the labels this Feast's server
        # sets (raw counts without bins; Feast's defaults without counts).
        self._counts = (
            feast_server._resolve_feature_counts
            if feast_hooks.present(feast_hooks.FEATURE_COUNTS)
            else None
        )
        self._bin = (
            feast_server.bin_feature_count
            if feast_hooks.present(feast_hooks.FEATURE_COUNT_BINS)
            else _unbinned
        )

    @classmethod
    def if_enabled(cls, store: FeatureStore) -> RequestMetrics | None:
        from feast import metrics as feast_metrics
        from feast.infra.feature_servers.base_config import MetricsConfig

        if not feast_metrics._config.request and not feast_metrics._config.online_features:
            return None
        configured = getattr(getattr(store.config, "feature_server", None), "metrics", None)
        bins = (
            getattr(configured, "feature_count_bins", None)
            or getattr(MetricsConfig(), "feature_count_bins", None)
            or []
        )
        return cls(list(bins))

    def feature_counts(self, features: Any) -> tuple[str, str]:
        if self._counts is None:
            return "", ""
        feature_count, view_count = self._counts(features)
        return self._bin(int(feature_count), self._bins), view_count


def _unbinned(count: int, bins: list[int]) -> str:
    return str(count)


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    size = 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise RequestError(413, f"the request body is over {MAX_BODY_BYTES:,} bytes")
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


async def _respond(
    send: Send, status: int, payload: bytes, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    headers = _JSON_HEADERS if payload else []
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*headers, *(extra or ()), (b"content-length", b"%d" % len(payload))],
        }
    )
    await send({"type": "http.response.body", "body": payload})


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# --------------------------------------------------------------------------- app factory


def check_servable(store: FeatureStore) -> None:
    """Refuse to serve what Feast would protect: only ``auth: no_auth`` is served here."""
    auth = getattr(store.config.auth_config, "type", "no_auth")
    if auth != "no_auth":
        raise SystemExit(
            f"feature_store.yaml configures auth type '{auth}'; feast-dragonfly serve does not "
            "enforce Feast's authorization yet and will not serve data Feast would protect. "
            "Use `feast serve` for this repo, or remove `auth` if the server is private."
        )


def _enable_feast_metrics() -> None:
    """Switch on Feast's metric flags in this worker process. ``feast serve``'s gunicorn
    workers inherit them by fork; uvicorn's workers are spawned, so each sets them again
    (``feast.metrics._config``: a private Feast hook, pinned by ``test_serving_metrics``)."""
    from feast import metrics as feast_metrics

    if not feast_metrics._config.enabled:
        feast_metrics._config = feast_metrics.build_metrics_flags()


def app() -> FeatureServer:
    """uvicorn's factory (``feast_dragonfly._serve.app:app``, ``factory=True``): one app
    per worker process, for the repo named by ``$FEAST_DRAGONFLY_SERVE_REPO``."""
    env = os.environ
    store = FeatureStore(repo_path=env.get(_serve_env.REPO_ENV, "."))
    check_servable(store)
    if env.get(_serve_env.METRICS_ENV):
        _enable_feast_metrics()
    ttl = env.get(_serve_env.REGISTRY_TTL_ENV)
    rows = env.get(_serve_env.MAX_ROWS_ENV)
    return FeatureServer(
        store,
        registry_ttl_sec=int(ttl) if ttl else _serve_env.feast_registry_ttl(),
        max_entity_rows=int(rows) if rows else _serve_env.DEFAULT_MAX_ENTITY_ROWS,
        max_in_flight=_serve_env.max_in_flight(env),
    )
