"""Where a routine run's time goes, per lakehouse function: one new file landed in a loaded lakehouse, the sensor's
selection materialised under py-spy, the main thread's samples summed per function (inclusive, waits on the JVM
included, which is where most of it is).

    pip install py-spy   # a profiler, not a dependency of the project
    python bench/profile_run.py --home /tmp/bench-incremental-3000000 --entity post [--rows 10000]

The lakehouse at --home is one bench/incremental.py built (it must exist). Prints the top functions and writes the
raw stacks and the summary next to them under --out.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from lakehouse.generator import generate  # noqa: E402

BIN = Path(sys.executable).parent
RATE = 50  # samples per second
OURS = re.compile(r"(.*/)?(lakehouse|lakehouse_assets|resources|sensors)/[^/]+\.py$")
FRAME = re.compile(r"(.+?) \((.+?):\d+\)")


def summarise(raw: Path) -> tuple[float, list[tuple[str, float]]]:
    """Seconds of the main thread (the run's steps), and each of our functions' inclusive seconds."""
    inclusive: collections.Counter = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack.startswith("<module> (dagster:"):  # other threads: Py4J, Dagster's event writers
            continue
        n = int(count)
        total += n
        seen = set()
        for frame in stack.split(";"):
            m = FRAME.match(frame)
            if m and OURS.match(m[2]):
                key = f"{m[2].split(str(REPO) + '/')[-1]}:{m[1]}"
                if key not in seen:
                    seen.add(key)
                    inclusive[key] += n
    return total / RATE, [(k, v / RATE) for k, v in inclusive.most_common()]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--home", required=True)
    parser.add_argument("--entity", choices=("post", "comment"), default="post")
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--py-spy", default=shutil.which("py-spy") or "py-spy")
    parser.add_argument("--out", default="/tmp/lakehouse-profile")
    parser.add_argument("--top", type=int, default=40)
    args = parser.parse_args()
    home, out = Path(args.home), Path(args.out)
    if not (home / "catalog.db").exists():
        raise SystemExit(f"no lakehouse at {home}: build one with bench/incremental.py first")
    out.mkdir(parents=True, exist_ok=True)
    tag = f"{args.entity}-{int(time.time())}"
    new = generate(out / tag, posts=args.rows if args.entity == "post" else 0,
                   comments=args.rows if args.entity == "comment" else 0, files=1, seed=int(time.time()) % 10_000,
                   id_offset=900_000_000 + int(time.time()) % 10_000 * 10_000, prefix=f"profile{tag}",
                   repeat_share=0)
    source = (new.posts if args.entity == "post" else new.comments)[0]
    shutil.copy(source, home / "landing" / "input" / args.entity / source.name)
    plural = f"{args.entity}s"
    env = {**os.environ, "LAKEHOUSE_HOME": str(home), "DAGSTER_HOME": str(home / "dagster"), "PYTHONPATH": str(REPO)}
    raw = out / f"{tag}.txt"
    command = [args.py_spy, "record", "--idle", "-r", str(RATE), "--format", "raw", "-o", str(raw), "--",
               str(BIN / "dagster"), "asset", "materialize", "-m", "lakehouse_assets.definitions",
               "--select", f"bronze/{plural}*"]
    with open(out / f"{tag}.log", "w") as log:
        subprocess.run(command, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, check=True)
    total, top = summarise(raw)
    lines = [f"main thread: {total:.1f} s (sampled at {RATE} Hz; profiling slows the run a little)"]
    lines += [f"{seconds:7.2f}  {name}" for name, seconds in top[: args.top]]
    (out / f"{tag}.summary.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
