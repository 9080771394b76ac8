"""The warm engine: one local Spark driver that outlives runs, so a sensor run does not start a JVM.

A run that starts its own Spark session pays ~20 s before its first row (JVM start, class loading, catalog, cold
JIT); the work of a 10,000-row file is a few seconds. The engine is a small Python process owning one Spark driver
JVM (local master only). A run attaches to that JVM's Py4J gateway (stock pyspark: FACTS.md) and works in a
session of its own (`newSession()`: its own SQL conf, temp views and catalog instances), so runs do not see each
other's state. Spark Connect would be the library way; its server jar is not installable here.

Files under `$LAKEHOUSE_HOME/engine/`:
- `connection.json`: pid, gateway port and secret (mode 600), the Spark settings' fingerprint. Written once the
  driver answers; removed before it stops, so a client never attaches to a JVM going away.
- `leases/<pid>.json`: one per attached run process. A lease is written before the connection is read, so the
  engine never recycles under a client. A lease whose process is gone (a crashed or killed run) has its Spark
  jobs cancelled and is removed; the engine itself goes on. A run that releases renames its lease
  `<pid>-<random>.ended`: the engine counts runs by their leases, live or ended, so none is missed between polls.
- `engine.log`: the engine's own output.
Each names its process as `proc:<host>:<pid>:<start>` (lakehouse/writers.py): a pid the system has since given to
another process is not taken for the engine or a client, and is never signalled.

Bounded memory: objects a client leaves in the JVM (Py4J bindings of a killed run, its session) are only freed
with the JVM. The engine recycles its driver when no client is attached and it has served
`LAKEHOUSE_ENGINE_MAX_RUNS` runs or its heap stays above `HEAP_RECYCLE_SHARE` after a GC (the old driver's JVM ends
before the next starts), and it exits after `LAKEHOUSE_ENGINE_IDLE_SECONDS` without a run. The landing-zone
sensor starts it when it is absent (it is the supervisor: a dead engine is started again, at most once a minute);
`lakehouse engine start|stop|status` does it by hand. Without an engine (LAKEHOUSE_ENGINE=off, a cluster master,
AWS, a mismatch of settings) a run starts its own session as before.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from lakehouse.errors import UserError
from lakehouse.settings import CATALOG_NAME, Environment, LakehouseSettings
from lakehouse.writers import process_alive, process_start, process_writer

log = logging.getLogger(__name__)

HEAP_RECYCLE_SHARE = 0.6  # used heap after a full GC, as a share of the maximum, that asks for a recycle
START_TIMEOUT_SECONDS = 180
RESTART_BACKOFF_SECONDS = 60  # between two starts by the sensor (an engine that cannot start is not retried hot)
POLL_SECONDS = 1.0


class EngineError(UserError):
    """The engine could not be started or reached."""


def wanted(settings: LakehouseSettings) -> bool:
    """The engine serves the embedded default only: a local master in this machine's run processes."""
    return (settings.engine != "off" and settings.environment is Environment.LOCAL
            and settings.spark_master.startswith("local") and settings.compute == "in_process")


def engine_dir(settings: LakehouseSettings) -> Path:
    return settings.home_abs / "engine"


# How the driver JVM runs, not what it computes: the engine sizes its own (engine_conf), and a run's choice of
# heap or JIT for a driver of its own does not keep it from attaching.
DRIVER_ONLY = ("spark.driver.memory", "spark.driver.extraJavaOptions")
# The engine gives memory back between runs: after this long without a collection, G1 runs a concurrent cycle
# and uncommits the free heap (JEP 346), so an idle engine does not sit at the peak of its last run.
PERIODIC_GC_OPTION = "-XX:+UseG1GC -XX:G1PeriodicGCInterval=30000"


def fingerprint(conf: dict[str, str]) -> str:
    """What a run's Spark settings must match to use the engine: everything that can change a result."""
    relevant = {k: v for k, v in conf.items() if k not in DRIVER_ONLY}
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]


def engine_conf(settings: LakehouseSettings) -> dict[str, str]:
    """The engine driver's Spark settings: a run's, with the engine's heap and its periodic collection."""
    from lakehouse.spark import THROUGHPUT_GC_OPTION, spark_conf

    conf = spark_conf(settings)
    # G1 instead of a run's throughput collector (spark.THROUGHPUT_GC_OPTION): a long-lived driver that idles.
    options = " ".join(o for o in conf.get("spark.driver.extraJavaOptions", "").split() if o != THROUGHPUT_GC_OPTION)
    return conf | {"spark.driver.memory": settings.engine_memory,
                   "spark.driver.extraJavaOptions": f"{options} {PERIODIC_GC_OPTION}".strip()}


