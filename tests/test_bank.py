"""Exemplar bank: synthetic default, file formats, splits (the reference feature file's by default), bad files."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from coopetition import bank as bank_module
from coopetition.bank import BankConfig, load_bank
from coopetition.store.build import Sizes
from coopetition.errors import ConfigError, DataError


def test_synthetic_bank_is_seeded_and_shaped():
    a = load_bank(BankConfig(classes=10, exemplars=4, dim=8, seed=1))
    b = load_bank(BankConfig(classes=10, exemplars=4, dim=8, seed=1))
    assert a.features.shape == (10, 4, 8) and torch.equal(a.features, b.features)
    assert a.fingerprint() == b.fingerprint()


def test_within_class_noise_controls_exemplar_similarity():
    def same_class_cosine(noise):
        f = load_bank(BankConfig(classes=200, exemplars=2, dim=256, within_class_noise=noise)).features
        return torch.cosine_similarity(f[:, 0], f[:, 1], dim=-1).mean().item()

    assert same_class_cosine(0.0) == pytest.approx(1.0)
    assert same_class_cosine(1.0) == pytest.approx(0.5, abs=0.05)  # 1 / (1 + noise^2)


def test_one_mode_draws_the_bank_the_quick_preset_always_had():
    """modes = 1 must not move a single bit: every earlier run's bank fingerprint depends on it. The expected bank
    is the generator's draws in their original order, written out here."""
    gen = torch.Generator().manual_seed(4)
    prototypes = torch.randn(30, 1, 8, generator=gen)
    noise = torch.randn(30, 5, 8, generator=gen)
    shared = torch.randn(1, 1, 8, generator=gen)
    expected = (2.0 * shared + prototypes + 0.4 * noise) / (1 + 0.4**2 + 2.0**2) ** 0.5
    got = load_bank(BankConfig(classes=30, exemplars=5, dim=8, within_class_noise=0.4, shared_scale=2.0, seed=4,
                               modes=1, mode_share=0.7)).features
    assert torch.equal(got, expected)


def test_modes_make_each_class_a_mixture_with_exemplar_index_mod_m_as_its_mode():
    def cosine(f, a, b):
        return torch.cosine_similarity(f[:, a], f[:, b], dim=-1).mean().item()

    mixture = load_bank(BankConfig(classes=300, exemplars=8, dim=256, within_class_noise=0.0, modes=4)).features
    assert cosine(mixture, 0, 4) == pytest.approx(1.0)  # exemplars 0 and 4: mode 0 both
    assert cosine(mixture, 0, 1) == pytest.approx(0.0, abs=0.03)  # different modes share nothing (mode_share 0)
    shared = load_bank(BankConfig(classes=300, exemplars=8, dim=256, within_class_noise=0.0, modes=4,
                                  mode_share=0.5)).features
    assert cosine(shared, 0, 1) == pytest.approx(0.5, abs=0.05)  # half the variance is the class's own
    assert shared.pow(2).mean().item() == pytest.approx(1.0, abs=0.05)  # still unit variance per coordinate


@pytest.mark.parametrize("field, value", [("modes", 0), ("modes", 9), ("mode_share", -0.1), ("mode_share", 1.5)])
def test_bad_mode_settings_are_config_errors(field, value):
    with pytest.raises(ConfigError, match=f"bank.{field}"):
        BankConfig(classes=10, exemplars=8, dim=4, **{field: value})


def test_family_fields_at_their_defaults_keep_the_cluster_bank_bit_for_bit():
    """The family options (issue 27) are off unless set: every earlier run's bank must come out the same."""
    gen = torch.Generator().manual_seed(4)
    prototypes = torch.randn(30, 1, 8, generator=gen)
    noise = torch.randn(30, 5, 8, generator=gen)
    shared = torch.randn(1, 1, 8, generator=gen)
    expected = (2.0 * shared + prototypes + 0.5 * noise) / (1 + 0.5**2 + 2.0**2) ** 0.5
    config = BankConfig(classes=30, exemplars=5, dim=8, within_class_noise=0.5, shared_scale=2.0, seed=4,
                        siblings=1, transforms=1, transform_share=0.3, drawing_noise=0.7, layout="described")
    assert not config.is_family and not BankConfig().is_family
    assert torch.equal(load_bank(config).features, expected)


def _family(**kw):
    base = dict(classes=32, exemplars=20, dim=128, siblings=8, transforms=8, within_class_noise=0.0, seed=3)
    return load_bank(BankConfig(**{**base, **kw})).features


