"""Admin tools: ``feast-dragonfly migrate`` and ``stats``, which walk a whole deployment.

``commands`` runs each command for the CLI; ``scan`` reads every master of a deployment,
``migrate`` drives a migration, ``batch`` / ``merge`` / ``records`` / ``verify`` /
``checkpoint`` / ``report`` are its parts, ``convert`` and ``cleanup`` its layout conversions
(``--to-layout``, ``--remove-source``), ``stats`` / ``stats_report`` report keys and memory
per view and layout, ``registry_views`` maps stored fields to views. Built on ``_protocol``;
only a conversion imports the store's record codec (and Feast), so neither command pays for
importing Feast's online-store machinery otherwise.
"""
