"""``coopetition bank omniglot|glyphs|inspect``: build an image bank or print a bank's statistics.

The CLI only parses and calls ``coopetition.images``; a missing optional package is a one-line error naming the
extra to install.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from coopetition.images.extra import require


def add_parser(subparsers) -> None:
    bank = subparsers.add_parser("bank", help="build an image bank (Omniglot features, rendered glyphs) or "
                                              "inspect any bank", description=__doc__)
    sub = bank.add_subparsers(dest="bank_command", required=True, parser_class=type(bank))

    omni = sub.add_parser("omniglot", help="the reference's ResNet-18 Omniglot feature files (REFERENCE 1.2)",
                          formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    omni.add_argument("--root", type=Path, required=True,
                      help="folder holding omniglot-py/images_background and images_evaluation (torchvision's "
                           "layout), or the omniglot-py folder itself")
    omni.add_argument("--out", type=Path, required=True,
                      help="folder for omniglot_features_{all,reordered,norotate}.h5")
    omni.add_argument("--weights", type=Path,
                      help="torchvision's resnet18-f37072fd.pth (ImageNet-1K-V1); default: torchvision downloads it")
    omni.add_argument("--layout", choices=("reference", "paper"), default="reference",
                      help="reference: the script's literal rows (row r, exemplar i = item 20r+i); paper: "
                           "characters x 8 transforms, row t*C + c")
    omni.add_argument("--order", choices=("sorted", "listdir"), default="sorted",
                      help="character and drawing order: sorted names, or this machine's os.listdir order "
                           "(what torchvision does)")
    omni.add_argument("--image-size", type=int, default=224, help="resize/crop size (the reference: 224)")
    omni.add_argument("--train-characters", type=int, default=1600,
                      help="characters in the reordered file's first block (the reference: 1600)")
    omni.add_argument("--device", default="cpu", help="cpu or cuda")
    omni.add_argument("--batch-size", type=int, default=256)
    omni.add_argument("--overwrite", action="store_true", help="replace existing output files")
    omni.add_argument("--no-progress", action="store_true")
    omni.set_defaults(func=run_omniglot)

    from coopetition.images import glyph_cli

    glyph_cli.add_parser(sub)

    inspect = sub.add_parser("inspect", help="the statistics that decide the ICL/IWL race, for any bank",
                             formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    inspect.add_argument("file", help="a bank file (.h5/.npy/.npz/.safetensors) or 'synthetic'")
    inspect.add_argument("--h5-dataset", default="resnet18/224/feat", help="dataset path inside an .h5 file")
    inspect.add_argument("--preset", default="c25", help="synthetic bank: the preset whose bank is inspected")
    inspect.add_argument("--classes", type=int, default=12800,
                         help="classes read out (the first N); the reference trains on 12,800")
    inspect.add_argument("--seed", type=int, default=0)
    inspect.add_argument("--json", action="store_true", help="print the statistics as JSON")
    inspect.set_defaults(func=run_inspect)


def run_omniglot(args: argparse.Namespace) -> int:
    require("PIL", "h5py")
    from coopetition.images.omniglot import OmniglotJob, build_omniglot

    job = OmniglotJob(root=args.root, out_dir=args.out, weights=args.weights, layout=args.layout, order=args.order,
                      image_size=args.image_size, train_characters=args.train_characters, device=args.device,
                      batch_size=args.batch_size, overwrite=args.overwrite)
    summary = build_omniglot(job, progress=not args.no_progress)
    print(f"wrote {', '.join(summary['paths'].values())} ({summary['characters']} characters, "
          f"{summary['seconds']:.0f} s)")
    return 0


def run_inspect(args: argparse.Namespace) -> int:
    from coopetition.images.stats import bank_statistics, format_table, load_for_inspect

    features, label = load_for_inspect(args.file, args.h5_dataset, args.preset)
    stats = bank_statistics(features, classes=args.classes, seed=args.seed)
    print(json.dumps(stats, indent=2) if args.json else format_table({label: stats}))
    return 0
