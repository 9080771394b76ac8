"""The landing zone: where raw files arrive, laid out like the S3 input bucket (`input/post/`, `input/comment/`).

`LandingZone` is the storage interface with two implementations: `LocalLandingZone` (a folder, the embedded
default) and `S3LandingZone` (a bucket and prefix). Callers never branch on which one they have.
"""

from __future__ import annotations

import errno
import hashlib
import os
import posixpath
import re
import stat as stat_module
import threading
import time
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


SYMLINK_OUTSIDE = "symlink_outside_landing_zone"
SYMLINK_LOOP = "symlink_loop"


@dataclass(frozen=True, order=True)
class Refusal:
    """Why the landing zone will not let a landed name be read; Bronze logs the name as rejected with it."""

    reason: str  # a reason code (docs/quality.md)
    message: str


@dataclass(frozen=True, order=True)
class LandedFile:
    """One version of one landed object; (uri, etag) identifies the version.

    `etag` is the content hash: S3 reports it when listing; for a local file it is the MD5 (the same value S3
    gives a single-part upload), computed only when needed (`LandingZone.with_etag`). `modified_at` is when the
    object last changed, as the store says and no client can set: S3's LastModified; a local file's inode change
    time (ctime), which every write moves, where the modification time is whatever `cp -p`, `rsync -t` or
    `touch -d` set. Size and `modified_at` unchanged, so is the content; changed, the etag decides.
    """

    key: str  # relative to the landing root, e.g. input/post/2022-03-01.csv
    uri: str  # file:///... or s3://bucket/...
    size: int
    modified_at: datetime
    etag: str | None = None
    # Set: a name that is not read, only logged as rejected (a symbolic link out of the landing zone, or a loop);
    # its etag then names where the link leads.
    refusal: Refusal | None = None

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


def _md5(fh: BinaryIO, chunk: int = 1 << 20) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    while block := fh.read(chunk):
        digest.update(block)
    return digest.hexdigest()


def _open_unlinked(path: Path) -> BinaryIO:
    """`path` opened for reading unless it is a symbolic link (a file swapped for a link after it was listed)."""
    try:
        return os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW), "rb")
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise OSError(errno.ELOOP, "a symbolic link now, not read", str(path)) from exc
        raise


def _version_key(st: os.stat_result) -> tuple[int, ...]:
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def _same_tick_ns(ctime_ns: int) -> int:
    """How long after a change a further write may leave the change time as it was: Linux stamps from a clock that
    moves every 1-10 ms; a file system that keeps whole seconds (FAT, some NFS servers) in steps of up to 2 s."""
    return 2 * 10**9 if ctime_ns % 10**9 == 0 else 20 * 10**6


_DIGESTS: dict[tuple[int, ...], str] = {}  # _version_key -> MD5 of the files this process hashed
_DIGESTS_MAX = 1 << 17


def _hashed(path: Path) -> tuple[os.stat_result, str]:
    """The file's status and the MD5 of the bytes it holds at that status, never through a symbolic link.

    A file is hashed once its change time is a clock tick old, so that any later write moves it, and its status is
    taken again after the hash: one written meanwhile is hashed again (three tries; then the status from before the
    hash goes with it, and the next look hashes it again). A process hashes a version once (`_DIGESTS`, by device,
    inode, size and both times): a sweep does not hash again what an earlier one hashed, a touched file included.
    """
    with _open_unlinked(path) as fh:
        for attempt in range(3):
            before = os.fstat(fh.fileno())
            key = _version_key(before)
            if (digest := _DIGESTS.get(key)) is not None:
                return before, digest
            racy_ns = before.st_ctime_ns + _same_tick_ns(before.st_ctime_ns) - time.time_ns()
            if racy_ns > 0 and attempt < 2:
                time.sleep(min(racy_ns, 2 * 10**9) / 1e9)
                continue
            fh.seek(0)
            digest = _md5(fh)
            if _version_key(os.fstat(fh.fileno())) == key and racy_ns <= 0:
                if len(_DIGESTS) >= _DIGESTS_MAX:
                    _DIGESTS.clear()
                _DIGESTS[key] = digest
                return before, digest
        return before, digest