def test_family_bank_reference_layout_is_the_literal_rows_of_the_feature_file():
    """Sibling s, exemplar i is image 20 s + i of its character: drawing (20 s + i) // 8 in transform (20 s + i) % 8
    (REFERENCE 1.2). Without drawing or image noise, images in one transform are identical across the family."""
    f = _family()
    assert torch.allclose(f[1, 0], f[0, 4])  # image 20: transform 4 = image 4's transform
    assert torch.allclose(f[0, 0], f[0, 8]) and torch.allclose(f[3, 0], f[0, 4])  # image 60: transform 4
    assert not torch.allclose(f[0, 0], f[0, 1])
    assert not torch.allclose(f[0, 0], f[8, 0])  # another character (class 8 is the next family)
    drawn = _family(transform_share=1.0, drawing_noise=1.0)  # transforms are the identity: only drawings differ
    assert torch.allclose(drawn[0, 0], drawn[0, 7]) and not torch.allclose(drawn[0, 7], drawn[0, 8])
    assert torch.allclose(drawn[1, 0], drawn[0, 16])  # image 20 and image 16: both drawing 2


def test_family_transforms_are_one_map_for_every_character_and_share_what_transform_share_says():
    f = _family(classes=800, dim=256)  # transform_share 0: T_t is orthogonal, so it keeps inner products
    a, b = f[0:800:16], f[8:800:16]  # sibling 0 of characters 0, 2, 4, ... against characters 1, 3, 5, ...
    dots = (a[:, :8] * b[:, :8]).sum(-1)  # transforms 0..7 of drawing 0 of two characters
    assert torch.allclose(dots, dots[:, :1].expand_as(dots), atol=1e-3)  # the same in every transform
    cos = torch.nn.functional.cosine_similarity
    assert cos(f[:, 0], f[:, 1], dim=-1).mean().item() == pytest.approx(0.0, abs=0.03)  # transforms share nothing
    half = _family(classes=800, dim=256, transform_share=0.5)
    assert cos(half[:, 0], half[:, 1], dim=-1).mean().item() == pytest.approx(0.5, abs=0.05)
    assert half.pow(2).sum(-1).mean().item() == pytest.approx(256, rel=1e-4)


def test_rectified_family_bank_is_non_negative_and_correlated_across_classes():
    f = _family(classes=400, rectify=True, shared_scale=2.0, transform_share=0.5)
    assert f.min().item() == 0.0 and (f > 0).float().mean().item() < 0.9
    cos = torch.nn.functional.cosine_similarity
    assert cos(f[:200, 0], f[200:, 0], dim=-1).mean().item() > 0.7  # unrelated characters still alike


def test_family_bank_described_layout_makes_each_sibling_one_transform():
    f = _family(layout="described", drawing_noise=1.0)
    assert torch.allclose(f[0, 0] @ f[0, 0], f[1, 0] @ f[1, 0], rtol=1e-4)  # one drawing, two orthogonal maps
    assert not torch.allclose(f[0, 0], f[1, 0])
    same = _family(layout="described", drawing_noise=1.0, transform_share=1.0)
    assert torch.allclose(same[0, 3], same[5, 3]) and not torch.allclose(same[0, 3], same[0, 4])


@pytest.mark.parametrize("field, value, match", [
    ("siblings", 0, "bank.siblings"), ("transforms", 65, "bank.transforms"),
    ("transform_share", 1.5, "bank.transform_share"), ("drawing_noise", -1.0, "bank.drawing_noise"),
    ("layout", "rows", "bank.layout"), ("modes", 2, "bank.modes is for the cluster bank"),
    ("transforms", 4, "must equal bank.transforms"), ("dim", 10**5, "smaller bank.dim")])
def test_bad_family_settings_are_config_errors(field, value, match):
    base = dict(classes=16, exemplars=8, dim=4, siblings=8, transforms=8, layout="described")
    with pytest.raises(ConfigError, match=match):
        BankConfig(**{**base, field: value})


@pytest.mark.parametrize("suffix", [".npy", ".npz", ".safetensors", ".h5"])
def test_bank_files_load(tmp_path, suffix):
    array = np.random.default_rng(0).normal(size=(5, 3, 4)).astype(np.float32)
    path = tmp_path / f"bank{suffix}"
    if suffix == ".npy":
        np.save(path, array)
    elif suffix == ".npz":
        np.savez(path, feat=array)
    elif suffix == ".safetensors":
        from safetensors.numpy import save_file

        save_file({"feat": array}, str(path))
    else:
        h5py = pytest.importorskip("h5py")
        with h5py.File(path, "w") as handle:
            handle.create_dataset("resnet18/224/feat", data=array)
    bank = load_bank(BankConfig(source=str(path), class_split=(4, 0, 1), exemplar_split=(2, 1, 0)))
    assert np.allclose(bank.features.numpy(), array)
    assert bank.class_range("train") == (0, 4) and bank.class_range("test") == (4, 5)
    assert bank.exemplar_range("val") == (2, 3)


