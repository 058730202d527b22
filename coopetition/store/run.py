"""``Run``: a trained run opened from Python, the library's front door (README, "Python API").

It answers the questions a notebook asks first: what was the config, which steps were saved, what network ran at a
step, and which sequences an evaluator scored. Everything is read through the run's manifest (sizes and sha256
checked) and built by the run's own setup code (``train.setup``, ``train.sources``), so ``network_at(step)`` is the
network that was trained and evaluated at that step, its interventions and grafts included, never a freshly
initialised one (``coopetition.model.build_model`` alone returns untrained weights).

Analyses open runs through ``analysis.loading.LoadedRun`` today; it shares this module's ``load_checkpoint``
(and ``task.evalset.EvalData``), and is meant to move onto this handle.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from coopetition.bank import ExemplarBank
from coopetition.config import RunConfig
from coopetition.errors import DataError
from coopetition.store.checkpoint import CheckpointInfo, load_tensors
from coopetition.store.rundir import RunReader
from coopetition.task.evalset import EvalData

if TYPE_CHECKING:  # TransformerLens is imported on first use (coopetition.model)
    from coopetition.interventions import Intervened
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
    """A finished (or still training) run directory. ``Run.open(path)``, then ``config``, ``steps``,
    ``network_at(step)`` and ``eval_batch(evaluator)``.

    Only checkpoints the manifest lists and whose bytes match it are offered; a damaged one is left out of
    ``steps`` (``skipped`` says why)."""

    def __init__(self, path: Path, config: RunConfig, checkpoints: tuple[CheckpointInfo, ...],
                 skipped: tuple[tuple[CheckpointInfo, str], ...], device: str | torch.device):
        self.path, self.config, self.device = path, config, torch.device(device)
        self._checkpoints = {info.step: info for info in checkpoints}
        self.skipped = skipped

    @classmethod
    def open(cls, path: str | Path, device: str | torch.device = "cpu") -> "Run":
        from coopetition.train.setup import checkpoint_bytes_bound

        path = Path(path)
        if not path.exists():
            raise DataError(f"run dir {path} does not exist")
        reader = RunReader.open(path)
        config = reader.run_config()  # re-validated: an edited config.json stops here
        good, bad = reader.verified_checkpoints(checkpoint_bytes_bound(config, reader.derived()))
        return cls(path, config, tuple(good), tuple(bad), device)

    def __repr__(self) -> str:
        steps = self.steps
        span = f"{len(steps)} checkpoints, steps {steps[0]}..{steps[-1]}" if steps else "no checkpoints"
        return f"Run({str(self.path)!r}, {span})"

    @property
    def steps(self) -> tuple[int, ...]:
        """The checkpointed steps, ascending."""
        return tuple(sorted(self._checkpoints))

    def checkpoint(self, step: int | str) -> CheckpointInfo:
        """The checkpoint at ``step`` (``"last"``: the newest); a step that was not saved is a one-line error."""
        steps = self.steps
        if not steps:
            raise DataError(f"run {self.path} has no complete checkpoint")
        if step == "last":
            step = steps[-1]
        if step not in self._checkpoints:
            near = min(steps, key=lambda s: abs(s - int(step))) if isinstance(step, int) else steps[-1]
            raise DataError(f"run {self.path} has no checkpoint at step {step} (nearest: {near}; {len(steps)} saved, "
                            f"{steps[0]}..{steps[-1]})")
        return self._checkpoints[step]

    @cached_property
    def bank(self) -> ExemplarBank:
        """The run's exemplar bank, checked against the fingerprint the run recorded."""
        from coopetition.train.setup import load_run_bank

        return load_run_bank(self.config, self.path)

    def model_at(self, step: int | str) -> ICLTransformer:
        """The bare model (no interventions) with the checkpoint's weights, in eval mode, gradients off. A new object
        per call, so two steps can be compared side by side."""
        from coopetition.train.setup import derive_sizes, model_for

        info = self.checkpoint(step)
        model = model_for(self.config, derive_sizes(self.config, self.bank), self.device)
        load_checkpoint(model, info, self.device)
        model.eval()
        for param in model.parameters():
            param.requires_grad_(False)
        return model

    def network_at(self, step: int | str) -> Intervened:
        """The network that ran at ``step``: the checkpoint's model with the run's own interventions, grafts spliced
        from the run's kept source checkpoints. Call it like the model (``net(exemplars, context_labels)`` → query
        logits) or ``net.run_cached(exemplars, context_labels)`` → ``(logits, cache)`` (TransformerLens's cached
        run, with the run's interventions on); ``net.model`` is the bare ``HookedTransformer``."""
        from coopetition.interventions import Intervened
        from coopetition.train.sources import run_graft_models

        model = self.model_at(step)
        sources = run_graft_models(RunReader(self.path), self.config, model)
        return Intervened(model, self.config.interventions, sources)

    def evaluators(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.config.eval.evaluators())

    def eval_batch(self, evaluator: str, n: int | None = None) -> EvalData:
        """The first ``n`` (default: all) of the fixed sequences ``evaluator`` was scored on during training, read
        from the run's ``eval_sets.safetensors`` (never redrawn), with their exemplar features gathered."""
        from coopetition.train.setup import stored_eval_sets

        sets = stored_eval_sets(self.path, self.config, self.bank)
        if evaluator not in sets:
            raise DataError(f"run {self.path} has no evaluator {evaluator!r} (it has: {', '.join(sets)})")
        batch = sets[evaluator]
        if n is not None:
            batch = batch.slice(0, n)
        return EvalData.from_batch(evaluator, batch, self.bank.features.to(self.device))

    def eval_table(self):
        """The run's ``eval.csv`` as a DataFrame (step, sequences, evaluator, metric, value)."""
        return RunReader(self.path).eval_table()
