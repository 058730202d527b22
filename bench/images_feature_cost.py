"""What each feature extractor costs per image on this CPU, to choose the glyph bank's offline features.

Prints images/s for ResNet-18 (random weights; the cost does not depend on them) at several input sizes and for
scikit-image HOG at 64 px, and the projected time for the 259,680 images of an Omniglot-sized bank. Run on demand:
    OMP_NUM_THREADS=1 python bench/images_feature_cost.py
"""

from __future__ import annotations

import time

import numpy as np
import torch

from coopetition.images import hog, resnet

ITEMS = 1623 * 20 * 8


def rate(fn, n: int, repeats: int = 2) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return n / best


def main() -> None:
    torch.manual_seed(0)
    model = resnet.seeded_resnet18(0)
    print(f"torch threads {torch.get_num_threads()}")
    rows = []
    for size in (224, 112, 64):
        batch = torch.randn(16, 3, size, size)

        def forward(batch=batch):
            with torch.no_grad():
                model(batch)

        rows.append((f"ResNet-18 at {size} px", rate(forward, len(batch))))
    image = (np.random.default_rng(0).random((64, 64)) < 0.2).astype(np.float64)
    rows.append(("HOG 8x8 cells x 8 bins at 64 px", rate(lambda: [hog.hog_features(image) for _ in range(200)], 200)))
    for name, per_second in rows:
        print(f"{name:34s} {per_second:8.1f} images/s   {ITEMS / per_second / 3600:6.2f} h for {ITEMS:,} images")


if __name__ == "__main__":
    main()
