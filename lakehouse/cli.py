"""`lakehouse`: the command line for the embedded lakehouse (generate, land, query, tables, init)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from lakehouse.contracts import Entity
from lakehouse.landing import InvalidKey
from lakehouse.settings import Environment, SettingsError, load_settings

DAGSTER_YAML = """\
# Written by `lakehouse init`.
telemetry:
  enabled: false
concurrency:
  runs:
    # One lakehouse run at a time: runs write the same Iceberg tables and the same SQLite catalog, and each
    # step's watermark assumes it is the only writer. Queued runs start as soon as the previous one ends.
    max_concurrent_runs: 1
  pools:
    default_limit: 1
"""


class UsageError(Exception):
    """A mistake in what the user typed: printed as one line, exit status 2."""


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
    except (UsageError, InvalidKey) as exc:
        print(f"lakehouse {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
