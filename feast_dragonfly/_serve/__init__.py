"""``feast-dragonfly serve``: the HTTP server over Feast's ``FeatureStore`` and our store.

``app`` is the ASGI application, ``response_json`` Feast's JSON for a response, ``env`` the
settings passed to worker processes. Built on ``_store``.
"""
