"""Interventions that impose an ideal mechanism (REFERENCE.md 5.2, IH24/C25 "artificial optogenetics"): clamp a
head's attention to an induction, matching or previous-token pattern, or replace the output with a perfect copy
of what one head attends to.

Token positions: exemplar i at ``2i``, its label at ``2i+1``, the query at ``2N`` (the last row of a pattern).
Clamped entries are constants, so no gradient flows into the clamped heads' queries and keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, ClassVar

from coopetition.errors import ConfigError
from coopetition.interventions.attention import head_mask, label_rows
from coopetition.interventions.base import (HeadRef, HeadsAndNumberIntervention, Hook, Inputs, Intervention,
                                            check_heads, expect_args, format_heads, format_number, heads_by_layer,
                                            parse_number, split_heads)
from coopetition.model.config import ModelConfig
from coopetition.model.sites import hook_name

if TYPE_CHECKING:
    import torch
    import torch.nn.functional as F
    from jaxtyping import Float
    from torch import Tensor

# (batch, n_pos, device, dtype) -> (rows [q] bool, pattern [batch or 1, q, k]) to write into those rows
PatternFn = Callable[[int, int, "torch.device", "torch.dtype"], tuple["Tensor", "Tensor"]]


def clamp_pattern(heads: tuple[HeadRef, ...], model: ModelConfig, new_pattern: PatternFn) -> list[Hook]:
    import torch
    hooks = []
    for layer, layer_heads in heads_by_layer(heads, model.n_heads).items():
        def fn(pattern: Tensor, hook, layer_heads=layer_heads) -> Tensor:  # [batch, head, q, k]
            batch, n_heads, n_pos, _ = pattern.shape
            rows, values = new_pattern(batch, n_pos, pattern.device, pattern.dtype)
            where = head_mask(layer_heads, n_heads, pattern.device)[:, None, None] & rows[None, :, None]
            return torch.where(where, values[:, None], pattern)
        hooks.append((hook_name("pattern", layer), fn))
    return hooks


def query_row(weights: Float[Tensor, "batch ctx"], dtype: torch.dtype) -> PatternFn:
    """A pattern whose query row puts ``weights[:, i]`` on label token ``2i+1``."""
    import torch
    def new_pattern(batch: int, n_pos: int, device: torch.device, _dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        rows = torch.zeros(n_pos, dtype=torch.bool, device=device)
        rows[-1] = True
        values = torch.zeros(weights.shape[0], n_pos, n_pos, device=device, dtype=dtype)
        values[:, -1, 1:-1:2] = weights.to(dtype)
        return rows, values
    return new_pattern


def induction_weights(context_labels: Tensor, target: Tensor, strength: float) -> Tensor:
    """``strength`` shared by the label tokens equal to the target, ``1 - strength`` by the others; if one group is
    empty its share goes to the other."""
    import torch
    correct = (context_labels == target[:, None]).float()
    wrong = 1.0 - correct
    weights = (strength * correct / correct.sum(-1, keepdim=True).clamp(min=1)
               + (1 - strength) * wrong / wrong.sum(-1, keepdim=True).clamp(min=1))
    total = weights.sum(-1, keepdim=True)
    uniform = torch.full_like(weights, 1.0 / weights.shape[-1])
    return torch.where(total > 0, weights / total.clamp(min=1e-30), uniform)


@dataclass(frozen=True)
class Induction(HeadsAndNumberIntervention):
    """Clamp the listed heads' query row to an induction pattern of strength s: s on the label tokens that equal
    the target, 1 - s on the other label tokens, nothing on exemplars or the query. The plotted "induction
    strength" (attention to the correct label minus the wrong one) is 2s - 1 with two context pairs."""

    name: ClassVar[str] = "induction"
    usage: ClassVar[str] = "induction:LAYER:HEAD[,LAYER:HEAD...]:S  (S in [0, 1])"
    summary: ClassVar[str] = "clamp the query row: S on the target's label tokens, 1-S on the others"
    number_name: ClassVar[str] = "strength"
    number_bounds: ClassVar[tuple[float, float, bool]] = (0.0, 1.0, False)
    strength: float

    def hooks(self, inputs: Inputs, model: ModelConfig) -> list[Hook]:
        target = inputs.need_target(f"{self.name}")
        weights = induction_weights(inputs.context_labels, target, self.strength)
        return clamp_pattern(self.heads, model, query_row(weights, inputs.exemplars.dtype))


@dataclass(frozen=True)
class Match(HeadsAndNumberIntervention):
    """Clamp the listed heads' query row to attend to the label after each context exemplar, weighted by the
    cosine similarity of the raw exemplar vectors to the query: argmax at temperature 0, else softmax(sim / T)."""

    name: ClassVar[str] = "match"
    usage: ClassVar[str] = "match:LAYER:HEAD[,LAYER:HEAD...]:T  (T >= 0; 0 = hard max)"
    summary: ClassVar[str] = "clamp the query row to the labels of the exemplars most similar to the query"
    number_name: ClassVar[str] = "temperature"
    number_bounds: ClassVar[tuple[float, float, bool]] = (0.0, 1e6, False)
    temperature: float

    def hooks(self, inputs: Inputs, model: ModelConfig) -> list[Hook]:
        import torch
        import torch.nn.functional as F
        x = F.normalize(inputs.exemplars.float(), dim=-1)
        similarity = (x[:, :-1] * x[:, -1:]).sum(-1)  # [batch, ctx]
        if self.temperature == 0:
            weights = F.one_hot(similarity.argmax(-1), similarity.shape[-1]).float()
        else:
            weights = torch.softmax(similarity / self.temperature, dim=-1)
        return clamp_pattern(self.heads, model, query_row(weights, inputs.exemplars.dtype))


