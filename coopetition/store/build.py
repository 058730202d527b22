"""What a run's config builds before its first step: its bank, training pool, sizes and model.

Training builds a fresh run with these calls, and every reader of a run (``store.run.Run``, resume, zoom) builds
the model of a checkpoint with the same ones, so a checkpoint is always loaded into exactly the model that wrote it.
The eval sets are ``store.evalsets``; the frozen source checkpoints ``store.sources``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from coopetition.bank import ExemplarBank, load_bank
from coopetition.bounded import MAX_HEADER_BYTES
from coopetition.config import RunConfig
from coopetition.errors import ConfigError, DataError
from coopetition.store.reader import RunReader
from coopetition.task.sampler import ClassPool, zipf_weights

if TYPE_CHECKING:  # TransformerLens is imported on first use (coopetition.model)
    from coopetition.model import ICLTransformer

MAX_PARAMETERS = 1 << 28  # 1 GiB of float32 weights; the reference model has ~0.1M, the deepest preset ~1M


@dataclass(frozen=True)
class Sizes:
    """Sizes fixed by the data, recorded in the run's ``config.json`` ("derived").

    The label table and the output layer have the reference's ``model_output_classes``: the few-shot label count when
    every training spec relabels (IH24: 5, whatever the number of training classes), else the training classes
    (C25: 12800), or the few-shot labels if a partly relabelled mixture needs more. The bank's splits and where they
    came from (``config``, ``reference layout``, ``whole bank``) are recorded with them, since they fix the class
    count.
    """

    input_dim: int
    n_labels: int
    n_outputs: int
    class_split: tuple[int, int, int] | None = None
    exemplar_split: tuple[int, int, int] | None = None
    splits_from: str | None = None


def training_pool(config: RunConfig, bank: ExemplarBank, device: str | torch.device = "cpu") -> ClassPool:
    """The training split; class weights (Zipf) live on ``device`` so the sampler never copies them per step."""
    c_lo, c_hi = bank.class_range(config.task.class_split)
    e_lo, e_hi = bank.exemplar_range(config.task.exemplar_split)
    weights = zipf_weights(c_hi - c_lo, config.task.zipf_alpha)
    pool = ClassPool(c_lo, c_hi, e_lo, e_hi, None if weights is None else weights.to(device))
    for spec in config.task.mixture:
        if pool.n_classes < spec.min_classes():
            raise ConfigError(f"the training split has {pool.n_classes} classes; a spec needs {spec.min_classes()}")
    return pool


def derive_sizes(config: RunConfig, bank: ExemplarBank) -> Sizes:
    c_lo, c_hi = bank.class_range(config.task.class_split)
    relabelled = [s.label_vocab_needed for s in config.task.mixture]
    # Class labels reach c_hi - 1 unless every spec replaces them (main.py: model_output_classes = fs_relabel).
    vocab = max(relabelled) if all(relabelled) else max([c_hi] + relabelled)
    return Sizes(bank.dim, vocab, vocab, bank.class_split, bank.exemplar_split, bank.splits_from)


def n_parameters(config: RunConfig, sizes: Sizes) -> int:
    """An upper bound on the model's parameter count, known before anything is allocated."""
    d, m = config.model.d_model, config.model
    block = 4 * d * d + 4 * d + 4 * d + (2 * (m.mlp_ratio or 0) * d * d + (m.mlp_ratio or 0) * d + d + 2 * d)
    embed = (sizes.input_dim + 1 + sizes.n_labels + m.max_seq_len) * d
    return m.n_layers * block + embed + (d + 1) * sizes.n_outputs + 2 * d


def checkpoint_bytes_bound(config: RunConfig, derived: dict) -> int | None:
    """A generous upper bound on a checkpoint's size from the run's recorded sizes (None if it recorded none), so a
    reader refuses a listed multi-gigabyte file before hashing it; the exact layout is checked when it is loaded."""
    if not all(k in derived for k in ("input_dim", "n_labels", "n_outputs")):
        return None
    sizes = Sizes(derived["input_dim"], derived["n_labels"], derived["n_outputs"])
    masks = 8 * config.model.n_layers * config.model.max_seq_len ** 2  # TransformerLens keeps causal masks
    return 8 * n_parameters(config, sizes) + masks + MAX_HEADER_BYTES


def model_for(config: RunConfig, sizes: Sizes, device: str | torch.device = "cpu") -> ICLTransformer:
    """The run's model; a config whose model would exceed ``MAX_PARAMETERS`` (valid field by field, absurd as a
    whole, e.g. an edited config.json) is refused before a byte is allocated."""
    count = n_parameters(config, sizes)
    if count > MAX_PARAMETERS:
        raise ConfigError(f"the model would have ~{count:.2e} parameters, more than the {MAX_PARAMETERS:.1e} allowed "
                          f"(model {config.model.n_layers} layers x d_model {config.model.d_model}, "
                          f"{sizes.n_labels} labels, input dim {sizes.input_dim})")
    from coopetition.model import build_model

    return build_model(config.model, sizes.input_dim, sizes.n_labels, sizes.n_outputs, config.seeds.init, device)


def load_run_bank(config: RunConfig, run_dir: Path | None = None) -> ExemplarBank:
    """The bank of ``config``; for an existing run (``run_dir``) a file bank's shape is checked against the run's
    record before its data is read, and the bank's fingerprint must be the one the run recorded (docs/reliability.md,
    "Bank files named by a run")."""
    if run_dir is None:
        return load_bank(config.bank)
    derived = RunReader(run_dir).derived()
    shape = tuple(derived["bank_shape"]) if derived.get("bank_shape") else None
    bank = load_bank(config.bank, shape)
    if bank.fingerprint() != derived["bank_fingerprint"]:
        raise DataError(f"the exemplar bank of {run_dir} ({config.bank.source}) has fingerprint {bank.fingerprint()}, "
                        f"the run recorded {derived['bank_fingerprint']}: not the bank it was trained on")
    return bank
