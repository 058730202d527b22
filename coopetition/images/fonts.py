"""The fonts glyphs are drawn from: the TrueType files matplotlib ships (its ``mpl-data/fonts/ttf``), so a pinned
matplotlib version pins every outline and the bank does not depend on what fonts a machine has installed.

DejaVu (Bitstream Vera licence plus public-domain changes, ``LICENSE_DEJAVU``) and STIX (SIL Open Font Licence 1.1,
``LICENSE_STIX``), as matplotlib distributes them; see docs/images.md.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from coopetition.errors import ConfigError

# Faces a "drawer" may use, in a fixed order. DejaVu Sans covers the most scripts; the others add weight, slant,
# serif and monospace variety where they cover a character.
FACES = ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSans-BoldOblique.ttf",
         "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSerif-Italic.ttf", "DejaVuSansMono.ttf",
         "DejaVuSansMono-Bold.ttf", "STIXGeneral.ttf", "STIXGeneralBol.ttf", "STIXGeneralItalic.ttf")
BASE_FACE = FACES[0]


@dataclass(frozen=True)
class Face:
    name: str
    path: Path
    sha256: str
    codepoints: frozenset[int]


@cache
def font_dir() -> Path:
    try:
        import matplotlib
    except ImportError:
        raise ConfigError("bank glyphs draws with the fonts matplotlib ships: pip install 'coopetition[images]'") \
            from None
    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


@cache
def faces() -> tuple[Face, ...]:
    from fontTools.ttLib import TTFont

    found = []
    for name in FACES:
        path = font_dir() / name
        if not path.is_file():
            raise ConfigError(f"matplotlib's font {path} is missing; reinstall matplotlib")
        data = path.read_bytes()
        with TTFont(path, lazy=True) as font:
            codepoints = frozenset(font.getBestCmap())
        found.append(Face(name, path, hashlib.sha256(data).hexdigest(), codepoints))
    return tuple(found)


def covering(codepoint: int) -> tuple[Face, ...]:
    return tuple(f for f in faces() if codepoint in f.codepoints)
