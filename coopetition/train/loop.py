"""The training loop: sample a batch, step Adam, evaluate and checkpoint on the schedules.

Nothing in the step does per-step host work that can wait: the running loss stays on the device and is read only at
``log_every`` steps, eval sets are gathered onto the device once, batches are drawn with tensor ops.
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from coopetition.bank import ExemplarBank
from coopetition.config import RunConfig
from coopetition.errors import ConfigError, DataError, RecoveryWarning
from coopetition.faults import fault_point
from coopetition.interventions import Intervened
from coopetition.store.build import Sizes, derive_sizes, load_run_bank, model_for, training_pool
from coopetition.store.checkpoint import load_tensors
from coopetition.store.evalsets import eval_sets_for
from coopetition.store.provenance import now_iso, package_versions
from coopetition.store.reader import EVAL_COLUMNS, TRAIN_COLUMNS, RunReader
from coopetition.store.run import Run
from coopetition.store.sources import Source, keep_sources, load_source_model, resolve_sources, run_graft_models
from coopetition.store.writer import RunWriter, leftovers_only
from coopetition.task.evalset import EvalData
from coopetition.task.evaluators import eval_sets_tensors, progress_metrics
from coopetition.task.sampler import SequenceBatch
from coopetition.train.allocator import keep_freed_memory
from coopetition.train.evaluate import evaluate, prepare_eval_sets
from coopetition.train.schedule import kept_resume_steps, schedule_steps
from coopetition.train.state import restore_resume, resume_layout, resume_tensors
from coopetition.train.config import TrainConfig
from coopetition.train.step import (LossForward, TrainStep, compiled_forward, compiled_loss, label_scale_at,
                                    lr_factor_at, lr_groups, make_optimizer, parameter_names, set_lrs)



@dataclass(frozen=True)
class Training:
    """What the loop steps, built from a config exactly as a fresh run builds it (the same calls in the same order,
    so a resumed or zoomed run continues bit-identically): the network that runs, Adam, the data generator, the
    training step, and the eval sets gathered onto the device."""

    model: torch.nn.Module
    forward: Intervened
    optimizer: torch.optim.Optimizer
    data_gen: torch.Generator
    step: TrainStep
    prepared: list[EvalData]
    bank: ExemplarBank
    sizes: Sizes
    eval_sets: dict[str, SequenceBatch]
    sources: list[Source]  # fresh runs only: the checkpoints to copy into the run
    base_lrs: tuple[float, ...]  # each Adam group's rate as built; the schedules scale these (step.set_lrs)


def build_training(config: RunConfig, existing: Run | None) -> Training:
    """Fresh (``existing`` None): the bank, eval sets and sources named by the config, ``init_from`` loaded. An
    existing run (resume, zoom): its recorded bank and stored eval sets, grafts from its own source copies, and the
    weights left at initialisation (the caller loads a checkpoint). ``config`` is the run's own, with at most its
    run-time settings (threads, device) changed."""
    tc = config.train
    if tc.threads:
        torch.set_num_threads(tc.threads)
    keep_freed_memory()  # no page faults for the step's large tensors (coopetition/train/allocator.py)
    device = torch.device(tc.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device is cuda but no CUDA device is available")
    bank = existing.bank() if existing else load_run_bank(config)  # an existing run: the recorded bank, or refuse
    features = bank.features.to(device)
    pool = training_pool(config, bank, device)
    sizes = derive_sizes(config, bank)
    eval_sets = existing.eval_sets(bank) if existing else eval_sets_for(config, bank)
    prepared = prepare_eval_sets(eval_sets, features)
    model = model_for(config, sizes, device)
    if existing:  # the frozen sources come from the run's own copies
        sources = []
        graft_models = run_graft_models(existing.reader, config, model)
    else:  # opened and checked now; copied into the run by train(), after it is created
        sources = resolve_sources(config, model, bank.fingerprint())
        graft_models = [load_source_model(s.path, model, s.bytes, s.sha256) for s in sources if s.role == "graft"]
        for source in (s for s in sources if s.role == "init_from"):
            model.load_state_dict(load_source_model(source.path, model, source.bytes, source.sha256).state_dict())
    model.fuse_training_kernels()  # fused attention/LayerNorm in training steps only (coopetition/model/components.py)
    forward = Intervened(model, config.interventions, graft_models)
    trainable = forward.trainable_parameters()
    optimizer = make_optimizer(lr_groups(parameter_names(model, trainable), tc.lr, tc.unembed_lr_scale,
                                         tc.label_lr_scale, label_own_group=tc.label_lr_ramp is not None),
                               tc.lr, fused=tc.fused_adam)
    data_gen = torch.Generator(device).manual_seed(config.seeds.train)
    train_step = TrainStep(compiled_forward(forward) if tc.compile else forward, optimizer, trainable, features, pool,
                           config.task.mixture, config.task.mixture_weights, tc.batch_size, data_gen,
                           tc.weight_decay, tc.weight_decay_form, tc.amp, parameter_names(model, trainable),
                           _loss_forward(forward, tc))
    return Training(model, forward, optimizer, data_gen, train_step, prepared, bank, sizes, eval_sets, sources,
                    tuple(group["lr"] for group in optimizer.param_groups))


def _loss_forward(forward: Intervened, tc: TrainConfig) -> LossForward | None:
    """The step's loss straight from the inputs (``train.fused_loss``; compiled up to the unembedding with
    ``train.compile``), or None: cross-entropy of ``forward``'s logits, as before the fused loss."""
    if not tc.fused_loss:
        return None
    return compiled_loss(forward) if tc.compile else forward.loss


