"""``Run``: the one handle on a run directory, for analyses (``analyze``'s ``context.run``), recipes and notebooks
(the library's front door: README, "Python API").

It answers what a reader asks of a run: its typed config and manifest, which steps were saved, the bank, the eval
sets, and the network that ran at a step. Everything is read through the run's manifest (``store.reader``: every
file contained, size and sha256 checked) and built by the same code that built the run for training
(``store.build``, ``store.evalsets``, ``store.sources``), so ``network_at(step)`` is the network that was trained and
evaluated at that step, its interventions and grafts included, never a freshly initialised one
(``coopetition.model.build_model`` alone returns untrained weights).

Analyses build the model once per run and load every checkpoint's state dict into it (``build_model``,
``intervened``, ``load_checkpoint``: building the network costs more than loading 2M floats); the notebook methods
(``model_at``, ``network_at``) give a new model per call, so two steps can be compared side by side.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch

from coopetition.bank import ExemplarBank
from coopetition.config import RunConfig
from coopetition.errors import CorruptCheckpointWarning, DataError
from coopetition.interventions import Intervened, Intervention, validated
from coopetition.store.atomic import atomic_write
from coopetition.store.build import checkpoint_bytes_bound, derive_sizes, load_run_bank, model_for
from coopetition.store.checkpoint import CheckpointInfo, load_tensors
from coopetition.store.evalsets import stored_eval_sets
from coopetition.store.manifest import Manifest
from coopetition.store.reader import RunReader
from coopetition.store.sources import extra_graft_models, run_graft_models
from coopetition.task.evalset import EvalData
from coopetition.task.evaluators import EvaluatorSpec
from coopetition.task.sampler import SequenceBatch, sample_sequences

if TYPE_CHECKING:  # TransformerLens is imported on first use (coopetition.model)
    from coopetition.model import ICLTransformer


def load_checkpoint(model: ICLTransformer, info: CheckpointInfo, device: str | torch.device = "cpu") -> None:
    """Load ``info`` into ``model``: size, sha256 and the model's own state-dict layout are checked first."""
    state, _ = load_tensors(info.path, device, info.bytes, info.sha256, model.checkpoint_layout())
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[-1].strip()
        raise DataError(f"checkpoint {info.path} does not fit the run's model ({first})") from None


