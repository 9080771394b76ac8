"""Start the real Dagster daemon and webserver on a temporary DAGSTER_HOME (used by tests and bench/latency.py)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DagsterServices:
    """`dagster-daemon run` and `dagster-webserver` for one lakehouse home, stopped on exit."""

    def __init__(self, home: Path, sensor_interval: int = 2, webserver: bool = True, engine: bool = True):
        self.home = Path(home)
        self.port = free_port()
        self.env = {
            **os.environ,
            "LAKEHOUSE_HOME": str(self.home),
            "DAGSTER_HOME": str(self.home / "dagster"),
            "LAKEHOUSE_SENSOR_INTERVAL": str(sensor_interval),
            # As deployed: the sensor starts the warm engine and runs attach to it (stopped on exit).
            "LAKEHOUSE_ENGINE": "auto" if engine else "off",
            "LAKEHOUSE_LANDING_WATCH": "on",  # as deployed: the sensor learns of files from notifications
        }
        self.webserver = webserver
        self.procs: list[subprocess.Popen] = []

    def __enter__(self) -> "DagsterServices":
        subprocess.run([str(BIN / "lakehouse"), "init"], env=self.env, check=True, capture_output=True)
        # Create the instance's SQLite storage once, before two processes race to create it (a race that
        # leaves alembic with two heads).
        subprocess.run([str(BIN / "dagster"), "instance", "migrate"], env=self.env, check=True, capture_output=True)
        logs = self.home / "logs"
        logs.mkdir(exist_ok=True)
        workspace = ["-w", str(REPO / "workspace.yaml")]
        commands = [[str(BIN / "dagster-daemon"), "run", *workspace]]
        if self.webserver:
            commands.append([str(BIN / "dagster-webserver"), *workspace, "-h", "127.0.0.1", "-p", str(self.port)])
        for cmd in commands:
            out = (logs / f"{Path(cmd[0]).name}.log").open("w")
            self.procs.append(subprocess.Popen(cmd, env=self.env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                               start_new_session=True))
        if self.webserver:
            self.wait(lambda: self._up(), timeout=120, what="webserver")
        return self

    def __exit__(self, *exc) -> None:
        for proc in self.procs:
            try:
                os.killpg(proc.pid, 15)
            except ProcessLookupError:
                pass
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
        # After the daemon: its sensor starts a missing engine again, and did so between an earlier stop and exit.
        subprocess.run([str(BIN / "lakehouse"), "engine", "stop"], env=self.env, capture_output=True)

    def _up(self) -> bool:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{self.port}/server_info", timeout=2)
            return True
        except OSError:
            return False

    def graphql(self, query: str, variables: dict | None = None) -> dict:
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}/graphql", data=body,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.load(resp)["data"]

    def wait(self, condition, timeout: float, what: str, interval: float = 0.5):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for proc in self.procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode}; see {self.home / 'logs'}")
            value = condition()
            if value:
                return value
            time.sleep(interval)
        raise TimeoutError(f"waited {timeout}s for {what}; logs in {self.home / 'logs'}")
