"""Configuration and input mistakes fail at start with a message naming the variable and the accepted values."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lakehouse.contracts import Entity
from lakehouse.landing import InvalidKey, LocalLandingZone, check_key, landing_key
from lakehouse.settings import SettingsError, load_settings

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("env, names, accepted", [
    ({"LAKEHOUSE_ENV": "aws"}, ["LAKEHOUSE_S3_BUCKET"], "required"),
    ({"LAKEHOUSE_ENV": "prod"}, ["LAKEHOUSE_ENV"], "local, aws"),
    ({"LAKEHOUSE_COMPUTE": "glu"}, ["LAKEHOUSE_COMPUTE"], "in_process, subprocess, glue"),
    ({"LAKEHOUSE_COMPUTE": "glue"}, ["LAKEHOUSE_ENV=aws", "LAKEHOUSE_GLUE_JOB"], "Glue"),
    ({"LAKEHOUSE_QUARANTINE_MAX_RATE": "posts=0.1"}, ["LAKEHOUSE_QUARANTINE_MAX_RATE"], "post=0.05"),
    ({"LAKEHOUSE_QUARANTINE_MAX_RATE": "1.5"}, ["LAKEHOUSE_QUARANTINE_MAX_RATE"], "between 0 and 1"),
    ({"LAKEHOUSE_SPARK_CONF": "spark.executor.cores"}, ["LAKEHOUSE_SPARK_CONF"], "key=value"),
    ({"LAKEHOUSE_SPARK_MASTER": "sparc://host:7077"}, ["LAKEHOUSE_SPARK_MASTER"], "spark://host:port"),
    ({"LAKEHOUSE_SPARK_DRIVER_MEMORY": "3 GB"}, ["LAKEHOUSE_SPARK_DRIVER_MEMORY"], "3g"),
    ({"LAKEHOUSE_SPARK_QUICK_JIT": "yes"}, ["LAKEHOUSE_SPARK_QUICK_JIT"], "auto, on, off"),
    ({"LAKEHOUSE_SENSOR_INTERVAL": "0"}, ["LAKEHOUSE_SENSOR_INTERVAL"], "whole number"),
    ({"LAKEHOUSE_SENSOR_BATCH_SIZE": "ten"}, ["LAKEHOUSE_SENSOR_BATCH_SIZE"], "whole number"),
    ({"LAKEHOUSE_ENGINE_MAX_RUNS": "0"}, ["LAKEHOUSE_ENGINE_MAX_RUNS"], "whole number"),
    ({"LAKEHOUSE_ICEBERG_PROVIDED": "maybe"}, ["LAKEHOUSE_ICEBERG_PROVIDED"], "true"),
    ({"LAKEHOUSE_ENV": "aws", "LAKEHOUSE_S3_BUCKET": "s3://my-bucket"}, ["LAKEHOUSE_S3_BUCKET"], "without s3://"),
    ({"LAKEHOUSE_ATHENA_OUTPUT": "my-bucket/results"}, ["LAKEHOUSE_ATHENA_OUTPUT"], "s3://"),
    ({"LAKEHOUSE_SQS_QUEUE_URL": "https://sqs.eu-west-1.amazonaws.com/123456789012/landed"},
     ["LAKEHOUSE_SQS_QUEUE_URL", "LAKEHOUSE_ENV=aws"], "listed"),
    ({"LAKEHOUSE_ENV": "aws", "LAKEHOUSE_S3_BUCKET": "b-1", "LAKEHOUSE_SQS_QUEUE_URL": "arn:aws:sqs:eu-west-1:1:q"},
     ["LAKEHOUSE_SQS_QUEUE_URL"], "queue URL"),
    ({"LAKEHOUSE_SWEEP_INTERVAL": "0"}, ["LAKEHOUSE_SWEEP_INTERVAL"], "whole number"),
    ({"LAKEHOUSE_COMPUTEE": "glue"}, ["LAKEHOUSE_COMPUTEE", "did you mean LAKEHOUSE_COMPUTE"], "not a lakehouse"),
])
def test_a_wrong_setting_names_the_variable_and_what_is_accepted(env, names, accepted):
    with pytest.raises(SettingsError) as err:
        load_settings(env)
    message = str(err.value)
    assert all(n in message for n in names) and accepted in message, message


def test_every_problem_is_reported_at_once():
    with pytest.raises(SettingsError) as err:
        load_settings({"LAKEHOUSE_COMPUTE": "glu", "LAKEHOUSE_SENSOR_INTERVAL": "-1"})
    assert len(err.value.problems) == 2


def test_values_that_were_misread_before_are_read_right():
    settings = load_settings({
        # A value holding commas (a jar list), and a JSON form for anything else.
        "LAKEHOUSE_SPARK_CONF": "spark.jars=/a.jar,/b.jar,spark.executor.cores=2",
        "LAKEHOUSE_QUARANTINE_MAX_RATE": "comment=0.2",
        "LAKEHOUSE_ENV": "aws", "LAKEHOUSE_S3_BUCKET": "my-bucket", "LAKEHOUSE_S3_PREFIX": "/raw/",
    })
    assert settings.extra_spark_conf == {"spark.jars": "/a.jar,/b.jar", "spark.executor.cores": "2"}
    assert settings.quarantine_max_rate["comment"] == 0.2
    assert settings.warehouse_uri == "s3://my-bucket/warehouse" and settings.s3_prefix == "raw"
    assert load_settings({"LAKEHOUSE_SPARK_CONF": '{"spark.jars": "a.jar,b.jar"}'}).extra_spark_conf == {
        "spark.jars": "a.jar,b.jar"}


def _run(args, env, cwd=REPO):
    return subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=120)


def test_commands_and_definitions_fail_at_start(tmp_path):
    env = {**os.environ, "LAKEHOUSE_HOME": str(tmp_path / "lh"), "LAKEHOUSE_COMPUTE": "glu"}
    out = _run([str(BIN / "lakehouse"), "tables"], env)
    assert out.returncode == 2 and "LAKEHOUSE_COMPUTE='glu'" in out.stderr and "in_process" in out.stderr
    assert not (tmp_path / "lh").exists()  # nothing was created before the check
    out = _run([sys.executable, "-c", "import lakehouse_assets.definitions"], env)
    assert out.returncode != 0 and "LAKEHOUSE_COMPUTE='glu'" in out.stderr


def test_a_landing_name_cannot_leave_the_entity_prefix(tmp_path):
    zone = LocalLandingZone(tmp_path / "landing")
    source = tmp_path / "x.csv"
    source.write_text("type,id\n")
    for name in ("../../../x.csv", "../comment/x.csv", "/etc/x.csv", "a/../../x.csv", ".hidden.csv", "sub/.x.csv"):
        with pytest.raises(InvalidKey, match="refused"):
            zone.land(source, Entity.POST, name=name)
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["x.csv"]
    assert zone.land(source, Entity.POST, name="2022/03/x.csv").key == "input/post/2022/03/x.csv"
    assert landing_key(Entity.COMMENT, "c.csv") == "input/comment/c.csv"

    env = {**os.environ, "LAKEHOUSE_HOME": str(tmp_path / "lh")}
    out = _run([str(BIN / "lakehouse"), "land", "post", str(source), "--name", "../../../x.csv"], env)
    assert out.returncode == 2 and "refused" in out.stderr
    assert not (tmp_path / "lh" / "x.csv").exists() and not (tmp_path / "x.csv.part").exists()


def test_a_key_from_run_config_must_name_a_file_of_the_entity():
    assert check_key("input/post/a.csv", Entity.POST) == "input/post/a.csv"
    for key in ("input/post/../../catalog.db", "input/comment/c.csv", "/input/post/a.csv", "elsewhere/a.csv"):
        with pytest.raises(InvalidKey):
            check_key(key, Entity.POST)
    with pytest.raises(InvalidKey):
        LocalLandingZone(Path("/tmp/zone")).path_for("../outside.csv")
