"""The commands a user types, run as a user runs them: `lakehouse ...` and `dagster asset materialize`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


def run(args: list[str], env: dict, timeout: int = 300) -> str:
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout,
                          cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, f"{args} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def test_generate_materialize_query_from_the_command_line(tmp_path):
    env = {**os.environ, "LAKEHOUSE_HOME": str(tmp_path / "lh"), "DAGSTER_HOME": str(tmp_path / "lh" / "dagster")}
    run([str(BIN / "lakehouse"), "init"], env)
    assert (tmp_path / "lh" / "dagster" / "dagster.yaml").exists()
    out = run([str(BIN / "lakehouse"), "generate", "--posts", "300", "--comments", "600", "--files", "2",
               "--repeat-share", "0"], env)
    assert "300 post rows" in out
    materialize = [str(BIN / "dagster"), "asset", "materialize", "-m", "lakehouse_assets.definitions", "--select", "*"]
    run(materialize, env)
    query = [str(BIN / "lakehouse"), "query", "SELECT sum(posts) AS p, count(DISTINCT subreddit_id) AS s FROM gold.subreddit_daily"]
    assert "300" in run(query, env)
    tables_before = run([str(BIN / "lakehouse"), "tables"], env)
    assert "silver.posts" in tables_before and "gold.post_engagement" in tables_before
    # Again: nothing new landed, so nothing changes (same row counts, same snapshots).
    run(materialize, env)
    assert run([str(BIN / "lakehouse"), "tables"], env) == tables_before
