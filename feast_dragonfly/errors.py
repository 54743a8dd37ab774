"""Errors users see: each names what is wrong and where, and none carries a password."""

from __future__ import annotations


class DragonflyStoreError(Exception):
    """Base class for every error raised by feast-dragonfly."""


class DragonflyConfigError(DragonflyStoreError):
    """The online_store section of feature_store.yaml is invalid.

    Deliberately not a ``ValueError``: pydantic would wrap one into a ValidationError that
    Feast's ``RepoConfig`` prints together with the raw input, connection string and password
    included. Raised as is, the message is all the user sees.
    """


class DragonflyConnectionError(DragonflyStoreError, ConnectionError):
    """The server could not be reached, refused our credentials, or dropped the connection."""


class DragonflyDataError(DragonflyStoreError):
    """Stored data is not what Feast's layout says it should be (e.g. a key holds no hash)."""


class DragonflyScriptingError(DragonflyStoreError):
    """The server refused the event-time-safe write script."""


class DragonflyServerFullError(DragonflyStoreError):
    """The server refused a write: it reached its memory limit (``maxmemory``) and may not, or
    could not, evict keys to make room. The message names the server and its limit; rows
    written before the refusal are kept, whole."""
