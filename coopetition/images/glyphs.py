"""``coopetition bank glyphs``: an offline, Omniglot-sized image bank rendered from pinned fonts.

``n_characters`` characters (``charset``) x 20 drawers (``render``) x 8 rotations/flips, HOG features (``hog``),
gathered into ``glyph_features_{all,reordered,norotate}.h5`` by the same layouts as the Omniglot files (``layout``;
default ``paper``: row ``t*C + c`` is character ``c`` in variant ``t``, exemplar ``i`` is drawer ``i``). With 1,623
characters the reordered file is 12,984 x 20 x 512 like the reference's. Built in resumable chunks, written
atomically, and the same bytes for the same package versions (the attributes record them and digests of the images
and the features).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from coopetition.errors import ConfigError
from coopetition.images import charset, fonts, hog, layout as layouts, render
from coopetition.images.chunks import ChunkStore, extract_items
from coopetition.images.preprocess import VARIANTS
from coopetition.images.writer import check_outputs, output_paths, package_versions, write_bank_files

PREFIX = "glyph_features"
VERSIONS = ("coopetition", "numpy", "pillow", "matplotlib", "fonttools", "scikit-image", "h5py")
FORMAT = 1


@dataclass(frozen=True)
class GlyphJob:
    out_dir: Path
    n_characters: int = 1623
    train_characters: int = layouts.REFERENCE_TRAIN_CHARACTERS
    layout: str = "paper"
    seed: int = 0
    images_dir: Path | None = None  # also write the PNGs in torchvision's Omniglot layout
    chunk_images: int = 1600
    batch_size: int = 1280
    overwrite: bool = False

    def __post_init__(self) -> None:
        if not 3 <= self.n_characters <= 2000:
            raise ConfigError(f"--characters must be in [3, 2000], got {self.n_characters}")
        if not 1 <= self.train_characters <= self.n_characters:
            raise ConfigError(f"--train-characters must be in [1, --characters = {self.n_characters}], "
                              f"got {self.train_characters}")
        if self.layout not in layouts.LAYOUTS:
            raise ConfigError(f"--layout must be one of {layouts.LAYOUTS}, got {self.layout!r}")
        if not 0 <= self.seed < 2**32:
            raise ConfigError(f"--seed must be in [0, 2**32), got {self.seed}")


def build_glyphs(job: GlyphJob, progress: bool = True, stop_after: int | None = None) -> dict:
    paths = output_paths(job.out_dir, PREFIX)
    check_outputs(paths, job.overwrite)
    if job.images_dir is not None and Path(job.images_dir).exists() and not job.overwrite:
        raise ConfigError(f"--images {job.images_dir} already exists; pass --overwrite to replace its files")
    start = time.perf_counter()
    glyphs = charset.choose(job.n_characters)
    chosen = time.perf_counter() - start
    face_info = {f.name: f.sha256 for f in fonts.faces()}
    key = {"format": FORMAT, "charset": charset.charset_sha256(glyphs), "fonts": face_info, "seed": job.seed,
           "chunk_images": job.chunk_images, "versions": package_versions(VERSIONS)}
    store = ChunkStore(Path(job.out_dir) / f".{PREFIX}.partial-{_short(key)}", key)

    def compute(indices: list[int]) -> dict[str, np.ndarray]:
        cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        feats, digests = [], []
        for item in indices:
            image = item // VARIANTS
            if image not in cache:
                character, drawer = divmod(image, render.DRAWERS)
                pixels = render.draw(glyphs[character], character, drawer, job.seed)
                cache[image] = (hog.shrink(pixels), _digest(pixels))
            small, digest = cache[image]
            feats.append(hog.hog_features(hog.turn(small, item % VARIANTS)))
            digests.append(digest)
        return {"feat": np.stack(feats), "image_digest": np.stack(digests)}

    n_items = job.n_characters * render.DRAWERS * VARIANTS
    items = extract_items(n_items, compute, store, job.chunk_images * VARIANTS, job.batch_size, progress,
                          "images", stop_after)
    images_sha256 = hashlib.sha256(items["image_digest"][::VARIANTS].tobytes()).hexdigest()
    attrs = {
        "source": "coopetition bank glyphs", "seed": job.seed, "n_characters": job.n_characters,
        "train_characters": job.train_characters, "drawers": render.DRAWERS, "image_size": render.SIZE,
        "features": f"scikit-image hog {hog.PARAMS} on {hog.HOG_SIZE}x{hog.HOG_SIZE}",
        "fonts_sha256": face_info, "charset_sha256": charset.charset_sha256(glyphs),
        "versions": package_versions(VERSIONS),
        "images_sha256": images_sha256, "features_sha256": hashlib.sha256(items["feat"].tobytes()).hexdigest(),
        "cell": "index/item[r, i] = d: variant d % 8 of image d // 8, which is drawer (d // 8) % 20 of character "
                "d // 160, named in index/characters",
    }
    write_bank_files(paths, {hog.DATASET: items["feat"]}, job.layout,
                     [f"{g.alphabet}/{glyph_folder(g)}" for g in glyphs], job.train_characters, attrs)
    if job.images_dir is not None:
        write_image_tree(Path(job.images_dir), glyphs, job.seed)
    store.remove()
    return {"paths": {k: str(v) for k, v in paths.items()}, "characters": job.n_characters,
            "seconds": time.perf_counter() - start, "charset_seconds": chosen, "images_sha256": images_sha256,
            "features_sha256": attrs["features_sha256"]}


def glyph_folder(glyph: charset.Glyph) -> str:
    """``U+`` and six hex digits, so sorted names are codepoint order."""
    return f"U+{glyph.codepoint:06X}"


def write_image_tree(root: Path, glyphs: tuple[charset.Glyph, ...], seed: int) -> None:
    """The PNGs as torchvision's Omniglot tree (all under ``images_background``, ``images_evaluation`` empty), so
    ``bank omniglot --root`` can run a ResNet on them. With ``--order sorted`` the characters come in this bank's
    order: alphabets sorted by name, then codepoints."""
    from PIL import Image

    base = root / "omniglot-py"
    (base / "images_evaluation").mkdir(parents=True, exist_ok=True)
    for character, glyph in enumerate(glyphs):
        folder = base / "images_background" / glyph.alphabet / glyph_folder(glyph)
        folder.mkdir(parents=True, exist_ok=True)
        for drawer in range(render.DRAWERS):
            Image.fromarray(render.draw(glyph, character, drawer, seed), "L").convert("1").save(
                folder / f"{character:04d}_{drawer + 1:02d}.png")


def _digest(pixels: np.ndarray) -> np.ndarray:
    return np.frombuffer(hashlib.sha256(pixels.tobytes()).digest(), dtype=np.uint8).copy()


def _short(key: dict) -> str:
    return hashlib.sha256(repr(sorted(key.items())).encode()).hexdigest()[:12]
