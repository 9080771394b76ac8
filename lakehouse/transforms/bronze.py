"""Bronze: raw SocialGrep CSV rows, all strings, plus ingestion metadata.

`check_header`, `scan_records` and `to_bronze` do no I/O of their own; `read_csv` is where Spark reads.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from dataclasses import dataclass
from datetime import datetime
from typing import BinaryIO

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructField, StructType

from lakehouse.contracts import BRONZE, SOURCE_HEADERS, Entity, bronze_column_name
from lakehouse.landing import GLOB_CHARACTERS

RAW_RECORD = "_raw_record"
EXTRA_COLUMNS = "_extra_columns"
HEAD_BYTES = 65536  # what `LandingZone.read_head` reads by default
# Hadoop writes local paths as `file:/x` or `file:///x` depending on the call; compare them in one form.
LOCAL_FILE_PREFIX = re.compile(r"^file:/+")
_FILE_PATH = "_file_path"
_READ_ORDER = "_read_order"


@dataclass(frozen=True)
class HeaderCheck:
    ok: bool
    reason: str | None = None  # a reason code when not ok
    message: str | None = None
    columns: tuple[str, ...] = ()  # the file's header, in file order
    extra: tuple[str, ...] = ()  # header columns the contract does not know (kept in `_extra_columns`)


def _looks_utf16(head: bytes) -> bool:
    """UTF-16 without a byte order mark: ASCII text with a NUL in every other byte."""
    if len(head) < 16:
        return False
    return any(half.count(0) == len(half) and other.count(0) == 0 for half, other in
               ((head[0::2], head[1::2]), (head[1::2], head[0::2])))


def check_header(head: bytes, entity: Entity) -> HeaderCheck:
    """Check the first line of a file against the entity's contract before Spark reads it.

    Columns are matched by name, so a file may order them differently; unknown columns are schema drift and
    are kept (see `read_csv`). A missing contract column, a duplicated name or a non-CSV file is rejected.
    """
    if not head:
        return HeaderCheck(False, "empty_file", "the file is empty (no header)")
    if head.startswith(b"\x1f\x8b"):
        return HeaderCheck(False, "not_csv", "the file is gzip-compressed, not CSV")
    if head.startswith((b"\xff\xfe", b"\xfe\xff")) or _looks_utf16(head[:4096]):
        return HeaderCheck(False, "not_utf8", "the file is UTF-16 encoded: re-export it as UTF-8")
    if b"\x00" in head[:4096]:
        return HeaderCheck(False, "not_csv", "the file holds NUL bytes: binary, not CSV")
    line = head.split(b"\n", 1)[0]  # bytes further down are the rows' business (see scan_records)
    try:
        text = line.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        # A header longer than the head may end inside a multi-byte character; only an error before that is real.
        cut_short = len(line) == len(head) >= HEAD_BYTES
        if exc.start < len(line) - 4 or not cut_short:
            return HeaderCheck(False, "not_utf8", f"the header is not UTF-8 ({exc.reason} at byte {exc.start})")
        text = line[: exc.start].decode("utf-8-sig")
    first_line = text.splitlines()[0] if text else ""
    found = tuple(
        name.strip() or f"column_{i}" for i, name in enumerate(next(csv.reader(io.StringIO(first_line)), []), 1)
    )
    expected = SOURCE_HEADERS[entity]
    if found == expected:
        return HeaderCheck(True, columns=found)
    missing = [c for c in expected if c not in found]
    extra = tuple(c for c in found if c not in expected)
    detail = f"expected {','.join(expected)}; found {first_line[:300]!r}"
    if len(found) <= 1 and any(d in first_line for d in (";", "\t", "|")):
        return HeaderCheck(False, "wrong_delimiter", f"the header is not comma-separated: {detail}")
    duplicated = sorted({c for c in found if found.count(c) > 1})
    if duplicated:
        return HeaderCheck(False, "duplicate_columns", f"columns {duplicated} appear more than once: {detail}")
    for other in Entity:
        if other is not entity and set(found) == set(SOURCE_HEADERS[other]):
            return HeaderCheck(False, "wrong_entity", f"this is a {other.value} file landed under {entity.value}: {detail}")
    if missing:
        return HeaderCheck(False, "missing_columns", f"missing {missing}, unexpected {list(extra)}: {detail}")
    return HeaderCheck(True, columns=found, extra=extra)


# --- an independent count of the file's records ----------------------------------------------------------------

# A record may hold a megabyte-long text field; one longer than this is not a Reddit text (at most 40,000
# characters) but a quote that was never closed, and Spark's read stops at twice as many (a character above
# U+FFFF counts twice in Java).
MAX_FIELD_CHARS = 8 * 1024 * 1024
SPARK_MAX_FIELD_CHARS = 2 * MAX_FIELD_CHARS
csv.field_size_limit(MAX_FIELD_CHARS)
_SURROGATE = re.compile("[\udc80-\udcff]")  # what `surrogateescape` makes of a byte that is not UTF-8


# How records end, by the name a data engineer knows them by.
LINE_ENDINGS = {"\r\n": "CRLF", "\n": "LF", "\r": "CR"}


@dataclass(frozen=True)
class FileScan:
    """What Python's CSV parser finds in a file, independently of Spark's."""

    records: int = 0  # records after the header; blank lines are not records (Spark skips them too)
    invalid_utf8_records: int = 0
    truncated: bool = False  # the file ends inside its last record (kept; Spark marks it malformed)
    reason: str | None = None  # set when the file cannot be read as CSV safely: it is rejected
    message: str | None = None
    line_ending: str | None = None  # CRLF, LF or CR: what every record (header included) ends with


class _Utf8Watch(io.RawIOBase):
    """A pass-through reader that notes whether every byte it hands on is valid UTF-8 (at C speed)."""

    def __init__(self, raw: BinaryIO):
        self.raw = raw
        self.decoder = codecs.getincrementaldecoder("utf-8")()
        self.invalid = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self.raw.read(len(buffer))
        buffer[: len(data)] = data
        if not self.invalid:
            try:
                self.decoder.decode(data, final=not data)
            except UnicodeDecodeError:
                self.invalid = True
        return len(data)


class _Endings:
    """The line ending of each record, header included: the one its last physical line ends with.

    The CSV reader pulls physical lines from `lines()`; when it hands back a record, the last line it pulled
    ended that record, so newlines inside quoted fields never count.
    """

    def __init__(self, text: io.TextIOBase):
        self.text = text
        self.last = ""
        self.seen: dict[str, tuple[int, int]] = {}  # ending -> (records, first line it ends)
        # Blank lines at the end of the file end nothing Spark reads: they count once a record follows them.
        self.blank: list[tuple[str, int]] = []

    def lines(self):
        for line in self.text:
            self.last = line
            yield line

    def record_ended(self, line_num: int, blank: bool = False) -> None:
        end = self.last
        kind = "\r\n" if end.endswith("\r\n") else "\n" if end.endswith("\n") else "\r" if end.endswith("\r") else None
        if kind is None:  # the last record may end the file without one
            return
        if blank:
            self.blank.append((kind, line_num))
            return
        for k, n in self.blank + [(kind, line_num)]:
            count, first = self.seen.get(k, (0, n))
            self.seen[k] = (count + 1, first)
        self.blank.clear()

    def mixed(self) -> str | None:
        """A message when records end in more than one way, else None."""
        if len(self.seen) < 2:
            return None
        parts = [f"{LINE_ENDINGS[k]} ({n:,} records, first ending line {first})"
                 for k, (n, first) in sorted(self.seen.items(), key=lambda kv: kv[1][1])]
        return (
            f"records end in {' and '.join(parts)}. Spark splits a file at the line ending of its first line only, "
            "so it would run records together or keep a stray CR in their last field; convert the file to one "
            "line ending (e.g. dos2unix or unix2dos) and land it again"
        )

    def ending(self) -> str | None:
        return LINE_ENDINGS[next(iter(self.seen))] if len(self.seen) == 1 else None


def scan_records(stream: BinaryIO) -> FileScan:
    """Count a CSV file's records with Python's strict parser: the reference Bronze's row count must meet.

    Strict mode finds what Spark's parser hides: a quote closed too early or never closed makes Spark run
    the following records into one field without marking anything malformed, so such a file is rejected.
    So is a file whose records do not all end the same way (CRLF, LF, CR): Spark (univocity) takes the line
    ending of the first line for the whole file, Python's parser takes any. The one exception is a file cut off
    inside its last record (an interrupted upload): that record is counted, and Spark keeps it as malformed,
    so it reaches quarantine.
    """
    watch = _Utf8Watch(stream)
    text = io.TextIOWrapper(io.BufferedReader(watch, 1 << 20), encoding="utf-8-sig", errors="surrogateescape", newline="")
    endings = _Endings(text)
    reader = csv.reader(endings.lines(), strict=True)
    records = invalid = 0
    try:
        next(reader)  # the header, checked by `check_header`
    except StopIteration:
        return FileScan()
    except csv.Error as exc:
        return FileScan(reason="unparseable_csv", message=f"the header line does not parse as CSV: {exc}")
    endings.record_ended(reader.line_num)
    last_line = reader.line_num
    truncated = False
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            start = last_line + 1
            if "unexpected end of data" in str(exc) and reader.line_num == start:
                records, truncated = records + 1, True
                break
            if "unexpected end of data" in str(exc):
                return FileScan(records, invalid, reason="unterminated_quote", message=(
                    f"a quoted field in the record starting at line {start} is never closed: the rest of the "
                    "file would be read as one field"))
            if "field larger than field limit" in str(exc):
                return FileScan(records, invalid, reason="field_too_long", message=(
                    f"the record starting at line {start} has a field longer than {MAX_FIELD_CHARS:,} characters: "
                    "a quote that is never closed, or not a SocialGrep export"))
            if "expected after" in str(exc):
                return FileScan(records, invalid, reason="bad_quoting", message=(
                    f"the record starting at line {start} has text after a closing quote ({exc}): a quote is "
                    "not doubled or not closed, and the records after it would be misread"))
            return FileScan(records, invalid, reason="unparseable_csv", message=f"line {start}: {exc}")
        endings.record_ended(reader.line_num, blank=not row)
        last_line = reader.line_num
        if row:
            records += 1
            if watch.invalid and any(_SURROGATE.search(v) for v in row):
                invalid += 1
    mixed = endings.mixed()
    if mixed:
        return FileScan(records, invalid, reason="mixed_line_endings", message=mixed)
    return FileScan(records, invalid, truncated=truncated, line_ending=endings.ending())


# --- Spark ---------------------------------------------------------------------------------------------------


def literal_path(location: str) -> str:
    """`location` as a Hadoop path pattern that matches exactly the file of that name: a landed name is data."""
    return GLOB_CHARACTERS.sub(r"\\\1", location)


def read_csv(spark: SparkSession, uris: list[str], entity: Entity, header: tuple[str, ...] | None = None) -> DataFrame:
    """Read SocialGrep CSV files that share one header as strings, keeping malformed records.

    Columns are taken by position from `header` (the files' own) and renamed to the contract's Bronze names;
    columns the contract does not know go to `_extra_columns`, so Bronze keeps schema drift instead of
    losing it.
    """
    header = header or SOURCE_HEADERS[entity]
    # The schema is applied by position; naming its fields as the header does keeps Spark from warning that
    # the header does not conform (check_header guarantees the names are unique).
    fields = [StructField(name, StringType()) for name in header]
    df = (
        spark.read.options(
            header=True,
            # Quoted fields hold newlines; a multi-line file is read whole by one task, in order.
            multiLine=True,
            quote='"',
            escape='"',  # inner quotes are doubled
            mode="PERMISSIVE",
            columnNameOfCorruptRecord=RAW_RECORD,
            # Unbounded by default: a field that never ends (a quote never closed) grows until the JVM runs out
            # of memory and dies. scan_records rejects what is longer than this, so the append goes again
            # without that file (bronze_layer._append_while_scanning).
            maxCharsPerColumn=SPARK_MAX_FIELD_CHARS,
            encoding="UTF-8",
        )
        # Local files through the raw file system, for this read only: the default one looks for a checksum
        # file `.<name>.crc` beside each file, a path Hadoop cannot even parse when the name holds a `:`
        # (`posts 10:00.csv`), and a stray one would be taken to verify the landed bytes.
        .option("fs.file.impl", "org.apache.hadoop.fs.RawLocalFileSystem")
        .option("fs.file.impl.disable.cache", "true")
        .schema(StructType(fields + [StructField(RAW_RECORD, StringType())]))
        .csv([literal_path(uri) for uri in uris])
    )
    position = {name: "`" + name.replace("`", "``") + "`" for name in header}
    known = set(SOURCE_HEADERS[entity])
    extra = [name for name in header if name not in known]
    extra_map = (
        F.create_map(*[x for name in extra for x in (F.lit(name), F.col(position[name]))]) if extra
        else F.lit(None).cast("map<string,string>")
    )
    # Capture file and read order now: both are lost once Spark shuffles.
    return df.select(
        *[F.col(position[h]).alias(bronze_column_name(h)) for h in SOURCE_HEADERS[entity]],
        RAW_RECORD,
        extra_map.alias(EXTRA_COLUMNS),
        F.regexp_replace(F.col("_metadata.file_path"), LOCAL_FILE_PREFIX.pattern, "file:///").alias(_FILE_PATH),
        F.monotonically_increasing_id().alias(_READ_ORDER),
    )


# monotonically_increasing_id() is the partition's index shifted left by 33 bits plus the row's position in it.
_POSITION_IN_PARTITION = (1 << 33) - 1


def to_bronze(raw: DataFrame, files: DataFrame, batch_id: str, ingested_at: datetime, entity: Entity,
              files_own_partitions: bool = False) -> DataFrame:
    """Attach ingestion metadata to raw rows.

    `files` maps Spark's file path (`_file_path`) to the landed file's `uri` and `etag`. A file is never split
    (multiLine), so ordering by the monotonically increasing id within a file gives the record number. When the
    reader gives every file a partition of its own (`files_own_partitions`: bronze_layer.files_own_partitions),
    that number is the row's position in its partition: no shuffle and sort of the whole batch to find it.
    """
    if files_own_partitions:
        row_in_file = F.col(_READ_ORDER).bitwiseAND(F.lit(_POSITION_IN_PARTITION)) + 1
    else:
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