class LocalLandingZone:
    """A folder standing in for the input bucket.

    A file's version is known by its size and change time (`LandedFile.modified_at`), then by its MD5. A symbolic
    link is never read through or descended (`_link`): one into the landing zone is the file it points to, landed
    under its own name; one that leads out of the zone, or round in a loop, is refused with a reason.
    """

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

    def _prefixes(self) -> list[Path]:
        return [self.path_for(entity_prefix(e)) for e in Entity]

    def _file(self, path: Path, stat: os.stat_result) -> LandedFile:
        return LandedFile(
            key=path.relative_to(self.root).as_posix(),
            uri=path.as_uri(),
            size=stat.st_size,
            modified_at=datetime.fromtimestamp(stat.st_ctime_ns // 1000 / 1e6, tz=timezone.utc),
        )

    def _inside(self) -> list[Path]:
        """Where a symbolic link may lead: the landing root, and the entity folders where they really are (one may
        be a link to another disk: the layout is the operator's, only what lands in it is checked)."""
        return [self.root] + [Path(os.path.realpath(p)) for p in self._prefixes()]

    def _link(self, path: Path, stat: os.stat_result, inside: list[Path]) -> LandedFile | None:
        """A symbolic link under an entity prefix, as a landed file.

        One that leads into the landing zone is what it points to: None here, and the target, if it is a landed
        file, is listed under its own name (read under both, its rows would be ingested twice; a linked folder
        would also let a link to its parent folder go round for ever). One that leads out of the zone (to a file
        or a folder), or never reaches anything (a -> b -> a), is refused: listed with an etag naming where it
        leads, never read, so that Bronze logs it as rejected once per target.
        """
        try:
            pointer = os.readlink(path)
        except FileNotFoundError:  # gone since the folder was read
            return None
        key = path.relative_to(self.root).as_posix()
        try:
            target: Path | None = Path(os.path.realpath(path, strict=True))
        except OSError as exc:
            # Nothing there yet (or not readable): where it would lead decides.
            target = None if exc.errno == errno.ELOOP else Path(os.path.realpath(path))
        if target is None:
            refusal = Refusal(SYMLINK_LOOP, (
                f"{key} is a symbolic link that leads round in a loop ({key} -> {pointer} -> ...): there is no file "
                "to read; point it at a file in the landing zone, or put the file itself there"))
        elif any(target.is_relative_to(p) for p in inside):
            return None
        else:
            refusal = Refusal(SYMLINK_OUTSIDE, (
                f"{key} is a symbolic link to {target}, outside the landing zone {self.root}: not read (only what "
                "is in the landing zone is ingested); land a copy instead (`lakehouse land`)"))
        etag = hashlib.md5(f"{refusal.reason}\n{pointer}\n{target}".encode(), usedforsecurity=False).hexdigest()
        return replace(self._file(path, stat), etag=etag, refusal=refusal)

    def _reached_directly(self, path: Path, known: dict[Path, bool]) -> bool:
        """True when `path` is in an entity folder and no folder between them is a symbolic link (`known`: the
        answers for the folders asked about before)."""
        if (answer := known.get(path.parent)) is not None:
            return answer
        answer = False
        for prefix in self._prefixes():
            if path.parent.is_relative_to(prefix):
                real = Path(os.path.realpath(prefix)) / path.parent.relative_to(prefix)
                answer = Path(os.path.realpath(path.parent)) == real
                break
        known[path.parent] = answer
        return answer

    def _entry(self, path: Path, stat: os.stat_result, inside: list[Path]) -> LandedFile | None:
        """The landed file a path is, from its own status: a regular file, a refused link, or None (a folder, a
        FIFO, which would hang the hashing, a link into the landing zone)."""
        if stat_module.S_ISREG(stat.st_mode):
            return self._file(path, stat)
        if stat_module.S_ISLNK(stat.st_mode):
            return self._link(path, stat, inside)
        return None

    def _status(self, path: Path, known: dict[Path, bool]) -> os.stat_result | None:
        """The status of `path` itself (a link is not followed); None when it is gone or reached through a link."""
        try:
            stat = path.lstat()
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.ENAMETOOLONG):
                return None
            raise
        return stat if self._reached_directly(path, known) else None

    def _walk(self, top: Path, inside: list[Path]) -> Iterator[LandedFile]:
        """The landed files under the folder `top`, in name order, never through a symbolic link."""
        stack = [top]
        while stack:
            try:
                entries = sorted(os.scandir(stack.pop()), key=lambda e: e.name)
            except (FileNotFoundError, NotADirectoryError):
                continue
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                found = None
                try:
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(Path(entry.path))
                    elif entry.is_file(follow_symlinks=False) or entry.is_symlink():
                        found = self._entry(Path(entry.path), entry.stat(follow_symlinks=False), inside)
                except FileNotFoundError:  # gone since the folder was read
                    continue
                if found is not None:
                    yield found

    def list_files(self, entity: Entity | None = None) -> Iterator[LandedFile]:
        inside = self._inside()
        for ent in [entity] if entity else list(Entity):
            yield from self._walk(self.path_for(entity_prefix(ent)), inside)

    def _at(self, path: Path) -> LandedFile | None:
        """What `path` itself is as a landed file (`_entry`); None when it is gone or reached through a link."""
        stat = self._status(path, {})
        return None if stat is None else self._entry(path, stat, self._inside())

    def describe(self, key: str) -> LandedFile:
        found = self._at(self.path_for(key))
        if found is None:
            raise FileNotFoundError(f"{key} is not a landed file in {self.root} (gone, not a file, or a symbolic "
                                    "link into the landing zone: the file it points to is landed in its own name)")
        return self.with_etag(found)

    def files_at(self, paths: set[str]) -> Iterator[LandedFile]:
        """The landed files among `paths` (a folder: the files under it), as `list_files` would list them; paths
        gone, outside the entity prefixes or hidden are nothing."""
        prefixes, inside, known = self._prefixes(), self._inside(), {}
        seen: set[str] = set()
        for raw in sorted(paths):
            path = Path(raw)
            if not any(path.is_relative_to(p) for p in prefixes) or _hidden(path.relative_to(self.root).as_posix()):
                continue
            if path in prefixes:
                found = self._walk(path, inside)
            elif (stat := self._status(path, known)) is None:
                continue
            elif stat_module.S_ISDIR(stat.st_mode):
                found = self._walk(path, inside)
            else:
                found = filter(None, [self._entry(path, stat, inside)])
            for f in found:
                if f.key not in seen:
                    seen.add(f.key)
                    yield f

    def watch(self) -> tuple[FolderWatch, bool]:
        return FolderWatch.of(self.root)

    def with_etag(self, file: LandedFile) -> LandedFile:
        """`file` with its MD5, and with the size and change time the MD5 belongs to (the file may have changed
        since it was listed)."""
        if file.etag:
            return file
        path = self.path_for(file.key)
        try:
            stat, digest = _hashed(path)
        except OSError as exc:
            if exc.errno == errno.ELOOP and (now := self._at(path)) is not None:
                return now  # replaced by a link since it was listed: refused
            raise
        return replace(self._file(path, stat), etag=digest)

    def read_head(self, file: LandedFile, max_bytes: int = 65536) -> bytes:
        with self.open(file) as fh:
            return fh.read(max_bytes)

    def open(self, file: LandedFile) -> BinaryIO:
        if file.refusal is not None:
            raise ValueError(f"{file.key} is not to be read: {file.refusal.message}")
        return _open_unlinked(self.path_for(file.key))

    def unchanged(self, file: LandedFile) -> bool:
        try:
            now = self._at(self.path_for(file.key))
            if now is None:
                return False
            if (now.size, now.modified_at, now.refusal) == (file.size, file.modified_at, file.refusal):
                return True
            return self.with_etag(now).etag == file.etag
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


