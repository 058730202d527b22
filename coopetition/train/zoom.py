"""Re-train a window of an existing run to add denser checkpoints and eval rows (``coopetition zoom``).

Where a run's phase change lies is known only after it ran; a dense schedule everywhere costs disk. Training is
deterministic given its saved state (``--resume`` is bit-exact), so the window is re-trained from the nearest saved
state at or before it: a resume state the run kept (``train.resume_schedule``), or step 0, which the seeds (and the
run's copy of an ``init_from`` checkpoint) rebuild. Re-training runs on to the first checkpoint the run already has
at or after the last new point, so every new checkpoint lies between two of the run's own; each of those met on the
way is serialised and its sha256 compared with the manifest. One mismatch stops the zoom with nothing written: this
machine (torch build, thread count, device) does not reproduce the run, and new checkpoints from it would be of a
different run.

Nothing is visible before the end: new checkpoints are staged under temporary names (``RunWriter.stage_checkpoint``)
and committed together with their eval rows (``RunWriter.commit_zoom``); files the run already had keep their bytes.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from coopetition.config import RunConfig
from coopetition.errors import DataError
from coopetition.faults import fault_point
from coopetition.store.checkpoint import load_tensors, tensor_file_bytes
from coopetition.store.provenance import package_versions
from coopetition.store.reader import EVAL_COLUMNS, RunReader
from coopetition.store.run import Run
from coopetition.store.sources import load_source_model
from coopetition.store.writer import RunWriter
from coopetition.train.evaluate import evaluate
from coopetition.train.loop import Training, build_training, checkpoint_metadata
from coopetition.train.state import restore_resume, resume_layout


@dataclass(frozen=True)
class ZoomPlan:
    """Steps of one zoom: re-train from ``start`` (0: the seeds) to ``end`` (a checkpoint the run has), writing
    ``checkpoints`` and ``evals`` (steps the run lacks) and comparing ``verify`` (steps it has) by sha256."""

    start: int
    end: int
    checkpoints: tuple[int, ...]
    evals: tuple[int, ...]
    verify: tuple[int, ...]

    @property
    def empty(self) -> bool:
        return not self.checkpoints and not self.evals


@dataclass(frozen=True)
class ZoomResult:
    run_dir: Path
    plan: ZoomPlan
    wall_seconds: float
    bytes_written: int


def resume_starts(reader: RunReader) -> list[int]:
    """Steps a zoom may start from: 0 and every listed resume state whose entries are well-formed, ascending."""
    return sorted({0} | {p.step for p in reader.resume_points() if not p.problem})


def plan_zoom(reader: RunReader, checkpoint_steps: list[int], eval_steps: list[int]) -> ZoomPlan:
    """The plan for wanted ``checkpoint_steps`` and ``eval_steps`` (each at most the run's last checkpoint)."""
    have = {c.step for c in reader.listed_checkpoints()[0]}
    evaluated = set(reader.eval_table()["step"].tolist())
    new_ckpts = tuple(sorted(set(checkpoint_steps) - have))
    new_evals = tuple(sorted(set(eval_steps) - evaluated))
    wanted = new_ckpts + new_evals
    if not wanted:
        return ZoomPlan(0, 0, (), (), ())
    lo, hi = min(wanted), max(wanted)
    after = [c for c in sorted(have) if c >= hi]
    if not after:
        raise DataError(f"step {hi} is past the run's last checkpoint ({max(have, default=0)})")
    start = max(s for s in resume_starts(reader) if s <= lo)
    end = after[0]
    return ZoomPlan(start, end, new_ckpts, new_evals, _met(have, start, end))


def _met(have: set[int], start: int, end: int) -> tuple[int, ...]:
    """The run's checkpoints a re-training from ``start`` to ``end`` passes and can compare (step 0 too when it
    starts there: the seeds must rebuild it; a later start was loaded from that very file)."""
    return tuple(c for c in sorted(have) if start < c <= end or c == start == 0)


def zoom(run_dir: Path, checkpoint_steps: list[int], eval_steps: list[int], progress: bool = True,
         threads: int | None = None) -> ZoomResult:
    """Add ``checkpoint_steps`` and ``eval_steps`` (those the run lacks) to ``run_dir`` by re-training (module doc).
    Takes the run's lock, so a run still being written is refused; plans under the lock. ``threads`` replaces the
    run's ``train.threads`` for this process; whether the result is still bit-identical is what the sha256 checks
    find out (the first of the run's checkpoints met on the way)."""
    started = time.perf_counter()
    staged: list = []
    with RunWriter.opened(run_dir, resume=True) as writer:
        try:
            existing = Run.open(run_dir, verify=False)  # under the lock: what the run has now
            reader, config = existing.reader, existing.config
            plan = plan_zoom(reader, checkpoint_steps, eval_steps)
            if plan.empty:
                return ZoomResult(run_dir, plan, time.perf_counter() - started, 0)
            if threads:
                config = replace(config, train=replace(config.train, threads=threads))
            run = build_training(config, existing)
            start = _load_start(reader, config, run, plan.start)
            if start == 0 and plan.start > 0:  # every kept state failed to load: start clean from the seeds
                run = build_training(config, existing)
                _load_start(reader, config, run, 0)
            if start != plan.start:
                have = {c.step for c in reader.listed_checkpoints()[0]}
                plan = ZoomPlan(start, plan.end, plan.checkpoints, plan.evals, _met(have, start, plan.end))
            recorded = {c.step: c.sha256 for c in reader.listed_checkpoints()[0]}
            rows = _retrain(run, config, plan, recorded, writer, staged, progress)
            csv = pd.DataFrame(rows, columns=EVAL_COLUMNS).to_csv(index=False, header=False, float_format="%.6g")
            writer.commit_zoom(staged, csv.encode() if rows else b"")
            staged = []
            written = sum(e.bytes for e in writer.manifest.checkpoints if e.step in set(plan.checkpoints))
            written += len(csv.encode()) if rows else 0
            return ZoomResult(run_dir, plan, time.perf_counter() - started, written)
        finally:
            for path, _ in staged:  # a failed zoom leaves nothing behind
                path.unlink(missing_ok=True)


def _retrain(run: Training, config: RunConfig, plan: ZoomPlan, recorded: dict[int, str | None], writer: RunWriter,
             staged: list, progress: bool) -> list[dict]:
    """Step from ``plan.start`` to ``plan.end``: eval rows at ``plan.evals``, staged checkpoints at
    ``plan.checkpoints``, sha256 checks at ``plan.verify``. Returns the eval rows."""
    bs, meta = config.train.batch_size, checkpoint_metadata(config)
    ckpts, evals, verify = set(plan.checkpoints), set(plan.evals), set(plan.verify)
    rows: list[dict] = []
    bar = tqdm(total=plan.end - plan.start, disable=not progress, desc="zoom", unit="step", dynamic_ncols=True)
    try:
        for step in range(plan.start, plan.end + 1):
            if step in evals:
                scores = evaluate(run.model, run.prepared, config.eval.batch_size, run.forward)
                rows += [{"step": step, "sequences": step * bs, "evaluator": e, "metric": m, "value": v}
                         for (e, m), v in scores.items()]
            if step in ckpts or step in verify:
                data = tensor_file_bytes(dict(run.model.state_dict()),
                                         {"step": step, "sequences": step * bs, **meta})
                if step in ckpts:
                    staged.append(writer.stage_checkpoint(step, step * bs, data))
                else:
                    _check_reproduced(writer, step, data, recorded.get(step))
            if step == plan.end:
                break
            run.step()
            bar.update(1)
            fault_point("zoom_step")  # test hook (coopetition/faults.py): n-th re-training step, nothing visible
    finally:
        bar.close()
    return rows


def _check_reproduced(writer: RunWriter, step: int, data: bytes, expected: str | None) -> None:
    got = hashlib.sha256(data).hexdigest()
    if got == expected:
        return
    recorded = RunReader(writer.path).config().get("versions", {})
    here = package_versions()
    differ = [f"{k} {recorded.get(k)} -> {here[k]}" for k in ("torch", "python", "platform")
              if isinstance(recorded, dict) and recorded.get(k) != here[k]]
    hint = f"; versions differ: {', '.join(differ)}" if differ else " (same package versions: threads or device?)"
    raise DataError(f"this machine does not reproduce the run: re-trained step {step} has sha256 {got[:12]}..., "
                    f"the manifest records {str(expected)[:12]}...{hint}; nothing was written")


def _load_start(reader: RunReader, config: RunConfig, run: Training, start: int) -> int:
    """Put the network, Adam and the data generator at ``start`` (or, if that state will not load, the newest
    earlier one that does, down to step 0 from the seeds); returns the step reached."""
    if start > 0:
        for point in sorted(reader.resume_points(), key=lambda p: p.step, reverse=True):
            if point.step > start or point.problem:
                continue
            try:
                state, _ = load_tensors(point.state.path, "cpu", point.state.bytes, point.state.sha256,
                                        resume_layout(run.model), what="resume state")
                info = point.checkpoint
                weights, _ = load_tensors(info.path, config.train.device, info.bytes, info.sha256,
                                          run.model.checkpoint_layout())
                run.model.load_state_dict(weights)
                restore_resume(run.model, run.optimizer, run.data_gen, state, run.data_gen.device)
                return point.step
            except (DataError, RuntimeError):
                continue  # fall back to an earlier state; a damaged one only costs time
    if config.train.init_from is not None:  # step 0 of an init_from run is the kept copy of that checkpoint
        kept = [(entry, path) for entry, path in reader.sources() if entry.role == "init_from"]
        if not kept:
            raise DataError(f"{reader.path} keeps no copy of its init_from checkpoint; cannot re-train from step 0")
        entry, path = kept[0]
        source = load_source_model(path, run.model, entry.bytes, entry.sha256)
        run.model.load_state_dict(source.state_dict())
    return 0
