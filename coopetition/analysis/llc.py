"""The local learning coefficient (LLC) of every checkpoint: how degenerate the loss landscape is around it
(Lau et al. 2023; Hoogland et al. 2024 read developmental stages of in-context learning off its changes).

SGLD chains start at the checkpoint w* and sample a tempered posterior localised at w* on the loss of the run's
**training distribution** (the run's mixture, class weights and splits, drawn by our sampler), through the network
that ran (the run's interventions on, grafted sources frozen). The estimate is nbeta * (E[L(w)] - L(w*)). The
sampling is devinterp's (``devinterp.slt.sampling.sample``, an optional extra: ``pip install
'coopetition[devinterp]'``); this module only turns our sequences into what it samples on and reads its traces back.

devinterp samples language models on ``input_ids``; a sequence here is encoded as its (class, exemplar, label)
index triples, item by item, and the loss function decodes them, looks the exemplars up in the bank and returns
the query's cross-entropy, repeated over devinterp's token positions (so its means are per-sequence means).

What it costs (docs/performance.md): an SGLD step is a forward and backward pass of ``batch_size`` sequences plus
noise and localisation on every sampled coordinate. Three things keep that down, none of which changes what is
estimated: only the label-table rows the sample reads are sampled (``Sampled``), the sampled copy runs the
training step's fused kernels, and devinterp's per-chain ``gc.collect()`` skips the objects that existed before.

Tables: ``llc`` (one row per chain, and ``chain = -1`` over all chains: ``llc_mean`` and ``llc_std`` across
chains) with diagnostics, and ``llc_trace`` (every chain's loss at every SGLD step), so that a badly calibrated
estimate (a climbing or diverging trace, an LLC that keeps growing with more draws) is visible.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import io
import math
import tempfile
import warnings
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import Tensor, nn

from coopetition.analysis.base import Analysis, Checkpoint, Figure
from coopetition.errors import ConfigError
from coopetition.task.metrics import query_loss
from coopetition.task.sampler import sample_mixture
from coopetition.store.build import training_pool
from coopetition.tables import BOOL, FLOAT, INT

INSTALL_HINT = "the llc analysis needs devinterp: pip install 'coopetition[devinterp]'"
SCHEMA = {"step": INT, "sequences": INT, "chain": INT, "llc_mean": FLOAT, "llc_std": FLOAT, "init_loss": FLOAT,
          "loss_mean": FLOAT, "loss_min": FLOAT, "loss_max": FLOAT, "llc_first_half": FLOAT, "llc_second_half": FLOAT,
          "nbeta": FLOAT, "failed": BOOL}
TRACE_SCHEMA = {"step": INT, "sequences": INT, "chain": INT, "sgld_step": INT, "draw": INT, "loss": FLOAT}
COLUMNS, TRACE_COLUMNS = tuple(SCHEMA), tuple(TRACE_SCHEMA)
FIELDS = 3  # class, exemplar, label per item


def devinterp_sample():
    """devinterp's ``sample``, or a one-line ``ConfigError`` saying how to install it."""
    try:
        import xarray
        from devinterp.slt.sampling import sample
    except ImportError:
        raise ConfigError(INSTALL_HINT) from None
    if not hasattr(xarray, "open_datatree"):
        raise ConfigError(f"{INSTALL_HINT} (xarray {xarray.__version__} has no open_datatree; it needs >= 2024.10)")
    return sample


def default_nbeta(batch_size: int) -> float:
    """devinterp's default inverse temperature, m / log m for batches of m."""
    return batch_size / math.log(batch_size)


def encode(classes: Tensor, exemplars: Tensor, labels: Tensor) -> Tensor:
    """``[n, items * 3]`` int64: each item's (class, exemplar, label), in order (the query last)."""
    return torch.stack([classes, exemplars, labels], dim=-1).flatten(1).long()


