"""AWS Glue 5.0 job script: one lakehouse step, reporting back to Dagster through Pipes.

Upload this file to S3 as the job's script. Job parameters (see docs/aws.md):
  --additional-python-modules  s3://<bucket>/dist/lakehouse-<version>-py3-none-any.whl,dagster-pipes==1.13.27
  --datalake-formats           iceberg
  --conf                       the Spark settings `lakehouse spark-conf` prints for LAKEHOUSE_ENV=aws
  --LAKEHOUSE_ENV aws  --LAKEHOUSE_S3_BUCKET <bucket>  --LAKEHOUSE_ICEBERG_PROVIDED true
                               (read by the job from the arguments below)
Dagster adds --step/--entity/--table, --pipes-s3-context and the --dagster-pipes-* bootstrap arguments.
"""

import os
import sys

# Glue passes job parameters as `--NAME value` arguments; the lakehouse reads its settings from the environment.
for i, arg in enumerate(sys.argv[:-1]):
    if arg.startswith("--LAKEHOUSE_"):
        os.environ[arg[2:]] = sys.argv[i + 1]

from lakehouse.job import main  # noqa: E402

sys.exit(main())
