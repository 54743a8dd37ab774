"""The Spark / Ray engines' config: Feast resolves it by type, Feast's options keep working,
unknown keys are refused, and ``import feast_dragonfly`` needs neither pyspark nor ray."""

from __future__ import annotations

import subprocess
import sys

import pytest
from feast.repo_config import get_batch_engine_config_from_type

import feast_dragonfly
from feast_dragonfly import DragonflyConfigError

#: Each engine's extra (its config module imports it): without it, its tests here skip.
EXTRAS = {"DragonflySparkEngine": "pyspark", "DragonflyRayEngine": "ray"}


def test_importing_the_package_imports_neither_pyspark_nor_ray():
    code = (
        "import sys, feast_dragonfly; "
        "print(sorted(m for m in ('pyspark', 'ray') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("engine", "feasts_options"),
    [
        ("DragonflySparkEngine", {"spark_conf": {"spark.master": "local[1]"}, "partitions": 4}),
        ("DragonflyRayEngine", {"ray_address": None, "max_workers": 2, "write_concurrency": 3}),
    ],
)
def test_feast_resolves_the_config_by_type_with_feasts_options(engine, feasts_options):
    pytest.importorskip(EXTRAS[engine])
    config_class = get_batch_engine_config_from_type(f"feast_dragonfly.{engine}")
    assert config_class is getattr(feast_dragonfly, f"{engine}Config")
    config = config_class(
        type=f"feast_dragonfly.{engine}", worker_write_concurrency=4, **feasts_options
    )
    assert config.worker_write_concurrency == 4
    for name, value in feasts_options.items():
        assert getattr(config, name) == value


@pytest.mark.parametrize("engine", ["DragonflySparkEngine", "DragonflyRayEngine"])
def test_unknown_settings_are_refused_by_name(engine):
    pytest.importorskip(EXTRAS[engine])
    with pytest.raises(DragonflyConfigError, match="worker_write_concurency"):
        getattr(feast_dragonfly, engine)(
            repo_config=None,
            offline_store=None,
            online_store=None,
            type=f"feast_dragonfly.{engine}",
            worker_write_concurency=2,
        )