class Sampled(nn.Module):
    """The network that ran as one module (devinterp deep-copies it per chain): its parameters are the network's
    (the trained model's and any frozen graft source's), its forward the run's interventions on every pass.

    ``label_rows``: the rows of the label table (``embed.W_L``) that the sample's context labels read. The loss
    depends on no other row, and SGLD moves every coordinate by its own gradient, localisation and noise, so the
    other rows wander without touching any loss the chain sees. They are left out (``label_rows`` is sampled in their
    place, the table itself frozen): about 40% of the quick model's parameters, whose noise, localisation and
    gradient were most of an SGLD step. The chains' law is the same; the noise draws differ, so the numbers are
    another realisation of the same estimate (docs/llc.md)."""

    def __init__(self, forward, label_rows: Tensor | None = None) -> None:
        super().__init__()
        self.network = forward.network
        self.intervened = forward  # not a submodule: the copy made with the module keeps sharing its weights
        self.compact = label_rows is not None
        if self.compact:
            self.register_buffer("rows", label_rows)
            self.label_rows = nn.Parameter(self.network.embed.W_L.detach()[label_rows].clone())

    def forward(self, exemplars: Tensor, context_labels: Tensor, target: Tensor) -> Tensor:
        if not self.compact:
            return self.intervened(exemplars, context_labels, target)
        # the table with the sampled rows in place, for this pass only (what torch.func.functional_call does, without
        # its walk over every submodule on each call)
        slots = self.network.embed._parameters
        table = slots["W_L"]
        slots["W_L"] = table.detach().index_put((self.rows,), self.label_rows)
        try:
            return self.intervened(exemplars, context_labels, target)
        finally:
            slots["W_L"] = table


def read_label_rows(network: nn.Module, ours: set[int], context_labels: Tensor) -> Tensor | None:
    """The label-table rows the context labels read (``Sampled``), or None where the table is not a sampled
    parameter of the run's own (a graft's frozen source supplies it) or every row is read anyway."""
    table = getattr(getattr(network, "embed", None), "W_L", None)
    if not isinstance(table, nn.Parameter) or id(table) not in ours:
        return None
    rows = context_labels[context_labels < table.shape[0]].unique()
    return rows if len(rows) < table.shape[0] else None


def make_loss(features: Tensor):
    """devinterp's per-token loss ``(model, input_ids) -> [batch, tokens - 1]``: the query cross-entropy of each
    decoded sequence, repeated over the positions (their mean is the training loss)."""

    def loss(model: nn.Module, input_ids: Tensor) -> Tensor:
        items = input_ids.view(input_ids.shape[0], -1, FIELDS)
        classes, exemplars, labels = items.unbind(-1)
        logits = model(features[classes, exemplars], labels[:, :-1], labels[:, -1])
        per_sequence = query_loss(logits.float(), labels[:, -1], reduction="none")
        return per_sequence[:, None].expand(-1, input_ids.shape[1] - 1)

    return loss


def chain_rows(trace: Tensor, init_loss: float, nbeta: float, burnin: int, failed: list[bool]) -> list[dict]:
    """Rows of the ``llc`` table from the loss trace ``[chains, sgld steps]`` (draws are the steps after
    ``burnin``): one per chain, then ``chain = -1`` (mean and std across chains; NaN-free chains only)."""
    rows = []
    for chain, losses in enumerate(trace.double()):
        draws = losses[burnin:]
        half = len(draws) // 2
        llc = nbeta * (draws - init_loss)
        rows.append({"chain": chain, "llc_mean": llc.mean().item(), "llc_std": llc.std().item(),
                     "init_loss": init_loss, "loss_mean": draws.mean().item(), "loss_min": draws.min().item(),
                     "loss_max": draws.max().item(), "llc_first_half": llc[:half].mean().item(),
                     "llc_second_half": llc[half:].mean().item(), "nbeta": nbeta, "failed": failed[chain]})
    good = [r for r in rows if not r["failed"] and math.isfinite(r["llc_mean"])]
    per_chain = torch.tensor([r["llc_mean"] for r in good], dtype=torch.float64)

    def mean(key: str) -> float:
        return sum(r[key] for r in good) / len(good) if good else float("nan")

    summary = {"chain": -1, "llc_mean": per_chain.mean().item() if good else float("nan"),
               "llc_std": per_chain.std().item() if len(good) > 1 else float("nan"), "init_loss": init_loss,
               "loss_mean": mean("loss_mean"), "loss_min": min((r["loss_min"] for r in good), default=float("nan")),
               "loss_max": max((r["loss_max"] for r in good), default=float("nan")),
               "llc_first_half": mean("llc_first_half"), "llc_second_half": mean("llc_second_half"),
               "nbeta": nbeta, "failed": len(good) < len(rows)}
    return rows + [summary]


