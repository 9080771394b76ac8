"""Where the Spark steps run: in the run process (default), or as a separate job launched through Dagster Pipes.

Every mode runs the same `lakehouse` code; only the launcher differs:
- `in_process`: the asset calls the pipeline step with the run's Spark session (local mode or a cluster master URL).
- `subprocess`: `python -m lakehouse.job` in a child process through `PipesSubprocessClient` (the Pipes protocol
  on one machine: what a Glue or EMR job does, minus AWS).
- `glue`: an AWS Glue job whose script calls `lakehouse.job.main()`, launched through dagster-aws's
  `PipesGlueClient`; the Pipes context goes through S3, messages come back through CloudWatch.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

import dagster as dg

from lakehouse.contracts import Entity

from lakehouse.settings import COMPUTE_MODES as MODES

if TYPE_CHECKING:
    from dagster_aws.pipes import PipesGlueClient


class ComputeResource(dg.ConfigurableResource):
    mode: str = "in_process"
    glue_job_name: str | None = None
    pipes_bucket: str | None = None  # S3 bucket for the Pipes context of AWS jobs
    aws_region: str | None = None
    aws_endpoint: str | None = None

    @property
    def remote(self) -> bool:
        return self.mode != "in_process"

    @staticmethod
    def job_arguments(step: str, entity: Entity | None = None, table: str | None = None) -> list[str]:
        return ["--step", step] + (["--entity", entity.value] if entity else []) + (["--table", table] if table else [])

    def glue_client(self) -> "PipesGlueClient":
        # Imported here, not at the top: dagster-aws costs every local run process ~1.7 s to import.
        import boto3
        from dagster_aws.pipes import PipesCloudWatchMessageReader, PipesGlueClient, PipesS3ContextInjector

        session = boto3.session.Session(region_name=self.aws_region)
        return PipesGlueClient(
            client=session.client("glue", endpoint_url=self.aws_endpoint),
            context_injector=PipesS3ContextInjector(
                bucket=self.pipes_bucket or "", client=session.client("s3", endpoint_url=self.aws_endpoint)),
            message_reader=PipesCloudWatchMessageReader(client=session.client("logs", endpoint_url=self.aws_endpoint)),
        )

    def run_step(
        self,
        context: dg.AssetExecutionContext,
        step: str,
        entity: Entity | None = None,
        table: str | None = None,
        extras: dict[str, Any] | None = None,
    ) -> dg.PipesClientCompletedInvocation:
        """Launch one pipeline step as a job; it reports its materialisations back through Pipes."""
        args = self.job_arguments(step, entity, table)
        if self.mode == "subprocess":
            client = dg.PipesSubprocessClient(env=dict(os.environ))
            return client.run(context=context, command=[sys.executable, "-m", "lakehouse.job", *args], extras=extras)
        if self.mode == "glue":
            if not self.glue_job_name:
                raise ValueError("LAKEHOUSE_GLUE_JOB is not set: the Glue job that runs lakehouse.job")
            glue_args = {k: v for k, v in zip(args[::2], args[1::2])} | {"--pipes-s3-context": "true"}
            return self.glue_client().run(
                context=context, start_job_run_params={"JobName": self.glue_job_name, "Arguments": glue_args},
                extras=extras,
            )
        raise ValueError(f"compute mode {self.mode!r} does not launch jobs (one of {MODES})")
