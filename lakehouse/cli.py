"""`lakehouse`: the command line for the embedded lakehouse (generate, land, query, tables, init)."""

from __future__ import annotations

import argparse
import getpass
import json
import sys
import time
from pathlib import Path

from lakehouse.contracts import Entity
from lakehouse.errors import UserError
from lakehouse.settings import Environment, SettingsError, load_settings

DAGSTER_YAML = """\
# Written by `lakehouse init`.
telemetry:
  enabled: false
concurrency:
  runs:
    # One lakehouse run at a time: a throughput choice (runs write the same tables, and on two cores one at a
    # time finishes sooner), not what keeps ingestion exactly once: overlapping runs stay correct.
    max_concurrent_runs: 1
  pools:
    default_limit: 1
run_monitoring:
  # The daemon ends runs whose worker died and frees the pool slots they held (lakehouse runs also do it for
  # each other, from the CLI too: resources/runs.py).
  enabled: true
  free_slots_after_run_end_seconds: 30
"""


class UsageError(UserError):
    """A mistake in what the user typed: printed as one line, exit status 2."""


def default_actor() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no user name in a bare container
        return "unknown"


def cmd_init(args) -> int:
    settings = load_settings()
    if settings.environment is Environment.AWS:
        # Bootstrap an account: the Glue databases and every Iceberg table from its contract (no Spark needed).
        from lakehouse.catalog import catalog_for, create_tables
        from lakehouse.tables import TABLE_PROPERTIES

        created = create_tables(catalog_for(settings), TABLE_PROPERTIES)
        print(f"Glue catalog, warehouse {settings.warehouse_uri}: created {len(created)} tables "
              f"{', '.join(created) or '(all existed)'}")
        return 0
    from lakehouse.landing import LocalLandingZone

    LocalLandingZone(settings.landing_root).ensure_layout()
    settings.dagster_home.mkdir(parents=True, exist_ok=True)
    config = settings.dagster_home / "dagster.yaml"
    if not config.exists():
        config.write_text(DAGSTER_YAML)
    print(f"lakehouse home: {settings.home_abs}")
    print(f"landing zone:   {settings.landing_root}")
    print(f"DAGSTER_HOME:   {settings.dagster_home}")
    return 0


def cmd_generate(args) -> int:
    from lakehouse.generator import generate

    settings = load_settings()
    root = Path(args.landing) if args.landing else settings.landing_root
    started = time.perf_counter()
    out = generate(root, posts=args.posts, comments=args.comments, files=args.files, seed=args.seed,
                   days=args.days, subreddits=args.subreddits, repeat_share=args.repeat_share)
    seconds = time.perf_counter() - started
    rows = out.post_rows + out.comment_rows
    print(f"generated {out.post_rows:,} post rows in {len(out.posts)} files and {out.comment_rows:,} comment rows "
          f"in {len(out.comments)} files under {root} in {seconds:.1f}s ({rows / max(seconds, 1e-9):,.0f} rows/s)")
    return 0


def cmd_land(args) -> int:
    from lakehouse.landing import LocalLandingZone

    if args.name and len(args.files) > 1:
        raise UsageError("--name names one file; land several files under their own names")
    zone = LocalLandingZone(load_settings().landing_root)
    for source in args.files:
        if not Path(source).is_file():
            raise UsageError(f"{source}: no such file")
        landed = zone.land(Path(source), Entity(args.entity), name=args.name)
        print(f"landed {source} as {landed.key} ({landed.size:,} bytes, etag {landed.etag})")
    return 0


def _engine():
    from lakehouse.catalog import catalog_for
    from lakehouse.query import QueryEngine

    return QueryEngine(catalog_for(load_settings()))


def cmd_query(args) -> int:
    settings = load_settings()
    if settings.environment is Environment.AWS:
        from resources.query import QueryResource

        for row in QueryResource.from_settings(settings).sql(args.sql):
            print("\t".join("NULL" if v is None else v for v in row))
        return 0
    relation = _engine().sql(args.sql)
    if relation is None:
        return 0
    relation.show(max_rows=args.max_rows, max_width=args.max_width)
    return 0


def cmd_tables(args) -> int:
    from lakehouse.catalog import catalog_for

    catalog = catalog_for(load_settings())
    for ns in sorted(catalog.list_namespaces()):
        for ident in sorted(catalog.list_tables(ns)):
            table = catalog.load_table(ident)
            snap = table.current_snapshot()
            rows = snap.summary["total-records"] if snap and snap.summary else "0"
            print(f"{'.'.join(ident):32} {rows:>12} rows  snapshot {snap.snapshot_id if snap else '-'}")
    return 0


