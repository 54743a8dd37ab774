"""One ``feast materialize`` in a fresh process, for the materialization benchmark.

Usage: ``python benchmarks/materialize_child.py REPO_DIR START END`` — prints one JSON line:
``{"seconds": ..., "peak_rss_mb": ...}``. Peak RSS is this process's high-water mark: Linux's
``VmHWM`` (of this program's own address space), not ``getrusage().ru_maxrss``, which Linux
carries over from the parent across fork + exec — a child of a 1.3 GB pytest process would
report at least 1.3 GB whatever it did.
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
    print(json.dumps({"seconds": seconds, "peak_rss_mb": peak_rss_kb() / 1024}))


def peak_rss_kb() -> int:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


if __name__ == "__main__":
    main()
