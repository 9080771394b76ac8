"""Run a command; report its wall time and the peak memory of its whole process tree (JVMs included).

`/usr/bin/time` reports one process's peak, which misses Spark's JVM; this samples /proc every 100 ms and sums
the resident memory of the command and all its descendants.

    python bench/measure.py -- bin/demo
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def tree_rss_bytes(root: int) -> int:
    tree, total, stack = _children(), 0, [root]
    page = os.sysconf("SC_PAGE_SIZE")
    while stack:
        pid = stack.pop()
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * page
        except (OSError, IndexError, ValueError):
            pass
        stack.extend(tree.get(pid, []))
    return total


def measure(cmd: list[str], interval: float = 0.1, **popen) -> dict:
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, **popen)
    peak = 0
    done = threading.Event()

    def sample():
        nonlocal peak
        while not done.is_set():
            peak = max(peak, tree_rss_bytes(proc.pid))
            done.wait(interval)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    code = proc.wait()
    done.set()
    sampler.join()
    return {"cmd": " ".join(cmd), "exit": code, "seconds": round(time.perf_counter() - started, 2),
            "peak_rss_mb": round(peak / 2**20, 1)}


if __name__ == "__main__":
    args = sys.argv[1:]
    if args and args[0] == "--":
        args = args[1:]
    result = measure(args)
    print(json.dumps(result), file=sys.stderr)
    sys.exit(result["exit"])