PAGE_CAPTION = (
    "Local learning coefficient of every checkpoint (SGLD around it on the training distribution; bars: std "
    "across chains, dots: each chain) under the strategy curves, on the same step axis, and the loss at the "
    "checkpoint, L(w*). Dotted lines: ICL peak and ICL/CIWL crossover."
)
PAGE_CAPTION_TRACES = (
    "SGLD diagnostics: every chain's loss at every step (dashed: L(w*)) and its running LLC estimate (nbeta "
    "* (mean loss so far - L(w*))). A well calibrated chain settles within the first draws and its running "
    "estimate flattens; a climbing or diverging trace means the step size is too large. Slider: checkpoint."
)


@dataclass(frozen=True)
class LLCSettings:
    """SGLD settings of the ``llc`` analysis (devinterp's ``sample``; Lau et al. 2023), calibrated on the quick run
    (docs/llc.md): every chain starts at the checkpoint w* and takes ``burnin + draws`` steps of

        dw = lr/2 * (-nbeta * grad L_batch(w) + gamma * (w* - w)) + N(0, lr)

    on batches of ``batch_size`` sequences from a fixed sample of ``n_seqs`` sequences of the run's training
    distribution. The estimate is nbeta * (mean draw loss - L(w*)), L(w*) over the whole sample.

    - ``lr``: the SGLD step size epsilon; too large and the loss trace climbs or diverges, too small and it never
      leaves w* (an LLC near 0 that grows with more draws).
    - ``gamma``: the localisation strength (pull back to w*); keeps chains in w*'s basin.
    - ``nbeta``: the inverse temperature n*beta; None is devinterp's default m / log m (m = ``batch_size``).
    - ``chains``, ``draws``, ``burnin``: independent chains (their spread is ``llc_std``), draws per chain, and
      steps discarded before the first draw.
    - ``seed``: the sampled sequences and the SGLD noise (devinterp seeds chain c with seed + c).
    """

    lr: float = field(default=1e-5, metadata={"help": "llc: SGLD step size"})
    gamma: float = field(default=1e4, metadata={"help": "llc: localisation strength gamma"})
    nbeta: float | None = field(default=None, metadata={
        "help": "llc: inverse temperature n*beta", "default": "m / log m, m = the SGLD batch size"})
    chains: int = field(default=4, metadata={"help": "llc: SGLD chains"})
    draws: int = field(default=80, metadata={"help": "llc: draws per chain"})
    burnin: int = field(default=30, metadata={"help": "llc: steps discarded before the first draw"})
    batch_size: int = field(default=64, metadata={"help": "llc: sequences per SGLD batch"})
    n_seqs: int = field(default=1024, metadata={"help": "llc: sequences of the training distribution sampled on"})
    seed: int = field(default=0, metadata={"help": "llc: sampled sequences and SGLD noise"})

    def __post_init__(self) -> None:
        if not 0 < self.lr < float("inf"):
            raise ConfigError(f"analysis.llc.lr must be > 0 and finite, got {self.lr}")
        if not 0 <= self.gamma < float("inf"):
            raise ConfigError(f"analysis.llc.gamma must be >= 0 and finite, got {self.gamma}")
        if self.nbeta is not None and not 0 < self.nbeta < float("inf"):
            raise ConfigError(f"analysis.llc.nbeta must be > 0 and finite or null, got {self.nbeta}")
        for name, low in (("chains", 1), ("draws", 2), ("burnin", 0), ("batch_size", 2)):
            if getattr(self, name) < low:
                raise ConfigError(f"analysis.llc.{name} must be >= {low}, got {getattr(self, name)}")
        if self.n_seqs < self.batch_size:
            raise ConfigError(f"analysis.llc.n_seqs ({self.n_seqs}) must be >= batch_size ({self.batch_size})")


