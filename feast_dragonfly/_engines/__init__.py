"""Materialization engines: which row per entity is stored, Arrow columns to stored bytes.

``local`` is the single-process engine (``DragonflyMaterializationEngine``), ``spark`` /
``ray`` Feast's distributed engines with our write path per partition
(``distributed_write``); ``plan`` is which views they write and how a view's window is read,
``latest`` the exactness rule and ``arrow`` the column-wise conversion they share. Built on
``_store``.
"""
