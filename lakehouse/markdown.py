"""Markdown tables for materialisation metadata (shared by the Dagster assets and the Pipes job)."""

from __future__ import annotations

from typing import Any

_CELL = 60


class Markdown(str):
    """A metadata value to show as Markdown."""


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    text = text.replace("\n", " ").replace("|", "\\|")
    return text if len(text) <= _CELL else text[: _CELL - 1] + "…"


def markdown_table(rows: list[dict], columns: list[str]) -> str:
    head = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns)
    body = ["| " + " | ".join(_cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join([head, *body])
