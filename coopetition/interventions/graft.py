"""Grafts: run part of the network with weights frozen from another run's checkpoint (REFERENCE.md 5.2), and
``init_from`` (start from another run's weights with a fresh optimizer).

- ``graft_in:RUN@STEP:K``: the embeddings and blocks 0..K come from the frozen checkpoint; our blocks K+1.., final
  LN and unembedding run on its residual. Only those later parts of our model learn.
- ``graft_out:RUN@STEP:K``: our embeddings and blocks 0..K feed the frozen checkpoint's blocks K+1.., final LN and
  unembedding. Only our embeddings and blocks 0..K learn (C25's ``icl_only_graftl1`` is ``graft_out:MAIN@STEP:0``).

Both are built by splicing modules into one model, so every hook name (and so every other intervention) addresses
the network that actually runs: with ``graft_out:...:0``, ``ablate:1:3`` ablates the frozen layer-1 head 3.
``K`` may be -1 (embeddings only). ``STEP`` is a checkpoint step of RUN or ``last``. The source must have our
architecture, have been trained on the same exemplar bank, and not itself have been trained with interventions.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import nn

from coopetition.errors import ConfigError, CoopetitionError, DataError
from coopetition.interventions.base import Intervention
from coopetition.model import ModelConfig
from coopetition.store.checkpoint import load_tensors, verify_file
from coopetition.store.rundir import RunReader

if TYPE_CHECKING:  # TransformerLens is imported on first use (coopetition.model)
    from coopetition.model import ICLTransformer


@dataclass(frozen=True)
class CheckpointRef:
    """``RUN@STEP``: a run directory and one of its checkpoint steps (``last`` = the latest)."""

    run: str
    step: int | None

    @classmethod
    def parse(cls, text: str) -> "CheckpointRef":
        run, sep, step = text.rpartition("@")
        if not sep or not run:
            raise ConfigError(f"expected a checkpoint as RUN@STEP (or RUN@last), got {text!r}")
        if step == "last":
            return cls(run, None)
        if not step.isdigit():
            raise ConfigError(f"checkpoint step must be an integer or 'last', got {step!r} in {text!r}")
        return cls(run, int(step))

    def __str__(self) -> str:
        return f"{self.run}@{'last' if self.step is None else self.step}"

    def checkpoint_path(self) -> tuple[Path, int]:
        try:
            reader = RunReader.open(Path(self.run))
        except CoopetitionError:
            raise ConfigError(f"checkpoint {self}: {self.run} is not a coopetition run (no config.json)") from None
        steps = {info.step: info for info in reader.checkpoints()}
        if not steps:
            raise ConfigError(f"checkpoint {self}: the run has no checkpoints")
        step = max(steps) if self.step is None else self.step
        if step not in steps:
            near = sorted(steps, key=lambda s: abs(s - step))[:3]
            raise ConfigError(f"checkpoint {self}: no checkpoint at step {step}; nearest: {sorted(near)}")
        info = steps[step]
        reason = verify_file(info.path, info.bytes, info.sha256)
        if reason:
            raise DataError(f"checkpoint {self}: corrupt file {info.path}: {reason}")
        return info.path, step


def load_source(ref: CheckpointRef, like: ICLTransformer, bank_fingerprint: str | None, purpose: str,
                allow_intervened: bool = False) -> ICLTransformer:
    """The checkpoint as a model of ``like``'s architecture, on its device; every mismatch is a ConfigError."""
    from coopetition.config import config_from_dict  # config validates specs with this package: import late

    path, _ = ref.checkpoint_path()
    meta = RunReader.open(Path(ref.run)).config()
    source = config_from_dict(meta["config"])
    derived = meta.get("derived", {})
    ours = {**_arch(like.model_config), "input_dim": like.input_dim, "n_labels": like.n_labels,
            "n_outputs": like.n_outputs}
    theirs = {**_arch(source.model), **{k: derived.get(k) for k in ("input_dim", "n_labels", "n_outputs")}}
    differ = [f"{k} {theirs[k]} vs ours {ours[k]}" for k in ours if theirs[k] != ours[k]]
    if differ:
        raise ConfigError(f"{purpose} checkpoint {ref} has a different architecture: {', '.join(differ)}")
    theirs_bank = derived.get("bank_fingerprint")
    if bank_fingerprint is not None and theirs_bank != bank_fingerprint:
        raise ConfigError(f"{purpose} checkpoint {ref} was trained on another exemplar bank "
                          f"(fingerprint {theirs_bank} vs ours {bank_fingerprint})")
    if source.interventions and not allow_intervened:
        raise ConfigError(f"{purpose} checkpoint {ref} was trained with interventions {list(source.interventions)}; "
                          f"grafting from an intervened run is not supported")
    from coopetition.model import build_model  # TransformerLens on first use

    device = next(like.parameters()).device
    model = build_model(source.model, like.input_dim, like.n_labels, like.n_outputs, init_seed=0, device=device)
    tensors, _ = load_tensors(path, device)
    model.load_state_dict(tensors)
    return model


