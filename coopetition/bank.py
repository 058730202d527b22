"""The exemplar bank: one dense ``[classes, exemplars, dim]`` array that every sampler indexes into.

The reference trains on ResNet-18 features of Omniglot (12,984 x 20 x 512, HDF5 dataset ``resnet18/224/feat``,
``omniglot_features_reordered.h5``) with classes split 12800/0/184 and exemplars 20/0/0. A file in exactly that layout
gets those splits unless the config names its own, so ``--bank omniglot_features_reordered.h5`` alone trains the C25
model (12,800 output classes, 1,719,232 parameters) rather than one over all 12,984 rows. We embed a synthetic stand-in so everything runs offline: one random prototype per class plus per-exemplar
within-class noise. The noise level is what makes exemplar matching (ICL) imperfect while each exemplar can still
be memorised (IWL), which is the regime in which ICL is transient.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Float
from safetensors import SafetensorError
from torch import Tensor

from coopetition.errors import ConfigError, DataError

SYNTHETIC = "synthetic"
DEFAULT_H5_DATASET = "resnet18/224/feat"
# The reference's feature file (REFERENCE 1.2) and the splits every C25 run gives it.
REFERENCE_SHAPE = (12984, 20, 512)
REFERENCE_CLASS_SPLIT = (12800, 0, 184)
REFERENCE_EXEMPLAR_SPLIT = (20, 0, 0)
# Where a bank's splits came from, recorded in the run's config.json ("derived").
SPLITS_FROM_CONFIG, SPLITS_FROM_REFERENCE, SPLITS_WHOLE_BANK = "config", "reference layout", "whole bank"
MAX_SYNTHETIC = 4 * 10**9  # floats (16 GB); C25's bank is 1.3e8


@dataclass(frozen=True)
class BankConfig:
    """Where the exemplar bank comes from and how its class/exemplar axes are split.

    ``source`` is ``"synthetic"`` or a path to ``.npy``/``.npz``/``.safetensors``/``.h5``. The synthetic fields
    (``classes``, ``exemplars``, ``dim``, ``within_class_noise``, ``seed``) are ignored for files. Splits are
    ``(train, val, test)`` contiguous ranges as in the reference; ``None`` means "all train", except for an HDF5 file
    in the reference's layout (``h5_dataset`` ``resnet18/224/feat`` of shape 12984 x 20 x 512), which gets the
    reference's ``(12800, 0, 184)`` / ``(20, 0, 0)``. A split given here always wins.
    """

    source: str = SYNTHETIC
    classes: int = 1600
    exemplars: int = 20
    dim: int = 512
    within_class_noise: float = 1.0
    shared_scale: float = 0.0
    prototype_rank: int | None = None
    seed: int = 0
    class_split: tuple[int, int, int] | None = None
    exemplar_split: tuple[int, int, int] | None = None
    h5_dataset: str = DEFAULT_H5_DATASET
    array_key: str | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.seed < 2**32:
            raise ConfigError(f"bank.seed must be in [0, 2**32), got {self.seed}")
        if not self.source:
            raise ConfigError("bank.source is empty; use 'synthetic' or a file path")
        if self.source == SYNTHETIC:
            for name in ("classes", "exemplars", "dim"):
                if getattr(self, name) < 1:
                    raise ConfigError(f"bank.{name} must be >= 1, got {getattr(self, name)}")
            if self.classes * self.exemplars * self.dim > MAX_SYNTHETIC:
                raise ConfigError(f"bank {self.classes} x {self.exemplars} x {self.dim} exceeds {MAX_SYNTHETIC:.0e} "
                                  f"floats (a typo?)")
            if self.prototype_rank is not None and self.prototype_rank < 1:
                raise ConfigError(f"bank.prototype_rank must be >= 1 or null, got {self.prototype_rank}")
            if self.classes < 3:
                raise ConfigError(f"bank.classes must be >= 3 (query, distractor and one more), got {self.classes}")
            for name in ("within_class_noise", "shared_scale"):
                if not 0 <= getattr(self, name) < float("inf"):
                    raise ConfigError(f"bank.{name} must be finite and >= 0, got {getattr(self, name)}")
        for name, size in (("class_split", self.classes), ("exemplar_split", self.exemplars)):
            split = getattr(self, name)
            if split is not None and (len(split) != 3 or min(split) < 0):
                raise ConfigError(f"bank.{name} must be three non-negative ints (train, val, test), got {split}")
            if split is not None and self.source == SYNTHETIC and sum(split) != size:
                axis = name.split("_")[0]
                raise ConfigError(f"bank.{name} {tuple(split)} must sum to bank.{axis}es = {size}"
                                  if axis == "class" else
                                  f"bank.{name} {tuple(split)} must sum to bank.exemplars = {size}")


@dataclass(frozen=True)
class ExemplarBank:
    """The feature array plus its splits. Class index k is also the in-weights label of class k.

    ``splits_from`` says where the splits came from: ``config``, ``reference layout`` (the default for the reference's
    feature file) or ``whole bank`` (no split given: everything is train); if they differ per axis, both are named.
    """

    features: Float[Tensor, "classes exemplars dim"]
    class_split: tuple[int, int, int]
    exemplar_split: tuple[int, int, int]
    splits_from: str = SPLITS_FROM_CONFIG

    @property
    def n_classes(self) -> int:
        return self.features.shape[0]

    @property
    def n_exemplars(self) -> int:
        return self.features.shape[1]

    @property
    def dim(self) -> int:
        return self.features.shape[2]

    def class_range(self, split: str) -> tuple[int, int]:
        """``[start, stop)`` of the named class split (``train``/``val``/``test``/``all``)."""
        return _split_range(self.class_split, split, "class")

    def exemplar_range(self, split: str) -> tuple[int, int]:
        return _split_range(self.exemplar_split, split, "exemplar")

    def fingerprint(self) -> str:
        """sha256 of the raw features: recorded with every run and eval set so mismatched banks are caught."""
        return hashlib.sha256(self.features.contiguous().numpy().tobytes()).hexdigest()[:16]


def _split_range(split: tuple[int, int, int], name: str, axis: str) -> tuple[int, int]:
    bounds = {"train": (0, split[0]), "val": (split[0], split[0] + split[1]),
              "test": (split[0] + split[1], sum(split)), "all": (0, sum(split))}
    if name not in bounds:
        raise ConfigError(f"unknown {axis} split {name!r}; expected one of {sorted(bounds)}")
    lo, hi = bounds[name]
    if hi <= lo:
        raise ConfigError(f"{axis} split {name!r} is empty (split {split})")
    return lo, hi


def synthetic_features(classes: int, exemplars: int, dim: int, within_class_noise: float, seed: int,
                       shared_scale: float = 0.0, prototype_rank: int | None = None) -> Tensor:
    """``shared_scale * m + p_c + noise * n``: one direction m common to every exemplar (ResNet features of
    Omniglot are all alike; the part that tells classes apart is small), a prototype p_c ~ N(0, I) per class and
    N(0, noise^2 I) per exemplar. With ``prototype_rank`` r the prototypes lie in a random r-dimensional subspace
    (classes crowd together, as Omniglot characters do). Scaled so each vector has norm ~ sqrt(dim)."""
    gen = torch.Generator().manual_seed(seed)
    if prototype_rank is None:
        prototypes = torch.randn(classes, 1, dim, generator=gen)
    else:
        basis = torch.randn(prototype_rank, dim, generator=gen) / prototype_rank**0.5
        prototypes = (torch.randn(classes, prototype_rank, generator=gen) @ basis)[:, None]
    noise = torch.randn(classes, exemplars, dim, generator=gen)
    shared = torch.randn(1, 1, dim, generator=gen)
    features = shared_scale * shared + prototypes + within_class_noise * noise
    return features / (1.0 + within_class_noise**2 + shared_scale**2) ** 0.5


def load_bank(config: BankConfig) -> ExemplarBank:
    """Build or read the bank named by ``config`` and check its splits against its shape."""
    if config.source == SYNTHETIC:
        features = synthetic_features(config.classes, config.exemplars, config.dim,
                                      config.within_class_noise, config.seed, config.shared_scale,
                                      config.prototype_rank)
    else:
        features = _read_array(Path(config.source), config)
    _check_features(features, config.source)
    n_cls, n_ex, _ = features.shape
    reference = is_reference_layout(config, tuple(features.shape))
    class_split, class_from = _default_split(config.class_split, REFERENCE_CLASS_SPLIT if reference else None, n_cls)
    exemplar_split, exemplar_from = _default_split(config.exemplar_split,
                                                   REFERENCE_EXEMPLAR_SPLIT if reference else None, n_ex)
    splits_from = class_from if class_from == exemplar_from else f"class: {class_from}, exemplar: {exemplar_from}"
    if sum(class_split) != n_cls:
        raise ConfigError(f"bank.class_split {class_split} must sum to the bank's {n_cls} classes")
    if sum(exemplar_split) != n_ex:
        raise ConfigError(f"bank.exemplar_split {exemplar_split} must sum to the bank's {n_ex} exemplars")
    return ExemplarBank(features.contiguous(), tuple(class_split), tuple(exemplar_split), splits_from)


def is_reference_layout(config: BankConfig, shape: tuple[int, ...]) -> bool:
    """An HDF5 bank read from the reference's dataset path with the reference's shape (REFERENCE 1.2).

    Shape and path are all a file tells us: ``omniglot_features_all.h5`` (rows not reordered) looks the same and
    gets the same default; give ``bank.class_split`` for any other meaning of those rows."""
    is_h5 = Path(config.source).suffix.lower() in (".h5", ".hdf5")
    return is_h5 and config.h5_dataset == DEFAULT_H5_DATASET and tuple(shape) == REFERENCE_SHAPE


def _default_split(given: tuple[int, int, int] | None, reference: tuple[int, int, int] | None,
                   size: int) -> tuple[tuple[int, int, int], str]:
    if given is not None:
        return tuple(given), SPLITS_FROM_CONFIG
    if reference is not None:
        return reference, SPLITS_FROM_REFERENCE
    return (size, 0, 0), SPLITS_WHOLE_BANK


def _read_array(path: Path, config: BankConfig) -> Tensor:
    if not path.is_file():
        raise DataError(f"exemplar bank file not found: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            array = np.load(path, allow_pickle=False)
        elif suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                key = config.array_key or _only_key(list(archive.keys()), path)
                array = archive[key]
        elif suffix == ".safetensors":
            from safetensors.numpy import load_file

            tensors = load_file(str(path))
            array = tensors[config.array_key or _only_key(list(tensors), path)]
        elif suffix in (".h5", ".hdf5"):
            array = _read_h5(path, config.h5_dataset)
        else:
            raise DataError(f"unsupported bank file type {suffix!r} ({path}); use .npy, .npz, .safetensors or .h5")
    except (ValueError, OSError, KeyError, SafetensorError) as err:  # a pickle is a ValueError: never unpickled
        raise DataError(f"cannot read exemplar bank {path}: {_first_line(err)}") from None
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "biuf":
        raise DataError(f"exemplar bank {path} must hold a numeric array, got {getattr(array, 'dtype', type(array))}")
    with np.errstate(over="ignore"):  # out-of-range values become inf, which _check_features reports
        return torch.from_numpy(np.asarray(array, dtype=np.float32))


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _only_key(keys: list[str], path: Path) -> str:
    if len(keys) != 1:
        raise DataError(f"{path} holds arrays {keys}; choose one with bank.array_key")
    return keys[0]


def _read_h5(path: Path, dataset: str) -> np.ndarray:
    try:
        import h5py
    except ImportError:
        raise DataError("reading .h5 banks needs h5py: pip install 'coopetition[hdf5]'") from None
    with h5py.File(path, "r") as handle:
        if dataset not in handle:
            raise DataError(f"{path} has no dataset {dataset!r} (set bank.h5_dataset)")
        return handle[dataset][()]


def _check_features(features: Tensor, source: str) -> None:
    if features.ndim != 3:
        raise DataError(f"exemplar bank {source} must be [classes, exemplars, dim], got shape {tuple(features.shape)}")
    if features.shape[0] < 3 or features.shape[1] < 1 or features.shape[2] < 1:
        raise DataError(f"exemplar bank {source} is too small: shape {tuple(features.shape)} (need >= 3 classes)")
    if not torch.isfinite(features).all():
        raise DataError(f"exemplar bank {source} contains NaN or inf")