def _pid_alive(pid: int, process: str | None = None) -> bool:
    """Whether the process runs (lakehouse/writers.py: /proc, zombies count as gone); given its
    `proc:<host>:<pid>:<start>` name, also that the pid was not reused by another process since."""
    if process:
        return process_alive(process) is True
    return process_start(pid) is not None


def _read_pid_file(path: Path) -> tuple[int, str | None] | None:
    """engine.pid: the engine process's name (`proc:<host>:<pid>:<start>`; a bare pid from older versions)."""
    try:
        text = path.read_text().strip()
        return (int(text), None) if text.isdigit() else (int(text.split(":")[2]), text)
    except (OSError, ValueError, IndexError):
        return None


@dataclass(frozen=True)
class Connection:
    pid: int
    port: int
    secret: str
    fingerprint: str
    started_at: float
    generation: int
    process: str = ""  # proc:<host>:<pid>:<start>: a pid reused by another process is not the engine

    @classmethod
    def read(cls, settings: LakehouseSettings) -> "Connection | None":
        """The running engine's connection, or None (absent, or its process is gone)."""
        path = engine_dir(settings) / "connection.json"
        try:
            conn = cls(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            return None
        return conn if _pid_alive(conn.pid, conn.process) else None

    def write(self, settings: LakehouseSettings) -> None:
        path = engine_dir(settings) / "connection.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(vars(self)))
        tmp.chmod(0o600)  # the secret lets anyone holding it run code in the driver
        tmp.replace(path)


def _leases(settings: LakehouseSettings) -> Path:
    """A run's lease, `<pid>.json`, while it is attached; renamed `<pid>-<random>.ended` when it releases."""
    return engine_dir(settings) / "leases"


ENDED = ".ended"


# --- the client side: a run process ------------------------------------------------------------------------------

@dataclass
class Attached:
    """A run's session on the engine; `release()` when the run ends (never `stop()`: the context is shared)."""

    session: object
    settings: LakehouseSettings
    group: str
    connection: Connection

    def release(self) -> None:
        with contextlib.suppress(Exception):  # the engine may be gone already; the lease goes either way
            jsession = self.session._jsparkSession
            self.session.sparkContext.cancelJobGroup(self.group)
            # Each session opens its own catalog (a SQLite connection): close it rather than leave it to the JVM.
            catalog = jsession.sessionState().catalogManager().catalog(CATALOG_NAME)
            catalog.icebergCatalog().close()
            self.session.catalog.clearCache()
        with contextlib.suppress(Exception):
            import gc

            gc.collect()  # lets Py4J tell the JVM which of this run's objects it may free
        # Ended, not deleted: the engine counts a run by its ended lease as well, so a session shorter than the
        # engine's poll still counts toward LAKEHOUSE_ENGINE_MAX_RUNS.
        lease = _leases(self.settings) / f"{os.getpid()}.json"
        with contextlib.suppress(OSError):
            lease.replace(lease.with_name(f"{os.getpid()}-{uuid.uuid4().hex[:8]}{ENDED}"))


def attach(settings: LakehouseSettings, conf: dict[str, str], group: str) -> Attached | None:
    """A new session on the running engine, or None when there is no engine this run may use (then the caller
    starts its own session). Never raises for an absent or departing engine."""
    if not wanted(settings):
        return None
    leases = _leases(settings)
    lease = leases / f"{os.getpid()}.json"
    try:
        leases.mkdir(parents=True, exist_ok=True)
        lease.write_text(json.dumps({"pid": os.getpid(), "process": process_writer(), "group": group,
                                     "at": time.time()}))
    except OSError:
        return None
    conn = Connection.read(settings)  # read after the lease exists: the engine will not recycle under us now
    starting = _starting_pid(settings) if conn is None else None
    if starting is not None:  # being started (by the sensor, for this very run): waiting beats a second JVM
        with contextlib.suppress(EngineError):
            conn = _await(settings, starting)
    if conn is None or conn.fingerprint != fingerprint(conf):
        if conn is not None:
            log.warning("the warm engine runs with other Spark settings; this run starts its own session "
                        "(`lakehouse engine stop` and let the sensor start it again)")
        lease.unlink(missing_ok=True)
        return None
    try:
        session = _new_session(conn, conf)
    except Exception as error:  # an engine that died between the read and the attach: fall back, say why
        log.warning("could not attach to the warm engine (pid %s): %s; this run starts its own session",
                    conn.pid, error)
        lease.unlink(missing_ok=True)
        return None
    session.sparkContext.setJobGroup(group, f"lakehouse run {group}", interruptOnCancel=True)
    return Attached(session, settings, group, conn)


def _new_session(conn: Connection, conf: dict[str, str]):
    from pyspark import SparkContext
    from pyspark.java_gateway import launch_gateway
    from pyspark.sql import SparkSession

    sc = SparkContext._active_spark_context
    if sc is not None:
        # pyspark holds one JVM per process: reuse it only when it is this engine's (attached before).
        if sc._gateway.gateway_parameters.port != conn.port:
            raise EngineError("this process already runs a Spark driver of its own")
    else:
        os.environ["PYSPARK_GATEWAY_PORT"] = str(conn.port)
        os.environ["PYSPARK_GATEWAY_SECRET"] = conn.secret
        try:
            gateway = launch_gateway()
        finally:
            os.environ.pop("PYSPARK_GATEWAY_PORT", None)
            os.environ.pop("PYSPARK_GATEWAY_SECRET", None)
        jvm = gateway.jvm
        jsc = jvm.org.apache.spark.api.java.JavaSparkContext.fromSparkContext(
            jvm.org.apache.spark.SparkContext.getOrCreate())
        sc = SparkContext(gateway=gateway, jsc=jsc)
    jvm = sc._jvm
    jsession = jvm.org.apache.spark.sql.SparkSession.builder().getOrCreate().newSession()
    # Session-level settings of this run (SQL conf) apply to its own session only; JVM-wide ones are the engine's.
    for key, value in conf.items():
        if key.startswith("spark.sql.") and not key.startswith("spark.sql.catalog.") \
                and key not in ("spark.sql.extensions", "spark.sql.warehouse.dir"):
            jsession.conf().set(key, value)
    return SparkSession(sc, jsparkSession=jsession)


# --- starting, stopping, asking ---------------------------------------------------------------------------------

def status(settings: LakehouseSettings) -> dict:
    conn = Connection.read(settings)
    leases = []
    if _leases(settings).exists():
        for path in _leases(settings).glob("*.json"):
            with contextlib.suppress(OSError, ValueError):
                leases.append(json.loads(path.read_text()))
    if conn is None:
        return {"running": False, "wanted": wanted(settings), "attached": []}
    return {"running": True, "pid": conn.pid, "port": conn.port, "generation": conn.generation,
            "up_seconds": round(time.time() - conn.started_at), "attached": [l["group"] for l in leases]}


def start(settings: LakehouseSettings, wait: bool = True) -> Connection | None:
    """Start the engine unless one runs (one starter at a time); returns its connection once it answers."""
    folder = engine_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "start.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            return None  # another process is starting it
        conn = Connection.read(settings)
        if conn is not None:
            return conn
        pid_file = folder / "engine.pid"
        starting = _starting_pid(settings)
        if starting is not None:  # started, not answering yet
            return _await(settings, starting) if wait else None
        attempt = folder / "last-start"
        if not wait and attempt.exists() and time.time() - attempt.stat().st_mtime < RESTART_BACKOFF_SECONDS:
            return None  # the supervisor does not restart an engine that keeps failing more than once a minute
        attempt.touch()
        with open(folder / "engine.log", "ab") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "lakehouse.engine"], stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                start_new_session=True,  # not in the sensor's or the shell's process group: it outlives them
                env=dict(os.environ, LAKEHOUSE_HOME=str(settings.home_abs)))
        pid_file.write_text(process_writer(process.pid))
        return _await(settings, process.pid) if wait else None


