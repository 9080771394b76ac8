"""The landing zone: where raw files arrive, laid out like the S3 input bucket (`input/post/`, `input/comment/`).

`LandingZone` is the storage interface with two implementations: `LocalLandingZone` (a folder, the embedded
default) and `S3LandingZone` (a bucket and prefix). Callers never branch on which one they have.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import posixpath
import re
import stat as stat_module
import threading
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Iterable, Iterator, Protocol
from urllib.parse import unquote, urlparse

from lakehouse.contracts import Entity
from lakehouse.errors import UserError

INPUT_PREFIX = "input"


def entity_prefix(entity: Entity) -> str:
    return f"{INPUT_PREFIX}/{entity.value}/"


def entity_for_key(key: str) -> Entity | None:
    """Route by prefix, the way the original Step Functions choice routed by type."""
    for entity in Entity:
        if key.startswith(entity_prefix(entity)):
            return entity
    return None


class InvalidKey(UserError, ValueError):
    """A landing name or key that does not name a file inside the landing zone's entity prefixes."""


def landing_key(entity: Entity, name: str) -> str:
    """The key of a file called `name` (a file name, or a relative path such as `2022/03/a.csv`) under the
    entity's prefix. A name that would leave the prefix (`..`, an absolute path) or that the sensor would never
    pick up (a dot-file) is refused."""
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if not parts or PurePosixPath(name).is_absolute() or any(p in ("..", ".") or p.startswith(".") for p in parts):
        raise InvalidKey(
            f"landing name {name!r} is refused: give a file name or a relative path inside "
            f"{entity_prefix(entity)} without '..', a leading '/' or dot-files"
        )
    return entity_prefix(entity) + "/".join(parts)


def check_key(key: str, entity: Entity | None = None) -> str:
    """`key` when it names a file under an input prefix (the entity's, when given); ValueError otherwise.

    Keys come from run config (the sensor, the launchpad, an operator's command): one that leaves the landing
    zone or belongs to the other entity must fail loudly, not be read. A key that is a real S3 object but that
    Spark cannot address (`unreadable_name`) passes: Bronze rejects that file alone, and its batch goes on."""
    normal = posixpath.normpath(key)
    routed = entity_for_key(normal)
    if normal != _EMPTY_SEGMENTS.sub("/", key) or key.startswith("/") or routed is None or (
            entity is not None and routed is not entity):
        where = entity_prefix(entity) if entity else " or ".join(entity_prefix(e) for e in Entity)
        raise InvalidKey(f"{key!r} is not a landed file key under {where}")
    return key


_EMPTY_SEGMENTS = re.compile(r"/{2,}")


def unreadable_name(key: str) -> str | None:
    """Why Spark cannot read the object `key` names, or None. Any other name is read literally (Bronze escapes
    the glob characters); an empty segment (`a//b.csv`, a real S3 key) is folded into one `/` by Hadoop's paths,
    which then name another object."""
    if _EMPTY_SEGMENTS.search(key):
        return (f"the key {key!r} holds an empty path segment ('//'): Spark's file paths fold it into '/', which "
                "names another object, so this file cannot be read as landed; copy it to a key without '//'")
    if ":" in key and GLOB_CHARACTERS.search(key):
        # Hadoop then matches the path a folder at a time, and a name with a `:` is no relative path to it
        # (HADOOP-3257: "Relative path in absolute URI"). Either one alone is read.
        return (f"the name {key!r} holds a ':' and one of '[]{{}}*?\\': Spark's file paths cannot address such a "
                "name; land it again under a name without the ':'")
    return None


# What Hadoop reads in a path as a pattern: `[2022-03]` a character class, `{a,b}` an alternation, `*` and `?`
# wildcards, a backslash an escape (transforms/bronze.literal_path escapes them).
GLOB_CHARACTERS = re.compile(r"([\\\[\]{}*?])")


