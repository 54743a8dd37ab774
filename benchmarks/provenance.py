"""What a benchmark run records about itself: when it ran, its command line, the package
versions and the machine — one definition for every benchmark script and the pytest ones."""

from __future__ import annotations

import os
import platform
import shlex
import sys
from datetime import datetime, timezone
from importlib import metadata
from typing import Any

#: The distributions whose versions a report names.
PACKAGES = ("feast", "redis", "hiredis", "feast-dragonfly")


def package_versions(packages: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    """Each distribution's installed version (None: not installed)."""
    versions: dict[str, str | None] = {}
    for dist in packages:
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    return versions


def run_info(script: str) -> dict[str, Any]:
    """The date, command line (relative paths), Python, cores, OS and versions of this run
    of ``script`` (its ``__file__``)."""
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join(
            [os.path.relpath(sys.executable), os.path.relpath(script), *sys.argv[1:]]
        ),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "machine": f"{platform.system()} {platform.release()}",
        "versions": {k: v or "not installed" for k, v in package_versions().items()},
    }
