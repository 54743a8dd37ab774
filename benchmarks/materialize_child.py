"""One ``feast materialize`` in a fresh process, for the materialization benchmark.

Usage: ``python benchmarks/materialize_child.py REPO_DIR START END`` — prints one JSON line:
``{"seconds": ..., "peak_rss_mb": ...}``. Peak RSS is this process's high-water mark
(``getrusage(RUSAGE_SELF).ru_maxrss``), so every run is measured in isolation.
"""

from __future__ import annotations

import json
import resource
import sys
import time
import warnings
from datetime import datetime


def main() -> None:
    warnings.simplefilter("ignore")
    repo, start, end = sys.argv[1], sys.argv[2], sys.argv[3]
    from feast import FeatureStore

    store = FeatureStore(repo_path=repo)
    started = time.perf_counter()
    store.materialize(
        start_date=datetime.fromisoformat(start), end_date=datetime.fromisoformat(end)
    )
    seconds = time.perf_counter() - started
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"seconds": seconds, "peak_rss_mb": peak_kb / 1024}))


if __name__ == "__main__":
    main()
