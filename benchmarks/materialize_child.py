"""One ``feast materialize`` in a fresh process, for the materialization benchmark.

Usage: ``python benchmarks/materialize_child.py REPO_DIR START END [--ray-cpus N]`` — prints
one JSON line: ``{"seconds": ..., "peak_rss_mb": ...}``. Peak RSS is this process's high-water
mark: Linux's ``VmHWM`` (of this program's own address space), not ``getrusage().ru_maxrss``,
which Linux carries over from the parent across fork + exec — a child of a 1.3 GB pytest
process would report at least 1.3 GB whatever it did.

For the Spark / Ray engines (``bench_distributed.py``) the work happens in other processes
too — the Spark JVM and its Python workers, Ray's raylet and workers — all descendants of this
one: ``peak_tree_rss_mb`` is the highest sum of their RSS, sampled every 100 ms.
``--ray-cpus N`` starts a local Ray with N CPUs first (both engines then use it).
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
    if "--ray-cpus" in sys.argv:
        import ray

        cpus = int(sys.argv[sys.argv.index("--ray-cpus") + 1])
        ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    from feast import FeatureStore

    tree = TreePeak()
    store = FeatureStore(repo_path=repo)
    started = time.perf_counter()
    store.materialize(
        start_date=datetime.fromisoformat(start), end_date=datetime.fromisoformat(end)
    )
    seconds = time.perf_counter() - started
    result = {"seconds": seconds, "peak_rss_mb": peak_rss_kb() / 1024}
    result["peak_tree_rss_mb"] = tree.stop()
    print(json.dumps(result))


class TreePeak:
    """The highest RSS sum of this process and its descendants, sampled in a thread."""

    def __init__(self, interval: float = 0.1) -> None:
        import threading

        self.peak = 0
        self._done = threading.Event()
        self._interval = interval
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import psutil

        me = psutil.Process()
        while not self._done.wait(self._interval):
            total = 0
            for process in [me, *me.children(recursive=True)]:
                try:
                    total += process.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)

    def stop(self) -> float:
        self._done.set()
        self._thread.join()
        return self.peak / 2**20


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
