"""The analysis config: which analyses, on which evaluators, with how much data. Frozen and validated up front, so
a bad request fails before any checkpoint is loaded."""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field

from coopetition.analysis.registry import get, names
from coopetition.errors import ConfigError
from coopetition.interventions import Intervention, parse_spec

MIN_STEPS_PER_WORKER = 4
STRENGTHS = tuple(round(0.1 * i, 1) for i in range(11))


@dataclass(frozen=True)
class LLCConfig:
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

    lr: float = 1e-5
    gamma: float = 1e4
    nbeta: float | None = None
    chains: int = 4
    draws: int = 80
    burnin: int = 30
    batch_size: int = 64
    n_seqs: int = 1024
    seed: int = 0

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


@dataclass(frozen=True)
class AnalysisConfig:
    """``analyses`` and ``evaluators`` (None = every evaluator the run has) choose the work.

    - ``n_seqs``: the first n sequences of each stored eval set are analysed (ablation, progress); the stored sets
      hold thousands, and every intervention multiplies the batch (ablation: ~100 variants), so ~100 keep a
      checkpoint to seconds on a CPU. ``patch_seqs``: the first n of those form the patching pairs (~175 variants
      per pair; the normalised logit difference is a ratio of means, stable at a few dozen sequences).
    - ``probe_classes`` / ``probe_seqs``: probes are trained on fresh sequences of each evaluator's distribution
      restricted to its first ``probe_classes`` classes (identity probes need many sequences per class; the stored
      sets have about one per class); ``probe_seqs`` per evaluator, a quarter held out.
    - ``probe_steps``: LBFGS iterations for the (batched) logistic-regression probes; ``probe_l2`` their penalty.
    - ``max_rows``: sequences per batched forward pass (variants x n_seqs are chunked to this). It bounds memory,
      and 2048 is also the fastest on a CPU: the activations of a chunk stay in cache (measured in docs/analyze.md).
    - ``seed``: resample-ablation permutation and probe data/splits.
    - ``clamp_strengths``: the clamped attention strengths S of the ``clamp`` analysis (C25: 0, 0.1, ..., 1).
    - ``clamp_exact``: one pass per strength for every clamp, instead of reading last-layer induction clamps out of
      their S = 0 and S = 1 passes (exact in real arithmetic where used; ``analysis/clamp.py``).
    - ``llc``: SGLD settings of the ``llc`` analysis (``LLCConfig``).
    - ``interventions``: added on top of the run's own at every analysed checkpoint (``--intervene``); the analysed
      baseline ("clean") is the network with both.
    - ``threads``: torch CPU threads (None: torch's default). One thread is the default because these batches are
      small and a second thread on a busy 2-core machine costs more in synchronisation than it gains.
    - ``workers``: checkpoints are split over this many worker processes (one torch thread each; ``threads`` is
      for a single process), results merged in step order, identical to one process. None (default): one per CPU
      core, but at least ``MIN_STEPS_PER_WORKER`` checkpoints each (starting a worker costs a second or more); on
      2 cores this doubled ablation throughput on the quick run (docs/analyze.md, "Performance").
    """

    analyses: tuple[str, ...] | None = None  # None: every registered analysis that runs by default
    evaluators: tuple[str, ...] | None = None
    n_seqs: int = 128
    patch_seqs: int = 64
    probe_classes: int = 8
    probe_seqs: int = 384
    probe_steps: int = 20
    probe_l2: float = 1e-3
    max_rows: int = 2048
    seed: int = 0
    device: str = "cpu"
    threads: int | None = 1
    workers: int | None = None
    clamp_strengths: tuple[float, ...] = STRENGTHS
    clamp_exact: bool = False
    llc: LLCConfig = field(default_factory=LLCConfig)
    interventions: tuple[Intervention, ...] = ()

    def __post_init__(self) -> None:
        
        object.__setattr__(self, "interventions", tuple(parse_spec(i) if isinstance(i, str) else i
                                                        for i in self.interventions))
        known = names()
        if self.analyses is None:
            object.__setattr__(self, "analyses", tuple(n for n in known if get(n).by_default))
        if not self.analyses:
            raise ConfigError(f"no analysis requested; choose from {', '.join(known)}")
        unknown = [a for a in self.analyses if a not in known]
        if unknown:
            raise ConfigError(f"unknown analysis {unknown[0]!r}; choose from {', '.join(known)}")
        # an analysis whose figure draws another's table beside its own brings that analysis along
        object.__setattr__(self, "analyses", tuple(dict.fromkeys(
            name for a in self.analyses for name in (*get(a).companions, a))))
        if len(self.clamp_strengths) < 2 or not all(0 <= s <= 1 for s in self.clamp_strengths):
            raise ConfigError(f"analysis.clamp_strengths must be >= 2 values in [0, 1], got {self.clamp_strengths}")
        if self.evaluators is not None and not self.evaluators:
            raise ConfigError("--evaluators is empty")
        for name, low in (("n_seqs", 2), ("patch_seqs", 2), ("probe_classes", 3), ("probe_seqs", 16),
                          ("probe_steps", 1), ("max_rows", 1)):
            if getattr(self, name) < low:
                raise ConfigError(f"analysis.{name} must be >= {low}, got {getattr(self, name)}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"analysis.threads must be >= 1 or null, got {self.threads}")
        if self.workers is not None and self.workers < 1:
            raise ConfigError(f"analysis.workers must be >= 1 or null, got {self.workers}")
        if not 0 <= self.probe_l2 < float("inf"):
            raise ConfigError(f"analysis.probe_l2 must be finite and >= 0, got {self.probe_l2}")
        if not re.match(r"^(cpu|cuda(:\d+)?)$", self.device):
            raise ConfigError(f"--device must be 'cpu' or 'cuda[:N]', got {self.device!r}")

    def wants(self, analysis: str) -> bool:
        return analysis in self.analyses

    @property
    def needs_model(self) -> bool:
        return any(get(a).needs_model for a in self.analyses)

    def to_dict(self) -> dict:
        """JSON-able (interventions as their specs), for ``analysis.json``."""
        out = {f: getattr(self, f) for f in self.__dataclass_fields__}
        out["interventions"] = [i.spec for i in self.interventions]
        out["llc"] = asdict(self.llc)
        return out

    def n_workers(self, n_steps: int) -> int:
        """Worker processes for ``n_steps`` checkpoints (1: everything in this process)."""
        if self.workers is not None:
            return max(1, min(self.workers, n_steps))
        return max(1, min(os.cpu_count() or 1, n_steps // MIN_STEPS_PER_WORKER))
