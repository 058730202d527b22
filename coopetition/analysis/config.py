"""The analysis config: which analyses, on which evaluators, with how much data. Frozen and validated up front, so
a bad request fails before any checkpoint is loaded."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from coopetition.analysis.registry import get, names
from coopetition.errors import ConfigError
from coopetition.interventions import Intervention, parse_spec

MIN_STEPS_PER_WORKER = 4
STRENGTHS = tuple(round(0.1 * i, 1) for i in range(11))


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
    - ``interventions``: added on top of the run's own at every analysed checkpoint (``--intervene``); the analysed
      baseline ("clean") is the network with both.
    - ``threads``: torch CPU threads (None: torch's default). One thread is the default because these batches are
      small and a second thread on a busy 2-core machine costs more in synchronisation than it gains.
    - ``workers``: checkpoints are split over this many worker processes (one torch thread each; ``threads`` is
      for a single process), results merged in step order, identical to one process. None (default): one per CPU
      core, but at least ``MIN_STEPS_PER_WORKER`` checkpoints each (starting a worker costs a second or more); on
      2 cores this doubled ablation throughput on the quick run (docs/analyze.md, "Performance").
    """

    analyses: tuple[str, ...] | None = None  # None: every registered analysis
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
    interventions: tuple[Intervention, ...] = ()

    def __post_init__(self) -> None:
        
        object.__setattr__(self, "interventions", tuple(parse_spec(i) if isinstance(i, str) else i
                                                        for i in self.interventions))
        known = names()
        if self.analyses is None:
            object.__setattr__(self, "analyses", known)
        if not self.analyses:
            raise ConfigError(f"no analysis requested; choose from {', '.join(known)}")
        unknown = [a for a in self.analyses if a not in known]
        if unknown:
            raise ConfigError(f"unknown analysis {unknown[0]!r}; choose from {', '.join(known)}")
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
        return out

    def n_workers(self, n_steps: int) -> int:
        """Worker processes for ``n_steps`` checkpoints (1: everything in this process)."""
        if self.workers is not None:
            return max(1, min(self.workers, n_steps))
        return max(1, min(os.cpu_count() or 1, n_steps // MIN_STEPS_PER_WORKER))
