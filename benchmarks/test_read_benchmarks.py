"""Read benchmarks: Feast's Redis store (redis-py and GLIDE clients), a raw floor, and ours
(Feast's layout, and ``layout: compact`` as ``ours_compact``).

Every group holds the implementations of one request shape, timed in interleaved rounds (one
call of each per round) in the same run on the same server and data, so their ratios hold even
on a noisy machine. Each implementation's answer is checked against Feast's.

Run through ``make bench`` (both servers, then ``benchmarks/report.py``), or e.g.
``pytest benchmarks --bench-server=redis --benchmark-json=/tmp/redis.json``.
"""

from __future__ import annotations

import pytest
from conftest import CONCURRENT_REQUESTS, Bench, Shape

SHAPES = [
    Shape(entities, features, views)
    for views in (1, 5)
    for entities, features in ((1, 50), (10, 50), (100, 50), (100, 250), (1000, 50))
]


def _cases(shapes, impls):
    # Implementation innermost: the tests of one group are adjacent.
    return [pytest.param(s, i, id=f"{s.id}-{i}") for s in shapes for i in impls]


def _info(api: str, shape: Shape, impl: str) -> dict:
    return {
        "api": api,
        "impl": impl,
        "entities": shape.entities,
        "features": shape.features,
        "views": shape.views,
    }


SYNC_IMPLS = ("feast", "glide", "ours", "ours_compact", "floor")
ASYNC_IMPLS = ("feast", "ours", "ours_compact")


@pytest.mark.parametrize(("shape", "impl"), _cases(SHAPES, SYNC_IMPLS))
def test_get_online_features(bench: Bench, measure, shape: Shape, impl: str) -> None:
    """``FeatureStore.get_online_features(...).to_dict()`` (floor: the same HMGETs, raw)."""
    impls = bench.available(SYNC_IMPLS, impl)
    fns = {i: bench.get_online_features(i, shape) for i in impls}
    group = f"get_online_features {shape.label()}"
    result = measure(group, impl, fns, **_info("get_online_features", shape, impl))
    if impl == "floor":
        assert len(result) == shape.entities and all(None not in reply for reply in result)
    else:
        assert result == bench.reference(shape)


ONLINE_READ = [Shape(100, 50, 1)]


@pytest.mark.parametrize(("shape", "impl"), _cases(ONLINE_READ, SYNC_IMPLS))
def test_online_read(bench: Bench, measure, shape: Shape, impl: str) -> None:
    """The store-level ``online_read`` of one view (floor: the same HMGETs, raw)."""
    impls = bench.available(SYNC_IMPLS, impl)
    fns = {i: bench.online_read(i, shape) for i in impls}
    group = f"online_read {shape.label()}"
    result = measure(group, impl, fns, **_info("online_read", shape, impl))
    if impl == "floor":
        assert len(result) == shape.entities
    elif impl != "feast":
        assert result == fns["feast"].first()


ASYNC = [Shape(1, 50, 1), Shape(100, 50, 1)]


@pytest.mark.parametrize(("shape", "impl"), _cases(ASYNC, ASYNC_IMPLS))
def test_get_online_features_async(bench: Bench, measure, shape: Shape, impl: str) -> None:
    """``await FeatureStore.get_online_features_async(...)`` then ``.to_dict()``."""
    fns = {i: bench.get_online_features_async(i, shape) for i in ASYNC_IMPLS}
    group = f"get_online_features_async {shape.label()}"
    result = measure(group, impl, fns, **_info("get_online_features_async", shape, impl))
    assert result == bench.reference(shape)


@pytest.mark.parametrize(("shape", "impl"), _cases([Shape(1, 50, 1)], ASYNC_IMPLS))
def test_concurrent_async(bench: Bench, measure, shape: Shape, impl: str) -> None:
    """32 concurrent ``get_online_features_async`` calls per round (report: requests/s)."""
    fns = {i: bench.concurrent_async(i, shape, CONCURRENT_REQUESTS) for i in ASYNC_IMPLS}
    group = f"{CONCURRENT_REQUESTS} concurrent async {shape.label()}"
    results = measure(
        group,
        impl,
        fns,
        requests_per_round=CONCURRENT_REQUESTS,
        **_info("concurrent_async", shape, impl),
    )
    assert len(results) == CONCURRENT_REQUESTS
    assert all(result == bench.reference(shape) for result in results)
