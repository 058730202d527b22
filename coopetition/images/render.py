"""Drawing one glyph as one of 20 "drawers": Omniglot-sized (105 x 105), black strokes on white, binary.

Drawer ``j`` of character ``c`` uses the ``j``-th face (cycling) among the faces that have the character, a size,
a stroke thickening, an affine jitter (rotation, shear, scale, shift) and an elastic warp (a 4 x 4 mesh whose
corners move), all drawn from ``numpy.random.default_rng([seed, c, j])``. Every pixel operation is Pillow's (text
rasterisation, a mesh transform, a threshold), integer or fixed scalar code without CPU-dependent dispatch, so the
images are the same bytes on any machine with the same Pillow, numpy and matplotlib (fonts) versions.
"""

from __future__ import annotations

import math

import numpy as np

from coopetition.images import fonts
from coopetition.images.charset import Glyph

SIZE = 105  # Omniglot's image size
DRAWERS = 20
CANVAS = 2 * SIZE
MESH = 4


def draw(glyph: Glyph, character: int, drawer: int, seed: int) -> np.ndarray:
    """``[105, 105]`` uint8, 0 (ink) or 255 (paper), as Omniglot's PNGs read in ``L`` mode."""
    from PIL import Image, ImageDraw, ImageFont

    rng = np.random.default_rng([seed, character, drawer])
    faces = fonts.covering(glyph.codepoint)
    face = faces[drawer % len(faces)]
    px = int(rng.integers(52, 73))
    stroke = int(rng.integers(0, 3))
    font = ImageFont.truetype(str(face.path), px)
    image = Image.new("L", (CANVAS, CANVAS), 255)
    pen = ImageDraw.Draw(image)
    box = pen.textbbox((0, 0), glyph.char, font=font, stroke_width=stroke)
    origin = (CANVAS / 2 - (box[0] + box[2]) / 2, CANVAS / 2 - (box[1] + box[3]) / 2)
    pen.text(origin, glyph.char, font=font, fill=0, stroke_width=stroke, stroke_fill=0)
    extent = max(box[2] - box[0], box[3] - box[1], 1)
    fit = min(1.6, max(0.6, 0.7 * SIZE / extent))  # the glyph spans ~70% of the image, as Omniglot's do
    angle = math.radians(rng.uniform(-12, 12))
    shear = rng.uniform(-0.2, 0.2)
    scale = fit * rng.uniform(0.85, 1.05)
    shift = rng.uniform(-5, 5, size=2)
    jitter = rng.normal(0, 2.5, size=(MESH + 1, MESH + 1, 2))

    def source(x: float, y: float, i: int, j: int) -> tuple[float, float]:
        """Where output point (x, y), mesh corner (i, j), samples the canvas: inverse affine plus corner jitter."""
        u, v = x - SIZE / 2 - shift[0] + jitter[i, j, 0], y - SIZE / 2 - shift[1] + jitter[i, j, 1]
        u, v = u - shear * v, v
        cos, sin = math.cos(angle), math.sin(angle)
        u, v = cos * u + sin * v, -sin * u + cos * v
        return CANVAS / 2 + u / scale, CANVAS / 2 + v / scale

    step = SIZE / MESH
    mesh = []
    for i in range(MESH):
        for j in range(MESH):
            x0, y0, x1, y1 = i * step, j * step, (i + 1) * step, (j + 1) * step
            quad = (*source(x0, y0, i, j), *source(x0, y1, i, j + 1), *source(x1, y1, i + 1, j + 1),
                    *source(x1, y0, i + 1, j))
            mesh.append(((round(x0), round(y0), round(x1), round(y1)), quad))
    warped = image.transform((SIZE, SIZE), Image.Transform.MESH, mesh, resample=Image.BILINEAR, fillcolor=255)
    return np.where(np.asarray(warped) < 128, 0, 255).astype(np.uint8)
