"""What a release promises, checked without building one (``make dist`` builds the archives and
checks their listings): one version, stated in pyproject.toml and at the top of CHANGELOG.md;
every Lua script declared as package data, so the wheel carries it; the license."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

REPO = Path(__file__).resolve().parent.parent
SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)$")
RELEASE = re.compile(r"^## \[(?P<version>[^\]]+)\] - (?P<date>\d{4}-\d\d-\d\d)$", re.M)


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def test_the_version_is_semantic_and_heads_the_changelog() -> None:
    version = _pyproject()["project"]["version"]
    assert SEMVER.match(version), version
    text = (REPO / "CHANGELOG.md").read_text()
    releases = [(m["version"], date.fromisoformat(m["date"])) for m in RELEASE.finditer(text)]
    assert releases, "CHANGELOG.md has no '## [x.y.z] - YYYY-MM-DD' release heading"
    assert releases[0][0] == version, "pyproject's version is not the changelog's newest release"
    for (newer, newer_date), (older, older_date) in zip(releases, releases[1:]):
        assert SEMVER.match(newer) and _version_key(newer) > _version_key(older), (newer, older)
        assert newer_date >= older_date, (newer, older)
    # Only Keep a Changelog's section names, under each release.
    sections = set(re.findall(r"^### (.+)$", text, re.M))
    assert sections <= {"Added", "Changed", "Deprecated", "Removed", "Fixed", "Security"}


def test_every_lua_script_is_package_data() -> None:
    """A script in a package without a ``*.lua`` entry would be missing from the wheel."""
    declared = _pyproject()["tool"]["setuptools"]["package-data"]
    package_root = REPO / "feast_dragonfly"
    scripts = sorted(package_root.rglob("*.lua"))
    assert scripts
    for script in scripts:
        package = ".".join(script.parent.relative_to(REPO).parts)
        assert "*.lua" in declared.get(package, []), f"{script}: add {package} = ['*.lua']"
    assert "py.typed" in declared["feast_dragonfly"]


def test_the_license_is_the_one_pyproject_names() -> None:
    project = _pyproject()["project"]
    assert project["license"] == "Apache-2.0"
    assert project["license-files"] == ["LICENSE"]
    text = (REPO / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text
