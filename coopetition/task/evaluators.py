"""The reference's evaluators and fixed eval sets.

An eval set is drawn once from the eval seed and stored with the run as integer index tables
(``eval_sets.safetensors``), so every checkpoint is scored on the same sequences and the sets can be exported to,
or imported from, another run (the bank fingerprint guards against mixing banks).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from safetensors import SafetensorError

from coopetition.bank import ExemplarBank
from coopetition.bounded import TensorLayout, parse_json, read_safetensors
from coopetition.errors import ConfigError, DataError
from coopetition.task.sampler import ClassPool, SequenceBatch, sample_sequences
from coopetition.task.sequence import SequenceSpec

if TYPE_CHECKING:
    import torch


DEFAULT_COLOUR = "#17becf"  # an evaluator that names no colour of its own
DEFAULT_RANK = 100


@dataclass(frozen=True)
class EvaluatorSpec:
    """One evaluator: a sequence distribution over a (prefix of a) class split and exemplar split.

    The reference's ctx-2 sets use classes 0-1599 and exemplars 0-4 of the training data: ``max_classes`` and
    ``max_exemplars`` take that prefix (``None`` = the whole split).

    What the evaluator *means* to the rest of the package lives here too, so no reader re-derives it from the name:
    ``headline_metric`` is what its curve plots (and the training progress bar shows), ``colour`` its colour in
    every figure, ``patch_pairs`` the clean/corrupted patching pairs its sequences make (builders named in
    ``analysis/pairs.py``), ``progress`` whether the training progress bar shows it, and ``display_rank`` which
    evaluator a figure that shows one at a time opens on (lowest first). Readers that have only a name (a table's
    ``evaluator`` column) look these up with ``spec_for``.
    """

    name: str
    sequence: SequenceSpec
    class_split: str = "train"
    max_classes: int | None = 1600
    exemplar_split: str = "train"
    max_exemplars: int | None = 5
    n_seqs: int = 5000
    headline_metric: str = "in_context_acc"
    colour: str = DEFAULT_COLOUR
    patch_pairs: tuple[str, ...] = ()
    progress: bool = False
    display_rank: int = DEFAULT_RANK

    def pool(self, bank: ExemplarBank) -> ClassPool:
        c_lo, c_hi = bank.class_range(self.class_split)
        e_lo, e_hi = bank.exemplar_range(self.exemplar_split)
        if self.max_classes is not None:
            c_hi = min(c_hi, c_lo + self.max_classes)
        if self.max_exemplars is not None:
            e_hi = min(e_hi, e_lo + self.max_exemplars)
        if c_hi - c_lo < self.sequence.min_classes():
            raise ConfigError(f"evaluator {self.name!r} needs >= {self.sequence.min_classes()} classes, "
                              f"the {self.class_split} split gives {c_hi - c_lo}")
        return ClassPool(c_lo, c_hi, e_lo, e_hi)


# The five strategy evaluators of the ctx-2 and ctx-8 suites, the same in both: Flip separates ICL from CIWL best,
# so figures open on it; pure IWL scores 0 in context by definition, so its curve is full-vocabulary accuracy.
# Patching pairs: Flip against its unflipped (Train) sequence, ICL against its labels swapped (and, for path
# patching, its exemplars swapped), CIWL against its overwritten label restored (pure IWL); ``analysis/pairs.py``.
MEANING: dict[str, dict] = {
    "train": dict(colour="black", display_rank=2),
    "icl": dict(colour="#1f77b4", patch_pairs=("icl_swap", "exemplar_swap"), progress=True, display_rank=3),
    "flip": dict(colour="#d62728", patch_pairs=("flip_vs_train",), progress=True, display_rank=0),
    "ciwl": dict(colour="#2ca02c", patch_pairs=("ciwl_vs_iwl",), progress=True, display_rank=1),
    "iwl": dict(colour="#9467bd", headline_metric="acc", display_rank=4),
}


def _ctx2() -> tuple[EvaluatorSpec, ...]:
    bursty = SequenceSpec(context_len=2, burstiness=1)
    support_free = SequenceSpec(context_len=2, burstiness=0, no_support=True, unique_rest=True)
    return (
        EvaluatorSpec("train", bursty, **MEANING["train"]),
        EvaluatorSpec("icl", replace(bursty, relabel="01"), **MEANING["icl"]),
        EvaluatorSpec("flip", replace(bursty, relabel="flip"), **MEANING["flip"]),
        EvaluatorSpec("ciwl", replace(support_free, assign_query_label_random=True), **MEANING["ciwl"]),
        EvaluatorSpec("iwl", support_free, **MEANING["iwl"]),
    )


def _ctx8() -> tuple[EvaluatorSpec, ...]:
    def spec(b: int, **kw) -> SequenceSpec:
        return SequenceSpec(context_len=8, burstiness=b, **kw)

    free = dict(no_support=True, unique_rest=True)
    common = dict(max_classes=None, max_exemplars=None, n_seqs=1000)
    return (
        EvaluatorSpec("b2_train", spec(2), **common, colour="#7f7f7f"),
        EvaluatorSpec("train", spec(3), **common, **MEANING["train"]),
        EvaluatorSpec("ciwl", spec(0, assign_query_label_random=True, **free), **common, **MEANING["ciwl"]),
        EvaluatorSpec("flip", spec(4, relabel="flip"), **common, **MEANING["flip"]),
        EvaluatorSpec("icl", spec(4, relabel="01"), **common, **MEANING["icl"]),
        EvaluatorSpec("iwl", spec(0, **free), **common, **MEANING["iwl"]),
    )


MAX_EVAL_SEQS = 1 << 20  # sequences per evaluator; the reference uses 5000 (ctx2) and 1000 (ctx8)
MAX_EVAL_BATCH = 1 << 20

@cache
def ih24_fewshot() -> SequenceSpec:
    """IH24's training data and relabelling: ctx 2, B 1, 5 labels, label pairs split 8 train / 2 val (seed 20). A
    function, not a constant: checking the split draws it with torch, which importing this module must not need."""
    return SequenceSpec(context_len=2, burstiness=1, relabel="fewshot", fewshot_labels=5, fewshot_split=(8, 2, 0))


def _ih24() -> tuple[EvaluatorSpec, ...]:
    """ih_paper_runs.sh: 1000 sequences each over whole splits (train classes 0-49, exemplar 0; val exemplars 1-4;
    test classes). Only ``fsl_val_rl`` uses the held-out label pairs; the rest relabel with the train pairs."""
    common, fewshot = dict(max_classes=None, max_exemplars=None, n_seqs=1000), ih24_fewshot()
    return (
        EvaluatorSpec("fsl_train", fewshot, **common),
        EvaluatorSpec("fsl_val_rl", replace(fewshot, fewshot_pairs="val"), **common),
        EvaluatorSpec("fsl_train_valex", fewshot, exemplar_split="val", **common),
        EvaluatorSpec("fsl_test_class", fewshot, class_split="test", **common),
    )


# Reference names: train = train_eval, icl = icl, flip = flip_icl, ciwl = iwl_copy_avail, iwl = pure_iwl.
SUITES = {"ctx2": _ctx2, "ctx8": _ctx8, "ih24": _ih24}


def spec_for(name: str, specs: Mapping[str, EvaluatorSpec] | None = None) -> EvaluatorSpec:
    """The evaluator called ``name``: from ``specs`` (a run's own) if given and there, else the first built-in suite
    that has it (ctx2, ctx8, ih24), else a plain spec (default headline metric, colour and rank; no pairs). Plots
    and tables carry only evaluator names; this is how they learn what an evaluator means."""
    if specs is not None and name in specs:
        return specs[name]
    found = _builtin(name)
    return found if found is not None else EvaluatorSpec(name, SequenceSpec(context_len=2, burstiness=0))


@cache
def _builtin(name: str) -> EvaluatorSpec | None:
    for suite in SUITES.values():
        for spec in suite():
            if spec.name == name:
                return spec
    return None


def display_order(names: Iterable[str], specs: Mapping[str, EvaluatorSpec] | None = None) -> list[str]:
    """``names`` by their specs' ``display_rank`` (ties keep the given order): the first is what a figure that
    shows one evaluator at a time opens on."""
    names = list(names)
    return sorted(names, key=lambda n: spec_for(n, specs).display_rank)


def progress_metrics(specs: Iterable[EvaluatorSpec]) -> list[tuple[str, str]]:
    """``(evaluator, headline metric)`` of the evaluators the training progress bar shows, in display order."""
    shown = {spec.name: spec for spec in specs if spec.progress}
    return [(name, shown[name].headline_metric) for name in display_order(shown, shown)]


@dataclass(frozen=True)
class EvalConfig:
    """Which suite, how many sequences per evaluator, and the class/exemplar prefix (``None`` keeps the suite's)."""

    suite: str = "ctx2"
    n_seqs: int | None = None
    max_classes: int | None = None
    max_exemplars: int | None = None
    batch_size: int = 1000
    import_path: str | None = None

    def __post_init__(self) -> None:
        if self.suite not in SUITES:
            raise ConfigError(f"eval.suite must be one of {sorted(SUITES)}, got {self.suite!r}")
        for name in ("n_seqs", "max_classes", "max_exemplars"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"eval.{name} must be >= 1 or null, got {value}")
        if self.n_seqs is not None and self.n_seqs > MAX_EVAL_SEQS:
            raise ConfigError(f"eval.n_seqs must be <= {MAX_EVAL_SEQS}, got {self.n_seqs}")
        if not 1 <= self.batch_size <= MAX_EVAL_BATCH:
            raise ConfigError(f"eval.batch_size must be in [1, {MAX_EVAL_BATCH}], got {self.batch_size}")

    def evaluators(self) -> tuple[EvaluatorSpec, ...]:
        overrides = {k: getattr(self, k) for k in ("n_seqs", "max_classes", "max_exemplars")
                     if getattr(self, k) is not None}
        return tuple(replace(spec, **overrides) for spec in SUITES[self.suite]())


def check_pair_splits(evaluators: tuple[EvaluatorSpec, ...], training: tuple[SequenceSpec, ...]) -> None:
    """An evaluator that scores held-out label pairs is meaningful only if training relabels with the same labels and
    split (the reference has one ``fs_relabel``/``fs_relabel_split`` per run); refuse a suite that does not match."""
    def split_of(spec: SequenceSpec) -> tuple:
        return spec.fewshot_labels, tuple(spec.fewshot_split), spec.fewshot_split_seed

    trained = {split_of(s) for s in training if s.relabel == "fewshot" and s.fewshot_split is not None}
    for evaluator in evaluators:
        spec = evaluator.sequence
        if spec.relabel == "fewshot" and spec.fewshot_split is not None and split_of(spec) not in trained:
            labels, shares, seed = split_of(spec)
            raise ConfigError(f"evaluator {evaluator.name!r} relabels with {labels} labels, pairs split {shares} "
                              f"(seed {seed}); the training mixture must relabel the same way (task.mixture: "
                              f"relabel='fewshot', fewshot_labels={labels}, fewshot_split={list(shares)})")


def build_eval_sets(specs: tuple[EvaluatorSpec, ...], bank: ExemplarBank, eval_seed: int) -> dict[str, SequenceBatch]:
    """Each evaluator draws from its own generator (``eval_seed``, evaluator index), so adding one changes no other."""
    import torch
    sets = {}
    for index, spec in enumerate(specs):
        gen = torch.Generator().manual_seed(eval_seed * 1_000_003 + index)
        sets[spec.name] = sample_sequences(spec.sequence, spec.pool(bank), spec.n_seqs, gen)
    return sets


def eval_sets_tensors(sets: dict[str, SequenceBatch]) -> dict[str, torch.Tensor]:
    """Flatten to ``{"<evaluator>/<field>": tensor}`` for safetensors."""
    return {f"{name}/{field}": getattr(batch, field).contiguous()
            for name, batch in sets.items() for field in SequenceBatch.FIELDS}


EVAL_SETS_LAYOUT = TensorLayout(dtypes=frozenset({"I64"}), max_tensors=4 * 64, max_bytes=1 << 30)


def load_eval_sets(path: Path, bank_fingerprint: str | None = None, expected_bytes: int | None = None,
                   expected_sha256: str | None = None) -> dict[str, SequenceBatch]:
    """Read eval sets written by a run (or exported): int64 index tables only, size and header checked before the
    data is read (``bounded``); refuse ones drawn from a different bank. Check them against the bank with
    ``check_eval_sets`` before use."""
    from safetensors.torch import load

    data, header = read_safetensors(path, "eval sets", EVAL_SETS_LAYOUT, expected_bytes, expected_sha256)
    metadata = header.get("__metadata__", {})
    try:
        tensors = load(data)
    except (SafetensorError, ValueError) as err:
        raise DataError(f"cannot read eval sets {path}: {str(err).strip().splitlines()[0]}") from None
    return eval_sets_from_tensors(tensors, metadata, str(path), bank_fingerprint)


def eval_sets_from_tensors(tensors: dict[str, torch.Tensor], metadata: dict[str, str], source: str,
                           bank_fingerprint: str | None = None) -> dict[str, SequenceBatch]:
    """``{"<evaluator>/<field>": tensor}`` back to batches; each evaluator needs all four fields, of one 2-D shape."""
    recorded = metadata.get("bank_fingerprint")
    if recorded is None and "coopetition" in metadata:  # written through store.save_tensors: JSON metadata
        meta = parse_json(metadata["coopetition"], f"eval sets {source} metadata", depth=4)
        recorded = meta.get("bank_fingerprint") if isinstance(meta, dict) else None
    if bank_fingerprint and recorded not in (None, bank_fingerprint):
        raise DataError(f"eval sets {source} were drawn from bank {recorded}, this run's bank is {bank_fingerprint}")
    names = sorted({key.split("/")[0] for key in tensors})
    sets = {}
    for name in names:
        fields = [tensors.get(f"{name}/{f}") for f in SequenceBatch.FIELDS]
        if any(t is None for t in fields):
            raise DataError(f"eval sets {source} lack a field of evaluator {name!r} (need {SequenceBatch.FIELDS})")
        if fields[0].ndim != 2 or any(t.shape != fields[0].shape for t in fields):
            raise DataError(f"eval sets {source}: evaluator {name!r} fields are not one 2-D shape")
        sets[name] = SequenceBatch(*fields)
    unknown = set(tensors) - {f"{n}/{f}" for n in names for f in SequenceBatch.FIELDS}
    if unknown:
        raise DataError(f"eval sets {source} hold unexpected tensor(s) {sorted(unknown)[:3]}")
    return sets


def check_eval_sets(sets: dict[str, SequenceBatch], specs: tuple[EvaluatorSpec, ...], bank: ExemplarBank,
                    n_labels: int, source: str) -> dict[str, SequenceBatch]:
    """Refuse stored sets that could not have been drawn for this run: every evaluator of ``specs`` present with its
    context length, at most ``MAX_EVAL_SEQS`` rows, and every index inside the bank, the label table and the item
    types (an out-of-range index would be an IndexError deep in a forward pass)."""
    lengths = {spec.name: spec.sequence.context_len + 1 for spec in specs}
    missing = sorted(set(lengths) - set(sets))
    if missing:
        raise DataError(f"eval sets {source} lack evaluator(s) {missing} of this run's suite")
    for name, batch in sets.items():
        n, items = batch.classes.shape
        if name in lengths and items != lengths[name]:
            raise DataError(f"eval sets {source}: evaluator {name!r} has {items} items per sequence, "
                            f"its context needs {lengths[name]}")
        if not 1 <= n <= MAX_EVAL_SEQS or not 2 <= items <= 16:
            raise DataError(f"eval sets {source}: evaluator {name!r} has shape {[n, items]}")
        for field, high in (("classes", bank.n_classes), ("exemplars", bank.n_exemplars), ("labels", n_labels),
                            ("types", 4)):
            values = getattr(batch, field)
            if values.min() < 0 or values.max() >= high:
                raise DataError(f"eval sets {source}: evaluator {name!r} has {field} outside [0, {high})")
    return sets