def _starting_pid(settings: LakehouseSettings) -> int | None:
    """The engine process when it runs but does not answer yet (starting, or recycling its driver)."""
    found = _read_pid_file(engine_dir(settings) / "engine.pid")
    return found[0] if found and _pid_alive(*found) else None


def _await(settings: LakehouseSettings, pid: int) -> Connection:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        conn = Connection.read(settings)
        if conn is not None and conn.pid == pid:
            return conn
        if not _pid_alive(pid):
            raise EngineError(f"the engine exited while starting; see {engine_dir(settings) / 'engine.log'}")
        time.sleep(0.2)
    raise EngineError(f"the engine did not answer within {START_TIMEOUT_SECONDS} s; see "
                      f"{engine_dir(settings) / 'engine.log'}")


def stop(settings: LakehouseSettings, timeout: float = 60) -> bool:
    """Stop the engine (runs attached at that moment fail and are retried by the sensor). True if one ran."""
    found = _read_pid_file(engine_dir(settings) / "engine.pid")
    if not found or not _pid_alive(*found):
        return False  # never signal a pid another process has taken over
    pid = found[0]
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _pid_alive(*found) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _pid_alive(*found):
        os.kill(pid, signal.SIGKILL)
    (engine_dir(settings) / "connection.json").unlink(missing_ok=True)
    return True


# --- the engine process -------------------------------------------------------------------------------------------

