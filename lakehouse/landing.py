"""The landing zone: where raw files arrive, laid out like the S3 input bucket (`input/post/`, `input/comment/`).

`LandingZone` is the storage interface; `LocalLandingZone` is the embedded default (a folder). The S3
implementation lives beside it and is chosen by configuration, never by the callers.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator, Protocol
from urllib.parse import unquote, urlparse

from lakehouse.contracts import Entity

INPUT_PREFIX = "input"


def entity_prefix(entity: Entity) -> str:
    return f"{INPUT_PREFIX}/{entity.value}/"


def entity_for_key(key: str) -> Entity | None:
    """Route by prefix, the way the original Step Functions choice routed by type."""
    for entity in Entity:
        if key.startswith(entity_prefix(entity)):
            return entity
    return None


@dataclass(frozen=True, order=True)
class LandedFile:
    """One version of one landed object. (uri, etag) identifies the version."""

    key: str  # relative to the landing root, e.g. input/post/2022-03-01.csv
    uri: str  # what Spark reads: file:///... or s3://bucket/...
    etag: str
    size: int
    modified_at: datetime

    @property
    def entity(self) -> Entity | None:
        return entity_for_key(self.key)

    @property
    def read_location(self) -> str:
        """What Spark is given to read: a plain path for local files (URIs would need percent-decoding)."""
        return unquote(urlparse(self.uri).path) if self.uri.startswith("file:") else self.uri


class LandingZone(Protocol):
    def list_files(self, entity: Entity | None = None) -> Iterator[LandedFile]: ...

    def read_head(self, file: LandedFile, max_bytes: int = 65536) -> bytes: ...


def md5_file(path: Path, chunk: int = 1 << 20) -> str:
    """MD5 of the content: the same value S3 reports as the ETag of a single-part upload."""
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


class LocalLandingZone:
    """A folder standing in for the input bucket."""

    def __init__(self, root: Path):
        self.root = Path(root).expanduser().resolve()

    def path_for(self, key: str) -> Path:
        return self.root / key

    def ensure_layout(self) -> None:
        for entity in Entity:
            self.path_for(entity_prefix(entity)).mkdir(parents=True, exist_ok=True)

    def list_files(self, entity: Entity | None = None) -> Iterator[LandedFile]:
        entities = [entity] if entity else list(Entity)
        for ent in entities:
            base = self.path_for(entity_prefix(ent))
            if not base.exists():
                continue
            for dirpath, _, names in os.walk(base):
                for name in sorted(names):
                    if name.startswith("."):  # editors' and uploaders' temp files are not landed yet
                        continue
                    path = Path(dirpath) / name
                    yield self.describe(path)

    def describe(self, path: Path) -> LandedFile:
        stat = path.stat()
        return LandedFile(
            key=path.relative_to(self.root).as_posix(),
            uri=path.as_uri(),
            etag=md5_file(path),
            size=stat.st_size,
            modified_at=datetime.fromtimestamp(stat.st_mtime, tz=timezone.utc),
        )

    def read_head(self, file: LandedFile, max_bytes: int = 65536) -> bytes:
        with self.path_for(file.key).open("rb") as fh:
            return fh.read(max_bytes)

    def land(self, source: Path, entity: Entity, name: str | None = None) -> LandedFile:
        """Copy a file into the landing zone atomically (write to a dot-file, then rename)."""
        target = self.path_for(entity_prefix(entity)) / (name or Path(source).name)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.part")
        with Path(source).open("rb") as src, tmp.open("wb") as dst:
            while block := src.read(1 << 20):
                dst.write(block)
        os.replace(tmp, target)
        return self.describe(target)
