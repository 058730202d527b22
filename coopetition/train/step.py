"""One training step, shared by the loop and by ``bench/train_vs_plain.py`` (so the benchmark times what training
runs): draw a batch, forward through the run's interventions, cross-entropy (+ weight penalty), backward, Adam.

The step never reads a value back to the host: it returns the detached loss, which the loop sums on the device.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from coopetition.errors import ConfigError
from coopetition.task.metrics import query_loss
from coopetition.task.sampler import ClassPool, gather_features, sample_mixture
from coopetition.task.sequence import SequenceSpec

# (exemplars, context_labels, target) -> query logits: ``Intervened`` in training, a bare model in benchmarks
Forward = Callable[[Tensor, Tensor, Tensor], Tensor]
# (exemplars, context_labels, target) -> mean query cross-entropy: ``Intervened.loss`` (the fused unembedding + loss)
LossForward = Callable[[Tensor, Tensor, Tensor], Tensor]


def make_optimizer(params: Sequence[nn.Parameter] | Sequence[dict], lr: float, fused: bool = True) -> torch.optim.Adam:
    """The reference's optimizer: Adam, constant ``lr``, default betas and eps. By default PyTorch's fused kernel
    (~5x faster on CPU); ``fused=False`` is the single-tensor kernel that runs written before it was the default
    used, which rounds differently in the last bit (docs/performance.md)."""
    return torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999), eps=1e-8, fused=True if fused else None)


CLASS_SPECIFIC = {"unembed.W_U": "unembed", "unembed.b_U": "unembed", "embed.W_L": "label"}


def lr_groups(named: Sequence[tuple[str, nn.Parameter]], lr: float, unembed_scale: float = 1.0,
              label_scale: float = 1.0, label_own_group: bool = False) -> list[nn.Parameter] | list[dict]:
    """Adam's parameter groups for ``train.unembed_lr_scale`` / ``train.label_lr_scale`` (issue 27, H1): the
    unembedding and the label table at ``lr * scale``, everything else at ``lr``. At scales 1 it is the plain
    parameter list, so the optimizer (and its state dict) is the one every earlier run had."""
    params = [p for _, p in named]
    if unembed_scale == 1.0 and label_scale == 1.0 and not label_own_group:
        return params
    scale = {"unembed": unembed_scale, "label": label_scale}
    groups: dict[tuple, list[nn.Parameter]] = {}
    for name, param in named:
        kind = CLASS_SPECIFIC.get(name, "")
        key = ("label",) if label_own_group and kind == "label" else (scale.get(kind, 1.0),)
        groups.setdefault(key, []).append(param)
    return [{"params": group, "lr": lr * (label_scale if key == ("label",) else key[0]),
             **({"name": "label"} if key == ("label",) else {})} for key, group in groups.items()]


def set_lrs(optimizer: torch.optim.Optimizer, base_lrs: Sequence[float], factor: float = 1.0,
            label_lr: float | None = None) -> None:
    """Set every group's learning rate to its rate at construction (``base_lrs``, in group order) times ``factor``
    (``train.lr_decay``); the label table's own group (``lr_groups(..., label_own_group=True)``) takes ``label_lr``
    instead of its base where one is given (``train.label_lr_ramp``). Rates are set from the step alone, so a resumed
    run sets the same ones."""
    for group, base in zip(optimizer.param_groups, base_lrs, strict=True):
        own = label_lr if label_lr is not None and group.get("name") == "label" else base
        group["lr"] = own * factor


def ramp_value(step: int, before: float, after: float, begin: int, end: int) -> float:
    """``before`` until ``begin``, ``after`` from ``end``, linear in between. Both step schedules (the label table's
    ramp and the rate decay) are this one shape, read from the step alone so that a resume is exact."""
    if step <= begin:
        return before
    if step >= end:
        return after
    return before + (after - before) * (step - begin) / (end - begin)


def label_scale_at(step: int, scale: float, ramp: tuple[float, int, int] | None) -> float:
    """The label table's learning-rate scale at ``step`` under ``train.label_lr_ramp`` (``scale`` without one)."""
    if ramp is None:
        return scale
    start, begin, end = ramp
    return ramp_value(step, start, scale, begin, end)


def lr_factor_at(step: int, decay) -> float:
    """The factor on every learning rate at ``step`` under ``train.lr_decay`` (1 without one): one
    ``(end_factor, from_step, to_step)`` segment or several in step order, each ramping from the factor the one
    before it reached."""
    if decay is None:
        return 1.0
    factor = 1.0
    for end, begin, stop in ((decay,) if not isinstance(decay[0], tuple) else decay):
        if step <= begin:
            return factor
        if step < stop:
            return ramp_value(step, factor, end, begin, stop)
        factor = end
    return factor


