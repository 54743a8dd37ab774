"""Admin tools: ``feast-dragonfly migrate`` and ``stats``, which walk a whole deployment.

``commands`` runs each command for the CLI; ``scan`` reads every master of a deployment,
``migrate`` drives a migration, ``batch`` / ``merge`` / ``verify`` / ``checkpoint`` /
``report`` are its parts, ``stats`` reports keys and memory per view, ``registry_views`` maps
stored fields to views. Built on ``_protocol`` only, so neither command pays for importing
Feast's online-store machinery.
"""
