"""What an analysis is, what it sees, and the registry that maps names to analyses.

An analysis is one class in one module: a ``name``, the ``tables`` it writes (name -> columns, every one starting
with ``step, sequences``), and how it fills them: ``checkpoint_rows`` (called once per selected checkpoint with a
``Checkpoint`` view) or, for analyses that need no forward pass, ``run_rows`` (called once with the selected steps).
Defining a subclass with a ``name`` registers it: the CLI's ``--analyses`` and its help, the output tables and the
figures all come from the registry. Figures are built from the tables only (``coopetition.plots``); an analysis may
bring its own by defining ``figures`` (a classmethod from ``{table: DataFrame}`` to ``[(title, caption, figure)]``),
otherwise ``coopetition.plots`` draws the registered figure for its name, or a generic one.

Every analysis dissects the network that ran: ``Context.forward`` is the run's model with the run's own
interventions (grafted modules from the run's kept sources, clamps on) plus any added with ``--intervene``, and
``Checkpoint.baseline`` is one pass of it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from torch import Tensor

from coopetition.store.run import EvalData, Run

if TYPE_CHECKING:
    import pandas as pd

    from coopetition.analysis.config import AnalysisConfig
    from coopetition.interventions import Intervened
    from coopetition.model import ActivationCache, ICLTransformer

REGISTRY: dict[str, type["Analysis"]] = {}


@dataclass
class Context:
    """What every checkpoint of a run shares (built once per process): the network that ran, with the weights of
    ``model`` swapped per checkpoint, and the sequences of each evaluator (``data``: the first ``n_seqs`` of the
    run's stored eval sets). ``forward`` and ``data`` are None when no requested analysis needs the model."""

    run: Run
    config: AnalysisConfig
    evaluators: tuple[str, ...]
    forward: Intervened | None = None
    data: dict[str, EvalData] = field(default_factory=dict)
    bank: Any = None
    timer: Any = None

    @property
    def model(self) -> ICLTransformer:
        """The trained weights (what checkpoints load into)."""
        return self.forward.model

    @property
    def network(self) -> ICLTransformer:
        """The network that runs (the model with grafted modules spliced in): read weights from here."""
        return self.forward.network

    def timed(self, name: str, fn: Callable, *args, **kwargs):
        return self.timer.run(name, fn, *args, **kwargs) if self.timer is not None else fn(*args, **kwargs)


@dataclass
class Checkpoint:
    """One checkpoint, loaded into ``context.model``; ``baseline`` passes are computed once and shared by every
    analysis (a set that is the first n sequences of an evaluator's set reuses that evaluator's pass, sliced)."""

    step: int
    sequences: int
    context: Context
    _passes: dict = field(default_factory=dict)

    @property
    def network(self) -> ICLTransformer:
        return self.context.network

    def baseline(self, data: EvalData) -> tuple[Tensor, ActivationCache]:
        """``(query logits, cache)`` of the analysed network (run interventions on) on ``data``."""
        key = (data.name, data.n)
        if key not in self._passes:
            full = self.context.data.get(data.name)
            if full is not None and full.n > data.n:
                from coopetition.model import slice_cache

                logits, cache = self.baseline(full)
                self._passes[key] = logits[: data.n], slice_cache(cache, data.n)
            else:
                self._passes[key] = self.context.timed("forward", self.context.forward.run_cached,
                                                       data.exemplars, data.context_labels, data.target)
        return self._passes[key]


class Analysis:
    """Base class (see the module docstring). One instance per run and process, built after the ``Context``;
    ``prepare`` is where per-run inputs (pairs, probe sets) are made."""

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    caption: ClassVar[str] = ""
    tables: ClassVar[dict[str, tuple[str, ...]]] = {}
    needs_model: ClassVar[bool] = True
    # False: run only when named in ``--analyses`` (slow, or needs an optional extra), not by default
    by_default: ClassVar[bool] = True
    # analyses whose tables this one's figure draws beside its own (requesting it requests them too)
    companions: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("name"):
            for table, columns in cls.tables.items():
                if tuple(columns[:2]) != ("step", "sequences"):
                    raise TypeError(f"analysis {cls.name}: table {table} must start with step, sequences")
            REGISTRY[cls.name] = cls

    def __init__(self, context: Context) -> None:
        self.context = context
        self.config = context.config
        self.prepare()

    def prepare(self) -> None:
        pass

    @classmethod
    def cache_inputs(cls, run: Run) -> Any:
        """What this analysis's rows for a checkpoint depend on besides that checkpoint and the analysis settings
        (JSON-able; part of its cache key, ``analysis/cache.py``): e.g. the run's eval log, or another checkpoint
        that ``prepare`` reads. None: nothing."""
        return None

    def checkpoint_rows(self, checkpoint: Checkpoint) -> dict[str, list[dict]]:
        """``{table: rows}`` for one checkpoint, rows without ``step``/``sequences`` (the runner adds them)."""
        return {}

    def run_rows(self, steps: tuple[int, ...]) -> dict[str, list[dict]]:
        """``{table: rows}`` for analyses that read the run's logs instead of running the model (full rows)."""
        return {}

    figures: ClassVar[Callable[[dict[str, "pd.DataFrame"]], list] | None] = None
