"""The Iceberg catalog as Python sees it (pyiceberg): SQLite locally, the AWS Glue Data Catalog on AWS.

Spark reaches the same catalog through its own settings (`lakehouse/spark.py`); Python uses this one to read
(the sensor's ingestion log, the local query engine) and to create the tables from their contracts where no Spark
is at hand (bootstrapping an AWS account: `lakehouse init` with `LAKEHOUSE_ENV=aws`).
"""

from __future__ import annotations

import functools

import re

from pyiceberg.catalog import Catalog
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.transforms import DayTransform, IdentityTransform
from pyiceberg.types import (
    BooleanType,
    DateType,
    DecimalType,
    DoubleType,
    IcebergType,
    IntegerType,
    ListType,
    LongType,
    MapType,
    NestedField,
    StringType,
    TimestamptzType,
)

from lakehouse.contracts import ALL_TABLES, TableContract
from lakehouse.settings import CATALOG_NAME, NAMESPACES, Environment, LakehouseSettings


def catalog_for(settings: LakehouseSettings) -> Catalog:
    """pyiceberg's catalog for the environment: the SQLite catalog Spark writes through JDBC, or Glue."""
    if settings.environment is Environment.LOCAL:
        from pyiceberg.catalog.sql import SqlCatalog

        settings.home_abs.mkdir(parents=True, exist_ok=True)
        return SqlCatalog(
            CATALOG_NAME,
            uri=f"sqlite:///{settings.catalog_db_path}",
            warehouse=settings.warehouse_path.as_uri(),
        )
    # Credentials come from the standard AWS chain (environment, profile, instance or task role), never from here.
    props = {"warehouse": settings.warehouse_uri}
    if settings.aws_region:
        props |= {"glue.region": settings.aws_region, "s3.region": settings.aws_region}
    if settings.aws_endpoint:  # a moto server in tests
        props |= {"glue.endpoint": settings.aws_endpoint, "s3.endpoint": settings.aws_endpoint}
    return _glue_catalog(tuple(sorted(props.items())))


@functools.lru_cache(maxsize=8)
def _glue_catalog(props: tuple[tuple[str, str], ...]) -> Catalog:
    """One Glue catalog per process and place: a new one builds a boto3 session (~0.15 s), which every sensor tick
    paid. It holds no table state: `load_table` reads the current metadata each time."""
    from pyiceberg.catalog.glue import GlueCatalog

    return GlueCatalog(CATALOG_NAME, **dict(props))


# --- contracts as Iceberg schemas --------------------------------------------------------------------------------

_PRIMITIVES: dict[str, IcebergType] = {
    "STRING": StringType(),
    "BIGINT": LongType(),
    "INT": IntegerType(),
    "DOUBLE": DoubleType(),
    "BOOLEAN": BooleanType(),
    # Spark's TIMESTAMP is an instant (session time zone UTC): Iceberg `timestamptz`, as Spark creates it.
    "TIMESTAMP": TimestamptzType(),
    "DATE": DateType(),
}


class _Ids:
    def __init__(self) -> None:
        self.last = 0

    def next(self) -> int:
        self.last += 1
        return self.last


def iceberg_type(spark_type: str, ids: _Ids) -> IcebergType:
    """A contract's Spark SQL type as an Iceberg type (nested element ids drawn from `ids`)."""
    t = spark_type.strip().upper()
    if t in _PRIMITIVES:
        return _PRIMITIVES[t]
    if m := re.fullmatch(r"DECIMAL\((\d+),\s*(\d+)\)", t):
        return DecimalType(int(m.group(1)), int(m.group(2)))
    if m := re.fullmatch(r"ARRAY<(.+)>", t):
        return ListType(ids.next(), iceberg_type(m.group(1), ids), element_required=False)
    if m := re.fullmatch(r"MAP<([^,]+),(.+)>", t):
        key_id, value_id = ids.next(), ids.next()
        return MapType(key_id, iceberg_type(m.group(1), ids), value_id, iceberg_type(m.group(2), ids),
                       value_required=False)
    raise ValueError(f"no Iceberg type for {spark_type!r}")


def iceberg_schema(contract: TableContract) -> Schema:
    ids = _Ids()
    field_ids = [ids.next() for _ in contract.columns]  # top-level ids first, as Spark assigns them
    fields = [
        NestedField(fid, c.name, iceberg_type(c.type, ids), required=not c.nullable, doc=c.doc)
        for fid, c in zip(field_ids, contract.columns)
    ]
    return Schema(*fields)


def partition_spec(contract: TableContract, schema: Schema) -> PartitionSpec:
    fields = []
    for i, expr in enumerate(contract.partitioned_by):
        if m := re.fullmatch(r"days\((\w+)\)", expr):
            source, transform, name = m.group(1), DayTransform(), f"{m.group(1)}_day"
        else:
            source, transform, name = expr, IdentityTransform(), expr
        fields.append(PartitionField(schema.find_field(source).field_id, 1000 + i, transform, name))
    return PartitionSpec(*fields)


def create_tables(catalog: Catalog, properties: dict[str, str], contracts: tuple[TableContract, ...] = ALL_TABLES) -> list[str]:
    """Create the namespaces and every missing table from its contract; returns the tables created."""
    created = []
    for ns in NAMESPACES:
        catalog.create_namespace_if_not_exists(ns)
    for contract in contracts:
        if catalog.table_exists(contract.identifier):
            continue
        schema = iceberg_schema(contract)
        catalog.create_table(
            contract.identifier,
            schema=schema,
            partition_spec=partition_spec(contract, schema),
            properties={**properties, "comment": contract.comment},
        )
        created.append(contract.identifier)
    return created
