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
import io
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from safetensors import SafetensorError

from coopetition.bounded import TensorLayout, open_regular, read_bytes, read_safetensors
from coopetition.errors import ConfigError, DataError
from coopetition.threads import one_torch_thread

if TYPE_CHECKING:
    import torch
    from jaxtyping import Float
    from torch import Tensor

SYNTHETIC = "synthetic"
DEFAULT_H5_DATASET = "resnet18/224/feat"
# The reference's feature file (REFERENCE 1.2) and the splits every C25 run gives it.
REFERENCE_SHAPE = (12984, 20, 512)
REFERENCE_CLASS_SPLIT = (12800, 0, 184)
REFERENCE_EXEMPLAR_SPLIT = (20, 0, 0)
# Where a bank's splits came from, recorded in the run's config.json ("derived").
SPLITS_FROM_CONFIG, SPLITS_FROM_REFERENCE, SPLITS_WHOLE_BANK = "config", "reference layout", "whole bank"
# How a family bank lays (drawing, transform) images out over its classes (see family_features).
FAMILY_LAYOUTS = ("reference", "described")
MAX_SYNTHETIC = 4 * 10**9  # floats (16 GB); C25's bank is 1.3e8
MAX_BANK_BYTES = 8 * MAX_SYNTHETIC + (1 << 20)  # a float64 file of MAX_SYNTHETIC values
BANK_SUFFIXES = (".npy", ".npz", ".safetensors", ".h5", ".hdf5")
NUMERIC = {"F64": "float64", "F32": "float32", "F16": "float16", "I64": "int64", "I32": "int32", "I16": "int16",
           "I8": "int8", "U8": "uint8"}