def _hidden(key: str) -> bool:
    # Uploaders and editors write dot-files first and rename them when complete: not landed yet.
    return any(part.startswith(".") for part in key.split("/"))


@dataclass(frozen=True, order=True)
class LandedFile:
    """One version of one landed object; (uri, etag) identifies the version.

    `etag` is the content hash: S3 reports it when listing; for a local file it is the MD5 (the same value S3
    gives a single-part upload), computed only when needed (`LandingZone.with_etag`).
    """

    key: str  # relative to the landing root, e.g. input/post/2022-03-01.csv
    uri: str  # file:///... or s3://bucket/...
    size: int
    modified_at: datetime
    etag: str | None = None

    @property
    def entity(self) -> Entity | None:
        return entity_for_key(self.key)

    @property
    def read_location(self) -> str:
        """What Spark is given to read: a plain path for local files (URIs would need percent-decoding)."""
        return unquote(urlparse(self.uri).path) if self.uri.startswith("file:") else self.uri


class LandingZone(Protocol):
    def list_files(self, entity: Entity | None = None) -> Iterator[LandedFile]:
        """Every landed file under the entity prefixes (cheap: no content is read)."""

    def describe(self, key: str) -> LandedFile:
        """One file, with its etag."""

    def with_etag(self, file: LandedFile) -> LandedFile: ...

    def read_head(self, file: LandedFile, max_bytes: int = 65536) -> bytes: ...

    def open(self, file: LandedFile) -> BinaryIO:
        """The file's bytes as a stream (closed by the caller)."""

    def unchanged(self, file: LandedFile) -> bool:
        """True while the object still holds the version `file` names (cheap unless it looks changed)."""


