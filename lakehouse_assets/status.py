"""`lakehouse status`: what the lakehouse holds and what is happening to it, per entity, without Spark.

Read from the Iceberg catalog (pyiceberg: the ingestion log, table metadata, the operator log) and from the Dagster
instance (runs, check evaluations, the sensor's cursor): what was ingested, rejected, rolled back or retracted;
what is in flight or blocked and why; the last runs and how they ended; acceptances and operator actions.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime, timezone
from typing import Any

import dagster as dg
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import NoSuchTableError

from lakehouse import tables
from lakehouse.contracts import BRONZE, GOLD, INGESTION_LOG, OPERATOR_LOG, QUARANTINE, SILVER, Entity
from lakehouse.ingestion import LOADED, REJECTED, RETRACTED, ROLLED_BACK, current
from lakehouse.checks import ACCEPTED_PREFIX, standing_holds
from lakehouse.writers import default_liveness, process_alive, read_lease, run_id_of
from resources.runs import WORKER_TAG, failure_cause, liveness
from sensors.landing import SENSOR_NAME

RECENT = 5


def _load(catalog: Catalog, identifier: str):
    try:
        return catalog.load_table(identifier)
    except NoSuchTableError:
        return None


def _rows(catalog: Catalog, identifier: str) -> list[dict]:
    table = _load(catalog, identifier)
    return table.scan().to_arrow().to_pylist() if table is not None else []


def _lineage(table) -> list:
    out, snap = [], table.current_snapshot() if table is not None else None
    while snap is not None:
        out.append(snap)
        snap = table.snapshot_by_id(snap.parent_snapshot_id) if snap.parent_snapshot_id else None
    return out[::-1]


def _step_marks(table) -> dict[str, str]:
    """A table's step marks, read with pyiceberg the way `tables.step_marks` reads them through Spark."""
    for snap in reversed(_lineage(table)):
        raw = snap.summary.get(tables.MARKS_PROPERTY) if snap.summary else None
        if raw is not None:
            return json.loads(raw)
    return {k: v for k, v in (table.properties if table is not None else {}).items()
            if k.startswith(tables.STEP_MARK_PREFIXES)}


def _when(ts: Any) -> str:
    if ts is None:
        return "-"
    if isinstance(ts, (int, float)):
        ts = datetime.fromtimestamp(ts, tz=timezone.utc)
    return ts.strftime("%Y-%m-%d %H:%M:%S")


def _writer_state(writer: str | None, instance: dg.DagsterInstance | None) -> dict:
    """What is known of a Bronze writer's liveness (lakehouse/writers.py): its Dagster run, its process on this
    host, or (a process on another host) its lease: when it was renewed and until when it runs."""
    if writer is None:
        return {"detail": "no writer named (an older lakehouse's batch)"}
    run_id = run_id_of(writer)
    if run_id is not None:
        run = instance.get_run_by_id(run_id) if instance is not None else None
        if run is None:
            return {"detail": f"Dagster run {run_id}" + (" (not in the instance)" if instance is not None else "")}
        worker = run.tags.get(WORKER_TAG)
        return {"detail": f"Dagster run {run_id} {run.status.value}" + (f", worker {worker}" if worker else "")}
    if not writer.startswith("proc:"):
        return {"detail": "an unknown kind of writer"}
    on_this_host = process_alive(writer)
    if on_this_host is not None:
        return {"detail": f"a process on this host, {'running' if on_this_host else 'gone'}"}
    try:
        lease = read_lease(writer)
    except Exception as exc:  # noqa: BLE001 - status reports what it cannot read
        return {"detail": f"a process on another host; its lease cannot be read ({exc})"}
    if lease is None:
        return {"detail": "a process on another host holding no lease (it ended, or never took one)"}
    state = "runs" if lease.alive() else "expired"
    return {"detail": f"a process on another host; its lease was renewed at {_when(lease.renewed_at)} and {state} "
                      f"until {_when(lease.expires_at)}",
            "lease_renewed_at": _when(lease.renewed_at), "lease_until": _when(lease.expires_at)}


def _sensor_cursor(instance: dg.DagsterInstance) -> dict:
    from dagster._core.definitions.run_request import InstigatorType

    for state in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR):
        if state.name == SENSOR_NAME and state.instigator_data is not None and state.instigator_data.cursor:
            try:
                return json.loads(state.instigator_data.cursor).get("in_flight", {})
            except ValueError:
                return {}
    return {}