def cmd_spark_conf(args) -> int:
    from lakehouse.spark import spark_conf

    for key, value in sorted(spark_conf(load_settings()).items()):
        if key not in ("spark.master", "spark.app.name"):
            print(f"--conf {key}={value}")
    return 0


# --- operator commands: each runs a Dagster job against the instance, so it shows in the UI's run history and
# queues in the `lakehouse` pool behind the runs writing the same tables.


def _instance():
    """The Dagster instance: $DAGSTER_HOME, else the one `lakehouse init` made under the data root."""
    import os

    from dagster import DagsterInstance

    if os.environ.get("DAGSTER_HOME"):
        return DagsterInstance.get()
    home = load_settings().dagster_home
    if not home.exists():
        raise UsageError(f"no Dagster instance at {home}: run `lakehouse init` (or set DAGSTER_HOME)")
    return DagsterInstance.from_config(str(home))


def _run_job(name: str, run_config: dict, args, tags: dict | None = None):
    """Run one of the definitions' jobs in this process; print what it did; exit status 1 when it failed."""
    from lakehouse_assets.definitions import defs
    from lakehouse_assets.metadata import REASON_TAG, REQUESTED_BY_TAG
    from resources.runs import failure_cause

    tags = {REQUESTED_BY_TAG: args.by, **({REASON_TAG: args.why} if args.why else {}), **(tags or {})}
    with _instance() as instance:
        result = defs.resolve_job_def(name).execute_in_process(
            run_config=run_config, instance=instance, tags=tags, raise_on_error=False)
        if not result.success:
            print(f"{name} failed (run {result.run_id}): {failure_cause(instance, result.run_id)}", file=sys.stderr)
            return result, 1
    return result, 0


def _entity_of(target: str, given: str | None) -> Entity:
    """The entity a retract target belongs to: given, by its landing prefix, or by the ingestion log."""
    from lakehouse.catalog import catalog_for
    from lakehouse.ingestion import read_log
    from lakehouse.landing import entity_for_key
    from lakehouse.operations import BATCH_ID, _as_uri

    if given:
        return Entity(given)
    if entity_for_key(target):
        return entity_for_key(target)
    settings = load_settings()
    uri = None if BATCH_ID.match(target) else _as_uri(target, settings.landing_root)
    found = {e.entity for e in read_log(catalog_for(settings)) if e.batch_id == target or e.source_uri == uri}
    if len(found) != 1:
        raise UsageError(f"cannot tell whether {target} holds posts or comments: give --entity")
    return Entity(found.pop())


def cmd_retract(args) -> int:
    from lakehouse.catalog import catalog_for
    from lakehouse.ingestion import LOADED, RETRACTED, read_log
    from lakehouse.operations import resolve_versions

    entity = _entity_of(args.target, args.entity)
    settings = load_settings()
    # A target that names nothing fails here, in one line, before a run starts (the run resolves it again).
    resolve_versions(read_log(catalog_for(settings), entity), args.target, settings.landing_root, args.etag,
                     statuses=(LOADED, RETRACTED))
    config = {"entity": entity.value, "target": args.target, "etag": args.etag or "", "by": args.by, "why": args.why}
    result, status = _run_job("retract_file", {"ops": {"retract": {"config": config}}}, args)
    if status == 0:
        print(json.dumps(result.output_for_node("retract"), indent=2, default=str))
    return status


def cmd_reprocess(args) -> int:
    from lakehouse.landing import check_key, entity_for_key

    from lakehouse.catalog import catalog_for
    from lakehouse.ingestion import LOADED, read_log
    from lakehouse.landing import LocalLandingZone

    keys = [check_key(k) for k in args.keys]
    entities = {entity_for_key(k) for k in keys}
    if len(entities) != 1:
        raise UsageError("reprocess files of one entity at a time (input/post/... or input/comment/...)")
    entity = entities.pop()
    # Refused here, in one line, before a run starts (Bronze refuses it again): a loaded version would be counted
    # twice, and a file that is not in the landing zone cannot be read.
    settings = load_settings()
    if settings.environment is Environment.LOCAL:
        zone = LocalLandingZone(settings.landing_root)
        loaded = {(e.source_uri, e.source_etag) for e in read_log(catalog_for(settings), entity) if e.status == LOADED}
        for key in keys:
            if not zone.path_for(key).is_file():
                raise UsageError(f"{key} is not in the landing zone: land it again to reprocess it")
            landed = zone.describe(key)
            if (landed.uri, landed.etag) in loaded:
                raise UsageError(f"{key} (etag {landed.etag}) is loaded: retract it before reprocessing it")
    config = {"ops": {f"bronze__{entity.plural}": {"config": {"keys": keys, "reprocess": True}}}}
    result, status = _run_job(f"ingest_{entity.plural}", config, args)
    if status == 0:
        [bronze] = [e for e in result.get_asset_materialization_events()
                    if e.asset_key.path == ["bronze", entity.plural]]
        print(bronze.materialization.metadata["files"].value)
    return status