class Run:
    """A finished (or still training) run directory: ``Run.open(path)``, then ``config``, ``steps``,
    ``network_at(step)`` and ``eval_batch(evaluator)`` (notebooks), or ``build_model``, ``intervened`` and
    ``eval_data`` (analyses, which load each of ``checkpoints`` into one model).

    Only checkpoints the manifest lists and whose bytes match it are offered (a run still training shows its
    committed ones); a damaged one is left out of ``checkpoints`` and ``steps``, and ``skipped`` says why
    (``report_skipped`` tells the user)."""

    def __init__(self, path: Path, config: RunConfig, checkpoints: tuple[CheckpointInfo, ...],
                 skipped: tuple[tuple[CheckpointInfo, str], ...] = (), device: str | torch.device = "cpu"):
        self.path, self.config, self.device = Path(path), config, torch.device(device)
        self.checkpoints = tuple(sorted(checkpoints, key=lambda info: info.step))
        self.skipped = skipped
        self._bank: ExemplarBank | None = None

    @classmethod
    def open(cls, path: str | Path, device: str | torch.device = "cpu", verify: bool = True) -> "Run":
        """Open run ``path``: its config re-validated (an edited config.json stops here, before anything is built),
        its listed checkpoints verified against the manifest (a listed multi-gigabyte file is refused before it is
        hashed). ``verify=False`` (resume, zoom: they load one checkpoint, and a run of 8 GB would pay for hashing
        every one on each restart) lists the checkpoints whose entries name a file inside the run without reading
        them; ``load_checkpoint`` checks a file's size and sha256 when it is loaded either way."""
        path = Path(path)
        if not path.exists():
            raise DataError(f"run dir {path} does not exist")
        reader = RunReader.open(path)
        config = reader.run_config()
        if verify:
            good, bad = reader.verified_checkpoints(checkpoint_bytes_bound(config, reader.derived()))
        else:
            good, bad = reader.listed_checkpoints()
        return cls(path, config, tuple(good), tuple(bad), device)

    def __repr__(self) -> str:
        steps = self.steps
        span = f"{len(steps)} checkpoints, steps {steps[0]}..{steps[-1]}" if steps else "no checkpoints"
        return f"Run({str(self.path)!r}, {span})"

    def __getstate__(self) -> dict[str, Any]:
        """Pickled (to a spawned analysis worker) without the bank: the worker reads it itself."""
        return {**self.__dict__, "_bank": None}

    @property
    def reader(self) -> RunReader:
        return RunReader(self.path)

    def manifest(self) -> Manifest:
        """The run's typed manifest as it is now (re-read: a run still training commits more)."""
        return self.reader.manifest()

    # ---------------------------------------------------------------------------------------- what was saved
    @property
    def steps(self) -> tuple[int, ...]:
        """The checkpointed steps, ascending."""
        return tuple(info.step for info in self.checkpoints)

    def checkpoint(self, step: int | str) -> CheckpointInfo:
        """The checkpoint at ``step`` (``"last"``: the newest); a step that was not saved is a one-line error."""
        steps = self.steps
        if not steps:
            raise DataError(f"run {self.path} has no complete checkpoint")
        if step == "last":
            step = steps[-1]
        found = {info.step: info for info in self.checkpoints}
        if step not in found:
            near = min(steps, key=lambda s: abs(s - int(step))) if isinstance(step, int) else steps[-1]
            raise DataError(f"run {self.path} has no checkpoint at step {step} (nearest: {near}; {len(steps)} saved, "
                            f"{steps[0]}..{steps[-1]})")
        return found[step]

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
        """The run's ``eval.csv`` (what training measured at every eval step; step, sequences, evaluator, metric,
        value), with the rows ``coopetition zoom`` added merged in."""
        return self.reader.eval_table()

    # ---------------------------------------------------------------------------------------- data
    def evaluator_specs(self) -> dict[str, EvaluatorSpec]:
        return {spec.name: spec for spec in self.config.eval.evaluators()}

    def evaluators(self) -> tuple[str, ...]:
        return tuple(self.evaluator_specs())

    def bank(self) -> ExemplarBank:
        """The run's exemplar bank, checked against the shape and fingerprint the run recorded (read once)."""
        if self._bank is None:
            self._bank = load_run_bank(self.config, self.path)
        return self._bank

    def eval_sets(self, bank: ExemplarBank | None = None) -> dict[str, SequenceBatch]:
        """The stored eval sets, verified against the manifest and checked against the bank and config."""
        return stored_eval_sets(self.path, self.config, bank or self.bank())

    def eval_data(self, bank: ExemplarBank, names: tuple[str, ...], n_seqs: int,
                  device: str | torch.device = "cpu") -> dict[str, EvalData]:
        """The first ``n_seqs`` stored sequences of each evaluator in ``names``, features gathered on ``device``."""
        sets = self.eval_sets(bank)
        features = bank.features.to(device)
        return {name: EvalData.from_batch(name, sets[name].slice(0, n_seqs), features) for name in names}

    def eval_batch(self, evaluator: str, n: int | None = None) -> EvalData:
        """The first ``n`` (default: all) of the fixed sequences ``evaluator`` was scored on during training, read
        from the run's ``eval_sets.safetensors`` (never redrawn), with their exemplar features gathered."""
        sets = self.eval_sets()
        if evaluator not in sets:
            raise DataError(f"run {self.path} has no evaluator {evaluator!r} (it has: {', '.join(sets)})")
        batch = sets[evaluator]
        if n is not None:
            batch = batch.slice(0, n)
        return EvalData.from_batch(evaluator, batch, self.bank().features.to(self.device))

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

    # ---------------------------------------------------------------------------------------- the network
    def build_model(self, bank: ExemplarBank | None = None, device: str | torch.device | None = None,
                    ) -> ICLTransformer:
        """The run's bare model (untrained weights until a checkpoint is loaded: ``load_checkpoint``), in eval mode,
        gradients off (analyses never train; gradients are taken w.r.t. activations)."""
        model = model_for(self.config, derive_sizes(self.config, bank or self.bank()),
                          self.device if device is None else device)
        model.eval()
        for param in model.parameters():
            param.requires_grad_(False)
        return model

    def check_added(self, added: tuple[Intervention, ...]) -> tuple[Intervention, ...]:
        """Interventions an analysis adds on top of the run's own, checked against the run's architecture."""
        return validated(added, self.config.model)

    def intervened(self, bank: ExemplarBank | None = None, device: str | torch.device | None = None,
                   added: tuple[Intervention, ...] = (), model: ICLTransformer | None = None) -> Intervened:
        """The network that ran: the run's model (``model``, or a new one) with its own interventions, grafts
        spliced from the run's kept source checkpoints, and then ``added`` (grafts among them opened from the runs
        they name)."""
        bank = bank or self.bank()
        model = self.build_model(bank, device) if model is None else model
        added = self.check_added(added)
        sources = run_graft_models(self.reader, self.config, model)
        sources += extra_graft_models(added, model, bank.fingerprint())
        return Intervened(model, (*self.config.interventions, *added), sources)

    def model_at(self, step: int | str) -> ICLTransformer:
        """The bare model (no interventions) with the checkpoint's weights, in eval mode, gradients off. A new object
        per call, so two steps can be compared side by side."""
        info = self.checkpoint(step)
        model = self.build_model()
        load_checkpoint(model, info, self.device)
        return model

    def network_at(self, step: int | str) -> Intervened:
        """The network that ran at ``step``: the checkpoint's model with the run's own interventions, grafts spliced
        from the run's kept source checkpoints. Call it like the model (``net(exemplars, context_labels)`` → query
        logits) or ``net.run_cached(exemplars, context_labels)`` → ``(logits, cache)`` (TransformerLens's cached
        run, with the run's interventions on); ``net.model`` is the bare ``HookedTransformer``."""
        return self.intervened(model=self.model_at(step))
