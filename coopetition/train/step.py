"""One training step, shared by the loop and by ``bench/train_vs_plain.py`` (so the benchmark times what training
runs): draw a batch, forward through the run's interventions, cross-entropy (+ weight penalty), backward, Adam.

The step never reads a value back to the host: it returns the detached loss, which the loop sums on the device.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from coopetition.errors import ConfigError
from coopetition.task.metrics import query_loss
from coopetition.task.sampler import ClassPool, gather_features, sample_mixture
from coopetition.task.sequence import SequenceSpec

# (exemplars, context_labels, target) -> query logits: ``Intervened`` in training, a bare model in benchmarks
Forward = Callable[[Tensor, Tensor, Tensor], Tensor]


def make_optimizer(params: Sequence[nn.Parameter], lr: float, fused: bool = False) -> torch.optim.Adam:
    """The reference's optimizer: Adam, constant ``lr``, default betas and eps. By default PyTorch's single-tensor
    kernel (what every seeded run so far was trained with); ``fused`` is ~5x faster on CPU but rounds differently
    in the last bit (docs/performance.md)."""
    return torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999), eps=1e-8, fused=True if fused else None)


def compiled_forward(forward) -> Forward:
    """``torch.compile`` of an ``Intervened`` network for the training step. Hook interventions install hooks on
    every pass, which a compiled graph would not see, so they are refused (grafts only splice modules: fine)."""
    if forward.edits:
        raise ConfigError("train.compile works only without hook interventions (grafts are fine); "
                          f"got {', '.join(e.name for e in forward.edits)}")
    network = torch.compile(forward.network)
    return lambda exemplars, context_labels, target: network(exemplars, context_labels)


def weight_penalty(params: Sequence[Tensor], form: str) -> Tensor:
    """``sum ||theta||^2`` (``l2``) or the reference's ``sum ||theta_leaf||_2`` over parameter arrays."""
    norms = [p.pow(2).sum() if form == "l2" else p.norm() for p in params]
    return torch.stack(norms).sum()


@dataclass
class TrainStep:
    """Callable: one optimizer step on a fresh batch of ``batch_size`` sequences; returns the detached loss."""

    forward: Forward
    optimizer: torch.optim.Optimizer
    trainable: list[nn.Parameter]
    features: Tensor  # the bank, on the training device
    pool: ClassPool
    specs: Sequence[SequenceSpec]
    weights: Sequence[float]
    batch_size: int
    gen: torch.Generator
    weight_decay: float = 0.0
    weight_decay_form: str = "l2"
    amp: bool = False  # bfloat16 autocast around the forward; the loss is taken in float32

    def __post_init__(self) -> None:
        self.specs, self.weights = list(self.specs), list(self.weights)

    def __call__(self) -> Tensor:
        batch = sample_mixture(self.specs, self.weights, self.pool, self.batch_size, self.gen, self.features.device)
        with torch.autocast(self.features.device.type, dtype=torch.bfloat16, enabled=self.amp):
            logits = self.forward(gather_features(self.features, batch), batch.context_labels, batch.target)
        loss = query_loss(logits.float(), batch.target)  # .float() is a no-op (no graph node) without amp
        total = loss
        if self.weight_decay:
            total = loss + self.weight_decay * weight_penalty(self.trainable, self.weight_decay_form)
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.optimizer.step()
        return loss.detach()