@dataclass(frozen=True)
class PrevToken(Intervention):
    """Clamp the listed heads' whole pattern so every token t >= 1 puts s on t - 1 and 1 - s on itself (token 0
    attends to itself); with ``:labels`` only label-token rows are clamped (IH24's perfect previous-token head)."""

    name: ClassVar[str] = "prev_token"
    usage: ClassVar[str] = "prev_token:LAYER:HEAD[,LAYER:HEAD...]:S[:labels]  (S in [0, 1])"
    summary: ClassVar[str] = "clamp the pattern: S on the previous token, 1-S on itself"
    heads: tuple[HeadRef, ...]
    strength: float
    labels_only: bool = False

    @classmethod
    def parse(cls, args: str) -> "PrevToken":
        heads, rest = split_heads(args)
        if not rest:
            raise ConfigError("expected a strength after the heads")
        expect_args(rest, 2, "a strength and an optional ':labels'")
        if len(rest) == 2 and rest[1] != "labels":
            raise ConfigError(f"the optional last field must be 'labels', got {rest[1]!r}")
        return cls(heads, parse_number(rest[0], "strength", 0.0, 1.0), len(rest) == 2)

    def format_args(self) -> str:
        return f"{format_heads(self.heads)}:{format_number(self.strength)}" + (":labels" if self.labels_only else "")

    def validate(self, model: ModelConfig) -> None:
        check_heads(self.heads, model)

    def hooks(self, inputs: Inputs, model: ModelConfig) -> list[Hook]:
        import torch
        def new_pattern(batch: int, n_pos: int, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
            s = self.strength
            values = (torch.diag(torch.full((n_pos - 1,), s, device=device, dtype=dtype), diagonal=-1)
                      + torch.diag(torch.full((n_pos,), 1 - s, device=device, dtype=dtype)))
            values[0, 0] = 1.0
            rows = label_rows(n_pos, device) if self.labels_only else torch.ones(n_pos, dtype=torch.bool,
                                                                                   device=device)
            return rows, values[None]
        return clamp_pattern(self.heads, model, new_pattern)


@dataclass(frozen=True)
class Copy(Intervention):
    """Replace the query logits by a perfect copy of one head: -1e9 for every class except the in-context labels,
    which get the head's pre-softmax attention logit to their label token (log-sum-exp if a label occurs twice), so
    softmax(output) is the head's attention renormalised over label tokens. Gradient reaches that head's Q and K."""

    name: ClassVar[str] = "copy"
    usage: ClassVar[str] = "copy:LAYER:HEAD"
    summary: ClassVar[str] = "the output copies exactly what one head attends to among the context labels"
    heads: tuple[HeadRef, ...]

    @classmethod
    def parse(cls, args: str) -> "Copy":
        heads, rest = split_heads(args)
        expect_args(rest, 0, "one head")
        if len(heads) != 1 or heads[0][1] is None:
            raise ConfigError("copies exactly one head (LAYER:HEAD)")
        return cls(heads)

    def format_args(self) -> str:
        return format_heads(self.heads)

    def validate(self, model: ModelConfig) -> None:
        check_heads(self.heads, model)

    def hooks(self, inputs: Inputs, model: ModelConfig) -> list[Hook]:
        layer, head = self.heads[0]

        def grab(scores: Tensor, hook) -> None:
            inputs.scratch[self._key] = scores[:, head, -1, 1:-1:2]  # query -> label tokens [batch, ctx]
        return [(hook_name("attn_scores", layer), grab)]

    @property
    def _key(self) -> str:
        return f"copy:{self.heads[0][0]}:{self.heads[0][1]}"

    def edit_logits(self, logits: Tensor, inputs: Inputs, labels: Tensor | None) -> Tensor:
        """Every class's logit (``labels`` None) or those of ``labels``: the log of the head's attention mass on
        that label's tokens (log-sum-exp of its scores), -1e9 for a class that is not in context."""
        import torch
        scores = inputs.scratch[self._key].to(logits.dtype)  # [batch, ctx]
        n_out = logits.shape[-1] if labels is None else None
        context = inputs.context_labels
        if labels is None:
            labels = torch.arange(n_out, device=logits.device).expand(logits.shape[0], -1)
        same = labels[:, :, None] == context[:, None, :]  # [batch, k, ctx]
        if n_out is not None:
            same = same & (context < n_out)[:, None, :]  # labels past the output classes: no logit
        masked = scores[:, None, :].masked_fill(~same, float("-inf"))
        copied = torch.logsumexp(masked, dim=-1)
        return torch.where(same.any(-1), copied, torch.full_like(copied, -1e9))
