"""Which characters the glyph bank draws: ~1,600 visually distinct characters from many scripts, Omniglot-sized.

Candidates are the letters and symbols of DejaVu Sans (the face that covers most scripts), grouped into
"alphabets" by the first word of their Unicode name (capital and small letters of a bicameral script apart; scattered
symbols pooled in runs of 48 neighbouring codepoints). A candidate is dropped when its outline at 32 px differs in under 20% of its ink pixels from a kept character
under any of the 8 rotations/flips (Latin A, Greek Alpha and Cyrillic A are one shape; so are the rotated Canadian
syllabics), since those would be one class under two labels. Alphabets are then drawn from in turn, at most
``MAX_PER_ALPHABET`` each, until ``n_characters`` are chosen. Everything is a pure function of the font files.
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from coopetition.errors import ConfigError
from coopetition.images import fonts

MAX_PER_ALPHABET = 64  # Omniglot's largest alphabet (Tifinagh) has 55 characters; fonts have fewer alphabets
SYMBOL_CHUNK = 48
DEDUP_SIZE = 32
DEDUP_MAX_DIFF = 0.2  # differing ink pixels / ink pixels of either, under which two shapes count as one
BICAMERAL = ("LATIN", "CYRILLIC", "GREEK", "ARMENIAN", "GEORGIAN", "COPTIC")
SKIP_WORDS = ("WITH", "FORM", "LIGATURE", "COMBINING", "MODIFIER", "SUPERSCRIPT", "SUBSCRIPT", "VARIATION")
MIN_ALPHABET = 10


@dataclass(frozen=True)
class Glyph:
    codepoint: int
    alphabet: str

    @property
    def char(self) -> str:
        return chr(self.codepoint)

    @property
    def name(self) -> str:
        return f"U+{self.codepoint:04X}"


def alphabet_of(codepoint: int) -> str | None:
    char = chr(codepoint)
    if unicodedata.category(char)[0] not in "LS" or unicodedata.category(char) == "Sk":
        return None
    name = unicodedata.name(char, "")
    words = name.split(" ")
    if not name or any(w in words for w in SKIP_WORDS):
        return None
    if words[0] in BICAMERAL and len(words) > 1:
        return f"{words[0]}-{words[1]}"
    return words[0]


def candidates() -> dict[str, list[int]]:
    """Alphabet -> its codepoints in DejaVu Sans, ascending; alphabets under ``MIN_ALPHABET`` pooled as SYMBOLS."""
    groups: dict[str, list[int]] = defaultdict(list)
    for codepoint in sorted(fonts.faces()[0].codepoints):
        alphabet = alphabet_of(codepoint)
        if alphabet is not None:
            groups[alphabet].append(codepoint)
    pooled: dict[str, list[int]] = {}
    scattered: list[int] = []
    for alphabet, codepoints in groups.items():
        if len(codepoints) >= MIN_ALPHABET:
            pooled[alphabet] = codepoints
        else:
            scattered.extend(codepoints)
    scattered.sort()
    for start in range(0, len(scattered), SYMBOL_CHUNK):  # neighbouring codepoints: one Unicode block's symbols
        pooled[f"SYMBOLS-{start // SYMBOL_CHUNK + 1:02d}"] = scattered[start:start + SYMBOL_CHUNK]
    return {a: sorted(c) for a, c in sorted(pooled.items())}


def _bitmap(codepoint: int) -> np.ndarray | None:
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype(str(fonts.faces()[0].path), 28)
    image = Image.new("L", (DEDUP_SIZE * 2, DEDUP_SIZE * 2), 0)
    draw = ImageDraw.Draw(image)
    box = draw.textbbox((0, 0), chr(codepoint), font=font)
    if box[2] - box[0] < 2 and box[3] - box[1] < 2:
        return None
    draw.text((DEDUP_SIZE - (box[0] + box[2]) / 2, DEDUP_SIZE - (box[1] + box[3]) / 2), chr(codepoint), font=font,
              fill=255)
    pixels = np.asarray(image.resize((DEDUP_SIZE, DEDUP_SIZE), Image.BILINEAR)) >= 128
    return pixels if pixels.sum() >= 4 else None


def choose(n_characters: int) -> tuple[Glyph, ...]:
    """``n_characters`` distinct glyphs, alphabets interleaved, in (alphabet, codepoint) order."""
    pools = candidates()
    kept: dict[str, list[int]] = {a: [] for a in pools}
    seen = np.zeros((8 * n_characters, DEDUP_SIZE * DEDUP_SIZE), dtype=bool)
    cursors = {a: 0 for a in pools}
    total = 0
    while total < n_characters:
        progressed = False
        for alphabet, codepoints in pools.items():
            if total >= n_characters or len(kept[alphabet]) >= MAX_PER_ALPHABET:
                continue
            while cursors[alphabet] < len(codepoints):
                codepoint = codepoints[cursors[alphabet]]
                cursors[alphabet] += 1
                bitmap = _bitmap(codepoint)
                if bitmap is None:
                    continue
                flat = bitmap.reshape(-1)
                past = seen[:8 * total]
                if total and ((past != flat).sum(1) / (past | flat).sum(1)).min() <= DEDUP_MAX_DIFF:
                    continue
                seen[8 * total:8 * total + 8] = np.stack([_turn(bitmap, t).reshape(-1) for t in range(8)])
                kept[alphabet].append(codepoint)
                total += 1
                progressed = True
                break
        if not progressed:
            raise ConfigError(f"only {total} distinct characters are available; ask for at most that many")
    return tuple(Glyph(c, a) for a in kept for c in kept[a])


def _turn(bitmap: np.ndarray, variant: int) -> np.ndarray:
    turned = np.rot90(bitmap, variant // 2)
    return turned[:, ::-1] if variant % 2 else turned


def charset_sha256(glyphs: tuple[Glyph, ...]) -> str:
    return hashlib.sha256(",".join(f"{g.alphabet}:{g.codepoint}" for g in glyphs).encode()).hexdigest()