def _arch(config: ModelConfig) -> dict:
    """The fields that decide which weights mean what (the init scale does not)."""
    return {k: v for k, v in dataclasses.asdict(config).items() if k != "init_rescale"}


def freeze(model: ICLTransformer) -> ICLTransformer:
    model.requires_grad_(False)
    return model.eval()


def splice(front: ICLTransformer, back: ICLTransformer, layer: int) -> ICLTransformer:
    """One model sharing (not copying) ``front``'s embeddings and blocks 0..layer and ``back``'s later blocks,
    final LN and unembedding, with its hook points registered under the usual names."""
    from coopetition.model import ICLTransformer  # TransformerLens on first use

    device = next(back.parameters()).device
    shell = ICLTransformer(back.model_config, back.input_dim, back.n_labels, back.n_outputs, init_seed=0,
                           device=device)
    shell.embed, shell.pos_embed = front.embed, front.pos_embed
    shell.blocks = nn.ModuleList([*front.blocks[:layer + 1], *back.blocks[layer + 1:]])
    shell.ln_final, shell.unembed = back.ln_final, back.unembed
    shell.setup()
    return shell


@dataclass(frozen=True)
class Graft(Intervention):
    """Base of ``graft_in`` / ``graft_out``: a checkpoint reference and the layer K where the residual crosses."""

    usage: ClassVar[str] = "graft_in|graft_out:RUN@STEP:K  (STEP may be 'last'; K in [-1, n_layers - 1])"
    source: CheckpointRef
    layer: int

    @classmethod
    def parse(cls, args: str) -> "Graft":
        ref, sep, layer = args.rpartition(":")
        if not sep or not layer.lstrip("-").isdigit():
            raise ConfigError(f"expected RUN@STEP:K, got {args!r}")
        return cls(CheckpointRef.parse(ref), int(layer))

    def validate(self, model: ModelConfig) -> None:
        if not -1 <= self.layer < model.n_layers:
            raise ConfigError(f"layer {self.layer} must be in [-1, {model.n_layers - 1}]")

    def splice(self, model: ICLTransformer, source: ICLTransformer) -> ICLTransformer:
        raise NotImplementedError


@dataclass(frozen=True)
class GraftIn(Graft):
    """The residual after block K (embeddings included) is the frozen checkpoint's; ours computes the rest."""

    name: ClassVar[str] = "graft_in"

    def splice(self, model: ICLTransformer, source: ICLTransformer) -> ICLTransformer:
        return splice(source, model, self.layer)


@dataclass(frozen=True)
class GraftOut(Graft):
    """Our residual after block K runs through the frozen checkpoint's later blocks, final LN and unembedding."""

    name: ClassVar[str] = "graft_out"

    def splice(self, model: ICLTransformer, source: ICLTransformer) -> ICLTransformer:
        return splice(model, source, self.layer)


def init_from_checkpoint(model: ICLTransformer, ref_text: str, bank_fingerprint: str | None = None) -> int:
    """Overwrite ``model``'s weights with ``RUN@STEP``'s (same architecture and bank); returns the step loaded.
    The optimizer is the caller's and starts fresh (C25's ``init_from_ciwl_only_*``)."""
    ref = CheckpointRef.parse(ref_text)
    _, step = ref.checkpoint_path()
    source = load_source(ref, model, bank_fingerprint, "init_from", allow_intervened=True)
    with torch.no_grad():
        model.load_state_dict(source.state_dict())
    return step
