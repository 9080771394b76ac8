"""Bronze: raw SocialGrep CSV rows, all strings, plus ingestion metadata.

`check_header` and `to_bronze` are pure; `read_csv` is the only I/O.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from datetime import datetime

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructField, StructType

from lakehouse.contracts import BRONZE, SOURCE_HEADERS, Entity, bronze_column_name

RAW_RECORD = "_raw_record"
# Hadoop writes local paths as `file:/x` or `file:///x` depending on the call; compare them in one form.
LOCAL_FILE_PREFIX = re.compile(r"^file:/+")
_FILE_PATH = "_file_path"
_READ_ORDER = "_read_order"


@dataclass(frozen=True)
class HeaderCheck:
    ok: bool
    reason: str | None = None  # a reason code when not ok
    message: str | None = None


def check_header(head: bytes, entity: Entity) -> HeaderCheck:
    """Check the first line of a file against the entity's contract before Spark reads it."""
    if not head:
        return HeaderCheck(False, "empty_file", "the file is empty (no header)")
    if head.startswith(b"\x1f\x8b"):
        return HeaderCheck(False, "not_csv", "the file is gzip-compressed, not CSV")
    if b"\x00" in head[:4096]:
        return HeaderCheck(False, "not_csv", "the file holds NUL bytes: binary, not CSV")
    try:
        text = head.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        # The head may end inside a multi-byte character; only an error before that is real.
        if exc.start < len(head) - 4:
            return HeaderCheck(False, "not_utf8", f"the header is not UTF-8 ({exc.reason} at byte {exc.start})")
        text = head[: exc.start].decode("utf-8-sig")
    first_line = text.splitlines()[0] if text else ""
    found = next(csv.reader(io.StringIO(first_line)), [])
    expected = list(SOURCE_HEADERS[entity])
    if found == expected:
        return HeaderCheck(True)
    missing = [c for c in expected if c not in found]
    extra = [c for c in found if c not in expected]
    detail = f"expected {','.join(expected)}; found {first_line[:300]!r}"
    if len(found) <= 1 and any(d in first_line for d in (";", "\t", "|")):
        return HeaderCheck(False, "wrong_delimiter", f"the header is not comma-separated: {detail}")
    return HeaderCheck(False, "header_mismatch", f"missing {missing}, unexpected {extra}: {detail}")


def raw_schema(entity: Entity) -> StructType:
    """All-string schema under the source's own names (Spark checks them against the header)."""
    fields = [StructField(h, StringType()) for h in SOURCE_HEADERS[entity]]
    return StructType(fields + [StructField(RAW_RECORD, StringType())])


def read_csv(spark: SparkSession, uris: list[str], entity: Entity) -> DataFrame:
    """Read SocialGrep CSV files as strings, keeping malformed records instead of dropping them."""
    df = (
        spark.read.options(
            header=True,
            # Quoted fields hold newlines; a multi-line file is read whole by one task, in order.
            multiLine=True,
            quote='"',
            escape='"',  # inner quotes are doubled
            mode="PERMISSIVE",
            columnNameOfCorruptRecord=RAW_RECORD,
            encoding="UTF-8",
        )
        .schema(raw_schema(entity))
        .csv(uris)
    )
    # Capture file and read order now: both are lost once Spark shuffles.
    return df.select(
        *[F.col(f"`{h}`").alias(bronze_column_name(h)) for h in SOURCE_HEADERS[entity]],
        RAW_RECORD,
        F.regexp_replace(F.col("_metadata.file_path"), LOCAL_FILE_PREFIX.pattern, "file:///").alias(_FILE_PATH),
        F.monotonically_increasing_id().alias(_READ_ORDER),
    )


def to_bronze(raw: DataFrame, files: DataFrame, batch_id: str, ingested_at: datetime, entity: Entity) -> DataFrame:
    """Attach ingestion metadata to raw rows.

    `files` maps Spark's file path (`_file_path`) to the landed file's `uri` and `etag`. A file is never split
    (multiLine), so ordering by the monotonically increasing id within a file gives the record number.
    """
    row_in_file = F.row_number().over(Window.partitionBy(_FILE_PATH).orderBy(_READ_ORDER))
    joined = raw.join(F.broadcast(files), _FILE_PATH, "left")
    out = joined.select(
        *[c for c in raw.columns if c not in (_FILE_PATH, _READ_ORDER)],
        F.col("uri").alias("_source_uri"),
        F.col("etag").alias("_source_etag"),
        row_in_file.cast("bigint").alias("_source_row"),
        F.lit(ingested_at).cast("timestamp").alias("_ingested_at"),
        F.lit(batch_id).alias("_batch_id"),
    )
    return out.select(*BRONZE[entity].names)
