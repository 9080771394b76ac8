"""AWS mode against a real moto server on loopback: S3 landing zone and sensor, Iceberg tables in the Glue Data
Catalog (created and committed through pyiceberg's GlueCatalog), Athena's request/poll/fetch/error flow.

Not covered here, because nothing real can run it on this machine: Spark writing to S3 through the Glue catalog
(pyspark ships no S3 connector and no registry here has one) and Athena executing SQL (moto does not run queries;
its results are set through moto's own API). The Spark code is the same code the local tests run.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import replace
from datetime import datetime, timezone

import boto3
import dagster as dg
import pyarrow as pa
import pytest
import requests
from botocore.stub import Stubber

from lakehouse.catalog import catalog_for, create_tables
from lakehouse.contracts import ALL_TABLES, INGESTION_LOG, Entity
from lakehouse.ingestion import read_log
from lakehouse.settings import NAMESPACES, load_settings
from lakehouse.tables import TABLE_PROPERTIES


@pytest.fixture
def aws(moto_endpoint, tmp_path):
    """AWS settings pointing at moto: a fresh bucket, and no Glue databases left from another test."""
    bucket = f"lake-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=moto_endpoint).create_bucket(Bucket=bucket)
    glue = boto3.client("glue", endpoint_url=moto_endpoint)
    for ns in NAMESPACES:
        try:
            for t in glue.get_tables(DatabaseName=ns)["TableList"]:
                glue.delete_table(DatabaseName=ns, Name=t["Name"])
            glue.delete_database(Name=ns)
        except glue.exceptions.EntityNotFoundException:
            pass
    return load_settings({
        "LAKEHOUSE_ENV": "aws", "LAKEHOUSE_S3_BUCKET": bucket, "LAKEHOUSE_S3_PREFIX": "landing",
        "LAKEHOUSE_AWS_ENDPOINT": moto_endpoint, "AWS_REGION": "us-east-1", "LAKEHOUSE_HOME": str(tmp_path),
        "LAKEHOUSE_ATHENA_WORKGROUP": "primary",
    })


def test_tables_are_created_in_glue_as_iceberg(aws):
    catalog = catalog_for(aws)
    assert sorted(create_tables(catalog, TABLE_PROPERTIES)) == sorted(c.identifier for c in ALL_TABLES)
    assert create_tables(catalog, TABLE_PROPERTIES) == []  # idempotent
    glue = boto3.client("glue", endpoint_url=aws.aws_endpoint)
    table = glue.get_table(DatabaseName="silver", Name="posts")["Table"]
    assert table["Parameters"]["table_type"] == "ICEBERG"
    assert table["Parameters"]["metadata_location"].startswith(f"s3://{aws.s3_bucket}/warehouse/")


def test_glue_tables_have_the_schema_spark_creates_locally(aws, spark, lakehouse, settings):
    from lakehouse import tables

    tables.ensure_tables(spark)  # Spark's DDL, through the local JDBC catalog
    local, glue = catalog_for(settings), catalog_for(aws)
    create_tables(glue, TABLE_PROPERTIES)  # pyiceberg's DDL, through Glue

    def shape(catalog, identifier):
        t = catalog.load_table(identifier)
        fields = [(f.name, str(f.field_type), f.required) for f in t.schema().fields]
        spec = [(t.schema().find_column_name(p.source_id), str(p.transform)) for p in t.spec().fields]
        return fields, spec

    for contract in ALL_TABLES:
        assert shape(glue, contract.identifier) == shape(local, contract.identifier), contract.identifier


def test_commits_through_glue_and_the_sensor_reads_them(aws):
    """The ingestion log committed in Glue is what the sensor consults: a settled file is not requested again."""
    from resources import LakehouseResource, S3LandingZoneResource, resources_for
    from sensors.landing import build_landing_sensor

    catalog = catalog_for(aws)
    create_tables(catalog, TABLE_PROPERTIES)
    s3 = boto3.client("s3", endpoint_url=aws.aws_endpoint)
    header = "type,id,subreddit.id,subreddit.name,subreddit.nsfw,created_utc,permalink,domain,url,selftext,title,score"
    for name in ("a.csv", "b.csv"):
        s3.put_object(Bucket=aws.s3_bucket, Key=f"landing/input/post/{name}", Body=f"{header}\n".encode())
    resources = resources_for(aws)
    assert isinstance(resources["landing"], S3LandingZoneResource)
    zone = resources["landing"].zone()
    settled = zone.describe("input/post/a.csv")

    log = catalog.load_table(INGESTION_LOG.identifier)
    before = boto3.client("glue", endpoint_url=aws.aws_endpoint).get_table(
        DatabaseName="bronze", Name="ingestion_log")["Table"]["Parameters"]["metadata_location"]
    now = datetime.now(timezone.utc)
    row = {"entity": "post", "source_uri": settled.uri, "source_etag": settled.etag, "source_size": settled.size,
           "source_modified_at": settled.modified_at, "batch_id": "b1", "status": "loaded", "rows": 0,
           "malformed_rows": 0, "message": "header only: no records", "ingested_at": now, "reason": None,
           "source_records": 0, "invalid_utf8_records": 0, "extra_columns": None}
    log.append(pa.Table.from_pylist([row], schema=log.schema().as_arrow()))
    after = boto3.client("glue", endpoint_url=aws.aws_endpoint).get_table(
        DatabaseName="bronze", Name="ingestion_log")["Table"]["Parameters"]["metadata_location"]
    assert after != before  # the commit went through Glue's metadata pointer
    assert [(e.source_uri, e.status) for e in read_log(catalog, Entity.POST)] == [(settled.uri, "loaded")]

    sensor = build_landing_sensor(aws)
    lakehouse = LakehouseResource.from_settings(aws)
    with dg.instance_for_test() as instance, dg.build_sensor_context(
        instance=instance, resources={"landing": resources["landing"], "lakehouse": lakehouse}
    ) as ctx:
        result = sensor(ctx)
    requested = [k for r in result.run_requests for k in r.run_config["ops"]["bronze__posts"]["config"]["keys"]]
    assert requested == ["input/post/b.csv"]


def _set_athena_results(endpoint: str, rows: list[list[str]]) -> None:
    body = {"results": [{"rows": [{"Data": [{"VarCharValue": v} for v in r]} for r in rows]}]}
    assert requests.post(f"{endpoint}/moto-api/static/athena/query-results", json=body, timeout=10).status_code == 201


def test_athena_runs_in_the_workgroup_writes_to_the_output_location_and_fetches(aws):
    from resources.lakehouse import LakehouseResource
    from resources.query import QueryResource

    athena = boto3.client("athena", endpoint_url=aws.aws_endpoint)
    athena.create_work_group(Name="lakehouse", Configuration={})
    query = QueryResource(lakehouse=LakehouseResource.from_settings(replace(aws, athena_workgroup="lakehouse")),
                          polling_interval=0.01)
    _set_athena_results(aws.aws_endpoint, [["subreddit_name", "posts"], ["meirl", "3"], ["aww", None]])
    sql = "SELECT subreddit_name, sum(posts) AS posts FROM gold.subreddit_daily GROUP BY 1"
    assert query.sql(sql) == [("meirl", "3"), ("aww", None)]  # header row dropped, NULL as None

    [qid] = athena.list_query_executions(WorkGroup="lakehouse")["QueryExecutionIds"]
    execution = athena.get_query_execution(QueryExecutionId=qid)["QueryExecution"]
    assert execution["Query"] == sql and execution["WorkGroup"] == "lakehouse"
    assert execution["ResultConfiguration"]["OutputLocation"].startswith(f"s3://{aws.s3_bucket}/athena-results/")


def test_athena_failure_names_the_query_and_the_reason():
    """moto's Athena always succeeds, so the failure path uses botocore's own stubber on a real client."""
    from resources.athena import AthenaQueryError, LakehouseAthenaClient

    client = boto3.client("athena", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    reason = "COLUMN_NOT_FOUND: line 1:8: Column 'nope' cannot be resolved"
    with Stubber(client) as stub:
        stub.add_response("start_query_execution", {"QueryExecutionId": "q-123"},
                          {"QueryString": "SELECT nope FROM gold.posts", "WorkGroup": "analysts",
                           "ResultConfiguration": {"OutputLocation": "s3://results/"}})
        stub.add_response("get_query_execution", {"QueryExecution": {"Status": {"State": "RUNNING"}}},
                          {"QueryExecutionId": "q-123"})
        stub.add_response("get_query_execution", {"QueryExecution": {"Status": {
            "State": "FAILED", "StateChangeReason": reason}}}, {"QueryExecutionId": "q-123"})
        engine = LakehouseAthenaClient(client, "analysts", "s3://results/", polling_interval=0)
        with pytest.raises(AthenaQueryError, match="q-123 FAILED: COLUMN_NOT_FOUND") as err:
            engine.execute_query("SELECT nope FROM gold.posts", fetch_results=True)
        assert err.value.query_id == "q-123" and err.value.reason == reason
        stub.assert_no_pending_responses()


def test_an_athena_query_that_runs_too_long_is_stopped():
    from resources.athena import AthenaQueryError, LakehouseAthenaClient

    client = boto3.client("athena", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    with Stubber(client) as stub:
        stub.add_response("start_query_execution", {"QueryExecutionId": "q-9"})
        for _ in range(2):
            stub.add_response("get_query_execution", {"QueryExecution": {"Status": {"State": "RUNNING"}}})
        stub.add_response("stop_query_execution", {}, {"QueryExecutionId": "q-9"})
        engine = LakehouseAthenaClient(client, "primary", None, polling_interval=0, max_polls=2)
        with pytest.raises(AthenaQueryError, match="q-9 TIMEOUT"):
            engine.execute_query("SELECT 1")
        stub.assert_no_pending_responses()


def test_aws_mode_is_configuration_only(aws):
    from lakehouse.spark import spark_conf
    from resources import resources_for

    resources = resources_for(aws)
    conf = resources["spark"].spark_config
    assert conf["spark.sql.catalog.lakehouse.catalog-impl"] == "org.apache.iceberg.aws.glue.GlueCatalog"
    assert conf["spark.sql.catalog.lakehouse.warehouse"] == f"s3://{aws.s3_bucket}/warehouse"
    assert conf == spark_conf(aws) and "spark.jars" not in conf
    # The run process (checks) fetches Iceberg and its AWS bundle; inside Glue 5.0 / EMR they are provided.
    assert "iceberg-aws-bundle" in conf["spark.jars.packages"]
    glue_job = load_settings({"LAKEHOUSE_ENV": "aws", "LAKEHOUSE_S3_BUCKET": aws.s3_bucket,
                              "LAKEHOUSE_ICEBERG_PROVIDED": "true"})
    assert "spark.jars.packages" not in spark_conf(glue_job)
    assert resources["lakehouse"].catalog().name == "lakehouse"
    assert resources["query"].lakehouse.environment == "aws"
    # The graph itself does not change: the same assets bind to the AWS resources.
    from lakehouse_assets import bronze, gold, silver

    defs = dg.Definitions.merge(bronze.defs, silver.defs, gold.defs, dg.Definitions(resources=resources))
    assert len(defs.resolve_asset_graph().get_all_asset_keys()) == 10


def test_the_iam_policy_is_a_valid_policy_document(moto_endpoint):
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "deploy" / "iam-policy.json").read_text()
    for placeholder, value in (("LAKEHOUSE_BUCKET", "my-lake"), ("LANDING_PREFIX", "landing"),
                               ("AWS_REGION", "eu-west-1"), ("AWS_ACCOUNT_ID", "123456789012"),
                               ("ATHENA_WORKGROUP", "lakehouse"), ("GLUE_JOB_NAME", "lakehouse-step"),
                               ("LANDING_QUEUE", "lake-landed")):
        text = text.replace(placeholder, value)
    iam = boto3.client("iam", endpoint_url=moto_endpoint)
    policy = iam.create_policy(PolicyName=f"lakehouse-{uuid.uuid4().hex[:6]}", PolicyDocument=text)["Policy"]
    assert policy["Arn"].startswith("arn:aws:iam::")
    actions = {a for s in json.loads(text)["Statement"] for a in s["Action"]}
    # What the code calls: sensor and Bronze (S3), pyiceberg (Glue), the query resource (Athena), Pipes (Glue jobs).
    assert {"s3:ListBucket", "s3:GetObject", "glue:UpdateTable", "athena:StartQueryExecution",
            "athena:GetQueryResults", "glue:StartJobRun", "logs:GetLogEvents", "sqs:ReceiveMessage",
            "sqs:DeleteMessage", "sqs:ChangeMessageVisibility", "sqs:SendMessage"} <= actions
    assert not any(a.endswith(":*") or a == "*" for a in actions)