def checkpoint_metadata(config: RunConfig) -> dict:
    """What a checkpoint's header records besides its step and sequences (part of its bytes, so of its sha256)."""
    return {"seeds": config.to_dict()["seeds"]}


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    steps: int
    wall_seconds: float
    final_eval: dict[tuple[str, str], float]  # the last eval step's scores (also when a resume had nothing to do)
    start_step: int = 0  # where this process started: 0 (fresh or restarted) or the checkpoint it resumed from


def train(config: RunConfig, run_dir: Path, overwrite: bool = False, resume: bool = False,
          progress: bool = True) -> TrainResult:
    """Train ``config`` into ``run_dir`` (fresh, or continuing it with ``resume``). Validates everything, and builds
    the bank, eval sets and model, before writing a byte. The run is written under ``RunWriter.opened``: its lock
    is held throughout, and a fresh run stopped by anything before its first checkpoint is committed is removed.

    ``resume`` on a run that has no checkpoint yet (killed during its first seconds) starts it again from step 0 in
    place, from its recorded config (re-validated, its ``derived`` record checked against what the config derives)
    and its recorded eval sets, with a one-line ``RecoveryWarning`` saying so: the result is the run the first
    process would have written."""
    fault_point("startup")  # test hook (coopetition/faults.py): nothing built or written yet
    tc = config.train
    ckpt_steps = set(schedule_steps(tc.checkpoint_schedule, tc.steps, tc.batch_size))
    eval_steps = set(schedule_steps(tc.eval_schedule or tc.checkpoint_schedule, tc.steps, tc.batch_size))
    keep_resume = kept_resume_steps(tc.checkpoint_schedule, tc.resume_schedule, tc.steps, tc.batch_size)

    existing = Run.open(run_dir, verify=False) if resume else None
    restart = existing is not None and not existing.manifest().committed
    # A restart rebuilds what the first process built; its recorded eval sets and source copies are reused when it
    # got as far as listing them (an init_from run re-reads its source: step 0 is that checkpoint's weights).
    reuse = resume and not (restart and (existing.manifest().eval_sets is None or tc.init_from is not None))
    run = build_training(config, existing if reuse else None)
    model, forward, train_step, prepared = run.model, run.forward, run.step, run.prepared
    if restart:
        check_recorded(run_dir, config, run)

    with RunWriter.opened(run_dir, resume=resume, overwrite=overwrite, keep_resume=keep_resume) as writer:
        start_step, eval_rows, train_rows = 0, [], []
        running_loss, since_log = torch.zeros((), device=tc.device), 0  # the partial log interval, part of resume state
        if not resume:
            _start(writer, run, config)
        elif restart:
            _restart(writer, run, reuse, config)
        else:
            start_step, eval_rows, train_rows, running_loss, since_log = _restore(writer, run, config)
        continuing = resume and not restart  # the start step's eval rows and checkpoint are on disk already

        started = time.perf_counter()
        last_eval: dict[tuple[str, str], float] = {}
        shown = progress_metrics(config.eval.evaluators())  # the progress bar's scores: the specs say which
        # the bar counts optimizer steps taken (the last step is evaluated and saved, not trained): it ends at N/N
        with tqdm(initial=start_step, total=tc.steps, disable=not progress, desc="train", unit="step",
                  dynamic_ncols=True) as bar:
            for step in range(start_step, tc.steps + 1):
                sequences = step * tc.batch_size
                if step in eval_steps and not (continuing and step == start_step):
                    last_eval = evaluate(model, prepared, config.eval.batch_size, forward)
                    eval_rows += [{"step": step, "sequences": sequences, "evaluator": e, "metric": m, "value": v}
                                  for (e, m), v in last_eval.items()]
                    writer.write_table("eval.csv", eval_rows, EVAL_COLUMNS)
                    bar.set_postfix({f"{e}": f"{last_eval[(e, m)]:.2f}" for e, m in shown if (e, m) in last_eval})
                if step in ckpt_steps and not (continuing and step == start_step):
                    _checkpoint(writer, run, step, config, train_rows, running_loss, since_log)
                if step == tc.steps:
                    break
                if tc.label_lr_ramp is not None or tc.lr_decay is not None:
                    label_lr = (tc.lr * label_scale_at(step, tc.label_lr_scale, tc.label_lr_ramp)
                                if tc.label_lr_ramp is not None else None)
                    set_lrs(run.optimizer, run.base_lrs, lr_factor_at(step, tc.lr_decay), label_lr)
                running_loss += train_step()
                bar.update(1)
                since_log += 1
                fault_point("train_step")  # test hook: n-th training step of this process taken, nothing written
                if since_log == tc.log_every:
                    train_rows.append({"step": step + 1, "sequences": (step + 1) * tc.batch_size,
                                       "metric": "loss", "value": (running_loss / since_log).item()})
                    running_loss.zero_()
                    since_log = 0
        fault_point("final_write")  # test hook: trained to the end, the last train.csv rows not written yet
        writer.write_table("train.csv", train_rows, TRAIN_COLUMNS)
    return TrainResult(run_dir, tc.steps, time.perf_counter() - started, _last_scores(eval_rows), start_step)