def _observer():
    """watchdog's observer for this platform; on Linux, one whose inotify watches never follow a symbolic link.

    watchdog watches each folder it finds in a new folder, links to folders included; with an event filter (ours,
    below) it leaves out IN_DONT_FOLLOW, so a link to a folder already watched (its parent: `sub/up -> ..`) gets
    that folder's watch and renames it, and every later event there came as `sub/up/<name>`, then
    `sub/up/sub2/up/<name>`, ...: paths through links, which a tick must not take (and once they grow past
    PATH_MAX, fail). Not following, the link gets a watch of its own, and the folder keeps its name."""
    from watchdog.observers import Observer

    try:
        from watchdog.observers.api import BaseObserver
        from watchdog.observers.inotify import InotifyEmitter, InotifyObserver
        from watchdog.observers.inotify_c import InotifyConstants
    except (ImportError, OSError):  # not Linux
        return Observer()
    if Observer is not InotifyObserver:
        return Observer()

    class Unfollowing(InotifyEmitter):
        def get_event_mask_from_filter(self) -> int | None:
            mask = super().get_event_mask_from_filter()
            return None if mask is None else mask | InotifyConstants.IN_DONT_FOLLOW

    return BaseObserver(Unfollowing)


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

        self.root = root
        self._changed: set[str] = set()
        self._lock = threading.Lock()
        watch = self

        class Collect(FileSystemEventHandler):
            def on_any_event(self, event) -> None:
                with watch._lock:
                    watch._changed.update(os.fsdecode(p) for p in (event.src_path, event.dest_path) if p)

        self.observer = _observer()
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
