"""``coopetition bank glyphs``: parse and call ``coopetition.images.glyphs``."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub) -> None:
    glyphs = sub.add_parser("glyphs", help="an offline Omniglot-like bank rendered from matplotlib's fonts, HOG "
                                           "features", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    glyphs.add_argument("--out", type=Path, required=True,
                        help="folder for glyph_features_{all,reordered,norotate}.h5 and glyph_samples.{png,html}")
    glyphs.add_argument("--characters", type=int, default=1623, help="characters (Omniglot: 1623)")
    glyphs.add_argument("--train-characters", type=int, default=1600,
                        help="characters in the reordered file's first block (the reference: 1600)")
    glyphs.add_argument("--layout", choices=("paper", "reference"), default="paper",
                        help="paper: row t*C + c = character c in variant t, exemplar = drawer; reference: the "
                             "Omniglot script's literal rows")
    glyphs.add_argument("--seed", type=int, default=0)
    glyphs.add_argument("--images", type=Path, help="also write the PNGs here in torchvision's Omniglot layout")
    glyphs.add_argument("--overwrite", action="store_true")
    glyphs.add_argument("--no-progress", action="store_true")
    glyphs.set_defaults(func=run_glyphs)


def run_glyphs(args: argparse.Namespace) -> int:
    from coopetition.images.extra import require

    require("PIL", "h5py", "matplotlib", "skimage", "fontTools")
    from coopetition.images import charset
    from coopetition.images.glyphs import GlyphJob, build_glyphs
    from coopetition.images.samples import write_samples

    job = GlyphJob(out_dir=args.out, n_characters=args.characters, train_characters=args.train_characters,
                   layout=args.layout, seed=args.seed, images_dir=args.images, overwrite=args.overwrite)
    summary = build_glyphs(job, progress=not args.no_progress)
    png, html = write_samples(args.out / "glyph_samples", charset.choose(args.characters), args.seed)
    print(f"wrote {', '.join(summary['paths'].values())}, {png}, {html} ({summary['characters']} characters, "
          f"{summary['seconds']:.0f} s); images sha256 {summary['images_sha256'][:16]}, features sha256 "
          f"{summary['features_sha256'][:16]}")
    return 0
