"""The glyph bank's offline features: histograms of oriented gradients (scikit-image's ``hog``), 512-d.

We found no package that ships pretrained image-network weights inside it (a brief search), and a ResNet-18 at
224 px on 259,680 images takes hours on two CPU cores, so the offline default is HOG, a fixed, training-free shape
descriptor: the image
is resized to 64 x 64 (Pillow bilinear), split into 8 x 8 cells of 8 x 8 pixels, 8 orientation bins per cell,
each cell L2-Hys normalised (``cells_per_block=(1, 1)``): 8 x 8 x 8 = 512 numbers, the reference's feature width.
Rotations and flips are applied to the 64 x 64 image (exactly, as quarter turns), so each of the 8 variants has its
own features, as with the ResNet path.
"""

from __future__ import annotations

import numpy as np

HOG_SIZE = 64
DATASET = f"hog/{HOG_SIZE}/feat"
PARAMS = {"orientations": 8, "pixels_per_cell": (8, 8), "cells_per_block": (1, 1), "block_norm": "L2-Hys"}


def shrink(image: np.ndarray) -> np.ndarray:
    """``[105, 105]`` uint8 -> ``[64, 64]`` float64 in [0, 1], ink = 1."""
    from PIL import Image

    small = Image.fromarray(image, "L").resize((HOG_SIZE, HOG_SIZE), Image.BILINEAR)
    return 1.0 - np.asarray(small, dtype=np.float64) / 255.0


def turn(image: np.ndarray, variant: int) -> np.ndarray:
    """Variant ``variant`` of ``preprocess.variant`` on a 2-d array: quarter turns counter-clockwise, then h-flip."""
    turned = np.rot90(image, variant // 2)
    return np.ascontiguousarray(turned[:, ::-1] if variant % 2 else turned)


def hog_features(image: np.ndarray) -> np.ndarray:
    from skimage.feature import hog

    return hog(image, feature_vector=True, **PARAMS).astype(np.float32)
