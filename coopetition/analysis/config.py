"""The analysis config: which analyses, on which evaluators, with how much data. Frozen and validated up front, so
a bad request fails before any checkpoint is loaded."""

from __future__ import annotations

from dataclasses import dataclass

from coopetition.errors import ConfigError

ANALYSES = ("strategies", "ablation", "patching", "probes", "progress")


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
    - ``max_rows``: sequences per batched forward pass (variants x n_seqs are chunked to this).
    - ``seed``: resample-ablation permutation and probe data/splits.
    - ``threads``: torch CPU threads (None: torch's default). One thread is the default because these batches are
      small and a second thread on a busy 2-core machine costs more in synchronisation than it gains.
    """

    analyses: tuple[str, ...] = ANALYSES
    evaluators: tuple[str, ...] | None = None
    n_seqs: int = 128
    patch_seqs: int = 64
    probe_classes: int = 8
    probe_seqs: int = 384
    probe_steps: int = 20
    probe_l2: float = 1e-3
    max_rows: int = 16384
    seed: int = 0
    device: str = "cpu"
    threads: int | None = 1

    def __post_init__(self) -> None:
        if not self.analyses:
            raise ConfigError(f"no analysis requested; choose from {', '.join(ANALYSES)}")
        unknown = [a for a in self.analyses if a not in ANALYSES]
        if unknown:
            raise ConfigError(f"unknown analysis {unknown[0]!r}; choose from {', '.join(ANALYSES)}")
        if self.evaluators is not None and not self.evaluators:
            raise ConfigError("--evaluators is empty")
        for name, low in (("n_seqs", 2), ("patch_seqs", 2), ("probe_classes", 3), ("probe_seqs", 16),
                          ("probe_steps", 1), ("max_rows", 1)):
            if getattr(self, name) < low:
                raise ConfigError(f"analysis.{name} must be >= {low}, got {getattr(self, name)}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"analysis.threads must be >= 1 or null, got {self.threads}")
        if self.probe_l2 < 0:
            raise ConfigError(f"analysis.probe_l2 must be >= 0, got {self.probe_l2}")

    def wants(self, analysis: str) -> bool:
        return analysis in self.analyses

    @property
    def needs_model(self) -> bool:
        return any(a != "strategies" for a in self.analyses)
