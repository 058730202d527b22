"""The eval sets of a run: drawn (or imported) for a fresh run, read back from ``eval_sets.safetensors`` for an
existing one (never redrawn: an edited seed cannot change what a resumed or analysed run is scored on)."""

from __future__ import annotations

from pathlib import Path

from coopetition.bank import ExemplarBank
from coopetition.config import RunConfig
from coopetition.errors import DataError
from coopetition.store.build import derive_sizes
from coopetition.store.contain import EVAL_SETS, contained
from coopetition.store.reader import RunReader
from coopetition.task.evaluators import (EVAL_SETS_LAYOUT, build_eval_sets, check_eval_sets, eval_sets_from_tensors,
                                         load_eval_sets)
from coopetition.task.sampler import SequenceBatch


def eval_sets_for(config: RunConfig, bank: ExemplarBank) -> dict[str, SequenceBatch]:
    if config.eval.import_path:
        path = Path(config.eval.import_path)
        sets = load_eval_sets(path, bank.fingerprint())
        return check_eval_sets(sets, config.eval.evaluators(), bank, derive_sizes(config, bank).n_labels, str(path))
    return build_eval_sets(config.eval.evaluators(), bank, config.seeds.eval)


def stored_eval_sets(run_dir: Path, config: RunConfig, bank: ExemplarBank) -> dict[str, SequenceBatch]:
    """The eval sets a run was scored on, from its ``eval_sets.safetensors`` (size and sha256 from the manifest,
    int64 tables whose indices fit the bank and the config), never redrawn from the seed: an edited seed cannot
    change what a resumed run is scored on."""
    tensors, metadata = RunReader(run_dir).eval_sets(EVAL_SETS_LAYOUT)
    source = str(contained(run_dir, EVAL_SETS))
    sets = eval_sets_from_tensors(tensors, metadata, source, bank.fingerprint())
    specs = config.eval.evaluators()
    if not config.eval.import_path:  # drawn from the config: exactly its evaluators, in its order (as when trained)
        extra = sorted(set(sets) - {spec.name for spec in specs})
        if extra:
            raise DataError(f"eval sets {source} hold evaluator(s) {extra[:3]} that this run's suite does not have")
        sets = {spec.name: sets[spec.name] for spec in specs if spec.name in sets}
    return check_eval_sets(sets, specs, bank, derive_sizes(config, bank).n_labels, source)
