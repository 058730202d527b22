"""``analyze``: compute (``analysis.runner``: selection, cache, workers, fan-out) -> tables -> figures -> index.html,
the output folder written whole into a temporary sibling and swapped in, so an interrupted analyze leaves the previous
complete output (or none), never new tables beside old figures. With the cache on, pages whose tables and drawing
code are unchanged are copied from ``CACHE/figures`` instead of drawn again (``figures.py``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from coopetition.analysis.config import AnalysisConfig
from coopetition.analysis.runner import compute, write_record, write_tables
from coopetition.pipeline.figures import write_figures
from coopetition.store.atomic import atomic_directory

if TYPE_CHECKING:
    from coopetition.analysis.fanout import FanOut


@dataclass(frozen=True)
class AnalysisResult:
    """What was written, and where the time went: ``seconds`` (wall) and ``cpu_seconds`` (this process, all
    threads) per analysis; the shared baseline passes are ``forward``, checkpoint loading ``load``, drawing the pages
    ``figures``. With worker processes both are summed over the workers (worker-seconds, not elapsed time)."""

    out_dir: Path
    steps: tuple[int, ...]
    tables: dict[str, Path]
    figures: dict[str, Path]
    seconds: dict[str, float] = field(default_factory=dict)
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    skipped: tuple[str, ...] = ()  # corrupt checkpoints left out (listed in skipped_checkpoints.csv)
    # per model analysis: checkpoints computed now, and checkpoints read back from the cache
    computed: dict[str, int] = field(default_factory=dict)
    reused: dict[str, int] = field(default_factory=dict)


def analyze(run_dir: Path, spec: str, config: AnalysisConfig, out_dir: Path | None = None,
            progress_bar: bool = True, cache_dir: Path | None = None, use_cache: bool = True,
            fan_out: "FanOut | None" = None) -> AnalysisResult:
    """Run ``config.analyses`` on the checkpoints ``spec`` selects; write tables, figures, ``analysis.json`` and
    ``index.html`` into ``out_dir`` (default ``RUN/analysis``).

    Per-checkpoint results are read from and written to the cache (``cache_dir``, default ``OUT_cache`` beside the
    output folder; ``use_cache=False``: neither). ``fan_out``: run the checkpoints still to compute as submitit
    jobs. Everything the user could get wrong is checked before the output folder is created
    (``analysis.runner.compute``)."""
    found = compute(run_dir, spec, config, out_dir, progress_bar, cache_dir, use_cache, fan_out)
    out, timer = found.out, found.timer
    with atomic_directory(out) as tmp:
        tables, frames, skipped = write_tables(tmp, found)
        reuse = Path(found.cache["dir"]) / "figures" if found.cache["dir"] is not None else None
        written = timer.run("figures", write_figures, tmp, frames, config.analyses, shown=out, run=Path(run_dir).name,
                            reuse=reuse, processes=config.n_workers(len(found.selection.steps)))
        write_record(tmp, found)
    figures = {name: out / path.name for name, path in written.items()}
    return AnalysisResult(out, found.selection.steps, tables, figures, dict(timer.seconds), dict(timer.cpu), skipped,
                          found.computed, found.reused)
