"""A Spark standalone cluster (one master, one worker) on loopback, started from the installed pyspark.

For trying the cluster path on one machine (the tests and `bench/cluster.py` use it): point the lakehouse at it
with `LAKEHOUSE_SPARK_MASTER=spark://127.0.0.1:<port>`. A real cluster is started by its own tooling.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def free_port() -> int:
    """A TCP port on loopback nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spark_home() -> Path:
    import pyspark

    return Path(pyspark.__file__).parent


def _alive_workers(ui_port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{ui_port}/json/", timeout=2) as response:
            return int(json.load(response).get("aliveworkers", 0))
    except OSError:
        return 0


@contextmanager
def standalone_cluster(work_dir: Path, cores: int = 2, memory: str = "3g", timeout: float = 90) -> Iterator[str]:
    """Start a master and a worker; yields the master URL; stops both on exit."""
    work_dir.mkdir(parents=True, exist_ok=True)
    home = spark_home()
    port, ui_port, worker_ui_port = free_port(), free_port(), free_port()
    env = {**os.environ, "SPARK_HOME": str(home), "PYSPARK_PYTHON": sys.executable,
           "SPARK_LOG_DIR": str(work_dir / "logs"), "SPARK_WORKER_DIR": str(work_dir / "work")}
    spark_class = [str(home / "bin" / "spark-class")]
    master_url = f"spark://127.0.0.1:{port}"
    procs = []
    try:
        with (work_dir / "master.log").open("wb") as log:
            procs.append(subprocess.Popen(
                spark_class + ["org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port),
                               "--webui-port", str(ui_port)], env=env, stdout=log, stderr=subprocess.STDOUT))
        with (work_dir / "worker.log").open("wb") as log:
            procs.append(subprocess.Popen(
                spark_class + ["org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1", "--cores", str(cores),
                               "--memory", memory, "--webui-port", str(worker_ui_port), master_url],
                env=env, stdout=log, stderr=subprocess.STDOUT))
        deadline = time.monotonic() + timeout
        while _alive_workers(ui_port) < 1:
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise RuntimeError(f"the standalone cluster did not come up; see {work_dir}/master.log, worker.log")
            time.sleep(0.5)
        yield master_url
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
