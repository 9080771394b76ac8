"""The transformation job: the same pipeline steps, outside the Dagster run process.

    python -m lakehouse.job --step silver --entity post       # one step, as a Dagster asset would run it
    python -m lakehouse.job --all                             # Bronze -> Silver -> Gold for both entities

It runs wherever Spark runs: in local mode, against a cluster named by `LAKEHOUSE_SPARK_MASTER`, or as an AWS
Glue / EMR Serverless job launched through Dagster Pipes. When Dagster launched it (Pipes parameters in the
environment or, on Glue, in the job arguments), each step reports its asset materialisation and metadata back to
Dagster; otherwise it prints a JSON summary. Only `dagster-pipes` (no Dagster) is needed where it runs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import nullcontext
from typing import Any

from lakehouse import bronze_layer, checks, gold_layer, operations, silver_layer, tables
from lakehouse.contracts import BRONZE, GOLD, QUARANTINE, SILVER, Entity
from lakehouse.markdown import Markdown, markdown_table
from lakehouse.settings import Environment, LakehouseSettings, SettingsError, load_settings
from lakehouse.spark import get_spark
from lakehouse.writers import default_liveness, hold_lease, run_writer

GOLD_ENTITY_TABLES = ("posts", "comments")
GOLD_AGGREGATES = ("subreddit_daily", "post_engagement")


def _row_count(spark, table: str) -> int:
    snap = tables.current_snapshot(spark, table)
    return int(snap.summary.get("total-records", 0)) if snap else 0


def run_step(
    spark, settings: LakehouseSettings, step: str, entity: Entity | None = None, table: str | None = None,
    keys: list[str] | None = None, log=None, writer: str | None = None, dead_writers: list | None = None,
    rebuild: bool = False, reprocess: bool = False,
) -> dict[str, dict[str, Any]]:
    """Run one pipeline step; returns {asset key: metadata} for what it materialised.

    `writer` names the Dagster run this job works for; `dead_writers` are the Bronze writers the instance knows to
    be gone (only those batches are rolled back: a job cannot ask the instance itself)."""
    dead = set(dead_writers or [])

    def alive(w: str | None) -> bool:
        return w not in dead and default_liveness(w)

    if step == "bronze":
        r = bronze_layer.ingest_bronze(spark, _landing(settings), entity, keys=keys or None, writer=writer, alive=alive,
                                   reprocess=reprocess)
        for outcome in r.rejected:
            message = f"rejected {outcome.key}: [{outcome.reason}] {outcome.message}"
            log.error(message) if log else print(message, file=sys.stderr)
        files = [vars(f) for f in r.files]
        return {f"bronze/{entity.plural}": {
            "dagster/row_count": _row_count(spark, BRONZE[entity].identifier), "batch_id": r.batch_id,
            "batch_rows": r.rows, "batch_files": len(r.files), "rejected_files": len(r.rejected),
            "malformed_rows": r.malformed_rows, "already_ingested_files": r.already_ingested,
            "rolled_back_batches": len(r.rolled_back_batches),
            "files": Markdown(markdown_table(files, bronze_layer.FILE_COLUMNS) if files else "no new files")}}
    if step == "silver":
        r = (operations.rebuild_silver(spark, entity, alive=alive) if rebuild
             else silver_layer.update_silver(spark, entity, alive=alive))
        if r.held:  # a Bronze gate failed and stands (lakehouse/checks.py): Silver waits for a pass or an accept
            raise checks.Held(checks.held_message(SILVER[entity].identifier, BRONZE[entity].identifier, r.held,
                                                  r.to_snapshot))
        return {
            f"silver/{entity.plural}": {
                "dagster/row_count": _row_count(spark, SILVER[entity].identifier), "bronze_rows_read": r.bronze_rows,
                "inserted": r.inserted, "updated": r.updated, "unchanged": r.unchanged,
                "duplicates_collapsed": r.duplicates_collapsed},
            f"silver/{entity.plural}_quarantine": {
                "dagster/row_count": _row_count(spark, QUARANTINE[entity].identifier),
                "quarantined_this_run": r.quarantined,
                "reasons": Markdown(markdown_table([{"reason": k, "rows": v} for k, v in sorted(r.reasons.items())],
                                                   ["reason", "rows"]) if r.reasons else "none")},
        }
    if step == "gold":
        update = gold_layer.gold_update(table)  # an unknown table fails here, naming the tables there are
        r = operations.rebuild_gold(spark, table) if rebuild else update(spark, table)
        return {f"gold/{table}": {"dagster/row_count": _row_count(spark, GOLD[table].identifier),
                                  "rows_written": r.rows_written, "rows_deleted": r.rows_deleted,
                                  "full_rebuild": r.full_rebuild}}
    raise ValueError(f"unknown step {step!r}")


def _landing(settings: LakehouseSettings):
    """The landing zone of the environment (a folder, or the S3 bucket through boto3's default chain)."""
    from lakehouse.landing import LocalLandingZone, S3LandingZone

    if settings.environment is Environment.AWS:
        import boto3

        client = boto3.client("s3", region_name=settings.aws_region, endpoint_url=settings.aws_endpoint)
        return S3LandingZone(client, settings.s3_bucket or "", settings.s3_prefix)
    return LocalLandingZone(settings.landing_root)


def plan_all() -> list[tuple[str, Entity | None, str | None]]:
    """Every step of the graph in dependency order."""
    steps: list[tuple[str, Entity | None, str | None]] = []
    for layer in ("bronze", "silver"):
        steps += [(layer, e, None) for e in Entity]
    steps += [("gold", None, t) for t in GOLD_ENTITY_TABLES + GOLD_AGGREGATES]
    return steps


def _pipes_session(argv: list[str]):
    """Dagster Pipes when Dagster launched this process (parameters in the environment or, on Glue, the args)."""
    from dagster_pipes import PipesCliArgsParamsLoader, PipesEnvVarParamsLoader, open_dagster_pipes

    for loader in (PipesCliArgsParamsLoader(), PipesEnvVarParamsLoader()):
        if loader.is_dagster_pipes_process():
            context_loader = None
            if "--pipes-s3-context" in argv:  # Glue and EMR receive the context through S3
                import boto3
                from dagster_pipes import PipesS3ContextLoader

                context_loader = PipesS3ContextLoader(client=boto3.client("s3"))
            return open_dagster_pipes(params_loader=loader, context_loader=context_loader)
    return nullcontext(None)


def _typed(metadata: dict[str, Any]) -> dict[str, dict[str, Any]]:
    kinds = {bool: "bool", int: "int", float: "float", str: "text", Markdown: "md"}
    return {k: {"raw_value": v, "type": kinds.get(type(v), "json")} for k, v in metadata.items()}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m lakehouse.job")
    parser.add_argument("--step", choices=["bronze", "silver", "gold"])
    parser.add_argument("--entity", choices=[e.value for e in Entity])
    parser.add_argument("--table", choices=list(GOLD))
    parser.add_argument("--all", action="store_true", help="every step, in dependency order")
    parser.add_argument("--pipes-s3-context", action="store_true", help="Pipes context comes from S3 (Glue, EMR)")
    args, _ = parser.parse_known_args(argv)  # Glue adds its own arguments (and Pipes adds --dagster-pipes-*)
    if args.all:
        steps = plan_all()
    elif args.step:
        if args.step in ("bronze", "silver") and not args.entity:
            parser.error(f"--step {args.step} needs --entity")
        if args.step == "gold" and not args.table:
            parser.error("--step gold needs --table")
        steps = [(args.step, Entity(args.entity) if args.entity else None, args.table)]
    else:
        parser.error("give --step (with --entity or --table) or --all")
    try:
        settings = load_settings()
    except SettingsError as exc:
        parser.error(str(exc))
    spark = get_spark(settings)
    summary = []
    with _pipes_session(argv) as pipes:
        # Working for a Dagster run, the job writes as that run (the instance knows whether it lives). On its own
        # (on EMR without Pipes, say), it is a plain process that hosts elsewhere cannot see: it holds a lease
        # while it runs, so that they take it for alive until it stops renewing it (lakehouse/writers.py).
        if pipes is not None:
            writer = run_writer(pipes.run_id)
        else:
            writer = hold_lease(settings) if any(step == "bronze" for step, _, _ in steps) else None
        for step, entity, table in steps:
            started = time.perf_counter()
            extras = pipes.extras if pipes is not None else {}
            reported = run_step(spark, settings, step, entity, table, extras.get("keys"),  # keys: a sensor's batch
                                pipes.log if pipes is not None else None, writer=writer,
                                dead_writers=extras.get("dead_writers"), rebuild=bool(extras.get("rebuild")),
                                reprocess=bool(extras.get("reprocess")))
            seconds = round(time.perf_counter() - started, 2)
            summary.append({"step": step, "entity": entity.value if entity else None, "table": table,
                            "seconds": seconds, "assets": reported})
            if pipes is not None:
                for key, metadata in reported.items():
                    pipes.report_asset_materialization(asset_key=key, metadata=_typed({**metadata, "seconds": seconds}))
                pipes.log.info(f"{step} {entity.value if entity else table}: {seconds}s")
    if pipes is None:
        print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
