"""Operator jobs: what to run when the data needs a human, from the launchpad or the `lakehouse` command line.

- `retract_file`: take a file version (or a batch) out of Bronze, Silver and Gold.
- `ingest_posts` / `ingest_comments`: the sensor's selection for one entity; with `reprocess: true` in the Bronze
  config they take a retracted or rejected file version again (a retracted one in its old place: the undo of a
  retraction).
- `accept_check`: accept a failing check's current failure (or revoke an acceptance), with who and why.
- `full_refresh`: rebuild Silver and Gold from Bronze, each table swapped in one commit.

Each is recorded in `ops.operator_log` (lakehouse/operations.py) and runs in the `lakehouse` pool like any run.
"""

import dagster as dg
from pydantic import Field

from lakehouse import operations
from lakehouse.contracts import Entity
from lakehouse_assets.bronze import POOL
from lakehouse_assets.metadata import CHECK_SCOPE_TAG, REBUILD_TAG, check_named, check_table
from resources import LakehouseResource, SparkResource
from resources.runs import liveness
from sensors.landing import downstream_of



class RetractConfig(dg.Config):
    entity: str = Field(description="post or comment")
    target: str = Field(description="the file (landing key input/<entity>/..., path or URI) or a batch id")
    etag: str = Field(default="", description="the file version, when the file has several loaded versions")
    by: str = Field(description="who retracts it")
    why: str = Field(description="why: recorded in the ingestion log and the operator log")


@dg.op(pool=POOL, description="Take a file version (or a batch) out of Bronze, Silver and Gold; record who and why.")
def retract(context: dg.OpExecutionContext, config: RetractConfig, spark: SparkResource,
            lakehouse: LakehouseResource) -> dg.Output[dict]:
    result = operations.retract(
        spark.spark_session, Entity(config.entity), config.target, actor=config.by, reason=config.why,
        landing_root=lakehouse.settings.landing_root, etag=config.etag or None, run_id=context.run_id,
        alive=liveness(context.instance))
    details = result.details()
    context.log.info(f"retracted {len(result.versions)} file versions: {details}")
    return dg.Output(details, metadata={k: v for k, v in details.items() if isinstance(v, int)}
                     | {"versions": "\n".join(f"{v.uri}@{v.etag} (batch {v.batch_id})" for v in result.versions)})


@dg.job(description="Take a file version (or a batch) out of Bronze, Silver and Gold (lakehouse retract).")
def retract_file():
    retract()


class AcceptConfig(dg.Config):
    asset: str = Field(description="the checked asset, e.g. silver/posts")
    check: str = Field(description="the check's name, e.g. primary_key_unique")
    by: str = Field(description="who accepts it")
    why: str = Field(description="why the failure is acceptable")
    revoke: bool = Field(default=False, description="take an acceptance back instead")


@dg.op(pool=POOL, description="Accept a failing check's current failure (or revoke an acceptance), with who and why.")
def accept(context: dg.OpExecutionContext, config: AcceptConfig, spark: SparkResource) -> dg.Output[dict]:
    session = spark.spark_session
    check = check_named(config.asset, config.check)  # an unknown name fails here, listing the checks
    table = check_table(dg.AssetKey.from_user_string(config.asset))
    if config.revoke:
        entry = operations.revoke(session, table, config.check, actor=config.by, reason=config.why,
                                  run_id=context.run_id)
        context.log.info(f"revoked the acceptance of {config.check} on {table}: {entry['summary']}")
    else:
        outcome = check.outcome(session, False, liveness(context.instance))
        entry = operations.accept(session, table, config.check, outcome, actor=config.by, reason=config.why,
                                  run_id=context.run_id)
        context.log.warning(f"accepted {config.check} on {table}: {outcome.summary}")
    return dg.Output(entry, metadata={"summary": entry["summary"], "by": entry["by"], "why": entry["why"]})


@dg.job(description="Accept a failing check's current failure so the pipeline moves on, or revoke an acceptance.")
def accept_check():
    accept()


SILVER_AND_GOLD = (dg.AssetSelection.groups("silver") | dg.AssetSelection.groups("gold"))
full_refresh = dg.define_asset_job(
    "full_refresh",
    selection=SILVER_AND_GOLD,
    description="Rebuild Silver and Gold from Bronze (after a cleaning rule or a Gold formula changed): each table "
                "swapped in one commit, incremental positions reset, every check over whole tables.",
    tags={REBUILD_TAG: "true", CHECK_SCOPE_TAG: "full"},
)
ingest_jobs = [
    dg.define_asset_job(
        f"ingest_{entity.plural}",
        selection=dg.AssetSelection.assets(*downstream_of(entity)),
        description=f"Ingest landed {entity.value} files and update the layers below (what the sensor runs); "
                    "`reprocess: true` takes retracted or rejected file versions again.",
    )
    for entity in Entity
]

defs = dg.Definitions(jobs=[retract_file, accept_check, full_refresh, *ingest_jobs])