class _Engine:
    def __init__(self, settings: LakehouseSettings):
        self.settings = settings
        self.stopping = threading.Event()
        self.generation = 0

    def _start_driver(self):
        from pyspark.sql import SparkSession

        from lakehouse import class_cache

        conf = engine_conf(self.settings)
        class_cache.start_building(self.settings)
        builder = SparkSession.builder
        for key, value in conf.items():
            builder = builder.config(key, value)
        spark = builder.getOrCreate()
        # Warm the paths every run takes (Iceberg classes, the catalog, SQL planning) once, not in the first run.
        spark.sql(f"SHOW NAMESPACES IN {CATALOG_NAME}").collect()
        spark.range(100).selectExpr("sum(id)").collect()
        params = spark.sparkContext._gateway.gateway_parameters
        self.generation += 1
        Connection(pid=os.getpid(), port=params.port, secret=params.auth_token, fingerprint=fingerprint(conf),
                   started_at=time.time(), generation=self.generation, process=process_writer()).write(self.settings)
        return spark

    def _live_leases(self, spark) -> list[dict]:
        live = []
        for path in _leases(self.settings).glob("*.json"):
            try:
                lease = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if _pid_alive(int(lease["pid"]), lease.get("process")):
                live.append(lease)
                continue
            # The run process died while attached: stop what it left running, then forget it.
            log.warning("run process %s (%s) died while attached: cancelling its Spark jobs", lease["pid"],
                        lease.get("group"))
            with contextlib.suppress(Exception):
                spark.sparkContext.cancelJobGroup(lease.get("group", ""))
            path.unlink(missing_ok=True)
        return live

    def _ended_leases(self) -> list[dict]:
        """Leases released since the last look (read once: each is deleted once read)."""
        ended = []
        for path in _leases(self.settings).glob(f"*{ENDED}"):
            with contextlib.suppress(OSError, ValueError):
                ended.append(json.loads(path.read_text()))
            path.unlink(missing_ok=True)
        return ended

    def _heap_share(self, spark) -> float:
        runtime = spark.sparkContext._jvm.java.lang.Runtime.getRuntime()
        spark.sparkContext._jvm.java.lang.System.gc()
        return (runtime.totalMemory() - runtime.freeMemory()) / runtime.maxMemory()

    def serve(self) -> None:
        _leases(self.settings).mkdir(parents=True, exist_ok=True)
        idle_limit = self.settings.engine_idle_seconds
        while not self.stopping.is_set():
            spark = self._start_driver()
            log.info("engine generation %d ready (pid %d)", self.generation, os.getpid())
            seen: set[str] = set()
            idle_since = time.monotonic()
            recycle = busy = False
            while not self.stopping.wait(POLL_SECONDS):
                live, ended = self._live_leases(spark), self._ended_leases()
                # A run is counted once, by its lease's pid and time, whether seen attached, ended or both.
                seen.update(f"{l['pid']}:{l['at']}" for l in [*live, *ended])
                if live or ended:
                    idle_since, busy = time.monotonic(), True
                if live:
                    continue
                if time.monotonic() - idle_since > idle_limit:
                    log.info("idle for %d s: stopping", idle_limit)
                    self.stopping.set()
                    break
                if busy:  # the last run just ended: the moment to look at memory (a full GC; not every poll)
                    busy = False
                    share = self._heap_share(spark)
                    log.info("%d runs served; heap %.0f%% used after GC", len(seen), 100 * share)
                    if len(seen) >= self.settings.engine_max_runs or share > HEAP_RECYCLE_SHARE:
                        recycle = True
                        break
            if recycle:
                log.info("recycling the driver after %d runs", len(seen))
            self._retire(spark)

    def _retire(self, spark) -> None:
        """Withdraw the connection, then stop the driver once no client is attached (at once when stopping)."""
        (engine_dir(self.settings) / "connection.json").unlink(missing_ok=True)
        # A client that read the connection before it was withdrawn wrote its lease first: wait for it to end.
        while self._live_leases(spark) and not self.stopping.is_set():
            time.sleep(POLL_SECONDS)
        self._ended_leases()  # runs of this driver: the next one counts its own
        from pyspark import SparkContext

        from lakehouse.spark import end_gateway

        gateway = SparkContext._gateway
        spark.stop()
        # `stop()` ends the SparkContext, not the JVM that held it: left alone, each recycle would keep one more
        # JVM (and its heap) for the rest of the engine's life. The gateway JVM exits when its stdin closes.
        end_gateway(gateway)
        # A new driver in this process needs a fresh gateway: pyspark keeps the old one in class attributes.
        SparkContext._gateway = None
        SparkContext._jvm = None


def main() -> None:
    from lakehouse.settings import load_settings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s engine %(levelname)s %(message)s")
    settings = load_settings()
    engine = _Engine(settings)
    signal.signal(signal.SIGTERM, lambda *_: engine.stopping.set())
    signal.signal(signal.SIGINT, lambda *_: engine.stopping.set())
    try:
        engine.serve()
    finally:
        (engine_dir(settings) / "connection.json").unlink(missing_ok=True)
        log.info("engine stopped")


if __name__ == "__main__":
    main()
