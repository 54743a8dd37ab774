"""The one exception the local-server helpers raise.

A module of its own because discovery, starting and connecting all raise it, and callers catch
it without caring which step failed.
"""

from __future__ import annotations

__all__ = ["LocalServerError"]


class LocalServerError(RuntimeError):
    """The local server could not be found, started or reached; the message says what to do."""
