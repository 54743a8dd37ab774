"""The package's shape: the rules a newcomer relies on to know where a change goes.

The import contracts themselves run in ``make contracts`` (lint-imports); these check what
they cannot: the document drawn from them, module sizes, the top level, a test file for every
protocol and store module, and the public paths older configs and scripts use.
"""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest
from architecture_kit import PACKAGE, REPO, documented, render

MAX_MODULE_LINES = 500
#: Packages whose every module has a test file of its own, and the tests folder mirroring each.
MIRRORED_TESTS = {"_protocol": "protocol", "_store": "store"}
#: The public entry points: the package, its errors, the CLI, and older import paths kept
#: working for feature_store.yaml files and scripts written against them.
TOP_LEVEL = {
    "__init__.py",
    "errors.py",
    "cli.py",
    "local_server.py",
    "online_store.py",
    "engine.py",
    "spark_engine.py",
    "ray_engine.py",
}


def test_architecture_doc_is_drawn_from_the_contracts_and_modules() -> None:
    assert documented() == render(), (
        "docs/architecture.md is out of date: run `make architecture-doc`"
    )


def test_no_module_over_the_size_limit() -> None:
    sizes = {
        str(path.relative_to(REPO)): len(path.read_text().splitlines())
        for path in PACKAGE.rglob("*.py")
    }
    assert {name: n for name, n in sizes.items() if n > MAX_MODULE_LINES} == {}


def test_the_top_level_holds_only_public_entry_points() -> None:
    assert {p.name for p in PACKAGE.glob("*.py")} == TOP_LEVEL
    assert len(TOP_LEVEL) <= 10


def test_every_subpackage_says_what_it_is_for() -> None:
    for package in (p for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"):
        init = package / "__init__.py"
        assert init.exists(), f"{package.name}/ is not a package"
        assert init.read_text().lstrip().startswith('"""'), f"{package.name}/__init__.py"


def _missing_test_files(package: str, folder: str) -> list[str]:
    """Modules of ``feast_dragonfly/<package>`` (subpackages too) without a test file of their
    own: ``test_<module>.py`` or ``test_<module>_<aspect>.py`` in the folder of
    ``tests/<folder>`` that mirrors the module's subpackage."""
    source, tests = PACKAGE / package, REPO / "tests" / folder
    taken = {path.name for path in (REPO / "tests").rglob("test_*.py")}
    missing = []
    for module in sorted(source.rglob("*.py")):
        if module.name == "__init__.py":
            continue
        relative = module.relative_to(source)
        where = tests / relative.parent
        name = f"test_{module.stem}"
        if (where / f"{name}.py").is_file() or any(where.glob(f"{name}_*.py")):
            continue
        # pytest needs unique basenames across tests/ (its folders are no packages).
        expected = f"{name}.py" if f"{name}.py" not in taken else f"{name}_<aspect>.py"
        missing.append(
            f"feast_dragonfly/{package}/{relative}: add {where.relative_to(REPO)}/{expected}"
        )
    return missing


def test_tests_mirror_the_package() -> None:
    """One test folder per concern; every protocol and store module has a test of its own."""
    tests = REPO / "tests"
    for package in ("_protocol", "_store", "_engines", "_serve", "_admin", "testing"):
        assert (tests / package.lstrip("_")).is_dir(), f"tests/{package.lstrip('_')}/ missing"
    missing = [
        line
        for package, folder in MIRRORED_TESTS.items()
        for line in _missing_test_files(package, folder)
    ]
    assert not missing, (
        "modules without a test file of their own (test_<module>.py or "
        "test_<module>_<aspect>.py, in the tests folder mirroring the module's package):\n  "
        + "\n  ".join(missing)
    )


@pytest.mark.parametrize(
    ("path", "names"),
    [
        ("feast_dragonfly", ["DragonflyOnlineStore", "DragonflyOnlineStoreConfig", "ViewWriter"]),
        ("feast_dragonfly.online_store", ["DragonflyOnlineStore", "DragonflyOnlineStoreConfig"]),
        (
            "feast_dragonfly.engine",
            ["DragonflyMaterializationEngine", "DragonflyMaterializationEngineConfig"],
        ),
        ("feast_dragonfly.errors", ["DragonflyStoreError", "DragonflyConfigError"]),
        ("feast_dragonfly.local_server", ["start_server", "LocalServer", "find_server_binary"]),
        ("feast_dragonfly.testing", ["start_server", "LocalServer", "find_server_binary"]),
    ],
)
def test_public_paths_keep_working(path: str, names: list[str]) -> None:
    module = importlib.import_module(path)
    for name in names:
        assert getattr(module, name) is not None, f"{path}.{name}"


def test_the_testing_package_and_local_server_export_the_same_names() -> None:
    """Both list the public API literally (linters need a literal ``__all__``): kept in step."""
    testing = importlib.import_module("feast_dragonfly.testing")
    local_server = importlib.import_module("feast_dragonfly.testing.local_server")
    assert sorted(testing.__all__) == sorted(local_server.__all__)
    assert all(getattr(testing, name) is getattr(local_server, name) for name in testing.__all__)


def test_feast_loads_the_store_by_its_older_module_path() -> None:
    """Feast finds the config class beside the store class, by name, in the named module."""
    from feast.repo_config import get_online_config_from_type

    config_class = get_online_config_from_type("feast_dragonfly.online_store.DragonflyOnlineStore")
    assert config_class.__name__ == "DragonflyOnlineStoreConfig"
    assert config_class is importlib.import_module("feast_dragonfly").DragonflyOnlineStoreConfig


def test_lua_scripts_ship_in_their_packages() -> None:
    """The scripts load from package data (a wheel without them fails here, not in production)."""
    from feast_dragonfly._protocol import script

    assert "redis.call" in script.SOURCE
    assert script.script_source("migrate_merge.lua", package="feast_dragonfly._admin")


def test_admin_commands_start_without_importing_feast() -> None:
    code = (
        "import sys, feast_dragonfly.cli, feast_dragonfly._admin.migrate, "
        "feast_dragonfly._admin.stats; "
        "print(sorted(m for m in sys.modules if m == 'feast' or m.startswith('feast.')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    )
    assert out.stdout.strip() == "[]"


def test_no_import_cycle_between_modules() -> None:
    """Module-level imports only (``TYPE_CHECKING`` ones never run); a cycle means two
    modules share a job that belongs in one, or in a third below both."""
    import grimp

    graph = grimp.build_graph("feast_dragonfly", exclude_type_checking_imports=True)
    cycles = {
        tuple(sorted((module, imported)))
        for module in graph.modules
        for imported in graph.find_modules_directly_imported_by(module)
        if imported.startswith("feast_dragonfly")
        and graph.chain_exists(importer=imported, imported=module)
    }
    assert cycles == set()