def cmd_accept(args) -> int:
    import lakehouse_assets.definitions  # noqa: F401  (registers every check)
    from lakehouse_assets.metadata import check_named

    check_named(args.asset, args.check)  # an unknown name fails here, listing the checks
    config = {"asset": args.asset, "check": args.check, "by": args.by, "why": args.why, "revoke": args.revoke}
    result, status = _run_job("accept_check", {"ops": {"accept": {"config": config}}}, args)
    if status == 0:
        entry = result.output_for_node("accept")
        verb = "revoked the acceptance of" if args.revoke else "accepted"
        print(f"{verb} {args.asset} {args.check}: {entry['summary']}")
    return status


def cmd_refresh(args) -> int:
    result, status = _run_job("full_refresh", {}, args)
    if status == 0:
        for event in result.get_asset_materialization_events():
            meta = event.materialization.metadata
            print(f"{event.asset_key.to_user_string():32} {meta['dagster/row_count'].value:>12,} rows")
    return status


def cmd_maintain(args) -> int:
    config = {"retention_hours": args.retention_hours or 0, "compact": not args.no_compact,
              "remove_orphans": not args.no_orphans, "tables": args.table or []}
    result, status = _run_job("table_maintenance", {"ops": {"maintain_tables": {"config": config}}}, args)
    if status == 0:
        for m in result.output_for_node("maintain_tables"):
            print(f"{m['table']:28} files {m['data_files_before']:>6} -> {m['data_files_after']:<6} "
                  f"snapshots {m['snapshots_before']:>5} -> {m['snapshots_after']:<5} "
                  f"(kept for marks: {m['kept_for_marks']})")
    return status


def cmd_status(args) -> int:
    from lakehouse.catalog import catalog_for
    from lakehouse_assets import status
    from lakehouse_assets.definitions import defs

    settings = load_settings()
    try:
        instance = _instance()
    except UsageError:
        instance = None  # no Dagster instance yet: the tables alone
    try:
        report = status.collect(catalog_for(settings), instance, defs)
    finally:
        if instance is not None:
            instance.dispose()
    print(json.dumps(report, indent=2, default=str) if args.json else status.render(report))
    return 0


def cmd_engine(args) -> int:
    from lakehouse import engine

    settings = load_settings()
    if args.action == "start":
        if not engine.wanted(settings):
            raise UsageError("the warm engine serves the embedded default only (LAKEHOUSE_ENV=local, a local[...] "
                             "master, LAKEHOUSE_COMPUTE=in_process, LAKEHOUSE_ENGINE=auto)")
        conn = engine.start(settings)
        print(f"engine running: pid {conn.pid}, generation {conn.generation}")
    elif args.action == "stop":
        print("engine stopped" if engine.stop(settings) else "no engine was running")
    else:
        print(json.dumps(engine.status(settings), indent=2))
    return 0


def cmd_sweep(args) -> int:
    settings = load_settings()
    settings.sweep_request_path.parent.mkdir(parents=True, exist_ok=True)
    settings.sweep_request_path.touch()
    print("a full sweep is asked for: the landing_zone_sensor lists every landed file at its next tick and asks for "
          "runs for what the ingestion log has not settled (its tick log says so)")
    return 0


def cmd_class_cache(args) -> int:
    from lakehouse import class_cache

    settings = load_settings()
    if settings.class_cache != "on":
        raise UsageError("LAKEHOUSE_CLASS_CACHE=off: drivers start without a class archive")
    path = class_cache.build(settings, rebuild=args.rebuild)
    if path is None:
        raise UsageError("another process is building the archive now (its lock is beside it); try again shortly")
    print(f"{path} ({path.stat().st_size / 2**20:.0f} MB)")
    return 0


