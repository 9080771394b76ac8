"""The embedded SQL engine: DuckDB over the Iceberg tables (it stands in for Athena locally).

DuckDB cannot load its Iceberg extension offline, so pyiceberg plans each table's scan and DuckDB reads the
planned Parquet files directly (lazily, column-pruned). A table with delete files or an evolved schema is read
through pyiceberg into Arrow instead, which applies deletes and column mapping.
"""

from __future__ import annotations

import re
from urllib.parse import unquote, urlparse

import duckdb
from pyiceberg.catalog import Catalog
from pyiceberg.table import Table

from lakehouse.settings import NAMESPACES


def _local_path(uri: str) -> str:
    return unquote(urlparse(uri).path) if uri.startswith("file:") else uri


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


class QueryEngine:
    """`QueryEngine(catalog).sql("SELECT ... FROM gold.subreddit_daily")` -> a DuckDB relation."""

    def __init__(self, catalog: Catalog, namespaces: tuple[str, ...] = NAMESPACES):
        self.catalog = catalog
        self.con = duckdb.connect()
        self.namespaces = namespaces

    def _register(self, namespace: str, name: str, table: Table) -> None:
        target = f"{_quote(namespace)}.{_quote(name)}"
        tasks = list(table.scan().plan_files())
        plain = tasks and len(table.schemas()) == 1 and not any(t.delete_files for t in tasks)
        # The data files go to DuckDB as a value (its relation API), never pasted into SQL text: a warehouse path
        # may hold any character.
        source = f"_source_{namespace}_{name}"
        if plain:
            self.con.read_parquet([_local_path(t.file.file_path) for t in tasks]).create_view(source, replace=True)
        else:
            self.con.register(source, table.scan().to_arrow())
        self.con.execute(f"CREATE OR REPLACE VIEW {target} AS SELECT * FROM {_quote(source)}")

    def sql(self, query: str) -> duckdb.DuckDBPyRelation:
        # Only tables the query names are planned (a word match: cheap, and a false hit only costs a scan plan).
        words = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", query.lower()))
        for ns in self.namespaces:
            self.con.execute(f"CREATE SCHEMA IF NOT EXISTS {_quote(ns)}")
            if not self.catalog.namespace_exists(ns):
                continue
            for ident in self.catalog.list_tables(ns):
                name = ident[-1]
                if name.lower() in words and ns in words:
                    self._register(ns, name, self.catalog.load_table(ident))
        return self.con.sql(query)
