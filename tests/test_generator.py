"""The sample-data generator: deterministic per seed, SocialGrep's format and quirks, repeats in a later file."""

from __future__ import annotations

import csv
import hashlib

from lakehouse.contracts import SOURCE_HEADERS, Entity
from lakehouse.generator import generate


def digest(paths) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.read_bytes())
    return h.hexdigest()


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    a = generate(tmp_path / "a", posts=300, comments=600, files=2, seed=1)
    b = generate(tmp_path / "b", posts=300, comments=600, files=2, seed=1)
    c = generate(tmp_path / "c", posts=300, comments=600, files=2, seed=2)
    assert digest(a.posts + a.comments) == digest(b.posts + b.comments)
    assert digest(a.posts + a.comments) != digest(c.posts + c.comments)


def test_regenerating_leaves_identical_files_untouched(tmp_path):
    first = generate(tmp_path, posts=100, comments=100, files=1, seed=3)
    mtimes = [p.stat().st_mtime_ns for p in first.posts + first.comments]
    again = generate(tmp_path, posts=100, comments=100, files=1, seed=3)
    assert [p.stat().st_mtime_ns for p in again.posts + again.comments] == mtimes


def test_format_and_quirks(tmp_path):
    out = generate(tmp_path, posts=2000, comments=4000, files=2, seed=5, repeat_share=0.05)
    assert all(p.parent == tmp_path / "input" / "post" for p in out.posts)
    raw = b"".join(p.read_bytes() for p in out.comments)
    assert b"\r\n" in raw and b'""' in raw  # CRLF rows, doubled inner quotes
    rows = {}
    for entity, paths in ((Entity.POST, out.posts), (Entity.COMMENT, out.comments)):
        rows[entity] = []
        for path in paths:
            with path.open(newline="", encoding="utf-8") as fh:
                reader = csv.reader(fh)
                assert tuple(next(reader)) == SOURCE_HEADERS[entity]
                rows[entity] += [dict(zip(SOURCE_HEADERS[entity], r)) for r in reader]
    posts, comments = rows[Entity.POST], rows[Entity.COMMENT]
    assert len(posts) == out.post_rows and len(comments) == out.comment_rows
    assert any("\n" in r["selftext"] for r in posts) and any("\n" in r["body"] for r in comments)
    assert any(r["selftext"] == "" for r in posts)
    assert any(r["selftext"] == "[deleted]" and r["url"] == "" for r in posts)
    assert {"[deleted]", "[removed]"} <= {r["body"] for r in comments}
    assert all(r["sentiment"] == "" for r in comments if r["body"] in ("[deleted]", "[removed]"))
    assert any(r["sentiment"] == "" and r["body"] not in ("[deleted]", "[removed]") for r in comments)
    assert any(any(ord(ch) > 0x1F000 for ch in r["title"]) for r in posts)  # emoji
    assert any("&amp;" in r["body"] for r in comments)
    assert any(int(r["score"]) < 0 for r in comments)
    assert all(r["subreddit.name"] == r["subreddit.name"].lower() for r in posts)
    assert any(f"/r/{r['subreddit.name']}/" not in r["permalink"] for r in posts)  # permalink keeps casing
    # The last file repeats ids of earlier files with a different score.
    first_ids = {r["id"]: r["score"] for r in posts[: len(posts) // 2]}
    repeated = [r for r in posts[len(posts) // 2 :] if r["id"] in first_ids]
    assert repeated and all(r["score"] != first_ids[r["id"]] for r in repeated)
