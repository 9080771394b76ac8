"""The SQL engine resource: DuckDB over the Iceberg tables locally, Amazon Athena on AWS (same SQL, same names;
the Athena client is resources/athena.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import dagster as dg

from lakehouse.settings import Environment, LakehouseSettings
from resources.lakehouse import LakehouseResource

if TYPE_CHECKING:
    from resources.athena import LakehouseAthenaClient


class QueryResource(dg.ConfigurableResource):
    """`query.sql("SELECT ...")` -> rows: on DuckDB over the local catalog, or on Athena over the Glue catalog.

    The same SQL and table names on both; Athena's API hands values back as strings (NULL as None), DuckDB typed.
    Where to query comes from the lakehouse resource it nests, so the two cannot disagree.
    """

    lakehouse: LakehouseResource
    polling_interval: float = 1.0

    @classmethod
    def from_settings(cls, settings: LakehouseSettings) -> "QueryResource":
        return cls(lakehouse=LakehouseResource.from_settings(settings))

    def athena(self) -> "LakehouseAthenaClient":
        import boto3

        from resources.athena import LakehouseAthenaClient

        settings = self.lakehouse.settings
        # Credentials from the standard AWS chain only.
        client = boto3.client("athena", region_name=settings.aws_region, endpoint_url=settings.aws_endpoint)
        return LakehouseAthenaClient(client, settings.athena_workgroup, settings.athena_results_uri,
                                     polling_interval=self.polling_interval)

    def sql(self, query: str) -> list[tuple]:
        if self.lakehouse.environment == Environment.AWS.value:
            return self.athena().execute_query(query, fetch_results=True)
        from lakehouse.query import QueryEngine

        engine = QueryEngine(self.lakehouse.catalog())
        try:
            relation = engine.sql(query)
            return relation.fetchall() if relation is not None else []
        finally:
            engine.con.close()
