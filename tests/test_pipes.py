"""The Pipes path: the same assets launch `python -m lakehouse.job` as separate jobs, which report their
materialisations back; and the AWS Glue launch call against a moto server.
"""


import base64
import json
import threading
import time
import uuid
import zlib

import boto3
import dagster as dg
import pytest

from lakehouse.contracts import Entity
from lakehouse.generator import generate
from lakehouse.settings import load_settings
from tests import expected as exp

pytestmark = pytest.mark.slow


def defs_with(settings) -> dg.Definitions:
    from lakehouse_assets import bronze, gold, silver
    from resources import resources_for

    return dg.Definitions.merge(
        bronze.defs, silver.defs, gold.defs,
        dg.Definitions(resources=resources_for(settings), executor=dg.in_process_executor),
    )


def test_every_step_runs_as_a_pipes_job_and_reports_back(spark, settings, lakehouse, tmp_path):
    from tests.test_end_to_end import assert_gold_matches

    files = generate(tmp_path / "gen", posts=200, comments=600, files=1, seed=21, days=3, subreddits=3)
    lakehouse.land(files.posts[0], Entity.POST)
    lakehouse.land(files.comments[0], Entity.COMMENT)
    pipes_settings = load_settings({**dict(__import__("os").environ), "LAKEHOUSE_COMPUTE": "subprocess"})
    job = defs_with(pipes_settings).resolve_implicit_global_asset_job_def()
    result = job.execute_in_process(instance=dg.DagsterInstance.ephemeral())
    assert result.success
    reported = {e.asset_key.to_user_string(): e.materialization.metadata
                for e in result.get_asset_materialization_events()}
    assert len(reported) == 10
    # These numbers come from the job process (only it knows them), through the Pipes messages.
    assert all("seconds" in m for m in reported.values())
    assert reported["silver/posts"]["inserted"].value == 200
    assert reported["bronze/comments"]["batch_rows"].value == files.comment_rows
    assert "| input/comment/" in reported["bronze/comments"]["files"].value  # the per-file table, as Markdown
    assert reported["gold/post_engagement"]["dagster/row_count"].value == 200
    # The checks ran in the run process against what the jobs committed, and passed.
    evaluations = result.get_asset_check_evaluations()
    assert evaluations and all(e.passed for e in evaluations if e.severity is dg.AssetCheckSeverity.ERROR)
    assert_gold_matches(settings, exp.expected_gold(files.posts, files.comments))


def _decode(param: str) -> dict:
    return json.loads(zlib.decompress(base64.b64decode(param)))


def _glue_job_emulator(moto_endpoint: str, job_name: str, stop: threading.Event) -> None:
    """What the Glue job's `lakehouse.job` would print to CloudWatch: the Pipes messages of one step."""
    glue = boto3.client("glue", endpoint_url=moto_endpoint)
    logs = boto3.client("logs", endpoint_url=moto_endpoint)
    while not stop.is_set():
        runs = glue.get_job_runs(JobName=job_name)["JobRuns"]
        if runs:
            run = runs[0]
            group = f"{run.get('LogGroupName', '/aws-glue/jobs')}/output"
            try:
                logs.create_log_group(logGroupName=group)
            except logs.exceptions.ResourceAlreadyExistsException:
                pass
            logs.create_log_stream(logGroupName=group, logStreamName=run["Id"])
            messages = [
                {"method": "opened", "params": {}},
                {"method": "report_asset_materialization", "params": {
                    "asset_key": "silver/posts", "data_version": None,
                    "metadata": {"inserted": {"raw_value": 5, "type": "int"}}}},
                {"method": "closed", "params": {}},
            ]
            now = int(time.time() * 1000)
            logs.put_log_events(logGroupName=group, logStreamName=run["Id"], logEvents=[
                {"timestamp": now + i, "message": json.dumps({"__dagster_pipes_version": "0.1", **m})}
                for i, m in enumerate(messages)])
            return
        time.sleep(0.2)


def test_glue_launch_through_pipes_against_moto(moto_endpoint):
    """PipesGlueClient starts the job with the step's arguments and the Pipes bootstrap, waits for it, and reads
    the job's messages back from CloudWatch (written here by an emulator: moto runs no script)."""
    from resources.compute import ComputeResource

    bucket = f"pipes-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=moto_endpoint).create_bucket(Bucket=bucket)
    glue = boto3.client("glue", endpoint_url=moto_endpoint)
    job_name = f"lakehouse-step-{uuid.uuid4().hex[:6]}"
    glue.create_job(Name=job_name, Role="arn:aws:iam::123456789012:role/lakehouse-glue",
                    Command={"Name": "glueetl", "ScriptLocation": f"s3://{bucket}/glue_job.py"}, GlueVersion="5.0")
    compute = ComputeResource(mode="glue", glue_job_name=job_name, pipes_bucket=bucket,
                              aws_region="us-east-1", aws_endpoint=moto_endpoint)

    @dg.asset(key=["silver", "posts"])
    def silver_posts(context: dg.AssetExecutionContext):
        return compute.run_step(context, "silver", Entity.POST).get_materialize_result()

    stop = threading.Event()
    emulator = threading.Thread(target=_glue_job_emulator, args=(moto_endpoint, job_name, stop), daemon=True)
    emulator.start()
    try:
        result = dg.materialize([silver_posts])
    finally:
        stop.set()
    assert result.success
    [event] = result.get_asset_materialization_events()
    assert event.materialization.metadata["inserted"].value == 5  # reported by the "job", read from CloudWatch
    [run] = glue.get_job_runs(JobName=job_name)["JobRuns"]
    assert run["JobRunState"] == "SUCCEEDED"
    args = run["Arguments"]
    assert (args["--step"], args["--entity"], args["--pipes-s3-context"]) == ("silver", "post", "true")
    context = _decode(args["--dagster-pipes-context"])
    assert context == {"bucket": bucket, "key": context["key"]}  # the context travelled through S3
    assert "--dagster-pipes-messages" in args
