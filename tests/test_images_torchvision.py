"""Our PIL + torch pipeline and ResNet-18 against torchvision itself, where torchvision imports (it does not beside
the CPU torch wheel CI installs; it was run with torch 2.14.1 + torchvision 0.29.1, see docs/images.md)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

pytest.importorskip("PIL")
try:
    import torchvision  # noqa: F401
    from torchvision import datasets, transforms
    from torchvision.models import resnet18
except Exception as err:  # noqa: BLE001 - an ImportError, or a torchvision built for another torch
    pytest.skip(f"torchvision does not import here ({type(err).__name__})", allow_module_level=True)

from PIL import Image  # noqa: E402

from coopetition.images import preprocess, resnet, tree  # noqa: E402


@pytest.fixture
def omniglot_root(tmp_path):
    rng = np.random.default_rng(0)
    for split in ("images_background", "images_evaluation"):
        for alphabet in ("Zeta_alpha", "alpha_(b)", "Beta"):
            for character in ("character10", "character2", "character01"):
                folder = tmp_path / "omniglot-py" / split / alphabet / character
                folder.mkdir(parents=True)
                for j in range(20):
                    Image.fromarray(rng.random((105, 105)) < 0.3).save(folder / f"{character}_{j:02d}.png")
    return tmp_path


def _torchvision_items(root, monkeypatch):
    monkeypatch.setattr(datasets.Omniglot, "_check_integrity", lambda self: True)  # no zip files here
    items = []
    for background in (True, False):
        ds = datasets.Omniglot(root=str(root), background=background)
        items += [os.path.join(ds.target_folder, ds._characters[c], n) for n, c in ds._flat_character_images]
    return items


def test_listdir_order_is_torchvisions_order(omniglot_root, monkeypatch):
    ours = tree.read_tree(omniglot_root, "listdir")
    assert [str(ours.image_path(k)) for k in range(ours.n_images)] == _torchvision_items(omniglot_root, monkeypatch)


def test_preprocessing_and_the_8_variants_are_bitwise_torchvisions(omniglot_root, monkeypatch):
    items = _torchvision_items(omniglot_root, monkeypatch)
    compose = transforms.Compose([transforms.Resize(224), transforms.CenterCrop(224),
                                  transforms.Grayscale(num_output_channels=3), transforms.ToTensor(),
                                  transforms.Normalize(preprocess.IMAGENET_MEAN, preprocess.IMAGENET_STD)])
    for k in (0, 45, 200):
        reference = compose(Image.open(items[k], mode="r").convert("L"))
        for t in range(8):
            expected = transforms.functional.rotate(reference, 90 * (t // 2))
            expected = transforms.functional.hflip(expected) if t % 2 else expected
            mine = preprocess.batch_from_indices(lambda i: preprocess.load_grey(items[i]), [8 * k + t])[0]
            assert torch.equal(mine, expected), (k, t)


def test_resnet18_matches_torchvisions_on_random_weights(tmp_path):
    torch.manual_seed(0)
    theirs = resnet18().eval()
    with torch.no_grad():
        for module in theirs.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 2.0)
    torch.save(theirs.state_dict(), tmp_path / "w.pth")
    ours, _ = resnet.load_weights(tmp_path / "w.pth")
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        logits = theirs(x)
        theirs.fc = torch.nn.Identity()
        assert torch.equal(ours(x), theirs(x))
        assert torch.equal(ours.fc(ours(x)), logits)