def md5_file(path: Path, chunk: int = 1 << 20) -> str:
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
        path = Path(os.path.normpath(self.root / key))
        if not path.is_relative_to(self.root):
            raise InvalidKey(f"{key!r} is outside the landing zone {self.root}")
        return path

    def ensure_layout(self) -> None:
        for entity in Entity:
            self.path_for(entity_prefix(entity)).mkdir(parents=True, exist_ok=True)

    def _file(self, path: Path, stat: os.stat_result) -> LandedFile:
        return LandedFile(
            key=path.relative_to(self.root).as_posix(),
            uri=path.as_uri(),
            size=stat.st_size,
            modified_at=datetime.fromtimestamp(stat.st_mtime_ns // 1000 / 1e6, tz=timezone.utc),
        )

    def list_files(self, entity: Entity | None = None) -> Iterator[LandedFile]:
        for ent in [entity] if entity else list(Entity):
            stack = [self.path_for(entity_prefix(ent))]
            while stack:
                try:
                    entries = sorted(os.scandir(stack.pop()), key=lambda e: e.name)
                except FileNotFoundError:
                    continue
                for entry in entries:
                    if entry.name.startswith("."):
                        continue
                    if entry.is_dir():
                        stack.append(Path(entry.path))
                    elif entry.is_file():
                        yield self._file(Path(entry.path), entry.stat())

    def describe(self, key: str) -> LandedFile:
        path = self.path_for(key)
        return self.with_etag(self._file(path, path.stat()))

    def files_at(self, paths: set[str]) -> Iterator[LandedFile]:
        """The landed files among `paths` (a folder: the files under it), as `list_files` would list them; paths
        gone, outside the entity prefixes or hidden are nothing."""
        prefixes = [self.path_for(entity_prefix(e)) for e in Entity]
        seen: set[Path] = set()
        for raw in sorted(paths):
            path = Path(raw)
            if not any(path.is_relative_to(p) for p in prefixes) or _hidden(path.relative_to(self.root).as_posix()):
                continue
            try:
                stat = path.stat()
            except (FileNotFoundError, NotADirectoryError):
                continue
            if path.is_dir():
                for root, dirs, names in os.walk(path):
                    dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                    for name in sorted(n for n in names if not n.startswith(".")):
                        child = Path(root) / name
                        with contextlib.suppress(FileNotFoundError):
                            if child not in seen and (child_stat := child.stat()) and stat_module.S_ISREG(
                                    child_stat.st_mode):
                                seen.add(child)
                                yield self._file(child, child_stat)
            elif path not in seen and stat_module.S_ISREG(stat.st_mode):  # a FIFO would hang the hashing
                seen.add(path)
                yield self._file(path, stat)

    def watch(self) -> tuple[FolderWatch, bool]:
        return FolderWatch.of(self.root)

    def with_etag(self, file: LandedFile) -> LandedFile:
        return file if file.etag else replace(file, etag=md5_file(self.path_for(file.key)))

    def read_head(self, file: LandedFile, max_bytes: int = 65536) -> bytes:
        with self.path_for(file.key).open("rb") as fh:
            return fh.read(max_bytes)

    def open(self, file: LandedFile) -> BinaryIO:
        return self.path_for(file.key).open("rb")

    def unchanged(self, file: LandedFile) -> bool:
        path = self.path_for(file.key)
        try:
            now = self._file(path, path.stat())
            if (now.size, now.modified_at) == (file.size, file.modified_at):
                return True
            return md5_file(path) == file.etag
        except FileNotFoundError:
            return False

    def land(self, source: Path, entity: Entity, name: str | None = None) -> LandedFile:
        """Copy a file into the landing zone atomically (write to a dot-file, then rename).

        `name` (default: the source's file name) must stay inside the entity's prefix (see `landing_key`)."""
        target = self.path_for(landing_key(entity, name or Path(source).name))
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.part")
        with Path(source).open("rb") as src, tmp.open("wb") as dst:
            while block := src.read(1 << 20):
                dst.write(block)
        os.replace(tmp, target)
        return self.describe(target.relative_to(self.root).as_posix())


class FolderWatch:
    """What was created, moved in or written under a landing folder since the last `drain`, from the operating
    system's file notifications (watchdog: inotify on Linux, FSEvents on macOS, in a background thread).

    The local stand-in for the bucket's events: a tick looks at what changed, not at every file ever landed. One
    watch per folder per process (the code server that evaluates the sensor lives across ticks); a watch new to this
    process saw nothing before it started, so its first tick lists the folder once (`of` says so).
    """

    _watches: dict[Path, "FolderWatch"] = {}
    _registry = threading.Lock()

    def __init__(self, root: Path):
        from watchdog.events import (DirCreatedEvent, DirMovedEvent, FileClosedEvent, FileCreatedEvent,
                                     FileMovedEvent, FileSystemEventHandler)
        from watchdog.observers import Observer

        self.root = root
        self._changed: set[str] = set()
        self._lock = threading.Lock()
        watch = self

        class Collect(FileSystemEventHandler):
            def on_any_event(self, event) -> None:
                with watch._lock:
                    watch._changed.update(os.fsdecode(p) for p in (event.src_path, event.dest_path) if p)

        self.observer = Observer()
        self.observer.daemon = True
        # A file is news when it is created, closed after writing (inotify; a rewrite in place) or moved in; a
        # folder when created or moved in (its files may bring no events of their own). Every write() and every
        # read (Bronze opens the files) would be an event too: left out, they made a 100,000-file burst a
        # quarter of a million events.
        self.observer.schedule(Collect(), str(root), recursive=True, event_filter=[
            FileCreatedEvent, FileClosedEvent, FileMovedEvent, DirCreatedEvent, DirMovedEvent])
        self.observer.start()

    @classmethod
    def of(cls, root: Path) -> tuple["FolderWatch", bool]:
        """This process's watch of `root`, and whether it started just now (again, if the last one stopped)."""
        with cls._registry:
            watch = cls._watches.get(root)
            if watch is not None and watch.alive():
                return watch, False
            if watch is not None:
                watch.observer.stop()
            cls._watches[root] = watch = cls(root)
            return watch, True

    def put_back(self, paths: Iterable[str]) -> None:
        """Paths a tick could not take (more files than its runs): the next drain gives them again."""
        with self._lock:
            self._changed.update(paths)

    def alive(self) -> bool:
        # The observer thread outlives its emitters: watchdog stops watching a folder that was deleted or moved.
        return self.observer.is_alive() and all(e.is_alive() for e in self.observer.emitters)

    def drain(self) -> set[str]:
        """The paths changed since the last drain (files, and folders moved in whole)."""
        with self._lock:
            changed, self._changed = self._changed, set()
        return changed


class S3LandingZone:
    """An S3 bucket (and optional prefix) as the landing zone; `client` is a boto3 S3 client."""

    def __init__(self, client, bucket: str, prefix: str = ""):
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""

    def _file(self, key: str, size: int, modified: datetime, etag: str) -> LandedFile:
        return LandedFile(
            key=key[len(self.prefix):],
            uri=f"s3://{self.bucket}/{key}",
            size=size,
            modified_at=modified.astimezone(timezone.utc),
            etag=etag.strip('"'),
        )

    def list_files(self, entity: Entity | None = None) -> Iterator[LandedFile]:
        paginator = self.client.get_paginator("list_objects_v2")
        for ent in [entity] if entity else list(Entity):
            # A full listing per tick: S3 lists in key order, so a cursor on the last key would miss keys
            # that arrive out of order or sort before it.
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + entity_prefix(ent)):
                for obj in page.get("Contents", []):
                    key = obj["Key"]
                    if key.endswith("/") or _hidden(key[len(self.prefix):]):
                        continue
                    yield self._file(key, obj["Size"], obj["LastModified"], obj["ETag"])

    def list_after(self, entity: Entity, start_after: str | None, pages: int) -> tuple[list[LandedFile], str | None]:
        """Up to `pages` pages (1,000 keys each) of the entity's files in key order after the key `start_after`
        (relative to the landing root, like `LandedFile.key`), and where to go on from: None once the listing
        reached the end. What a sweep lists in a tick, so that no tick lists the whole bucket."""
        prefix = self.prefix + entity_prefix(entity)
        files: list[LandedFile] = []
        after = self.prefix + start_after if start_after else None
        for _ in range(pages):
            page = self.client.list_objects_v2(Bucket=self.bucket, Prefix=prefix, **({"StartAfter": after} if after else {}))
            contents = page.get("Contents", [])
            for obj in contents:
                key = obj["Key"]
                if not key.endswith("/") and not _hidden(key[len(self.prefix):]):
                    files.append(self._file(key, obj["Size"], obj["LastModified"], obj["ETag"]))
            if not page.get("IsTruncated") or not contents:
                return files, None
            after = contents[-1]["Key"]
        return files, after[len(self.prefix):]

    def describe(self, key: str) -> LandedFile:
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self.prefix + key)
        except self.client.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey"):
                raise FileNotFoundError(f"s3://{self.bucket}/{self.prefix}{key}") from exc
            raise
        return self._file(self.prefix + key, head["ContentLength"], head["LastModified"], head["ETag"])

    def with_etag(self, file: LandedFile) -> LandedFile:
        return file

    def read_head(self, file: LandedFile, max_bytes: int = 65536) -> bytes:
        if file.size == 0:
            return b""  # S3 answers a ranged GET of an empty object with 416
        obj = self.client.get_object(Bucket=self.bucket, Key=self.prefix + file.key, Range=f"bytes=0-{max_bytes - 1}")
        return obj["Body"].read()

    def open(self, file: LandedFile) -> BinaryIO:
        # IfMatch: the bytes read are the version the etag names, or the read fails.
        return self.client.get_object(Bucket=self.bucket, Key=self.prefix + file.key, IfMatch=f'"{file.etag}"')["Body"]

    def unchanged(self, file: LandedFile) -> bool:
        try:
            return self.describe(file.key).etag == file.etag
        except FileNotFoundError:
            return False
