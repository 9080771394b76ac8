"""Amazon Athena through dagster-aws's `AthenaClient` (start, poll), extended with what a lakehouse needs from it: a
result location and database, failures that name the query id and Athena's reason, and results read through the
API page by page. Imported only where Athena is used: dagster-aws costs a local run process ~1.7 s to import.
"""

from __future__ import annotations

import time

from dagster_aws.athena.resources import AthenaClient, AthenaError, AthenaTimeout

RUNNING_STATES = ("QUEUED", "RUNNING")


class AthenaQueryError(AthenaError):
    """An Athena query that did not succeed: its id, final state and Athena's reason."""

    def __init__(self, query_id: str, state: str, reason: str):
        super().__init__(f"Athena query {query_id} {state}: {reason}")
        self.query_id, self.state, self.reason = query_id, state, reason


class LakehouseAthenaClient(AthenaClient):
    """dagster-aws's client with a result location, a default database and every page of the results."""

    def __init__(self, client, workgroup: str, output_location: str | None, database: str | None = None,
                 polling_interval: float = 1, max_polls: int = 600):
        super().__init__(client, workgroup=workgroup, polling_interval=polling_interval, max_polls=max_polls)
        self.output_location = output_location
        self.database = database

    def execute_query(self, query: str, fetch_results: bool = False):
        params: dict = {"QueryString": query, "WorkGroup": self.workgroup}
        if self.output_location:
            params["ResultConfiguration"] = {"OutputLocation": self.output_location}
        if self.database:
            params["QueryExecutionContext"] = {"Catalog": "AwsDataCatalog", "Database": self.database}
        query_id = self.client.start_query_execution(**params)["QueryExecutionId"]
        try:
            self._poll(query_id)
        except AthenaTimeout as exc:
            # Do not leave it running (and billing) behind the error.
            self.client.stop_query_execution(QueryExecutionId=query_id)
            raise AthenaQueryError(query_id, "TIMEOUT", f"still running after {self.max_polls} polls; stopped") from exc
        return self._results(query_id) if fetch_results else None

    def _poll(self, execution_id: str) -> None:
        for _ in range(self.max_polls):
            status = self.client.get_query_execution(QueryExecutionId=execution_id)["QueryExecution"]["Status"]
            if status["State"] not in RUNNING_STATES:
                break
            time.sleep(self.polling_interval)
        else:
            raise AthenaTimeout()
        if status["State"] != "SUCCEEDED":
            reason = (status.get("StateChangeReason") or status.get("AthenaError", {}).get("ErrorMessage")
                      or "no reason given")
            raise AthenaQueryError(execution_id, status["State"], reason)

    def _results(self, execution_id: str) -> list[tuple]:
        """Rows as tuples of strings (None for NULL), header row dropped, every page read."""
        rows: list[tuple] = []
        for page in self.client.get_paginator("get_query_results").paginate(QueryExecutionId=execution_id):
            rows.extend(tuple(d.get("VarCharValue") for d in r["Data"]) for r in page["ResultSet"]["Rows"])
        return rows[1:] if rows else rows
