"""The reference's image pipeline, in PIL and torch alone (torchvision need not import beside the CPU torch wheel).

Per image (omni_features_extract.py + omniglot_dataset.py, on torchvision's PIL code paths): open and convert to
``L``; ``Resize(size)`` (shorter side to ``size``, PIL bilinear); ``CenterCrop(size)``; ``Grayscale(3)``;
``ToTensor`` (uint8 / 255 in float32); ``Normalize`` with ImageNet's mean/std. Only then the 8 variants of
``RotateAndFlipTransform``, on the normalised tensor: rotations 0/90/180/270 degrees counter-clockwise, each
unflipped then horizontally flipped, so variant ``t`` is rotation ``t // 2`` quarter turns and flip ``t % 2``.
A quarter-turn rotation of a square tensor by torchvision's nearest-neighbour ``rotate`` moves pixel centres onto
pixel centres, so it is exactly ``torch.rot90``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from coopetition.errors import DataError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
VARIANTS = 8  # rotations (0, 90, 180, 270) x (unflipped, h-flipped); variant index = dataset index mod 8
REFERENCE_SIZE = 224


def load_grey(path: Path):
    """torchvision Omniglot's loader: ``Image.open(path).convert("L")``; an unreadable file is a ``DataError``."""
    from PIL import Image

    try:
        with Image.open(path, mode="r") as image:
            return image.convert("L")
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise DataError(f"cannot read image {path}: {type(err).__name__}") from None


def check_headers(paths) -> None:
    """Open every image's header (not its pixels: ~0.1 ms each) so a file that is no image stops the build before
    anything is written. A file whose pixels are damaged past a valid header still fails later, in one line."""
    from PIL import Image

    for path in paths:
        try:
            with Image.open(path, mode="r"):
                pass
        except (OSError, ValueError, Image.DecompressionBombError) as err:
            raise DataError(f"cannot read image {path}: {type(err).__name__}") from None


def resized_size(width: int, height: int, size: int) -> tuple[int, int]:
    """torchvision ``Resize(int)``: the shorter side becomes ``size``, the longer keeps the aspect (truncated)."""
    short, long = min(width, height), max(width, height)
    new_short, new_long = size, int(size * long / short)
    return (new_short, new_long) if width <= height else (new_long, new_short)


def to_tensor(image, size: int = REFERENCE_SIZE) -> Float[Tensor, "3 size size"]:
    """Resize, centre-crop, grey to 3 channels, ToTensor and Normalize one ``L`` image, as the reference does."""
    from PIL import Image

    image = image.resize(resized_size(*image.size, size), Image.BILINEAR)
    width, height = image.size
    top, left = int(round((height - size) / 2.0)), int(round((width - size) / 2.0))
    image = image.crop((left, top, left + size, top + size))
    grey = torch.from_numpy(np.array(image, dtype=np.uint8, copy=True)).to(torch.float32).div(255)
    pixels = grey.expand(3, size, size).clone()
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32)[:, None, None]
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32)[:, None, None]
    return pixels.sub_(mean).div_(std)


def variant(pixels: Float[Tensor, "... h w"], index: int) -> Float[Tensor, "... h w"]:
    """Variant ``index`` (0..7) of ``RotateAndFlipTransform``: ``index // 2`` counter-clockwise quarter turns, then
    a horizontal flip if ``index`` is odd."""
    if not 0 <= index < VARIANTS:
        raise ValueError(f"variant index must be in [0, {VARIANTS}), got {index}")
    turned = torch.rot90(pixels, k=index // 2, dims=(-2, -1))
    return turned.flip(-1) if index % 2 else turned


def batch_from_indices(load, indices: list[int], size: int = REFERENCE_SIZE) -> Float[Tensor, "batch 3 size size"]:
    """The reference dataset's items ``indices`` (item ``d`` = variant ``d % 8`` of image ``d // 8``); ``load(k)``
    returns image ``k`` as an ``L`` PIL image. Each image is read and preprocessed once per batch."""
    cache: dict[int, Tensor] = {}
    items = []
    for index in indices:
        image = index // VARIANTS
        if image not in cache:
            cache[image] = to_tensor(load(image), size)
        items.append(variant(cache[image], index % VARIANTS))
    return torch.stack(items)