def _start(writer: RunWriter, run: Training, config: RunConfig) -> None:
    """Record a fresh run: copies of its source checkpoints, ``config.json`` (config, seeds, what it derives,
    package versions), this process's session, then its eval sets."""
    fault_point("run_dir")  # test hook: the run dir exists and is locked, nothing else is in it
    provenance = keep_sources(writer, run.sources)
    init_step = next((s.step for s in run.sources if s.role == "init_from"), None)
    writer.write_json("config.json", {
        "config": config.to_dict(), "seeds": config.to_dict()["seeds"],
        "derived": {**run.sizes.__dict__, "n_parameters": run.model.n_parameters(),
                    "bank_fingerprint": run.bank.fingerprint(), "bank_shape": list(run.bank.features.shape),
                    "init_from_step": init_step, "sources": provenance},
        "versions": package_versions(), "created": now_iso(),
    })
    fault_point("config_written")  # test hook: config.json on disk, no eval sets or manifest yet
    writer.record_session(_session(config, 0, "fresh"))
    writer.write_eval_sets(eval_sets_tensors(run.eval_sets),
                           {"bank_fingerprint": run.bank.fingerprint(), "eval_seed": config.seeds.eval})


def _last_scores(eval_rows: list[dict]) -> dict[tuple[str, str], float]:
    """``{(evaluator, metric): value}`` at the run's last eval step (read back from the rows, so a resume of a
    finished run reports the run's final scores rather than nothing)."""
    if not eval_rows:
        return {}
    last = max(row["step"] for row in eval_rows)
    return {(row["evaluator"], row["metric"]): float(row["value"]) for row in eval_rows if row["step"] == last}


def _session(config: RunConfig, step: int, how: str) -> dict:
    """A process's run-time settings, kept in the manifest (``RunWriter.record_session``)."""
    return {"started": now_iso(), "from_step": step, "threads": config.train.threads, "device": config.train.device,
            "how": how}


def check_recorded(run_dir: Path, config: RunConfig, run: Training) -> None:
    """Refuse to restart a run whose ``config.json`` does not derive what it recorded (an edited or forged config
    whose fields are each valid): the same bank fingerprint, sizes and parameter count, the same seeds twice."""
    meta = RunReader(run_dir).config()
    derived = RunReader(run_dir).derived()
    where = Path(run_dir, "config.json")
    derives = {**run.sizes.__dict__, "n_parameters": run.model.n_parameters(),
               "bank_fingerprint": run.bank.fingerprint(), "bank_shape": list(run.bank.features.shape)}
    derives = json.loads(json.dumps(derives))  # tuples as the JSON record holds them
    for key, value in derives.items():
        if key in derived and derived[key] != value:
            raise DataError(f"{where}: derived.{key} is {derived[key]!r} but the config derives {value!r} "
                            f"(edited?); not restarting it")
    missing = sorted({"input_dim", "n_labels", "n_outputs", "bank_fingerprint"} - set(derived))
    if missing or meta.get("seeds") != config.to_dict()["seeds"]:
        why = f"lacks derived {missing}" if missing else "records seeds that its config does not hold"
        raise DataError(f"{where} {why} (incomplete or edited); not restarting it")


