"""The online store: Feast's hooks, the data layout, planned reads and writes per deployment.

``online_store`` (Feast's ``OnlineStore`` for ``feature_store.yaml``) plans and delegates;
``backends`` / ``cluster`` carry the round trips of each deployment kind; ``layout`` holds
Feast's byte layout; ``read`` / ``write`` / ``wide`` plan and send; the response modules
build Feast's answer from the stored bytes. Built on ``_protocol``; the engines and the
server build on it.
"""