@dataclass(frozen=True)
class BankConfig:
    """Where the exemplar bank comes from and how its class/exemplar axes are split.

    ``source`` is ``"synthetic"`` or a path to ``.npy``/``.npz``/``.safetensors``/``.h5``. The synthetic fields
    (``classes``, ``exemplars``, ``dim``, ``within_class_noise``, ``shared_scale``, ``prototype_rank``, ``modes``,
    ``mode_share``, ``seed``; see ``synthetic_features``; and the family fields ``siblings``, ``transforms``,
    ``transform_share``, ``drawing_noise``, ``layout``, ``rectify``; see ``family_features``) are ignored for files.
    Splits are
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
    modes: int = 1
    mode_share: float = 0.0
    siblings: int = 1
    transforms: int = 1
    transform_share: float = 0.0
    drawing_noise: float = 0.0
    layout: str = "reference"
    rectify: bool = False
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
            if not 1 <= self.modes <= self.exemplars:
                raise ConfigError(f"bank.modes must be in [1, bank.exemplars = {self.exemplars}], got {self.modes}")
            if not 0 <= self.mode_share <= 1:
                raise ConfigError(f"bank.mode_share must be in [0, 1], got {self.mode_share}")
            for name in ("siblings", "transforms"):
                if not 1 <= getattr(self, name) <= 64:
                    raise ConfigError(f"bank.{name} must be in [1, 64], got {getattr(self, name)}")
            if not 0 <= self.transform_share <= 1:
                raise ConfigError(f"bank.transform_share must be in [0, 1], got {self.transform_share}")
            if not 0 <= self.drawing_noise < float("inf"):
                raise ConfigError(f"bank.drawing_noise must be finite and >= 0, got {self.drawing_noise}")
            if self.layout not in FAMILY_LAYOUTS:
                raise ConfigError(f"bank.layout must be one of {', '.join(FAMILY_LAYOUTS)}, got {self.layout!r}")
            if self.is_family and self.modes > 1:
                raise ConfigError("bank.modes is for the cluster bank; a family bank (bank.siblings, bank.transforms, "
                                  "bank.rectify) varies its exemplars by bank.transforms instead")
            if self.is_family and self.transforms * self.dim**2 > MAX_SYNTHETIC:
                raise ConfigError(f"a family bank's {self.transforms} transforms of {self.dim} x {self.dim} exceed "
                                  f"{MAX_SYNTHETIC:.0e} floats; use a smaller bank.dim")
            if self.layout == "described" and self.is_family and self.siblings != self.transforms:
                raise ConfigError(f"bank.layout 'described' makes each sibling one transform: bank.siblings "
                                  f"({self.siblings}) must equal bank.transforms ({self.transforms})")
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


    @property
    def is_family(self) -> bool:
        """Whether the synthetic bank is the family bank (``family_features``) rather than Gaussian clusters."""
        return self.siblings > 1 or self.transforms > 1 or self.rectify


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
                       shared_scale: float = 0.0, prototype_rank: int | None = None, modes: int = 1,
                       mode_share: float = 0.0) -> Tensor:
    """``shared_scale * m + p_c + noise * n``: one direction m common to every exemplar (ResNet features of
    Omniglot are all alike; the part that tells classes apart is small), a prototype p_c ~ N(0, I) per class and
    N(0, noise^2 I) per exemplar. With ``prototype_rank`` r the prototypes lie in a random r-dimensional subspace
    (classes crowd together, as Omniglot characters do). Scaled so each vector has norm ~ sqrt(dim).

    With ``modes`` M > 1 a class is a mixture of M sub-classes, as each of the reference's classes holds one character
    in 8 rotations/flips (REFERENCE 1.2): exemplar e belongs to mode e mod M (the reference's variant index is the
    image index mod 8), whose prototype is ``sqrt(mode_share) p_c + sqrt(1 - mode_share) q_{c,e mod M}`` with its
    own ``q ~ N(0, I)`` (in the same subspace under ``prototype_rank``). A class that is a union of unrelated
    clusters cannot be read out by one linear map, which is what the direct embedding -> unembedding path is; M = 1
    draws exactly the same bank as before the option existed."""
    import torch
    gen = torch.Generator().manual_seed(seed)
    if prototype_rank is None:
        prototypes = torch.randn(classes, 1, dim, generator=gen)
    else:
        basis = torch.randn(prototype_rank, dim, generator=gen) / prototype_rank**0.5
        prototypes = (torch.randn(classes, prototype_rank, generator=gen) @ basis)[:, None]
    noise = torch.randn(classes, exemplars, dim, generator=gen)
    shared = torch.randn(1, 1, dim, generator=gen)
    if modes > 1:  # drawn after everything M = 1 draws, so that bank is unchanged
        per_mode = torch.randn(classes, modes, prototype_rank or dim, generator=gen)
        if prototype_rank is not None:
            per_mode = per_mode @ basis
        mode_of = torch.arange(exemplars) % modes
        prototypes = mode_share**0.5 * prototypes + (1 - mode_share)**0.5 * per_mode[:, mode_of]
    features = shared_scale * shared + prototypes + within_class_noise * noise
    return features / (1.0 + within_class_noise**2 + shared_scale**2) ** 0.5


def family_features(classes: int, exemplars: int, dim: int, seed: int, *, siblings: int = 8, transforms: int = 8,
                    transform_share: float = 0.0, drawing_noise: float = 0.0, image_noise: float = 0.0,
                    offset: float = 0.0, prototype_rank: int | None = None, layout: str = "reference",
                    rectify: bool = False) -> Tensor:
    """A bank with the reference's geometry (REFERENCE 1.2): characters, drawings of them, and transforms shared by
    every character, so that the class structure is the reference feature file's rather than Gaussian clusters.

    - **Characters.** Class c belongs to character ``c // siblings``: ``siblings`` consecutive classes are a family
      sharing one character prototype p ~ N(0, I) (in a random ``prototype_rank`` subspace if set).
    - **Drawings.** Drawing k of a character is ``z = p + drawing_noise * d_k`` (who drew it).
    - **Transforms.** ``transforms`` fixed seeded maps ``T_t = sqrt(s) I + sqrt(1 - s) Q_t`` (``Q_t`` random
      orthogonal, s = ``transform_share``), the same for every character, as a rotation is one operation on any
      image. An image is ``T_t z / |.| * sqrt(dim) + image_noise * n``: ``s`` is the cosine between two transforms of
      one drawing, the part of a character that survives all of them.
    - **Layout.** ``"reference"``: the literal rows of the reference's feature file: the character's images in
      (drawing, transform) order, image j = drawing ``j // transforms`` in transform ``j % transforms``, cut into
      chunks of ``exemplars``; sibling s holds images ``s * exemplars ...``. With 8 siblings, 8 transforms and 20
      exemplars a class is 2.5 drawings in every transform and siblings differ only by who drew them.
      ``"described"``: the papers' description, class = (character, transform t = sibling index), exemplar i =
      drawing i; siblings differ by their transform.
    - **Non-negative, correlated** (``rectify``): ``relu(offset * m + x)`` with one shared direction m ~ N(0, I), like
      post-ReLU ResNet features whose classes all share a large common part. Without it, ``offset * m + x``.

    The array is scaled so that each vector has mean square norm ``dim``. Draw order: prototypes, drawings, image
    noise, m, transforms."""
    import torch
    gen = torch.Generator().manual_seed(seed)
    n_chars = -(-classes // siblings)
    per_char = siblings * exemplars
    n_drawings = exemplars if layout == "described" else -(-per_char // transforms)
    rank = prototype_rank or dim
    basis = torch.randn(rank, dim, generator=gen) / rank**0.5 if prototype_rank is not None else None
    prototypes = torch.randn(n_chars, 1, rank, generator=gen)
    drawings = prototypes + drawing_noise * torch.randn(n_chars, n_drawings, rank, generator=gen)
    if basis is not None:
        drawings = drawings @ basis
    image_noise_draw = torch.randn(classes, exemplars, dim, generator=gen)
    shared = torch.randn(dim, generator=gen)
    q, _ = torch.linalg.qr(torch.randn(transforms, dim, dim, generator=gen))
    maps = transform_share**0.5 * torch.eye(dim) + (1 - transform_share)**0.5 * q  # [T, dim, dim]
    cls = torch.arange(classes)
    char, sib = cls // siblings, cls % siblings
    if layout == "described":
        drawing_of = torch.arange(exemplars).expand(classes, exemplars)
        transform_of = sib[:, None].expand(classes, exemplars)
    else:
        image = sib[:, None] * exemplars + torch.arange(exemplars)  # index of the image within its character
        drawing_of, transform_of = image // transforms, image % transforms
    z = drawings[char[:, None], drawing_of]  # [classes, exemplars, dim]
    x = torch.empty_like(z)
    for t in range(transforms):  # T_t z for every image in transform t (row vectors: z @ T_t^T)
        where = transform_of == t
        x[where] = z[where] @ maps[t].T
    x = x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12) * dim**0.5 + image_noise * image_noise_draw
    x = offset * shared + x
    if rectify:
        x = torch.relu(x)
    return x / x.pow(2).sum(-1).mean().sqrt() * dim**0.5


def load_bank(config: BankConfig, expected_shape: tuple[int, ...] | None = None) -> ExemplarBank:
    """Build or read the bank named by ``config`` and check its splits against its shape (and a file's shape
    against ``expected_shape``, a run's record, before its data is read)."""
    if config.source == SYNTHETIC:
        with one_torch_thread():  # a run trained on 2 threads is analysed on 1: its bank must rebuild to the same bits
            features = _synthetic(config)
    else:
        features = _read_array(Path(config.source), config, expected_shape)
    return _finish(config, features)


def _synthetic(config: BankConfig) -> Tensor:
    if config.is_family:
        return family_features(config.classes, config.exemplars, config.dim, config.seed,
                               siblings=config.siblings, transforms=config.transforms,
                               transform_share=config.transform_share, drawing_noise=config.drawing_noise,
                               image_noise=config.within_class_noise, offset=config.shared_scale,
                               prototype_rank=config.prototype_rank, layout=config.layout, rectify=config.rectify)
    return synthetic_features(config.classes, config.exemplars, config.dim, config.within_class_noise, config.seed,
                              config.shared_scale, config.prototype_rank, config.modes, config.mode_share)


def _finish(config: BankConfig, features: Tensor) -> ExemplarBank:
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


def _read_array(path: Path, config: BankConfig, expected_shape: tuple[int, ...] | None) -> Tensor:
    """The bank file's array. The file policy (a bank is named by a config, which may come with a shared run): a
    regular file (no FIFO or device) with an allowed suffix, opened through ``bounded``; its shape and dtype are read
    from its header and checked (numeric, at most ``MAX_SYNTHETIC`` values, ``expected_shape`` when the run recorded
    one) before the data is read. Its fingerprint is checked by the caller that knows the recorded one."""
    import torch
    text = str(path)
    if not (text.isprintable() and path.name):
        raise DataError(f"bank.source {text!r} is not a usable file name")
    suffix = path.suffix.lower()
    if suffix not in BANK_SUFFIXES:
        raise DataError(f"unsupported bank file type {suffix!r} ({path}); use .npy, .npz, .safetensors or .h5")
    try:
        real = path.resolve(strict=True)
    except FileNotFoundError:
        raise DataError(f"exemplar bank file not found: {path}") from None
    except (OSError, RuntimeError) as err:
        raise DataError(f"cannot resolve exemplar bank {path}: {_first_line(err)}") from None
    if not real.is_file():  # a FIFO or device is refused before it is opened (opening a FIFO can block)
        raise DataError(f"exemplar bank {path} is not a regular file")

    def check(shape: tuple[int, ...], dtype: np.dtype) -> None:
        if dtype.hasobject or dtype.kind not in "biuf":
            raise DataError(f"exemplar bank {path} must hold a numeric array, got {dtype}")
        if len(shape) != 3 or int(np.prod(shape, dtype=np.float64)) > MAX_SYNTHETIC:
            raise DataError(f"exemplar bank {path} must be [classes, exemplars, dim] with at most "
                            f"{MAX_SYNTHETIC:.0e} values, got shape {tuple(shape)}")
        if expected_shape is not None and tuple(shape) != tuple(expected_shape):
            raise DataError(f"exemplar bank {path} has shape {tuple(shape)}, the run recorded {tuple(expected_shape)}")

    try:
        if suffix in (".h5", ".hdf5"):
            array = _read_h5(real, config.h5_dataset, check)
        elif suffix == ".safetensors":
            array = _read_safetensors(real, config.array_key, check)
        else:
            data = read_bytes(real, "exemplar bank", MAX_BANK_BYTES)
            array = _read_numpy(io.BytesIO(data), suffix, config.array_key, path, check)
    except (ValueError, OSError, KeyError, EOFError, SafetensorError, zipfile.BadZipFile) as err:
        raise DataError(f"cannot read exemplar bank {path}: {_first_line(err)}") from None  # a pickle: never run
    with np.errstate(over="ignore"):  # out-of-range values become inf, which _check_features reports
        return torch.from_numpy(np.asarray(array, dtype=np.float32))


def _read_numpy(handle: io.BytesIO, suffix: str, array_key: str | None, path: Path, check) -> np.ndarray:
    """.npy: the header's shape and dtype are checked first; .npz: each member's, before it is decompressed."""
    if suffix == ".npy":
        _npy_header(handle, check)
        handle.seek(0)
        return np.load(handle, allow_pickle=False)
    with zipfile.ZipFile(handle) as archive:
        names = [n[:-4] for n in archive.namelist() if n.endswith(".npy")]
        key = array_key or _only_key(names, path)
        if key not in names:
            raise DataError(f"{path} holds no array {key!r}; it has {names[:5]}")
        info = archive.getinfo(f"{key}.npy")
        if info.file_size > MAX_BANK_BYTES:
            raise DataError(f"exemplar bank {path}: array {key!r} unpacks to {info.file_size} bytes")
        with archive.open(info) as member:
            _npy_header(member, check)
        member_bytes = io.BytesIO(archive.read(info))
    return np.load(member_bytes, allow_pickle=False)


def _npy_header(handle, check) -> None:
    read = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    version = np.lib.format.read_magic(handle)
    if version not in read:
        raise ValueError(f"unsupported .npy version {version}")
    shape, _, dtype = read[version](handle, max_header_size=10000)
    check(tuple(shape), dtype)


def _read_safetensors(path: Path, array_key: str | None, check) -> np.ndarray:
    from safetensors.numpy import load

    data, header = read_safetensors(path, "exemplar bank", TensorLayout(dtypes=frozenset(NUMERIC), max_tensors=64,
                                                                        max_bytes=MAX_BANK_BYTES))
    names = [k for k in header if k != "__metadata__"]
    key = array_key or _only_key(names, path)
    if key not in names:
        raise DataError(f"{path} holds no array {key!r}; it has {names[:5]}")
    check(tuple(header[key]["shape"]), np.dtype(NUMERIC[header[key]["dtype"]]))
    return load(data)[key]


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _only_key(keys: list[str], path: Path) -> str:
    if len(keys) != 1:
        raise DataError(f"{path} holds arrays {keys}; choose one with bank.array_key")
    return keys[0]


def _read_h5(path: Path, dataset: str, check) -> np.ndarray:
    try:
        import h5py
    except ImportError:
        raise DataError("reading .h5 banks needs h5py: pip install 'coopetition[hdf5]'") from None
    with open_regular(path, "exemplar bank") as raw, h5py.File(raw, "r") as handle:
        if dataset not in handle or not isinstance(handle[dataset], h5py.Dataset):
            raise DataError(f"{path} has no dataset {dataset!r} (set bank.h5_dataset)")
        check(tuple(handle[dataset].shape), handle[dataset].dtype)
        return handle[dataset][()]


def _check_features(features: Tensor, source: str) -> None:
    import torch
    if features.ndim != 3:
        raise DataError(f"exemplar bank {source} must be [classes, exemplars, dim], got shape {tuple(features.shape)}")
    if features.shape[0] < 3 or features.shape[1] < 1 or features.shape[2] < 1:
        raise DataError(f"exemplar bank {source} is too small: shape {tuple(features.shape)} (need >= 3 classes)")
    if not torch.isfinite(features).all():
        raise DataError(f"exemplar bank {source} contains NaN or inf")
