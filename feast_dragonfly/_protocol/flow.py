"""Protocol logic written once, run by a sync or an async driver.

Reloading the script after ``NOSCRIPT``, following ``ASK`` redirections, falling back to the
cluster client, retrying a ``WATCH`` transaction: each is a *flow* — a generator that yields
what it wants sent and receives the reply (or has the send's exception thrown into it), and
returns its result. The flow holds every decision; :func:`run` and :func:`run_async` only
carry requests to a ``send`` function, so the sync and the async APIs cannot drift apart (as
httpx drives one ``Auth.auth_flow`` generator from both of its clients).

Flows compose with ``yield from``: a sub-flow's exception propagates into its caller's
``try`` like any other.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Generator
from typing import Any, TypeVar

T = TypeVar("T")

#: A generator yielding requests, receiving their replies, returning a ``T``.
Flow = Generator[Any, Any, T]


def run(flow: Flow[T], send: Callable[[Any], Any]) -> T:
    """Drive ``flow`` to its result, sending each request with ``send``."""
    try:
        request = next(flow)
        while True:
            try:
                reply = send(request)
            except Exception as exc:  # noqa: BLE001 - the flow decides what to do with it
                request = flow.throw(exc)
            else:
                request = flow.send(reply)
    except StopIteration as done:
        return done.value


async def run_async(flow: Flow[T], send: Callable[[Any], Awaitable[Any]]) -> T:
    """:func:`run` with an async ``send``."""
    try:
        request = next(flow)
        while True:
            try:
                reply = await send(request)
            except Exception as exc:  # noqa: BLE001 - the flow decides what to do with it
                request = flow.throw(exc)
            else:
                request = flow.send(reply)
    except StopIteration as done:
        return done.value


class Call:
    """A request that is one method call on an object the driver holds (a redis-py pipeline,
    sync or asyncio — the async driver awaits whatever the method returns that is awaitable)."""

    __slots__ = ("method", "args")

    def __init__(self, method: str, *args: Any) -> None:
        self.method = method
        self.args = args

    def on(self, target: Any) -> Any:
        return getattr(target, self.method)(*self.args)

    async def on_async(self, target: Any) -> Any:
        result = getattr(target, self.method)(*self.args)
        return await result if inspect.isawaitable(result) else result
