"""A figure of the glyph bank's images: rows are characters (one per alphabet sampled), columns are 10 drawers in
variant 0, then drawer 1's 8 rotations/flips. Written as a PNG and a self-contained Plotly page (works offline)."""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np

from coopetition.images import charset, hog, render
from coopetition.images.preprocess import VARIANTS

DRAWERS_SHOWN = 10
GAP = 20


def sample_grid(glyphs: tuple[charset.Glyph, ...], characters: list[int], seed: int) -> np.ndarray:
    rows = []
    for c in characters:
        drawn = [render.draw(glyphs[c], c, j, seed) for j in range(DRAWERS_SHOWN)]
        variants = [hog.turn(drawn[0], t) for t in range(VARIANTS)]
        gap = np.full((render.SIZE, GAP), 200, np.uint8)
        rows.append(np.concatenate([*drawn, gap, *variants], 1))
        rows.append(np.full((4, rows[-1].shape[1]), 200, np.uint8))
    return np.concatenate(rows[:-1], 0)


def write_samples(out: Path, glyphs: tuple[charset.Glyph, ...], seed: int, n_rows: int = 10) -> tuple[Path, Path]:
    """``out``.png and ``out``.html for ``n_rows`` characters spread over the alphabets."""
    import plotly.graph_objects as go
    from PIL import Image

    alphabets = sorted({g.alphabet for g in glyphs})
    picks = [alphabets[round(i * (len(alphabets) - 1) / max(n_rows - 1, 1))] for i in range(n_rows)]
    characters = [next(i for i, g in enumerate(glyphs) if g.alphabet == a) for a in dict.fromkeys(picks)]
    grid = sample_grid(glyphs, characters, seed)
    png, html = Path(f"{out}.png"), Path(f"{out}.html")
    png.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid, "L").save(png)
    step = render.SIZE
    xs = [step * j + step / 2 for j in range(DRAWERS_SHOWN)] + \
         [DRAWERS_SHOWN * step + GAP + step * t + step / 2 for t in range(VARIANTS)]
    xlabels = [f"drawer {j + 1}" for j in range(DRAWERS_SHOWN)] + \
              [f"{90 * (t // 2)}°{' flip' if t % 2 else ''}" for t in range(VARIANTS)]
    ys = [(step + 4) * r + step / 2 for r in range(len(characters))]
    ylabels = [f"{glyphs[c].alphabet} {glyphs[c].name}" for c in characters]
    source = "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode()
    fig = go.Figure(go.Image(source=source))
    fig.update_layout(title=f"glyph bank (seed {seed}): characters x drawers (variant 0) | drawer 1 x 8 "
                            f"rotations/flips", width=1400, height=120 + 80 * len(characters),
                      margin=dict(l=170, r=20, t=60, b=60))
    fig.update_xaxes(tickvals=xs, ticktext=xlabels, tickangle=-45)
    fig.update_yaxes(tickvals=ys, ticktext=ylabels)
    fig.write_html(html, include_plotlyjs=True, full_html=True)
    return png, html
