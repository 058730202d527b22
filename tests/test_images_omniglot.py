"""``coopetition bank omniglot`` on a miniature Omniglot tree (generated PNGs in torchvision's folder layout) with
seeded random ResNet-18 weights: shapes, the 8 variants, both layouts (which drawing and variant lands in row r,
exemplar i, as REFERENCE 1.2 traces it), the attributes, resuming, bad input, and a c25-shaped run on the result."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("PIL", reason="the images extra (pillow) is not installed")
h5py = pytest.importorskip("h5py")

from PIL import Image  # noqa: E402

from coopetition.cli import main  # noqa: E402
from coopetition.images import layout, preprocess, resnet  # noqa: E402
from coopetition.images.omniglot import OmniglotJob, build_omniglot  # noqa: E402

# background: 3 characters over 2 alphabets, evaluation: 1. Sorted order: bkg Alpha/c01, Alpha/c02, Beta/c01, eval
# Gamma/c01. Names are listed in reverse on purpose so that only the sorting puts them in this order.
TREE = (("images_background", "Beta", "character01"), ("images_background", "Alpha", "character02"),
        ("images_background", "Alpha", "character01"), ("images_evaluation", "Gamma", "character01"))
ORDER = [2, 1, 0, 3]  # TREE index of sorted character 0, 1, 2, 3
C = 4
SIZE = 32  # ResNet-18 at 32 px keeps the test to seconds; the reference's 224 is the default


def _drawing(character: int, drawing: int) -> Image.Image:
    """A binary 105 x 105 drawing, different for every (character, drawing), with no rotation or flip symmetry."""
    rng = np.random.default_rng([character, drawing])
    ink = np.zeros((105, 105), bool)
    ink[10:30, 10:60] = True  # an asymmetric block: top-left, wider than tall
    ink |= rng.random((105, 105)) < 0.05
    return Image.fromarray(~ink)  # white paper, black ink, mode "1" like Omniglot's PNGs


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("omniglot")
    for index, (split, alphabet, character) in enumerate(TREE):
        folder = root / "omniglot-py" / split / alphabet / character
        folder.mkdir(parents=True)
        for drawing in reversed(range(20)):
            _drawing(index, drawing).save(folder / f"{index:04d}_{drawing + 1:02d}.png")
    return root


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("weights") / "random-resnet18.pth"
    model = resnet.seeded_resnet18(7)
    with torch.no_grad():  # non-trivial batch-norm statistics, so BN is not an identity
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 2.0)
    torch.save(model.state_dict(), path)
    return path


def _build(tree, weights, out, layout_name, *extra) -> int:
    return main(["bank", "omniglot", "--root", str(tree), "--out", str(out), "--weights", str(weights),
                 "--layout", layout_name, "--image-size", str(SIZE), "--train-characters", "3", "--batch-size",
                 "64", "--no-progress", *extra])


@pytest.fixture(scope="module")
def built(tree, weights, tmp_path_factory):
    out = {name: tmp_path_factory.mktemp(name) for name in layout.LAYOUTS}
    for name, folder in out.items():
        assert _build(tree, weights, folder, name) == 0
    return out


def _read(folder: Path, name: str) -> dict:
    with h5py.File(folder / f"omniglot_features_{name}.h5", "r") as handle:
        return {"feat": handle[f"resnet18/{SIZE}/feat"][()], "last": handle[f"resnet18/{SIZE}/last"][()],
                "item": handle["index/item"][()], "attrs": dict(handle.attrs),
                "characters": [n.decode() for n in handle["index/characters"][()]]}


def _expected_features(weights: Path, character: int, drawing: int, variant: int) -> torch.Tensor:
    """The feature of one (character, drawing, variant), computed here from the PNG: rotations written out with
    torch.rot90 (counter-clockwise) and flip, not through the code under test's ``variant``."""
    model, _ = resnet.load_weights(weights)
    image = _drawing(ORDER[character], drawing).convert("L")
    pixels = preprocess.to_tensor(image, SIZE)
    pixels = torch.rot90(pixels, variant // 2, dims=(1, 2))
    if variant % 2:
        pixels = pixels.flip(2)
    with torch.no_grad():
        return model(pixels[None])[0]


def test_shapes_of_the_three_files(built):
    for folder in built.values():
        for name, rows in (("all", 8 * C), ("reordered", 8 * C), ("norotate", C)):
            data = _read(folder, name)
            assert data["feat"].shape == (rows, 20, 512) and data["feat"].dtype == np.float32
            assert data["last"].shape == (rows, 20, 1000)
            assert data["item"].shape == (rows, 20)
            assert np.isfinite(data["feat"]).all()


def test_reference_layout_rows_are_chunks_of_20_items(built):
    """REFERENCE 1.2: row r, exemplar i holds dataset item 20r + i, so row 0 is drawings 0-1 in all 8 variants and
    drawing 2 in variants 0-3, and 8 consecutive rows share a character."""
    item = _read(built["reference"], "all")["item"]
    assert (item == 20 * np.arange(8 * C)[:, None] + np.arange(20)).all()
    drawing, variant = (item[0] // 8) % 20, item[0] % 8
    assert drawing.tolist() == [0] * 8 + [1] * 8 + [2] * 4
    assert variant.tolist() == list(range(8)) * 2 + list(range(4))
    assert ((item // 160) == np.arange(8 * C)[:, None] // 8).all()


def test_paper_layout_rows_are_character_times_transform(built):
    item = _read(built["paper"], "all")["item"]
    for t in range(8):
        for c in range(C):
            assert [layout.describe(d) for d in item[t * C + c]] == [(c, i, t) for i in range(20)]


def test_features_in_cells_are_those_of_the_named_image_and_variant(built, weights):
    """The features themselves, recomputed from the PNGs: the cell names the right image in the right variant."""
    for name, cells in (("reference", [(0, 0), (0, 9), (0, 19), (13, 5), (31, 19)]),
                        ("paper", [(0, 0), (1 * C + 2, 7), (7 * C + 3, 19), (5 * C + 1, 0)])):
        data = _read(built[name], "all")
        for row, exemplar in cells:
            character, drawing, variant = layout.describe(int(data["item"][row, exemplar]))
            expected = _expected_features(weights, character, drawing, variant)
            assert torch.allclose(torch.from_numpy(data["feat"][row, exemplar]), expected, atol=1e-4), (name, row)


def test_the_8_variants_are_8_different_vectors_and_the_two_layouts_hold_the_same_vectors(built):
    ref, paper = _read(built["reference"], "all"), _read(built["paper"], "all")
    by_item = {}
    for data in (ref, paper):
        for row in range(8 * C):
            for i in range(20):
                by_item.setdefault(int(data["item"][row, i]), []).append(data["feat"][row, i])
    assert sorted(by_item) == list(range(8 * 20 * C))
    for vectors in by_item.values():
        np.testing.assert_allclose(vectors[0], vectors[1], atol=1e-5)
    variants = np.stack([by_item[d][0] for d in range(8)])  # image 0's 8 variants
    distances = np.linalg.norm(variants[:, None] - variants[None], axis=-1)
    assert (distances + np.eye(8) * 1e9).min() > 1e-3


def test_reordered_and_norotate_select_the_scripts_rows(built):
    """reordered: rows c + C*t for c < train (t-major), then the rest; norotate: the first C rows."""
    expected = [c + C * t for t in range(8) for c in range(3)] + [3 + C * t for t in range(8)]
    for folder in built.values():
        full = _read(folder, "all")
        np.testing.assert_array_equal(_read(folder, "reordered")["feat"], full["feat"][expected])
        np.testing.assert_array_equal(_read(folder, "norotate")["item"], full["item"][:C])
    paper_reordered = _read(built["paper"], "reordered")["item"]
    assert {layout.describe(int(d))[0] for d in paper_reordered[:24].ravel()} == {0, 1, 2}
    assert {layout.describe(int(d))[0] for d in paper_reordered[24:].ravel()} == {3}


def test_logits_are_the_fc_layer_of_the_features(built, weights):
    model, _ = resnet.load_weights(weights)
    data = _read(built["paper"], "norotate")
    with torch.no_grad():
        logits = model.fc(torch.from_numpy(data["feat"][:2]))
    np.testing.assert_allclose(data["last"][:2], logits.numpy(), atol=1e-4)


def test_attributes_record_layout_weights_order_and_versions(built, weights):
    sha = hashlib.sha256(Path(weights).read_bytes()).hexdigest()
    for name, folder in built.items():
        attrs = _read(folder, "reordered")["attrs"]
        assert attrs["layout"] == name and attrs["file"] == "reordered"
        assert attrs["weights_sha256"] == sha and not attrs["weights_are_imagenet1k_v1"]
        assert attrs["order"] == "sorted" and attrs["image_size"] == SIZE and attrs["train_characters"] == 3
        versions = json.loads(attrs["versions"])
        assert versions["torch"] == torch.__version__.split("+")[0] or versions["torch"].startswith(
            torch.__version__.split("+")[0])
        assert {"numpy", "pillow", "h5py", "python"} <= set(versions)
        assert _read(folder, "reordered")["characters"] == ["images_background/Alpha/character01",
                                                   "images_background/Alpha/character02",
                                                   "images_background/Beta/character01",
                                                   "images_evaluation/Gamma/character01"]


def test_rotation_is_counter_clockwise_like_torchvision():
    """A known answer: ink in the top-left corner goes to the bottom-left after 90 degrees counter-clockwise, and
    to the bottom-right after 90 degrees then a horizontal flip."""
    grid = torch.zeros(1, 4, 4)
    grid[0, 0, 0] = 1
    assert preprocess.variant(grid, 2)[0, 3, 0] == 1
    assert preprocess.variant(grid, 3)[0, 3, 3] == 1
    assert preprocess.variant(grid, 4)[0, 3, 3] == 1  # 180 degrees
    assert preprocess.variant(grid, 1)[0, 0, 3] == 1  # flip only


def test_preprocessing_of_a_blank_page_is_the_normalised_white():
    white = Image.new("L", (105, 105), 255)
    pixels = preprocess.to_tensor(white)
    assert pixels.shape == (3, 224, 224)
    for channel, (mean, std) in enumerate(zip(preprocess.IMAGENET_MEAN, preprocess.IMAGENET_STD)):
        assert torch.allclose(pixels[channel], torch.tensor((1 - mean) / std), atol=1e-6)


def test_an_interrupted_build_resumes_to_the_same_files(tree, weights, built, tmp_path):
    job = OmniglotJob(root=tree, out_dir=tmp_path, weights=weights, layout="paper", image_size=SIZE,
                      train_characters=3, batch_size=64, chunk_images=20)
    with pytest.raises(KeyboardInterrupt):
        build_omniglot(job, progress=False, stop_after=2)
    assert not list(tmp_path.glob("*.h5"))
    partial = list(tmp_path.glob(".omniglot_features.partial-*"))
    assert len(partial) == 1 and len(list(partial[0].glob("chunk-*.npz"))) == 2
    build_omniglot(job, progress=False)
    assert not list(tmp_path.glob(".omniglot_features.partial-*"))
    for name in layout.FILES:
        np.testing.assert_allclose(_read(tmp_path, name)["feat"], _read(built["paper"], name)["feat"], atol=1e-5)


def test_a_c25_shaped_run_trains_on_the_built_file(built, tmp_path):
    """The c25 preset (2L attention-only, ctx 2, B 1), shrunk to a few steps, on the paper-layout reordered file."""
    bank = built["paper"] / "omniglot_features_reordered.h5"
    assert main(["train", "--preset", "c25", "--bank", str(bank), "--run-dir", str(tmp_path / "run"),
                 "--set", f"bank.h5_dataset=resnet18/{SIZE}/feat", "--set", "bank.class_split=[24, 0, 8]",
                 "--set", "bank.exemplar_split=[20, 0, 0]", "--steps", "4", "--batch-size", "8",
                 "--device", "cpu", "--threads", "1", "--checkpoints", "every:2", "--evals", "every:4",
                 "--set", "eval.n_seqs=32", "--no-progress"]) == 0
    from coopetition.store.reader import RunReader

    record = json.loads((tmp_path / "run" / "config.json").read_text())
    assert record["config"]["bank"]["source"] == str(bank) and record["config"]["preset"] == "c25"
    derived = record["derived"]
    assert derived["bank_shape"] == [8 * C, 20, 512] and derived["input_dim"] == 512
    assert derived["n_labels"] == derived["n_outputs"] == 24 and derived["class_split"] == [24, 0, 8]
    assert [c.step for c in RunReader.open(tmp_path / "run").checkpoints()] == [0, 2, 4]


def test_the_full_reordered_file_is_the_shape_and_path_that_get_the_reference_splits():
    """1,623 characters give the 12,984 x 20 x 512 ``resnet18/224/feat`` file that the bank loader gives the
    reference's 12800/0/184 split, and with it the c25 model's 1,719,232 parameters (test_bank reads such a file)."""
    from coopetition.bank import DEFAULT_H5_DATASET, BankConfig, is_reference_layout

    rows = layout.file_rows("reordered", 1623, 1600)
    assert len(rows) == 12984 and sorted(rows.tolist()) == list(range(12984))
    assert f"resnet18/{preprocess.REFERENCE_SIZE}/feat" == DEFAULT_H5_DATASET
    assert is_reference_layout(BankConfig(source="omniglot_features_reordered.h5"), (len(rows), 20, 512))
    cells = layout.cells("paper", 1623)[rows]
    assert {layout.describe(int(d))[0] for d in cells[:12800].ravel()} == set(range(1600))


class _Payload:
    """A pickle that would create a file when unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_pickle_posing_as_weights_is_refused_without_running(tree, tmp_path, capsys):
    marker = tmp_path / "ran"
    weights_file = tmp_path / "weights.pth"
    torch.save({"conv1.weight": _Payload(marker)}, weights_file)
    assert _build(tree, weights_file, tmp_path / "out", "paper") == 2
    assert not marker.exists() and not (tmp_path / "out").exists()
    assert "cannot read ResNet-18 weights" in capsys.readouterr().err


@pytest.mark.parametrize("case", ["missing root", "not a tree", "garbage weights", "wrong state dict",
                                  "name hash mismatch", "corrupt png", "19 drawings", "existing output"])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tree, weights, tmp_path, capsys, case):
    out, root, weights_file = tmp_path / "out", tree, weights
    if case == "missing root":
        root = tmp_path / "nowhere"
    elif case == "not a tree":
        root = tmp_path / "empty"
        root.mkdir()
    elif case == "garbage weights":
        weights_file = tmp_path / "garbage.pth"
        weights_file.write_bytes(b"not a checkpoint")
    elif case == "wrong state dict":
        weights_file = tmp_path / "other.pth"
        torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "head.weight": torch.zeros(3)}, weights_file)
    elif case == "name hash mismatch":  # torchvision's name for ImageNet-1K-V1, other bytes
        weights_file = tmp_path / "resnet18-f37072fd.pth"
        weights_file.write_bytes(Path(weights).read_bytes())
    elif case in ("corrupt png", "19 drawings"):
        import shutil

        root = tmp_path / "tree"
        shutil.copytree(tree, root)
        png = sorted((root / "omniglot-py" / "images_evaluation").rglob("*.png"))[-1]
        png.write_bytes(b"not a png") if case == "corrupt png" else png.unlink()
    elif case == "existing output":
        out.mkdir()
        (out / "omniglot_features_norotate.h5").write_bytes(b"keep me")
    before = sorted(p.name for p in out.rglob("*")) if out.exists() else None
    assert _build(root, weights_file, out, "reference") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("coopetition: error:")
    after = sorted(p.name for p in out.rglob("*")) if out.exists() else None
    assert after == before
    if case == "existing output":
        assert (out / "omniglot_features_norotate.h5").read_bytes() == b"keep me"


def test_cuda_asked_for_without_a_gpu_exits_2(tree, weights, tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert _build(tree, weights, tmp_path / "out", "paper", "--device", "cuda") == 2
    assert "CUDA" in capsys.readouterr().err and not (tmp_path / "out").exists()
