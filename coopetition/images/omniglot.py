"""``coopetition bank omniglot``: the reference's Omniglot feature files (REFERENCE 1.2), built from a local
Omniglot tree and ResNet-18 weights file, in either class layout.

Item ``d`` of the reference's dataset is variant ``d % 8`` of image ``d // 8`` (``preprocess``); its ResNet-18
features and logits are computed once, in chunks that survive an interruption (``chunks``), and then gathered into
the ``all``, ``reordered`` and ``norotate`` files by the chosen layout (``layout``).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from coopetition.errors import ConfigError
from coopetition.images import layout as layouts
from coopetition.images.chunks import ChunkStore, extract_items
from coopetition.images.preprocess import (REFERENCE_SIZE, VARIANTS, batch_from_indices, check_headers,
                                              load_grey)
from coopetition.images.resnet import IMAGENET1K_V1_SHA256_PREFIX, load_weights, torchvision_weights
from coopetition.images.tree import read_tree
from coopetition.images.writer import check_outputs, output_paths, package_versions, write_bank_files

PREFIX = "omniglot_features"
VERSIONS = ("coopetition", "torch", "numpy", "pillow", "h5py")
FORMAT = 1  # bump when what a chunk holds changes, so old partial builds are not reused


@dataclass(frozen=True)
class OmniglotJob:
    root: Path
    out_dir: Path
    weights: Path | None = None  # None: torchvision's ImageNet-1K-V1 download
    layout: str = "reference"
    order: str = "sorted"
    image_size: int = REFERENCE_SIZE
    train_characters: int = layouts.REFERENCE_TRAIN_CHARACTERS
    device: str = "cpu"
    batch_size: int = 256
    chunk_images: int = 160  # 8 characters: 1,280 items per saved chunk
    overwrite: bool = False

    def __post_init__(self) -> None:
        if self.layout not in layouts.LAYOUTS:
            raise ConfigError(f"--layout must be one of {layouts.LAYOUTS}, got {self.layout!r}")
        if not 32 <= self.image_size <= 1024:
            raise ConfigError(f"--image-size must be in [32, 1024], got {self.image_size}")
        if not 1 <= self.batch_size <= 65536:
            raise ConfigError(f"--batch-size must be in [1, 65536], got {self.batch_size}")
        if self.chunk_images < 1:
            raise ConfigError(f"chunk_images must be >= 1, got {self.chunk_images}")
        if self.device not in ("cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ConfigError(f"--device must be cpu or cuda[:N], got {self.device!r}")


def build_omniglot(job: OmniglotJob, progress: bool = True, stop_after: int | None = None) -> dict:
    """Write the three files of ``job`` and return a summary (paths, shape, seconds). Inputs are checked before any
    work: an existing output without ``overwrite``, a missing tree, a bad weights file or an absent GPU are one-line
    errors and write nothing."""
    paths = output_paths(job.out_dir, PREFIX)
    check_outputs(paths, job.overwrite)
    if job.device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda asked for, but torch sees no CUDA device")
    tree = read_tree(job.root, job.order)
    n_characters = len(tree.characters)
    if not 0 < job.train_characters <= n_characters:
        raise ConfigError(f"--train-characters must be in [1, {n_characters}] (the tree's characters), "
                          f"got {job.train_characters}")
    check_headers(path for character in tree.characters for path in character.files)
    model, weights_sha256 = load_weights(job.weights) if job.weights is not None else torchvision_weights()
    model = model.to(job.device)
    fingerprint = tree.fingerprint()
    key = {"format": FORMAT, "tree": fingerprint, "weights": weights_sha256, "image_size": job.image_size,
           "chunk_images": job.chunk_images, "device": job.device}
    store = ChunkStore(Path(job.out_dir) / f".{PREFIX}.partial-{_short(key)}", key)

    def compute(indices: list[int]) -> dict[str, np.ndarray]:
        pixels = batch_from_indices(lambda k: load_grey(tree.image_path(k)), indices, job.image_size)
        with torch.no_grad():
            features = model(pixels.to(job.device))
            logits = model.fc(features)
        return {"feat": features.cpu().numpy(), "last": logits.cpu().numpy()}

    start = time.perf_counter()
    items = extract_items(n_characters * 20 * VARIANTS, compute, store, job.chunk_images * VARIANTS,
                          job.batch_size, progress, "images", stop_after)
    base = f"resnet18/{job.image_size}"
    attrs = {
        "source": "coopetition bank omniglot", "order": job.order, "characters_sha256": fingerprint,
        "weights_sha256": weights_sha256,
        "weights_are_imagenet1k_v1": weights_sha256.startswith(IMAGENET1K_V1_SHA256_PREFIX),
        "image_size": job.image_size, "n_characters": n_characters, "train_characters": job.train_characters,
        "device": job.device, "versions": package_versions(VERSIONS),
        "cell": "index/item[r, i] = d: variant d % 8 of image d // 8, which is drawing (d // 8) % 20 of character "
                "d // 160, named in index/characters",
    }
    write_bank_files(paths, {f"{base}/feat": items["feat"], f"{base}/last": items["last"]}, job.layout,
                     [c.label for c in tree.characters], job.train_characters, attrs)
    store.remove()
    return {"paths": {k: str(v) for k, v in paths.items()}, "characters": n_characters,
            "seconds": time.perf_counter() - start, "weights_sha256": weights_sha256}


def _short(key: dict) -> str:
    return hashlib.sha256(repr(sorted(key.items())).encode()).hexdigest()[:12]
