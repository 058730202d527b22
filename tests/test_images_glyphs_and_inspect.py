"""``bank glyphs`` (a miniature build: reproducible bytes, shapes, an Omniglot tree of its PNGs) and ``bank inspect``
(statistics with known answers on hand-built banks)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from coopetition.cli import main
from coopetition.images.stats import bank_statistics, format_table

CHARS = 6


def test_statistics_of_a_hand_built_bank():
    """Two classes, two exemplars, one dimension: class means 2 and 11, exemplars 1 from their mean."""
    features = torch.tensor([[[1.0], [3.0]], [[10.0], [12.0]]])
    stats = bank_statistics(features, seed=0)
    assert stats["within_var"] == pytest.approx(1.0)
    assert stats["between_var"] == pytest.approx(4.5**2)
    assert stats["between_share"] == pytest.approx(20.25 / 21.25)
    assert stats["cos_between"] == pytest.approx(1.0)  # all positive scalars point the same way
    assert stats["nearest_class_cos"] == pytest.approx(-1.0)  # centred means are -4.5 and +4.5


def test_readout_is_perfect_without_noise_and_chance_without_classes():
    gen = torch.Generator().manual_seed(0)
    prototypes = torch.randn(50, 1, 32, generator=gen)
    clean = bank_statistics(prototypes.expand(50, 8, 32).clone(), seed=1)
    assert clean["within_var"] == pytest.approx(0.0, abs=1e-12)
    assert clean["readout_2way"] == 1.0 and clean["readout_all"] == 1.0
    assert clean["cos_within"] == pytest.approx(1.0)
    noise = bank_statistics(torch.randn(50, 8, 32, generator=gen), seed=1)
    assert 0.3 < noise["readout_2way"] < 0.7 and noise["readout_all"] < 0.1
    assert noise["between_share"] < 0.25  # class means of 8 noise draws: variance 1/8 against 7/8
    table = format_table({"clean": clean, "noise": noise})
    assert table.splitlines()[0] == "| statistic | clean | noise |" and "2-way" in table


def test_inspect_cli_on_the_synthetic_bank(capsys):
    assert main(["bank", "inspect", "synthetic", "--preset", "quick", "--classes", "200", "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["classes"] == 200 and stats["dim"] == 64 and 0 < stats["between_share"] < 1


def test_inspect_of_a_missing_file_exits_2(tmp_path, capsys):
    assert main(["bank", "inspect", str(tmp_path / "none.h5")]) == 2
    assert capsys.readouterr().err.count("\n") == 1


@pytest.fixture(scope="module")
def glyph_build(tmp_path_factory):
    for module in ("PIL", "h5py", "matplotlib", "skimage"):
        pytest.importorskip(module, reason="the images extra is not installed")
    out = tmp_path_factory.mktemp("glyphs")
    args = ["bank", "glyphs", "--characters", str(CHARS), "--train-characters", "4", "--no-progress"]
    assert main([*args, "--out", str(out / "a"), "--images", str(out / "png")]) == 0
    assert main([*args, "--out", str(out / "b")]) == 0
    return out


def _read(path):
    import h5py

    with h5py.File(path, "r") as handle:
        attrs = dict(handle.attrs)
        attrs["characters"] = [n.decode() for n in handle["index/characters"][()]]
        return handle["hog/64/feat"][()], handle["index/item"][()], attrs


def test_glyph_bank_is_the_same_bytes_twice_and_has_the_paper_layout(glyph_build):
    feat_a, item, attrs = _read(glyph_build / "a" / "glyph_features_all.h5")
    feat_b, _, attrs_b = _read(glyph_build / "b" / "glyph_features_all.h5")
    assert feat_a.shape == (8 * CHARS, 20, 512) and feat_a.dtype == np.float32
    assert feat_a.tobytes() == feat_b.tobytes()
    assert attrs["images_sha256"] == attrs_b["images_sha256"] and attrs["layout"] == "paper"
    assert set(json.loads(attrs["fonts_sha256"])) >= {"DejaVuSans.ttf", "STIXGeneral.ttf"}
    assert (item // 8 // 20 == np.arange(8 * CHARS)[:, None] % CHARS).all()  # row t*C + c is character c
    assert (item % 8 == np.arange(8 * CHARS)[:, None] // CHARS).all()  # ... in variant t
    reordered, _, _ = _read(glyph_build / "a" / "glyph_features_reordered.h5")
    assert reordered.shape == (8 * CHARS, 20, 512)
    norotate, _, _ = _read(glyph_build / "a" / "glyph_features_norotate.h5")
    np.testing.assert_array_equal(norotate, feat_a[:CHARS])


def test_glyph_classes_differ_and_drawers_of_one_class_are_alike(glyph_build):
    feat, _, _ = _read(glyph_build / "a" / "glyph_features_all.h5")
    stats = bank_statistics(torch.from_numpy(feat), seed=0)
    assert stats["cos_within"] > stats["cos_between"]
    assert stats["readout_2way"] > 0.8
    variants = feat[np.arange(8) * CHARS, 0]  # character 0, drawer 0, its 8 variants
    distances = np.linalg.norm(variants[:, None] - variants[None], axis=-1) + np.eye(8) * 1e9
    assert distances.min() > 1e-3


def test_glyph_pngs_form_an_omniglot_tree_in_the_banks_order(glyph_build):
    from coopetition.images.tree import read_tree

    tree = read_tree(glyph_build / "png")
    _, _, attrs = _read(glyph_build / "a" / "glyph_features_all.h5")
    names = [f"{c.alphabet}/{c.name}" for c in tree.characters]
    assert names == attrs["characters"]
    assert len(tree.characters) == CHARS


def test_glyph_samples_figure_is_written(glyph_build):
    png = glyph_build / "a" / "glyph_samples.png"
    html = glyph_build / "a" / "glyph_samples.html"
    assert png.stat().st_size > 1000 and "data:image/png;base64" in html.read_text()


def test_glyphs_refuses_an_existing_output(glyph_build, capsys):
    before = (glyph_build / "a" / "glyph_features_all.h5").stat().st_mtime_ns
    assert main(["bank", "glyphs", "--out", str(glyph_build / "a"), "--characters", "3", "--train-characters",
                 "2", "--no-progress"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (glyph_build / "a" / "glyph_features_all.h5").stat().st_mtime_ns == before
