"""From a run directory to what analyses consume: its config, checkpoints, the network that ran, and the evaluator
sequences with their features gathered.

The model is built once per run and every checkpoint's state dict is loaded into it (building the network
costs more than loading 2M floats). The run's own setup code (``train.setup``) builds it, and ``intervened`` wraps it
with the run's own interventions, its grafts spliced from the run's kept source checkpoints, so an analysed network
is exactly the one that was trained and evaluated.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import torch

from coopetition.bank import ExemplarBank
from coopetition.config import RunConfig
from coopetition.errors import CorruptCheckpointWarning, DataError
from coopetition.interventions import Intervened, Intervention, validated
from coopetition.store.atomic import atomic_write
from coopetition.store.checkpoint import CheckpointInfo
from coopetition.store.run import EvalData, load_checkpoint  # noqa: F401 (re-exported: analyses import them from here)
from coopetition.store.rundir import RunReader
from coopetition.task.evaluators import EvaluatorSpec
from coopetition.task.sampler import SequenceBatch, sample_sequences
from coopetition.train.setup import checkpoint_bytes_bound, derive_sizes, load_run_bank, model_for, stored_eval_sets
from coopetition.train.sources import extra_graft_models, run_graft_models

if TYPE_CHECKING:  # TransformerLens is imported on first use (coopetition.model)
    from coopetition.model import ICLTransformer


@dataclass(frozen=True)
class LoadedRun:
    """A run opened for analysis. ``bank`` is None until something needs features (strategies does not)."""

    path: Path
    config: RunConfig
    checkpoints: tuple[CheckpointInfo, ...]
    skipped: tuple[tuple[CheckpointInfo, str], ...] = ()

    @classmethod
    def open(cls, path: Path) -> "LoadedRun":
        """Only checkpoints the manifest lists and whose bytes match it (a run still training shows its committed
        ones); a mismatching file goes to ``skipped`` with the reason (``report_skipped`` tells the user)."""
        if not path.exists():
            raise DataError(f"run dir {path} does not exist")
        reader = RunReader.open(path)
        config = reader.run_config()  # re-validated: an edited config.json stops here, before anything is built
        good, bad = reader.verified_checkpoints(checkpoint_bytes_bound(config, reader.derived()))
        return cls(path, config, tuple(good), tuple(bad))

    def report_skipped(self, out_dir: Path) -> tuple[str, ...]:
        """Warn once per skipped checkpoint and list them in ``out_dir/skipped_checkpoints.csv`` (step, file,
        reason; header only when none); returns their paths."""
        for info, reason in self.skipped:
            warnings.warn(f"skipping corrupt checkpoint {info.path} (step {info.step}): {reason}",
                          CorruptCheckpointWarning, stacklevel=2)
        frame = pd.DataFrame([{"step": i.step, "file": str(i.path), "reason": r} for i, r in self.skipped],
                             columns=["step", "file", "reason"])
        atomic_write(out_dir / "skipped_checkpoints.csv", lambda tmp: frame.to_csv(tmp, index=False))
        return tuple(str(info.path) for info, _ in self.skipped)

    def eval_table(self) -> pd.DataFrame:
        """The run's own ``eval.csv`` (what training measured at every eval step)."""
        return RunReader(self.path).eval_table()

    def evaluator_specs(self) -> dict[str, EvaluatorSpec]:
        return {spec.name: spec for spec in self.config.eval.evaluators()}

    def bank(self) -> ExemplarBank:
        """The run's bank, checked against its recorded shape and fingerprint."""
        return load_run_bank(self.config, self.path)

    def build_model(self, bank: ExemplarBank, device: str | torch.device = "cpu") -> ICLTransformer:
        model = model_for(self.config, derive_sizes(self.config, bank), device)
        model.eval()
        for param in model.parameters():  # analyses never train; gradients are taken w.r.t. activations
            param.requires_grad_(False)
        return model

    def check_added(self, added: tuple[Intervention, ...]) -> tuple[Intervention, ...]:
        """Interventions an analysis adds on top of the run's own, checked against the run's architecture."""
        return validated(added, self.config.model)

    def intervened(self, bank: ExemplarBank, device: str | torch.device = "cpu",
                   added: tuple[Intervention, ...] = ()) -> Intervened:
        """The network that ran: the run's model with its own interventions (grafts from the run's kept source
        checkpoints) and then ``added`` (grafts among them opened from the runs they name)."""
        model = self.build_model(bank, device)
        added = self.check_added(added)
        sources = run_graft_models(RunReader(self.path), self.config, model)
        sources += extra_graft_models(added, model, bank.fingerprint())
        return Intervened(model, (*self.config.interventions, *added), sources)

    def eval_sets(self, bank: ExemplarBank | None = None) -> dict[str, SequenceBatch]:
        """The stored eval sets, verified against the manifest and checked against the bank and config."""
        return stored_eval_sets(self.path, self.config, bank or self.bank())

    def eval_data(self, bank: ExemplarBank, names: tuple[str, ...], n_seqs: int,
                  device: str | torch.device = "cpu") -> dict[str, EvalData]:
        sets = self.eval_sets(bank)
        features = bank.features.to(device)
        return {name: EvalData.from_batch(name, sets[name].slice(0, n_seqs), features) for name in names}

    def probe_data(self, bank: ExemplarBank, names: tuple[str, ...], n_classes: int, n_seqs: int, seed: int,
                   device: str | torch.device = "cpu") -> dict[str, EvalData]:
        """Fresh sequences of each evaluator's distribution restricted to the first ``n_classes`` classes of its
        pool (more if the distribution needs more distinct classes), drawn from ``seed``."""
        specs = self.evaluator_specs()
        features = bank.features.to(device)
        out = {}
        for index, name in enumerate(names):
            spec = specs[name]
            pool = spec.pool(bank)
            k = max(n_classes, spec.sequence.min_classes())
            restricted = type(pool)(pool.class_lo, min(pool.class_hi, pool.class_lo + k), pool.exemplar_lo,
                                    pool.exemplar_hi)
            gen = torch.Generator().manual_seed(seed * 7919 + index)
            out[name] = EvalData.from_batch(name, sample_sequences(spec.sequence, restricted, n_seqs, gen), features)
        return out
