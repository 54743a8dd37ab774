"""``_protocol.flow``: one generator of protocol decisions, driven by a sync or an async driver.

The contract: a flow yields requests and receives their replies; an exception raised by
``send`` is thrown into the flow at the ``yield`` (where it may be handled or propagate);
its return value is the driver's result; sub-flows compose with ``yield from``. ``run`` and
``run_async`` must give the same result, send the same requests and raise the same errors.
``Call`` turns a request into a method call, awaited only when the method returns an awaitable
(checked on real redis-py pipelines, sync and asyncio).
"""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as redis_asyncio
from hypothesis import given
from hypothesis import strategies as st

from feast_dragonfly._protocol import flow
from feast_dragonfly._protocol.flow import Call


class Boom(Exception):
    pass


def drive_both(make_flow, send):
    """(result or exception, requests seen) from each driver, for the same flow and replies."""
    outcomes = []
    for driver in ("sync", "async"):
        seen: list = []

        def sync_send(request, seen=seen):
            seen.append(request)
            return send(request)

        async def async_send(request, seen=seen):
            seen.append(request)
            await asyncio.sleep(0)
            return send(request)

        try:
            if driver == "sync":
                result = flow.run(make_flow(), sync_send)
            else:
                result = asyncio.run(flow.run_async(make_flow(), async_send))
        except Exception as exc:  # noqa: BLE001 - compared below
            result = exc
        outcomes.append((result, seen))
    return outcomes


def echo(request):
    if isinstance(request, Exception):
        raise request
    return request * 2


def summing_flow(requests):
    total = 0
    for request in requests:
        total += yield request
    return total


def test_replies_reach_the_flow_and_its_return_value_is_the_result():
    [(sync, sync_seen), (async_, async_seen)] = drive_both(lambda: summing_flow([1, 2, 3]), echo)
    assert sync == async_ == 12
    assert sync_seen == async_seen == [1, 2, 3]


def test_a_flow_that_never_yields_sends_nothing():
    def immediate():
        return "done"
        yield  # pragma: no cover - makes this a generator

    [(sync, sync_seen), (async_, async_seen)] = drive_both(immediate, echo)
    assert sync == async_ == "done" and sync_seen == async_seen == []


def test_a_send_error_is_thrown_into_the_flow_which_may_handle_it():
    def retrying():
        attempts = []
        for attempt in range(5):
            try:
                reply = yield Boom(attempt) if attempt < 2 else attempt
            except Boom as exc:
                attempts.append(str(exc))
                continue
            return attempts, reply

    [(sync, sync_seen), (async_, async_seen)] = drive_both(retrying, echo)
    assert sync == async_ == (["0", "1"], 4)
    assert len(sync_seen) == len(async_seen) == 3


def test_an_unhandled_send_error_propagates_with_its_identity():
    error = Boom("server gone")

    def failing(request):
        raise error

    cleaned: list[str] = []

    def careless():
        try:
            yield "request"
        finally:
            cleaned.append("finally ran")
        return "never"  # pragma: no cover

    [(sync, _), (async_, _)] = drive_both(careless, failing)
    assert sync is error and async_ is error
    assert cleaned == ["finally ran", "finally ran"]  # the error passed through the flow


def test_errors_raised_by_the_flow_itself_propagate():
    def deciding():
        reply = yield 1
        if reply == 2:
            raise ValueError("the flow refuses reply 2")
        return reply  # pragma: no cover

    [(sync, _), (async_, _)] = drive_both(deciding, echo)
    assert isinstance(sync, ValueError) and isinstance(async_, ValueError)
    assert str(sync) == str(async_) == "the flow refuses reply 2"


def test_sub_flows_compose_and_their_errors_reach_the_caller():
    def load():
        reply = yield "SCRIPT LOAD"
        if reply != "loaded":
            raise Boom("load refused")
        return reply

    def outer(load_reply):
        def send(request):
            return {"CALL": "noscript", "SCRIPT LOAD": load_reply}.get(request, "?")

        def body():
            first = yield "CALL"
            try:
                loaded = yield from load()
            except Boom as exc:
                return f"{first} then {exc}"
            return f"{first} then {loaded}"

        return body, send

    body, send = outer("loaded")
    [(sync, seen), (async_, _)] = drive_both(body, send)
    assert sync == async_ == "noscript then loaded" and seen == ["CALL", "SCRIPT LOAD"]
    body, send = outer("ERR no scripting")
    [(sync, _), (async_, _)] = drive_both(body, send)
    assert sync == async_ == "noscript then load refused"


replies_strategy = st.lists(st.one_of(st.integers(-100, 100), st.just(None)), max_size=12)


@given(replies_strategy)
def test_both_drivers_agree_on_any_reply_sequence(script):
    """``None`` in the script makes that send fail; the flow counts failures and gives up
    after three, like a retry policy would."""

    def make():
        def policy():
            failures, total = 0, 0
            for step in range(len(script)):
                try:
                    total += yield step
                except Boom:
                    failures += 1
                    if failures >= 3:
                        raise
            return total, failures

        return policy()

    def send(step):
        if script[step] is None:
            raise Boom(step)
        return script[step]

    [(sync, sync_seen), (async_, async_seen)] = drive_both(make, send)
    assert sync_seen == async_seen
    if isinstance(sync, Exception):
        assert type(sync) is type(async_) and sync.args == async_.args
        assert script.count(None) >= 3
    else:
        assert sync == async_ == (sum(v for v in script if v is not None), script.count(None))


# --------------------------------------------------------------------------- Call


def test_call_invokes_the_named_method_with_its_arguments():
    target = {"a": 1}
    assert Call("get", "a").on(target) == 1
    assert Call("get", "b", 7).on(target) == 7
    call = Call("setdefault", "c", 3)
    assert (call.method, call.args) == ("setdefault", ("c", 3))
    assert asyncio.run(call.on_async(target)) == 3 and target["c"] == 3
    with pytest.raises(AttributeError):
        Call("no_such_method").on(target)


def pipeline_flow(key: bytes):
    """A WATCH-less transaction as a flow of pipeline calls (what the wide-view writes do)."""
    yield Call("multi")
    yield Call("hset", key, b"f", b"v")
    yield Call("hget", key, b"f")
    replies = yield Call("execute")
    return replies


def test_call_on_real_sync_and_asyncio_pipelines(redis_client, redis_server):
    with redis_client.pipeline(transaction=False) as pipe:
        assert flow.run(pipeline_flow(b"sync-key"), lambda call: call.on(pipe)) == [1, b"v"]
    assert redis_client.hget(b"sync-key", b"f") == b"v"

    async def on_asyncio():
        aclient = redis_asyncio.Redis(
            host=redis_server.host, port=redis_server.port, db=redis_server.db,
            username=redis_server.username, password=redis_server.password,
        )  # fmt: skip
        try:
            async with aclient.pipeline(transaction=False) as pipe:
                # multi/hset/hget return the pipeline (not awaitable), execute a coroutine
                return await flow.run_async(pipeline_flow(b"async-key"), lambda c: c.on_async(pipe))
        finally:
            await aclient.aclose()

    assert asyncio.run(on_asyncio()) == [1, b"v"]
    assert redis_client.hget(b"async-key", b"f") == b"v"