def _restart(writer: RunWriter, run: Training, reuse: bool, config: RunConfig) -> None:
    """Put a run with no checkpoint back at its start: its tables and unlisted files go; the eval sets and source
    copies it listed stay (``reuse``), or are written as the first process would have."""
    warnings.warn(f"{writer.path} has no checkpoint yet: starting it from step 0 with its recorded config"
                  f"{' and eval sets' if reuse else ' (eval sets drawn from its seeds, as at its start)'}",
                  RecoveryWarning, stacklevel=3)
    for name in ("eval.csv", "train.csv"):
        (writer.path / name).unlink(missing_ok=True)
    if not reuse:
        writer.restart()
        keep_sources(writer, run.sources)
        writer.write_eval_sets(eval_sets_tensors(run.eval_sets),
                               {"bank_fingerprint": run.bank.fingerprint(), "eval_seed": config.seeds.eval})
    writer.record_session(_session(config, 0, "restart"))


def _checkpoint(writer: RunWriter, run: Training, step: int, config: RunConfig, train_rows: list,
                running_loss: torch.Tensor, since_log: int) -> None:
    """train.csv first, then weights and resume state, then the manifest commit: whatever the manifest lists at
    step s, the tables on disk already hold every row up to s."""
    writer.write_table("train.csv", train_rows, TRAIN_COLUMNS)
    state = resume_tensors(run.model, run.optimizer, run.data_gen, running_loss, since_log)
    writer.save_checkpoint(step, step * config.train.batch_size, dict(run.model.state_dict()), state,
                           checkpoint_metadata(config))


def _restore(writer: RunWriter, run: Training, config: RunConfig):
    """Load the newest checkpoint whose weights and resume state both match the manifest and the model's layout
    (warning about each one refused, including entries naming files outside the run), forget everything after it,
    record this process's session and return the loop state to continue from."""
    model, optimizer, data_gen, device = run.model, run.optimizer, run.data_gen, torch.device(config.train.device)
    reader = RunReader(writer.path)
    weights_layout = model.checkpoint_layout()
    state_layout = resume_layout(model)
    refused = []
    for point in reader.resume_points():
        try:
            if point.problem:
                raise DataError(point.problem)
            state, _ = load_tensors(point.state.path, "cpu", point.state.bytes, point.state.sha256, state_layout,
                                    what="resume state")
            info = point.checkpoint
            weights, _ = load_tensors(info.path, device, info.bytes, info.sha256, weights_layout)
            try:
                model.load_state_dict(weights)
            except RuntimeError:
                raise DataError(f"checkpoint {info.path} does not fit the run's model") from None
            running_loss, since_log = restore_resume(model, optimizer, data_gen, state, device)
        except DataError as err:
            warnings.warn(f"not resuming from step {point.step}: {err}", RecoveryWarning, stacklevel=2)
            refused.append(point.step)
            continue
        step = point.step
        break
    else:
        why = f" (refused steps {refused})" if refused else ""
        raise DataError(f"{writer.path} has no complete checkpoint to resume from{why}; "
                        f"start it again with --overwrite")
    frame = reader.eval_table(zoomed=False) if (writer.path / "eval.csv").exists() else None
    train_frame = reader.train_table() if (writer.path / "train.csv").exists() else None
    writer.truncate_after(step)
    eval_rows = frame[frame.step <= step].to_dict("records") if frame is not None else []
    train_rows = train_frame[train_frame.step <= step].to_dict("records") if train_frame is not None else []
    writer.write_table("eval.csv", eval_rows, EVAL_COLUMNS)
    writer.write_table("train.csv", train_rows, TRAIN_COLUMNS)
    writer.record_session(_session(config, step, "resume"))
    return step, eval_rows, train_rows, running_loss, since_log


def resume_config(run_dir: Path) -> RunConfig:
    """The config a run was started with (``--resume`` never takes a new one), re-validated as it is read. A folder
    without ``config.json`` was stopped before it recorded anything: nothing to resume, the same command restarts
    it (``check_new_run_dir`` takes such leftovers for an empty folder)."""
    run_dir = Path(run_dir)
    if not run_dir.exists() and not run_dir.is_symlink():
        raise DataError(f"run dir {run_dir} does not exist: nothing to resume (a run killed during its start-up "
                        f"wrote nothing; start it again with the command that creates it)")
    if run_dir.is_dir() and not (run_dir / "config.json").exists() and leftovers_only(run_dir):
        raise DataError(f"{run_dir} has no config.json: its run was stopped before recording its config, so there "
                        f"is nothing to resume; start it again with the command that created it")
    return Run.open(run_dir, verify=False).config