def test_bad_bank_files(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_bank(BankConfig(source=str(tmp_path / "missing.npy")))
    np.save(tmp_path / "flat.npy", np.zeros((4, 4), dtype=np.float32))
    with pytest.raises(DataError, match=r"\[classes, exemplars, dim\]"):
        load_bank(BankConfig(source=str(tmp_path / "flat.npy")))
    bad = np.zeros((4, 2, 3), dtype=np.float32)
    bad[1, 1, 1] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    with pytest.raises(DataError, match="NaN"):
        load_bank(BankConfig(source=str(tmp_path / "nan.npy")))
    (tmp_path / "pickle.npy").write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(DataError):
        load_bank(BankConfig(source=str(tmp_path / "pickle.npy")))


def test_splits_must_sum_to_the_bank():
    with pytest.raises(ConfigError, match="sum"):
        load_bank(BankConfig(classes=10, exemplars=4, dim=2, class_split=(5, 0, 0)))


def _h5_bank(path, shape, dataset="resnet18/224/feat"):
    """An HDF5 bank of ``shape`` that is chunked and never written: a few KB on disk, zeros when read."""
    h5py = pytest.importorskip("h5py")
    with h5py.File(path, "w") as handle:
        handle.create_dataset(dataset, shape=shape, dtype="f4", chunks=True)
    return str(path)


@pytest.fixture
def small_reference(monkeypatch):
    """Shrink the recognised layout to 13 x 4 x 8 (splits 10/0/3, 4/0/0) so the same code path runs on tiny files."""
    monkeypatch.setattr(bank_module, "REFERENCE_SHAPE", (13, 4, 8))
    monkeypatch.setattr(bank_module, "REFERENCE_CLASS_SPLIT", (10, 0, 3))
    monkeypatch.setattr(bank_module, "REFERENCE_EXEMPLAR_SPLIT", (4, 0, 0))


def test_reference_layout_gets_the_reference_splits_unless_the_config_gives_one(tmp_path, small_reference):
    path = _h5_bank(tmp_path / "feats.h5", (13, 4, 8))
    bank = load_bank(BankConfig(source=path))
    assert (bank.class_split, bank.exemplar_split, bank.splits_from) == ((10, 0, 3), (4, 0, 0), "reference layout")
    mine = load_bank(BankConfig(source=path, class_split=(13, 0, 0)))
    assert (mine.class_split, mine.exemplar_split) == ((13, 0, 0), (4, 0, 0))
    assert mine.splits_from == "class: config, exemplar: reference layout"
    both = load_bank(BankConfig(source=path, class_split=(12, 1, 0), exemplar_split=(3, 1, 0)))
    assert (both.class_split, both.exemplar_split, both.splits_from) == ((12, 1, 0), (3, 1, 0), "config")


def test_only_the_reference_shape_and_dataset_path_are_recognised(tmp_path, small_reference):
    other_shape = load_bank(BankConfig(source=_h5_bank(tmp_path / "a.h5", (13, 5, 8))))
    other_path = load_bank(BankConfig(source=_h5_bank(tmp_path / "b.h5", (13, 4, 8), "resnet18/224/last"),
                                      h5_dataset="resnet18/224/last"))
    np.save(tmp_path / "c.npy", np.zeros((13, 4, 8), dtype=np.float32))
    not_h5 = load_bank(BankConfig(source=str(tmp_path / "c.npy")))
    for bank in (other_shape, other_path, not_h5):
        assert bank.class_split == (13, 0, 0) and bank.splits_from == "whole bank"
    synthetic = load_bank(BankConfig(classes=13, exemplars=4, dim=8))
    assert synthetic.class_split == (13, 0, 0) and synthetic.splits_from == "whole bank"


def test_reference_feature_file_trains_the_c25_model_with_1719232_parameters(tmp_path):
    """The real 12984 x 20 x 512 shape (read as 532 MB of zeros, ~2 s): C25 on it trains 12800 classes, not 12984."""
    from coopetition.presets import get_preset
    from coopetition.store.build import derive_sizes, model_for

    c25 = get_preset("c25")
    config = replace(c25, bank=replace(c25.bank, source=_h5_bank(tmp_path / "omniglot_features_reordered.h5",
                                                                 (12984, 20, 512))))
    sizes = derive_sizes(config, load_bank(config.bank))
    assert (sizes.class_split, sizes.exemplar_split, sizes.splits_from) == ((12800, 0, 184), (20, 0, 0),
                                                                             "reference layout")
    assert sizes.n_labels == sizes.n_outputs == 12800
    # REFERENCE 3.4: exemplar embed 512*64+64, labels 12800*64, APE 32*64, 2 blocks of (LN 128 + QKV 12288 +
    # out 4096), final LN 128, unembed 12800*64+12800
    assert 32_832 + 819_200 + 2_048 + 2 * (128 + 12_288 + 4_096) + 128 + 832_000 == 1_719_232
    assert model_for(config, sizes).n_parameters() == 1_719_232
    # all 12984 rows as train classes (what the file gave before it was recognised): 184 more labels and outputs
    whole = Sizes(512, 12984, 12984)
    assert model_for(config, whole).n_parameters() == 1_719_232 + 184 * (64 + 64 + 1) == 1_742_968
