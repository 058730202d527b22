"""The analysis config: which analyses, on which evaluators, with how much data, and each requested analysis's own
settings (its ``Settings`` dataclass, ``analysis.base``). Frozen and validated up front, so a bad request fails
before any checkpoint is loaded."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, is_dataclass
from typing import Any

import dacite

from coopetition.analysis.registry import get, names
from coopetition.errors import ConfigError
from coopetition.interventions import Intervention, parse_spec

MIN_STEPS_PER_WORKER = 4
SHARED = ("analyses", "evaluators", "n_seqs", "max_rows", "seed", "device", "threads", "workers", "interventions")


@dataclass(frozen=True)
class AnalysisConfig:
    """``analyses`` and ``evaluators`` (None = every evaluator the run has) choose the work; what every analysis
    shares is here, what one analysis alone reads is in ``settings``.

    - ``n_seqs``: the first n sequences of each stored eval set are analysed (ablation, progress); the stored sets
      hold thousands, and every intervention multiplies the batch (ablation: ~100 variants), so ~100 keep a
      checkpoint to seconds on a CPU.
    - ``max_rows``: sequences per batched forward pass (variants x n_seqs are chunked to this). It bounds memory,
      and 2048 is also the fastest on a CPU: the activations of a chunk stay in cache (measured in docs/analyze.md).
    - ``seed``: resample-ablation permutation and probe data/splits.
    - ``interventions``: added on top of the run's own at every analysed checkpoint (``--intervene``); the analysed
      baseline ("clean") is the network with both.
    - ``threads``: torch CPU threads (None: torch's default). One thread is the default because these batches are
      small and a second thread on a busy 2-core machine costs more in synchronisation than it gains.
    - ``workers``: checkpoints are split over this many worker processes (one torch thread each; ``threads`` is
      for a single process), results merged in step order, identical to one process. None (default): one per CPU
      core, but at least ``MIN_STEPS_PER_WORKER`` checkpoints each (starting a worker costs a second or more); on
      2 cores this doubled ablation throughput on the quick run (docs/analyze.md, "Performance").
    - ``settings``: ``{analysis: its Settings}``, or plain dicts of its fields (``{"clamp": {"strengths": (0, 1)}}``),
      for any registered analysis; after checks it holds one entry per requested analysis that has settings (the
      defaults where none were given), and only those. ``settings_for`` reads one.
    """

    analyses: tuple[str, ...] | None = None  # None: every registered analysis that runs by default
    evaluators: tuple[str, ...] | None = None
    n_seqs: int = 128
    max_rows: int = 2048
    seed: int = 0
    device: str = "cpu"
    threads: int | None = 1
    workers: int | None = None
    interventions: tuple[Intervention, ...] = ()
    settings: Mapping[str, Any] = field(default_factory=dict)

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
        # an analysis brings the analyses whose tables it reads, computed before it
        object.__setattr__(self, "analyses", with_needs(self.analyses))
        object.__setattr__(self, "settings", _settings(self.analyses, self.settings))
        if self.evaluators is not None and not self.evaluators:
            raise ConfigError("--evaluators is empty")
        for name, low in (("n_seqs", 2), ("max_rows", 1)):
            if getattr(self, name) < low:
                raise ConfigError(f"analysis.{name} must be >= {low}, got {getattr(self, name)}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"analysis.threads must be >= 1 or null, got {self.threads}")
        if self.workers is not None and self.workers < 1:
            raise ConfigError(f"analysis.workers must be >= 1 or null, got {self.workers}")
        if not re.match(r"^(cpu|cuda(:\d+)?)$", self.device):
            raise ConfigError(f"--device must be 'cpu' or 'cuda[:N]', got {self.device!r}")

    def wants(self, analysis: str) -> bool:
        return analysis in self.analyses

    @property
    def needs_model(self) -> bool:
        return any(get(a).needs_model for a in self.analyses)

    def settings_for(self, analysis: str) -> Any:
        """``analysis``'s settings: the requested ones, else its ``Settings`` defaults."""
        found = self.settings.get(analysis)
        return found if found is not None else get(analysis).Settings()

    def shared_dict(self) -> dict:
        """The fields every analysis shares, JSON-able (interventions as their specs)."""
        out = {f: getattr(self, f) for f in SHARED}
        out["interventions"] = [i.spec for i in self.interventions]
        return out

    def to_dict(self) -> dict:
        """JSON-able, for ``analysis.json``: the shared fields and every requested analysis's settings."""
        return {**self.shared_dict(), "settings": {name: asdict(s) for name, s in self.settings.items()}}

    def n_workers(self, n_steps: int) -> int:
        """Worker processes for ``n_steps`` checkpoints (1: everything in this process)."""
        if self.workers is not None:
            return max(1, min(self.workers, n_steps))
        return max(1, min(os.cpu_count() or 1, n_steps // MIN_STEPS_PER_WORKER))


def with_needs(analyses: tuple[str, ...]) -> tuple[str, ...]:
    """``analyses`` with what each needs (recursively) placed before it, each once."""
    out: dict[str, None] = {}

    def add(name: str, chain: tuple[str, ...]) -> None:
        if name in chain:
            raise ConfigError(f"analysis {name!r} needs itself through {' -> '.join((*chain, name))}")
        if name in out:
            return
        for need in get(name).needs:
            if need not in names():
                raise ConfigError(f"analysis {name!r} needs {need!r}, which is not registered")
            add(need, (*chain, name))
        out[name] = None

    for a in analyses:
        add(a, ())
    return tuple(out)


def _settings(analyses: tuple[str, ...], given: Mapping[str, Any]) -> dict[str, Any]:
    """One checked ``Settings`` per requested analysis that has fields (or whose settings another reads)."""
    if not isinstance(given, Mapping):
        raise ConfigError(f"analysis settings must be a mapping of analysis name to settings, got {given!r}")
    known = names()
    unknown = [a for a in given if a not in known]
    if unknown:
        raise ConfigError(f"settings for unknown analysis {unknown[0]!r}; choose from {', '.join(known)}")
    owners = dict.fromkeys(get(a).settings_name() for a in analyses)
    out = {}
    for name in owners:
        cls = get(name).Settings
        if not cls.__dataclass_fields__:
            continue
        value = given.get(name)
        if value is None:
            value = cls()
        elif isinstance(value, Mapping):
            try:
                value = dacite.from_dict(cls, dict(value), config=dacite.Config(strict=True, cast=[tuple, float]))
            except (dacite.DaciteError, ValueError, TypeError) as err:
                raise ConfigError(f"analysis settings of {name}: {err}") from None
        elif not (is_dataclass(value) and type(value) is cls):
            raise ConfigError(f"analysis settings of {name} must be a {cls.__name__} or a dict, got {value!r}")
        out[name] = value
    return out