def _checks(instance: dg.DagsterInstance, assets: list[dg.AssetKey], definitions) -> list[dict]:
    """The latest evaluation of every check on these assets that failed with ERROR, and whether it blocks."""
    graph = definitions.resolve_asset_graph()
    keys = [k for k in graph.asset_check_keys if k.asset_key in assets]
    latest = instance.event_log_storage.get_latest_asset_check_execution_by_key(keys)
    failing = []
    for key, record in sorted(latest.items(), key=lambda kv: kv[0].to_user_string()):
        evaluation = record.event.dagster_event.event_specific_data if record.event else None
        if evaluation is None or getattr(evaluation, "passed", True):
            continue
        severity = evaluation.severity.value
        failing.append({"check": f"{key.asset_key.to_user_string()} {key.name}", "severity": severity,
                        "blocking": graph.get_check_spec(key).blocking and severity == "ERROR",
                        "summary": evaluation.description, "run_id": record.run_id,
                        "at": _when(record.create_timestamp)})
    return failing


def collect(catalog: Catalog, instance: dg.DagsterInstance | None, definitions=None) -> dict:
    """Everything `lakehouse status` shows, as plain data (`--json` prints it as is)."""
    history = [r for r in _rows(catalog, INGESTION_LOG.identifier)]
    alive = liveness(instance) if instance is not None else default_liveness
    cursor = _sensor_cursor(instance) if instance is not None else {}
    report: dict[str, Any] = {"entities": {}, "operator_log": []}
    for entity in Entity:
        rows = [r for r in history if r["entity"] == entity.value]
        now = current(rows)
        by_status = Counter(r["status"] for r in now)
        bronze = _load(catalog, BRONZE[entity].identifier)
        known = {r["batch_id"] for r in rows}
        unsettled = []
        for s in _lineage(bronze):
            batch = s.summary["lakehouse.batch-id"] if s.summary else None
            if not (s.summary and s.summary.operation.value == "append" and batch and batch not in known):
                continue
            writer = s.summary["lakehouse.writer"]
            live = alive(writer)
            unsettled.append({
                "batch_id": batch, "writer": writer, "rows": int(s.summary["added-records"] or 0),
                "snapshot_id": s.snapshot_id, "appended_at": _when(s.timestamp_ms / 1000), "alive": live,
                "state": "in flight" if live else "orphaned: its writer is gone; the next run rolls it back",
                **_writer_state(writer, instance)})
        silver = _load(catalog, SILVER[entity].identifier)
        mark = _step_marks(silver).get(tables.WATERMARK_PREFIX + BRONZE[entity].identifier)
        bronze_lineage = [s.snapshot_id for s in _lineage(bronze)]
        behind = (bronze_lineage[bronze_lineage.index(int(mark)) + 1:] if mark and int(mark) in bronze_lineage
                  else bronze_lineage)
        # What holds Silver back (silver_layer.bronze_range): the first batch past its position that a live writer
        # has not logged yet, and any gate of Bronze whose failure stands.
        held_back = [{"by": "writer", **b} for b in unsettled if b["alive"] and b["snapshot_id"] in behind][:1]
        asset = BRONZE[entity].identifier.replace(".", "/")
        held_back += [{"by": "gate", "check": f"{asset} {h['check']}", "since": h.get("since"),
                       "summary": h.get("summary"), "run_id": h.get("run_id")}
                      for h in standing_holds(bronze.properties if bronze is not None else {})]
        entity_report: dict[str, Any] = {
            "files": {s: by_status.get(s, 0) for s in (LOADED, REJECTED, RETRACTED, ROLLED_BACK)},
            "rows_loaded": sum(r["rows"] or 0 for r in now if r["status"] == LOADED),
            "rejected": [{"file": r["source_uri"], "reason": r["reason"], "message": r["message"],
                          "at": _when(r["ingested_at"])} for r in now if r["status"] == REJECTED][-RECENT:],
            "retracted": [{"file": r["source_uri"], "etag": r["source_etag"], "message": r["message"],
                           "at": _when(r["ingested_at"])} for r in now if r["status"] == RETRACTED][-RECENT:],
            "latest": [{"file": r["source_uri"], "status": r["status"], "rows": r["rows"],
                        "at": _when(r["ingested_at"])} for r in now][-RECENT:],
            "unsettled_batches": unsettled,
            "silver_behind_bronze_snapshots": len(behind),
            "silver_held_back_by": held_back,
            "sensor": {
                "in_flight": sorted(uri for uri, f in cursor.items() if not f.get("gave_up") and not f.get("held")
                                    and f"/input/{entity.value}/" in uri),
                "waiting": [{"file": uri, "cause": f["held"]} for uri, f in cursor.items()
                            if f.get("held") and not f.get("gave_up") and f"/input/{entity.value}/" in uri],
                "given_up": [{"file": uri, "cause": f["gave_up"]} for uri, f in cursor.items()
                             if f.get("gave_up") and f"/input/{entity.value}/" in uri],
            },
            "acceptances": [],
            "failing_checks": [],
            "runs": [],
        }
        for contract in (BRONZE[entity], SILVER[entity], QUARANTINE[entity], GOLD[entity.plural]):
            table = _load(catalog, contract.identifier)
            for key, value in (table.properties.items() if table is not None else []):
                if key.startswith(ACCEPTED_PREFIX):
                    entry = json.loads(value)
                    entity_report["acceptances"].append({
                        "check": f"{contract.identifier} {key[len(ACCEPTED_PREFIX):]}", "by": entry["by"],
                        "at": entry["at"], "why": entry["why"], "failure": entry["summary"]})
        if instance is not None:
            runs = instance.get_runs(filters=dg.RunsFilter(tags={"lakehouse/entity": entity.value}), limit=RECENT)
            for run in runs:
                stats = instance.get_run_stats(run.run_id)
                entry = {"run_id": run.run_id, "status": run.status.value, "job": run.job_name,
                         "started": _when(stats.start_time), "ended": _when(stats.end_time),
                         "files": run.tags.get("lakehouse/files"), "worker": run.tags.get(WORKER_TAG)}
                if run.status in (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED):
                    entry["cause"] = failure_cause(instance, run.run_id)
                entity_report["runs"].append(entry)
            if definitions is not None:
                assets = [dg.AssetKey(["bronze", entity.plural]), dg.AssetKey(["silver", entity.plural]),
                          dg.AssetKey(["silver", f"{entity.plural}_quarantine"]), dg.AssetKey(["gold", entity.plural])]
                entity_report["failing_checks"] = _checks(instance, assets, definitions)
        report["entities"][entity.value] = entity_report
    actions = sorted(_rows(catalog, OPERATOR_LOG.identifier), key=lambda r: r["at"])[-RECENT * 2:]
    report["operator_log"] = [{"at": _when(a["at"]), "actor": a["actor"], "action": a["action"],
                               "target": a["target"], "reason": a["reason"]} for a in actions]
    return report


