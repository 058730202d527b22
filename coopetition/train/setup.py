"""Everything a run derives from its config before the first step: bank, pools, sizes, eval sets, model.

Shared by training and by the readers (analysis), so both build exactly the same model for a checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from coopetition.bank import ExemplarBank, load_bank
from coopetition.config import RunConfig
from coopetition.errors import ConfigError
from coopetition.task.evaluators import build_eval_sets, load_eval_sets
from coopetition.task.sampler import ClassPool, SequenceBatch, zipf_weights

if TYPE_CHECKING:  # TransformerLens is imported on first use (coopetition.model)
    from coopetition.model import ICLTransformer


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


def model_for(config: RunConfig, sizes: Sizes, device: str | torch.device = "cpu") -> ICLTransformer:
    from coopetition.model import build_model

    return build_model(config.model, sizes.input_dim, sizes.n_labels, sizes.n_outputs, config.seeds.init, device)


def eval_sets_for(config: RunConfig, bank: ExemplarBank) -> dict[str, SequenceBatch]:
    if config.eval.import_path:
        return load_eval_sets(Path(config.eval.import_path), bank.fingerprint())
    return build_eval_sets(config.eval.evaluators(), bank, config.seeds.eval)


def load_run_bank(config: RunConfig) -> ExemplarBank:
    return load_bank(config.bank)
