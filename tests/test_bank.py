"""Exemplar bank: synthetic default, file formats, splits, bad files."""

import numpy as np
import pytest
import torch

from coopetition.bank import BankConfig, load_bank
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