def render(report: dict) -> str:
    """The report as a data engineer reads it in a terminal."""
    out = []
    for entity, e in report["entities"].items():
        files = e["files"]
        out.append(f"{entity}: {files['loaded']} files loaded ({e['rows_loaded']:,} rows), {files['rejected']} "
                   f"rejected, {files['retracted']} retracted, {files['rolled_back']} rolled back")
        for b in e["unsettled_batches"]:
            out.append(f"  Bronze batch {b['batch_id']} ({b['rows']:,} rows) by {b['writer']}, appended at "
                       f"{b['appended_at']}: {b['state']} ({b['detail']})")
        for h in e["silver_held_back_by"]:
            if h["by"] == "writer":
                out.append(f"  SILVER HELD BACK since {h['appended_at']} by Bronze batch {h['batch_id']} of "
                           f"{h['writer']}, not logged yet: {h['detail']}. Silver reads past it once the batch is "
                           "logged, or rolled back when its writer is gone")
            else:
                out.append(f"  SILVER HELD BACK since {h['since']} by {h['check']}, which failed ({h['summary']}): "
                           f"fix the data and let it pass, or lakehouse accept {h['check']} --why ...")
        if e["silver_behind_bronze_snapshots"]:
            out.append(f"  Silver has not read {e['silver_behind_bronze_snapshots']} Bronze snapshots yet "
                       + ("(held back, above)" if e["silver_held_back_by"]
                          else "(the next run of this entity reads them)"))
        for f in e["sensor"]["in_flight"]:
            out.append(f"  in flight: {f} (requested by the sensor)")
        for w in e["sensor"]["waiting"]:
            out.append(f"  waiting: {w['file']}: its catch-up run of Silver and Gold waits for a gate: {w['cause']}")
        for g in e["sensor"]["given_up"]:
            out.append(f"  GIVEN UP: {g['file']}: {g['cause']} (land a new version, or lakehouse reprocess)")
        for c in e["failing_checks"]:
            mark = "BLOCKING" if c["blocking"] else c["severity"]
            out.append(f"  {mark}: {c['check']} failed at {c['at']} (run {c['run_id'][:8]}): {c['summary']}")
        for a in e["acceptances"]:
            out.append(f"  accepted: {a['check']} by {a['by']} at {a['at']} ({a['why']}): {a['failure']}")
        for r in e["rejected"]:
            out.append(f"  rejected {r['at']}: {r['file']} [{r['reason']}] {r['message']}")
        for r in e["retracted"]:
            out.append(f"  retracted {r['at']}: {r['file']}@{r['etag']}: {r['message']}")
        if e["runs"]:
            out.append("  last runs:")
        for r in e["runs"]:
            cause = f": {r['cause']}" if r.get("cause") else ""
            out.append(f"    {r['run_id'][:8]} {r['job']} {r['status']} started {r['started']} ended {r['ended']}"
                       f"{cause}")
    if report["operator_log"]:
        out.append("operator actions:")
    for a in report["operator_log"]:
        out.append(f"  {a['at']} {a['actor']} {a['action']} {a['target']}" + (f": {a['reason']}" if a["reason"] else ""))
    return "\n".join(out)
