"""Gold numbers computed independently of the lakehouse code: plain Python over the landed CSV files."""

from __future__ import annotations

import csv
import re
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction


def mean(values) -> Fraction:
    values = [Fraction(Decimal(str(v))) for v in values]
    return sum(values, Fraction(0)) / len(values)


def rounded(value: Fraction | None, places: int) -> Decimal | None:
    """Round half up, as SQL's ROUND does; exact, from a fraction."""
    if value is None:
        return None
    return (Decimal(value.numerator) / Decimal(value.denominator)).quantize(
        Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP
    )

POST_ID = re.compile(r"/comments/([A-Za-z0-9]+)(/|$)")


def read_rows(paths: list[Path]) -> list[dict]:
    """Rows of the files in ingestion order (paths in the order they were ingested; rows in file order)."""
    rows = []
    for path in paths:
        with path.open(newline="", encoding="utf-8") as fh:
            rows.extend(csv.DictReader(fh))
    return rows


def latest(rows: list[dict]) -> dict[str, dict]:
    """One row per id, the last one wins (later file, later row)."""
    out: dict[str, dict] = {}
    for row in rows:
        out[row["id"]] = row
    return out


def valid_comment(row: dict) -> bool:
    # A comment without a sentiment score is a real comment (kept with a null sentiment).
    return POST_ID.search(row["permalink"]) is not None


def sentiment(row: dict) -> float | None:
    value = row["sentiment"].strip()
    return float(value) if value else None


def day(row: dict) -> str:
    return datetime.fromtimestamp(int(row["created_utc"]), tz=timezone.utc).date().isoformat()


def subreddit_daily(posts: dict[str, dict], comments: dict[str, dict]) -> dict[tuple[str, str], dict]:
    groups: dict[tuple[str, str], dict] = defaultdict(
        lambda: {"posts": 0, "comments": 0, "sent": [], "score": [], "nsfw": []})
    for row in posts.values():
        g = groups[(row["subreddit.id"], day(row))]
        g["posts"] += 1
        g["score"].append(int(row["score"]))
        g["nsfw"].append(row["subreddit.nsfw"] == "true")
    for row in comments.values():
        g = groups[(row["subreddit.id"], day(row))]
        g["comments"] += 1
        if sentiment(row) is not None:
            g["sent"].append(sentiment(row))
        g["score"].append(int(row["score"]))
        g["nsfw"].append(row["subreddit.nsfw"] == "true")
    return {
        key: {
            "posts": g["posts"],
            "comments": g["comments"],
            "scored_comments": len(g["sent"]),
            "mean_sentiment": rounded(mean(g["sent"]), 4) if g["sent"] else None,
            "min_sentiment": min(g["sent"]) if g["sent"] else None,
            "max_sentiment": max(g["sent"]) if g["sent"] else None,
            "mean_score": rounded(mean(g["score"]), 2),
            "nsfw_share": rounded(Fraction(sum(g["nsfw"]), len(g["nsfw"])), 4),
        }
        for key, g in groups.items()
    }


def post_engagement(posts: dict[str, dict], comments: dict[str, dict]) -> dict[str, dict]:
    by_post: dict[str, list[float | None]] = defaultdict(list)
    for row in comments.values():
        by_post[POST_ID.search(row["permalink"]).group(1)].append(sentiment(row))
    out = {}
    for pid, row in posts.items():
        s = [v for v in by_post.get(pid, []) if v is not None]  # means and shares over the scored comments
        out[pid] = {
            "post_score": int(row["score"]),
            "comments": len(by_post.get(pid, [])),
            "scored_comments": len(s),
            "mean_comment_sentiment": rounded(mean(s), 4) if s else None,
            "positive_share": rounded(Fraction(sum(v >= 0.05 for v in s), len(s)), 4) if s else None,
            "negative_share": rounded(Fraction(sum(v <= -0.05 for v in s), len(s)), 4) if s else None,
        }
    return out


def expected_gold(post_files: list[Path], comment_files: list[Path]) -> dict:
    posts = latest(read_rows(post_files))
    # Invalid rows are quarantined before the latest-wins rule, exactly as Silver does.
    comments = latest([r for r in read_rows(comment_files) if valid_comment(r)])
    return {
        "posts": posts,
        "comments": comments,
        "subreddit_daily": subreddit_daily(posts, comments),
        "post_engagement": post_engagement(posts, comments),
    }


def bump_scores(source: Path, target: Path, delta: int, limit: int | None = None) -> Path:
    """A later export of `source`: the same rows (the first `limit`), each score raised by `delta`."""
    with source.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        rows = [r[:-1] + [str(int(r[-1]) + delta)] for r in reader][:limit]
    with target.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\r\n")
        writer.writerow(header)
        writer.writerows(rows)
    return target
