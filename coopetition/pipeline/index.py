"""``index.html``: the strategy figure inline, then a link and a one-line caption for every figure and table."""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path

import plotly.graph_objects as go

from coopetition.plots.common import PLOTLY_JS


@dataclass(frozen=True)
class Entry:
    file: str
    title: str
    caption: str


def write_index(out: Path, figures: list[Entry], tables: list[str], headline: go.Figure | None,
                subtitle: str) -> Path:
    inline = headline.to_html(full_html=False, include_plotlyjs=False, config={"responsive": True}) if headline else ""
    items = "\n".join(f'<li><a href="{html.escape(e.file)}">{html.escape(e.title)}</a> — '
                      f'{html.escape(e.caption)}</li>' for e in figures)
    table_items = "\n".join(f'<li><a href="{html.escape(t)}">{html.escape(t)}</a></li>' for t in tables)
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>coopetition analysis</title>
<script src="{PLOTLY_JS}"></script>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;line-height:1.4}} li{{margin:.4em 0}}</style>
</head><body>
<h1>coopetition analysis</h1>
<p>{html.escape(subtitle)}</p>
{inline}
<h2>Figures</h2>
<ul>
{items}
</ul>
<h2>Tables (long format, one row per value, with a <code>step</code> column)</h2>
<ul>
{table_items}
</ul>
</body></html>
"""
    path = out / "index.html"
    path.write_text(page)
    return path