def cmd_contracts(args) -> int:
    from lakehouse.contracts import contracts_markdown

    print(contracts_markdown(), end="")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lakehouse", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("init", help="create the data root, landing zone and DAGSTER_HOME").set_defaults(func=cmd_init)

    gen = sub.add_parser("generate", help="write deterministic SocialGrep-format files into the landing zone")
    gen.add_argument("--posts", type=int, default=10_000)
    gen.add_argument("--comments", type=int, default=30_000)
    gen.add_argument("--files", type=int, default=3, help="files per entity")
    gen.add_argument("--seed", type=int, default=42)
    gen.add_argument("--days", type=int, default=31)
    gen.add_argument("--subreddits", type=int, default=12)
    gen.add_argument("--repeat-share", type=float, default=0.02, help="share of ids repeated in the last file")
    gen.add_argument("--landing", help="landing root (default: $LAKEHOUSE_HOME/landing)")
    gen.set_defaults(func=cmd_generate)

    land = sub.add_parser("land", help="copy files into the landing zone")
    land.add_argument("entity", choices=[e.value for e in Entity])
    land.add_argument("files", nargs="+")
    land.add_argument("--name", help="name in the landing zone (one file only)")
    land.set_defaults(func=cmd_land)

    query = sub.add_parser("query", help="run SQL over the Iceberg tables with the embedded engine")
    query.add_argument("sql")
    query.add_argument("--max-rows", type=int, default=40)
    query.add_argument("--max-width", type=int, default=160)
    query.set_defaults(func=cmd_query)

    sub.add_parser("tables", help="list tables, row counts and snapshots").set_defaults(func=cmd_tables)

    status = sub.add_parser("status", help="per entity: what was ingested, rejected, retracted; what is in flight "
                            "or blocked and why; the last runs")
    status.add_argument("--json", action="store_true", help="the report as JSON")
    status.set_defaults(func=cmd_status)

    def operator(name: str, help_text: str, why_required: bool = True):
        cmd = sub.add_parser(name, help=help_text)
        cmd.add_argument("--why", required=why_required, help="why (recorded in the operator log)")
        cmd.add_argument("--by", default=default_actor(), help="who (default: your user name)")
        return cmd

    retract = operator("retract", "take a file version (or a batch) out of Bronze, Silver and Gold")
    retract.add_argument("target", help="landing key (input/post/a.csv), path or URI of the file, or a batch id")
    retract.add_argument("--etag", help="the file version, when the file has several loaded versions")
    retract.add_argument("--entity", choices=[e.value for e in Entity], help="when the target does not tell")
    retract.set_defaults(func=cmd_retract)

    reprocess = operator("reprocess", "ingest retracted or rejected file versions again (e.g. after a parser fix); "
                         "a retracted version comes back in its old place, undoing the retraction", why_required=False)
    reprocess.add_argument("keys", nargs="+", help="landing keys, e.g. input/comment/2022-03.csv")
    reprocess.set_defaults(func=cmd_reprocess)

    accept = operator("accept", "accept a failing check's current failure so the pipeline moves on")
    accept.add_argument("asset", help="the checked asset, e.g. silver/posts")
    accept.add_argument("check", help="the check, e.g. primary_key_unique")
    accept.add_argument("--revoke", action="store_true", help="take the acceptance back")
    accept.set_defaults(func=cmd_accept)

    maintain = operator("maintain", "compact small files, rewrite manifests, expire old snapshots (the "
                        "table_maintenance job)", why_required=False)
    maintain.add_argument("--retention-hours", type=int, help="history kept for time travel "
                          "(default LAKEHOUSE_SNAPSHOT_RETENTION_HOURS)")
    maintain.add_argument("--table", action="append", help="only this table (repeat for more), e.g. silver.posts")
    maintain.add_argument("--no-compact", action="store_true", help="only expire snapshots")
    maintain.add_argument("--no-orphans", action="store_true", help="skip the listing for orphan files")
    maintain.set_defaults(func=cmd_maintain)

    operator("refresh", "rebuild Silver and Gold from Bronze (after a cleaning rule or a Gold formula changed)",
             why_required=False).set_defaults(func=cmd_refresh)
    sub.add_parser("sweep", help="have the landing-zone sensor list every landed file at its next tick (it "
                   "finds files whose event was lost)").set_defaults(func=cmd_sweep)
    eng = sub.add_parser("engine", help="the warm Spark engine runs attach to (the sensor starts it; "
                         "docs/runbook.md)")
    eng.add_argument("action", choices=["start", "stop", "status"])
    eng.set_defaults(func=cmd_engine)
    cache = sub.add_parser("class-cache", help="build the Spark driver's class archive if missing (drivers start "
                           "about a third sooner; bin/setup builds it)")
    cache.add_argument("--rebuild", action="store_true", help="build it again even if it exists")
    cache.set_defaults(func=cmd_class_cache)
    sub.add_parser("contracts", help="print every table's contract as Markdown").set_defaults(func=cmd_contracts)
    sub.add_parser("spark-conf", help="print the Spark settings of this environment as --conf arguments "
                   "(for a Glue job or spark-submit)").set_defaults(func=cmd_spark_conf)

    args = parser.parse_args(argv)
    try:
        load_settings()  # every command validates every setting first, so a typo fails here, not mid-way
        return args.func(args)
    except SettingsError as exc:
        print(f"lakehouse: {exc}", file=sys.stderr)
        return 2
    except UserError as exc:
        print(f"lakehouse {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
