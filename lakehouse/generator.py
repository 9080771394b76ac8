"""Deterministic SocialGrep-format sample data, any size, with the quirks of real exports (../shared/DATA.md).

Quirks reproduced: CRLF row ends with bare-LF (sometimes CRLF) newlines inside quoted fields, minimal quoting with
doubled inner quotes, commas, emoji, curly quotes, Markdown, HTML entities (`&amp;`, `&gt;`, `&amp;#x200B;`),
leading newlines and trailing spaces, empty selftext for link posts, `[deleted]` posts with an empty url,
`[deleted]`/`[removed]` comments with empty sentiment, empty sentiment on some live comments, lowercase
`subreddit.name` with a mixed-case permalink, negative scores, and ids repeated in a later file with a new score.

Speed comes from building a pool of texts once and picking from it with numpy; the csv module does the quoting.
"""

from __future__ import annotations

import csv
import hashlib
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from lakehouse.contracts import SOURCE_HEADERS, Entity
from lakehouse.landing import entity_prefix

_WORDS = (
    "me irl when the cat finally sits on my keyboard during a meeting and nobody notices until friday "
    "this is fine honestly every monday feels like that why does coffee taste better at work "
    "nobody asked but here we are again my brain at 3am deciding to remember something embarrassing "
    "literally me trying to adult today weekend plans cancelled because sofa"
).split()
_EMOJI = ["😂", "🙃", "🔥", "💀", "👀", "🤡", "❤️", "😭", "✨", "🐈"]
_SNIPPETS = [
    "Hello, world",
    'He said "no" and left',
    "it’s “fine”",
    "Tom &amp; Jerry",
    "&gt; quoted reply",
    "&amp;#x200B;",
    "**bold** and _italic_",
    "```\ncode block\n```",
    "a\\_b escaped",
    "100% sure, 50/50 odds",
    "line one\nline two",
    "first\r\nsecond",
]
_DOMAINS = ["i.redd.it", "i.imgur.com", "imgur.com", "youtube.com", "v.redd.it"]


@dataclass(frozen=True)
class Subreddit:
    id: str
    name: str  # lowercase, as in `subreddit.name`
    display: str  # Reddit's casing, as in the permalink
    nsfw: bool


def base36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if n == 0:
            return out


def _subreddits(rng: np.random.Generator, count: int) -> list[Subreddit]:
    subs = []
    for i in range(count):
        display = "".join(w.capitalize() for w in rng.choice(_WORDS, 2, replace=False)) + str(i)
        subs.append(Subreddit(base36(2_000_000 + i * 7919), display.lower(), display, bool(rng.random() < 0.1)))
    return subs


def _text(rng: np.random.Generator, min_words: int, max_words: int) -> str:
    words = list(rng.choice(_WORDS, int(rng.integers(min_words, max_words + 1))))
    roll = rng.random()
    if roll < 0.3:
        words.insert(int(rng.integers(0, len(words) + 1)), str(rng.choice(_EMOJI)))
    if roll < 0.25:
        words.insert(int(rng.integers(0, len(words) + 1)), str(rng.choice(_SNIPPETS)))
    text = " ".join(words)
    if rng.random() < 0.08:
        text = "\n" + text  # leading newline
    if rng.random() < 0.08:
        text = text + "  "  # trailing spaces
    if rng.random() < 0.15:
        text = text.replace(" ", ", ", 1)
    return text


def _pool(rng: np.random.Generator, size: int, min_words: int, max_words: int) -> list[str]:
    return [_text(rng, min_words, max_words) for _ in range(size)]


@dataclass
class GeneratedFiles:
    posts: list[Path]
    comments: list[Path]
    post_rows: int
    comment_rows: int