class LLCAnalysis(Analysis):
    name: ClassVar[str] = "llc"
    title: ClassVar[str] = "Local learning coefficient"
    caption: ClassVar[str] = ("The LLC of every checkpoint (SGLD around it on the training distribution, devinterp; "
                              "needs coopetition[devinterp]) beside the strategy curves, and each chain's loss trace.")
    tables: ClassVar[dict] = {"llc": SCHEMA, "llc_trace": TRACE_SCHEMA}
    needs: ClassVar[tuple[str, ...]] = ("strategies",)  # the figure draws the strategy curves beside the LLC
    by_default: ClassVar[bool] = False  # ~14 CPU-s per checkpoint (docs/performance.md), and an optional extra
    Settings = LLCSettings
    figures: ClassVar[tuple] = (
        Figure("llc.html", "Local learning coefficient", PAGE_CAPTION, "coopetition.plots.llc:figure",
               tables=("llc", "strategies")),
        Figure("llc_traces.html", "LLC diagnostics: SGLD loss traces", PAGE_CAPTION_TRACES,
               "coopetition.plots.llc:traces_figure", tables=("llc_trace", "llc")))

    def prepare(self) -> None:
        self.sample = devinterp_sample()
        run, bank = self.context.run, self.context.bank
        device = torch.device(self.config.device)
        self.features = bank.features.to(device)
        pool = training_pool(run.config, bank, device)
        gen = torch.Generator(device).manual_seed(self.settings.seed)
        batch = sample_mixture(run.config.task.mixture, run.config.task.mixture_weights, pool, self.settings.n_seqs,
                               gen, device)
        ids = encode(batch.classes, batch.exemplars, batch.labels).cpu()
        self.context_labels = batch.labels[:, :-1]
        self.dataset = [{"input_ids": row} for row in ids]
        self.nbeta = self.settings.nbeta or default_nbeta(self.settings.batch_size)

    def checkpoint_rows(self, checkpoint: Checkpoint) -> dict[str, list[dict]]:
        s = self.settings
        forward = copy.deepcopy(self.context.forward)
        # devinterp samples in train mode: the training step's fused attention and LayerNorm kernels (the same
        # function to float rounding; hooked passes, where the run's interventions listen, keep the hooked path)
        forward.network.fuse_training_kernels(True)
        ours = {id(p) for p in forward.model.parameters()}
        module = Sampled(forward, read_label_rows(forward.network, ours, self.context_labels))
        ours.add(id(getattr(module, "label_rows", None)))
        if module.compact:
            ours.discard(id(module.network.embed.W_L))
        masks = {name: None for name, p in module.named_parameters() if id(p) in ours}
        for name, param in module.named_parameters():
            param.requires_grad_(name in masks)
        # devinterp writes its samples to zarr (a folder removed here), draws a progress bar per chain (silenced: ours
        # counts checkpoints) and warns when a chain fails (recorded in the table instead); the runner's no_grad is
        # lifted for the SGLD gradients. It runs gc.collect() around every chain: gc.freeze() keeps the objects that
        # exist now (this process's imports, the run) out of those collections, which took ~2 CPU-s per checkpoint.
        freeze = gc.get_freeze_count() == 0  # not where someone else froze objects (unfreeze would thaw theirs)
        if freeze:
            gc.freeze()
        try:
            with tempfile.TemporaryDirectory(prefix="coopetition-llc-") as tmp, torch.enable_grad(), \
                    warnings.catch_warnings(record=True), contextlib.redirect_stderr(io.StringIO()):
                warnings.simplefilter("always")
                tree = self.sample(
                    module, self.dataset, {}, lr=s.lr, n_beta=self.nbeta, localization=s.gamma, param_masks=masks,
                    num_chains=s.chains, num_draws=s.draws, num_burnin_steps=s.burnin, batch_size=s.batch_size,
                    num_init_loss_batches=s.n_seqs // s.batch_size, init_seed=s.seed, device=self.config.device,
                    output_path=f"{tmp}/samples.zarr", loss_fn=make_loss(self.features))
                data = tree.dataset
                trace = torch.from_numpy(data["sampling_loss_micro"].mean(dim=["batch_sampling", "token_pos"]).values)
                init_loss = float(data["init_loss"].values.mean())
        finally:
            if freeze:
                gc.unfreeze()
        # devinterp warns and stops a chain on a NaN/Inf loss; the steps it never wrote read back as NaN
        failed = [not bool(torch.isfinite(trace[c]).all()) for c in range(s.chains)]
        trace_rows = [{"chain": c, "sgld_step": i, "draw": i - s.burnin if i >= s.burnin else -1,
                       "loss": float(trace[c, i])} for c in range(s.chains) for i in range(trace.shape[1])]
        return {"llc": chain_rows(trace, init_loss, self.nbeta, s.burnin, failed), "llc_trace": trace_rows}
