"""``feast materialize`` with our engine into a server out of memory, in both layouts.

The run stops with one ``DragonflyServerFullError`` naming the server and its limit (never the
password); the rows written before read back whole; once the limit is raised, the same
materialization again gives exactly the source's newest row of every entity. The ``feast``
command line shows the same one message. How the servers differ: ``tests/full_server_kit.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
from engine_kit import T0, Repo, window
from feast import Entity, Field, ValueType
from feast.types import Float64, Int64, String
from full_server_kit import SECRET, capped, limit_named

from feast_dragonfly.errors import DragonflyServerFullError

pytestmark = [pytest.mark.server, pytest.mark.valkey]

#: Entities; each has an older row the newer one must win over.
N = 3_000
BLOB = 2_000
DRIVER = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
SCHEMA = [
    Field(name="a", dtype=Int64),
    Field(name="x", dtype=Float64),
    Field(name="blob", dtype=String),
]
FEATURES = [f"full:{field.name}" for field in SCHEMA]


def source_frame() -> pd.DataFrame:
    """An older and a newer row per entity, the older one listed last."""
    ids = np.arange(N, dtype="int64")

    def rows(age: int, tag: str) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "driver_id": ids,
                "event_timestamp": [T0 + timedelta(seconds=int(i) - age) for i in ids],
                "a": ids * 10 + age,
                "x": ids / 4 + age,
                "blob": [f"{tag}:{i}:".ljust(BLOB, "x") for i in ids],
            }
        )

    return pd.concat([rows(0, "new"), rows(3600, "old")], ignore_index=True)


def expected(entity: int) -> dict:
    return {"a": entity * 10, "x": entity / 4, "blob": f"new:{entity}:".ljust(BLOB, "x")}


def online(store) -> list:
    """Each entity's features, or None when none is stored."""
    found = store.get_online_features(
        features=FEATURES, entity_rows=[{"driver_id": i} for i in range(N)]
    ).to_dict()
    out = []
    for i in range(N):
        values = {name: found[name][i] for name in ("a", "x", "blob")}
        out.append(None if all(v is None for v in values.values()) else values)
    return out


def repo_for(tmp_path, small, layout: str) -> Repo:
    return Repo(
        tmp_path,
        small.connection_string,
        source_frame(),
        name="full",
        entities=[DRIVER],
        schema=SCHEMA,
        created=None,
    )


@pytest.mark.parametrize("layout", ["feast", "compact"])
def test_materializing_into_a_full_server_stops_once_then_a_rerun_completes(
    small, small_client, tmp_path, layout
):
    repo = repo_for(tmp_path, small, layout)
    store = repo.store("ours", store_options={"layout": layout})
    with capped(small_client):
        with pytest.raises(DragonflyServerFullError) as caught:
            window(store)
        message = str(caught.value)
        assert limit_named(message, small), message
        assert caught.value.__suppress_context__
        found = online(store)
        assert [i for i, got in enumerate(found) if got not in (None, expected(i))] == []
        assert None in found

    window(store)  # the same materialization, the limit raised
    assert online(store) == [expected(i) for i in range(N)]


def test_the_feast_command_line_shows_the_one_message(small, small_client, tmp_path):
    repo = repo_for(tmp_path, small, "feast")
    repo.store("ours")  # writes feature_store.yaml with our engine, and applies
    (tmp_path / "features.py").write_text("")  # nothing else to apply
    with capped(small_client, limit=1):  # not one row fits
        done = subprocess.run(
            [sys.executable, "-m", "feast.cli.cli", "materialize", "2024-02-28", "2024-03-10"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
            timeout=120,
        )
    output = done.stdout + done.stderr
    assert done.returncode != 0, output[-3000:]
    assert SECRET not in output
    [line] = [line for line in output.splitlines() if "is out of memory" in line]
    assert line.startswith("feast_dragonfly.errors.DragonflyServerFullError: the server at ")
    assert limit_named(line, small), line
    # Feast's command line prints the traceback of any error; ours is the last line, with no
    # redis-py error chained before it.
    assert "redis.exceptions" not in output and "During handling" not in output