def _write_csv(path: Path, header: tuple[str, ...], rows) -> bool:
    """Write atomically (dot-file, then rename); leave an identical existing file untouched. True if written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.part")
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\r\n")  # QUOTE_MINIMAL, inner quotes doubled
        writer.writerow(header)
        writer.writerows(rows)
    if path.exists() and _md5(path) == _md5(tmp):
        tmp.unlink()
        return False
    os.replace(tmp, path)
    return True


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _split(n: int, parts: int) -> list[tuple[int, int]]:
    edges = np.linspace(0, n, parts + 1).astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


def generate(
    landing_root: Path,
    posts: int = 10_000,
    comments: int = 30_000,
    files: int = 3,
    seed: int = 42,
    start: datetime = datetime(2022, 3, 1, tzinfo=timezone.utc),
    days: int = 31,
    subreddits: int = 12,
    repeat_share: float = 0.02,
    prefix: str = "socialgrep",
    id_offset: int = 0,
) -> GeneratedFiles:
    """Write `posts` and `comments` distinct ids in `files` files per entity under the landing root.

    The last file of each entity also repeats `repeat_share` of the ids of earlier files with a new score,
    as a later export does. The same arguments always produce byte-identical files. Ids are numbered from
    `id_offset`, so generations with different offsets never share ids.
    """
    rng = np.random.default_rng(seed)
    subs = _subreddits(rng, subreddits)
    titles = _pool(rng, 997, 1, 12)
    bodies = _pool(rng, 1999, 1, 40)
    t0 = int(start.timestamp())
    span = days * 86_400

    # Posts: one numpy draw per column.
    p_sub = rng.integers(0, len(subs), posts)
    p_created = np.sort(rng.integers(t0, t0 + span, posts))
    p_kind = rng.random(posts)  # < .6 link, < .87 self text, < .97 deleted, else removed
    p_text = rng.integers(0, len(bodies), posts)
    p_title = rng.integers(0, len(titles), posts)
    p_domain = rng.integers(0, len(_DOMAINS), posts)
    p_score = np.round(rng.pareto(1.2, posts) * 10).astype(np.int64) - rng.integers(0, 3, posts)
    p_ids = [base36(36**5 + (id_offset + i) * 37) for i in range(posts)]

    def post_row(i: int, score: int) -> list:
        sub = subs[p_sub[i]]
        pid, kind = p_ids[i], p_kind[i]
        slug = "_".join(titles[p_title[i]].split()[:3]).lower()[:30] or "post"
        link = kind < 0.6
        if link:
            domain, url, selftext = _DOMAINS[p_domain[i]], f"https://{_DOMAINS[p_domain[i]]}/{pid}.jpg", ""
        else:
            domain, url = f"self.{sub.name}", f"https://old.reddit.com/r/{sub.display}/comments/{pid}/{slug}/"
            selftext = bodies[p_text[i]] if kind < 0.87 else ("[deleted]" if kind < 0.97 else "[removed]")
            if selftext == "[deleted]":
                url = ""
        return [
            "post", pid, sub.id, sub.name, "true" if sub.nsfw else "false", int(p_created[i]),
            f"https://old.reddit.com/r/{sub.display}/comments/{pid}/{slug}/", domain, url, selftext,
            titles[p_title[i]], score,
        ]

    # Comments: each belongs to a generated post (1% to a post outside the sample), made after it.
    c_post = rng.integers(0, max(posts, 1), comments)
    c_orphan = rng.random(comments) < 0.01
    c_delay = rng.integers(30, 2 * 86_400, comments)
    c_kind = rng.random(comments)  # < .05 deleted, < .08 removed, else live
    c_blank_sentiment = rng.random(comments) < 0.15
    c_sentiment = np.round(np.clip(rng.normal(0.05, 0.45, comments), -1, 1), 4)
    c_text = rng.integers(0, len(bodies), comments)
    c_score = np.round(rng.pareto(1.5, comments) * 3).astype(np.int64) - rng.integers(0, 4, comments)
    c_ids = [base36(36**6 + (id_offset + i) * 41) for i in range(comments)]

    def comment_row(i: int, score: int) -> list:
        p = int(c_post[i]) if posts else 0
        sub = subs[p_sub[p]] if posts else subs[0]
        post_id = base36(36**4 + i) if c_orphan[i] or not posts else p_ids[p]
        created = (int(p_created[p]) if posts else t0) + int(c_delay[i])
        kind = c_kind[i]
        body = "[deleted]" if kind < 0.05 else ("[removed]" if kind < 0.08 else bodies[c_text[i]])
        sentiment = "" if kind < 0.08 or c_blank_sentiment[i] else repr(float(c_sentiment[i]))
        return [
            "comment", c_ids[i], sub.id, sub.name, "true" if sub.nsfw else "false", created,
            f"https://old.reddit.com/r/{sub.display}/comments/{post_id}/x/{c_ids[i]}/", body, sentiment, score,
        ]

    root = Path(landing_root)
    out = GeneratedFiles([], [], 0, 0)
    for entity, n, make, scores in (
        (Entity.POST, posts, post_row, p_score),
        (Entity.COMMENT, comments, comment_row, c_score),
    ):
        ranges = _split(n, files)
        for part, (lo, hi) in enumerate(ranges):
            rows = [make(i, int(scores[i])) for i in range(lo, hi)]
            if part == len(ranges) - 1 and lo > 0 and repeat_share > 0:
                # A later export: some earlier ids again, with a new score.
                again = np.sort(rng.choice(lo, max(1, int(lo * repeat_share)), replace=False))
                rows += [make(int(i), int(scores[i]) + 1 + int(rng.integers(0, 50))) for i in again]
            path = root / entity_prefix(entity) / f"{prefix}-{entity.plural}-s{seed}-{part:04d}.csv"
            _write_csv(path, SOURCE_HEADERS[entity], rows)
            if entity is Entity.POST:
                out.posts.append(path)
                out.post_rows += len(rows)
            else:
                out.comments.append(path)
                out.comment_rows += len(rows)
    return out
