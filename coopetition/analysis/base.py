"""What an analysis is, what it sees, and the registry that maps names to analyses.

An analysis is one class in one module (a plug-in), and everything the pipeline and the CLI do with it comes from
what the class declares:

- ``name`` (defining a subclass with a ``name`` registers it), ``title``, ``caption``;
- ``tables``: name -> {column: kind} (``coopetition.tables``: INT, FLOAT, BOOL, STR), every one starting with
  ``step, sequences``; the writer, the cache and ``replot``'s typed reader all follow it;
- ``Settings``: a frozen dataclass of its own settings (defaults, ``metadata={"help": ...}``, checks in
  ``__post_init__`` raising ``ConfigError``). The ``analyze`` flags ``--{flag_prefix}-{field}`` are generated from
  it, ``analysis.json`` records it, and only it (with the shared ``AnalysisConfig`` fields) keys the analysis's
  cache entries. The analysis reads its own as ``self.settings``;
- ``figures``: ``Figure`` declarations, drawn from the tables by a function named lazily (``"module:function"``)
  so an analysis module never imports ``coopetition.plots``; without any, each table gets a generic page;
- ``needs``: other analyses whose tables its rows or figures read (requesting it requests them, and they are
  computed first);
- how it fills its tables: ``checkpoint_rows`` (once per selected checkpoint with a ``Checkpoint`` view),
  ``run_rows`` (analyses that need no forward pass, once with the selected steps), and ``rows_from_tables``
  (per checkpoint, after every checkpoint is computed, from its own rows and its ``needs``' tables).

Every analysis dissects the network that ran: ``Context.forward`` is the run's model with the run's own
interventions (grafted modules from the run's kept sources, clamps on) plus any added with ``--intervene``, and
``Checkpoint.baseline`` is one pass of it.

Analyses outside this package are plug-ins: a module that defines a subclass, named in the environment variable
``COOPETITION_PLUGINS`` (comma list of importable modules) or in the ``coopetition.analyses`` entry-point group of
an installed package (``analysis.registry``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields, is_dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from torch import Tensor

from coopetition.store.run import Run
from coopetition.tables import BOOL, FLOAT, INT, STR, Schema
from coopetition.task.evalset import EvalData

if TYPE_CHECKING:
    import pandas as pd

    from coopetition.analysis.config import AnalysisConfig
    from coopetition.interventions import Intervened
    from coopetition.model import ActivationCache, ICLTransformer

REGISTRY: dict[str, type["Analysis"]] = {}
KINDS = (INT, FLOAT, BOOL, STR)


@dataclass(frozen=True)
class NoSettings:
    """The settings of an analysis that has none."""


@dataclass(frozen=True)
class Figure:
    """One page (or, with ``each``, one page per value of a column) drawn from tables.

    ``draw`` is a callable or ``"module:function"`` (imported only when the page is drawn, by the pipeline). It is
    called with the frames of ``tables`` (default: the analysis's own tables, in order; a table that was not
    written is None) as positional arguments; with ``each``, the column's value is passed right after the first
    frame: ``draw(first, value, *rest)``. ``values`` (callable or ``"module:function"`` of the first frame) orders
    and filters the values (default: each distinct value of ``each`` in the first table, in order of appearance).
    ``file`` and ``title`` may hold ``{value}``. ``inline``: shown on the index page itself. No page is drawn while
    the analysis's first table has no rows."""

    file: str
    title: str
    caption: str
    draw: Callable | str
    tables: tuple[str, ...] = ()
    each: str | None = None
    values: Callable | str | None = None
    inline: bool = False


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
    tables: ClassVar[dict[str, Schema]] = {}  # table -> {column: kind}, ``coopetition.tables``' kinds
    needs_model: ClassVar[bool] = True
    # False: run only when named in ``--analyses`` (slow, or needs an optional extra), not by default
    by_default: ClassVar[bool] = True
    # analyses whose tables this one's rows or figures read (requesting it requests them; they are computed first)
    needs: ClassVar[tuple[str, ...]] = ()
    # its settings (a frozen dataclass); flags ``--{flag_prefix}-{field}``, default prefix: the name
    Settings: ClassVar[type] = NoSettings
    flag_prefix: ClassVar[str] = ""
    # another analysis whose settings this one reads instead of declaring its own (circuit: patching's pairs)
    settings_of: ClassVar[str] = ""
    figures: ClassVar[tuple[Figure, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("name"):
            for table, schema in cls.tables.items():
                if not isinstance(schema, dict) or tuple(schema)[:2] != ("step", "sequences"):
                    raise TypeError(f"analysis {cls.name}: table {table} must map columns to kinds, "
                                    "starting with step and sequences")
                if any(kind not in KINDS for kind in schema.values()):
                    raise TypeError(f"analysis {cls.name}: table {table}: column kinds are {', '.join(KINDS)}")
            if not (is_dataclass(cls.Settings) and cls.Settings.__dataclass_params__.frozen):
                raise TypeError(f"analysis {cls.name}: Settings must be a frozen dataclass")
            if any(not isinstance(f, Figure) for f in cls.figures):
                raise TypeError(f"analysis {cls.name}: figures must be Figure declarations")
            REGISTRY[cls.name] = cls

    @classmethod
    def settings_name(cls) -> str:
        """The analysis whose ``Settings`` this one uses (its own name unless ``settings_of``)."""
        return cls.settings_of or cls.name

    @classmethod
    def prefix(cls) -> str:
        """The flags' prefix: ``flag_prefix``, else the name (``_`` as ``-``: ``my_thing`` gives ``--my-thing-...``)."""
        return (cls.flag_prefix or cls.name).replace("_", "-")

    @classmethod
    def setting_fields(cls) -> tuple:
        return fields(cls.Settings) if not cls.settings_of else ()

    @property
    def settings(self) -> Any:
        """This analysis's settings (an instance of its ``Settings``, from ``AnalysisConfig.settings``)."""
        return self.config.settings_for(self.settings_name())

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

    @classmethod
    def rows_from_tables(cls, context: Context, step: int, sequences: int, own: dict[str, list[dict]],
                         tables: dict[str, "pd.DataFrame"]) -> dict[str, list[dict]]:
        """This analysis's final rows at checkpoint ``step`` (full rows, with step/sequences), from its own rows
        there (``own``: from ``checkpoint_rows``, or the cache) and the rows of its ``needs``' tables at that step
        (``tables``: a DataFrame per table, None where not computed). Called in the parent process once every
        checkpoint is computed, in dependency order; its output is not cached, so keep it cheap. Default: ``own``
        unchanged. ``context`` has the run and config only (no network)."""
        return own