def compiled_forward(forward) -> Forward:
    """``torch.compile`` of an ``Intervened`` network for the training step. Hook interventions install hooks on
    every pass, which a compiled graph would not see, so they are refused (grafts only splice modules: fine)."""
    if forward.edits:
        raise ConfigError("train.compile works only without hook interventions (grafts are fine); "
                          f"got {', '.join(e.name for e in forward.edits)}")
    network = torch.compile(forward.network)
    return lambda exemplars, context_labels, target: network(exemplars, context_labels)


def compiled_loss(forward) -> LossForward:
    """``train.compile`` with ``train.fused_loss``: ``torch.compile`` of the network up to the final LayerNorm's
    query row, then the fused unembedding + loss (an autograd Function that inductor would only run opaquely)."""
    if forward.edits:
        raise ConfigError("train.compile works only without hook interventions (grafts are fine); "
                          f"got {', '.join(e.name for e in forward.edits)}")
    network = forward.network
    trunk = torch.compile(network.query_normalized)
    return lambda exemplars, context_labels, target: network.loss_from(trunk(exemplars, context_labels), target)


def reference_arrays(named: Iterable[tuple[str, Tensor]]) -> list[list[Tensor]]:
    """Group our tensors into the reference's parameter arrays (the leaves its weight penalty sums over).

    The reference has one fused, bias-free QKV matrix per layer where TransformerLens has ``W_Q``/``W_K``/``W_V``, so
    those three form one array; every other tensor is an array of its own (exemplar-embed weight and bias, label
    table, APE table, each LN scale and shift, out-projection, MLP weights and biases, final LN, unembed weight and
    bias). Grouping goes by name, so a subset (the trainable part of a grafted model) groups the same way."""
    groups: dict[str, list[Tensor]] = {}
    for name, tensor in named:
        key = _FUSED_QKV.sub(r"\1.W_QKV", name)
        groups.setdefault(key, []).append(tensor)
    return list(groups.values())


_FUSED_QKV = re.compile(r"^(blocks\.\d+\.attn)\.W_[QKV]$")


def parameter_names(model: nn.Module, params: Sequence[nn.Parameter]) -> list[tuple[str, nn.Parameter]]:
    """``params`` with their names in ``model`` (for ``reference_arrays``); each must be one of its parameters."""
    names = {id(p): n for n, p in model.named_parameters()}
    return [(names[id(p)], p) for p in params]


def weight_penalty(arrays: Sequence[Sequence[Tensor]], form: str) -> Tensor:
    """``sum ||theta||^2`` over every tensor (``l2``), or the reference's ``sum_arrays ||array||_2`` (``unsquared``,
    main.py L81: a group lasso over its parameter arrays; a fused QKV array's norm is
    sqrt(||W_Q||^2 + ||W_K||^2 + ||W_V||^2), not the sum of three norms)."""
    if form == "l2":
        return torch.stack([t.pow(2).sum() for array in arrays for t in array]).sum()
    # the norm of the parts' norms: no concatenated copy, and a zero tensor (a bias at init) has gradient 0, not nan
    return torch.stack([torch.stack([t.norm() for t in array]).norm() for array in arrays]).sum()


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
    # ``trainable`` named as in the model (``parameter_names``), so the penalty sees the reference's arrays; without
    # names each tensor counts as one array, which differs from the reference only for the unsquared form
    named_trainable: Sequence[tuple[str, nn.Parameter]] | None = None
    # the loss straight from the inputs (``Intervened.loss``: train.fused_loss); None: ``query_loss`` of
    # ``forward``'s logits. Not used under amp (the fused kernel is float32)
    loss_forward: LossForward | None = None

    def __post_init__(self) -> None:
        self.specs, self.weights = list(self.specs), list(self.weights)
        if self.named_trainable is None:
            self.penalty_arrays = [[p] for p in self.trainable]
        else:
            if [id(p) for _, p in self.named_trainable] != [id(p) for p in self.trainable]:
                raise ValueError("named_trainable must name exactly the trainable tensors, in order")
            self.penalty_arrays = reference_arrays(self.named_trainable)

    def __call__(self) -> Tensor:
        batch = sample_mixture(self.specs, self.weights, self.pool, self.batch_size, self.gen, self.features.device)
        exemplars = gather_features(self.features, batch)
        if self.loss_forward is not None and not self.amp:
            loss = self.loss_forward(exemplars, batch.context_labels, batch.target)
        else:
            with torch.autocast(self.features.device.type, dtype=torch.bfloat16, enabled=self.amp):
                logits = self.forward(exemplars, batch.context_labels, batch.target)
            loss = query_loss(logits.float(), batch.target)  # .float() is a no-op (no graph node) without amp
        total = loss
        if self.weight_decay:
            total = loss + self.weight_decay * weight_penalty(self.penalty_arrays, self.weight_decay_form)
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.optimizer.step()
        return loss.detach()
