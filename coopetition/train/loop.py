"""The training loop: sample a batch, step Adam, evaluate and checkpoint on the schedules.

Nothing in the step does per-step host work that can wait: the running loss stays on the device and is read only at
``log_every`` steps, eval sets are gathered onto the device once, batches are drawn with tensor ops.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm

from coopetition.config import RunConfig, config_from_dict
from coopetition.errors import ConfigError
from coopetition.interventions import init_from_checkpoint, intervene
from coopetition.store.checkpoint import load_tensors, save_tensors
from coopetition.store.rundir import EVAL_COLUMNS, TRAIN_COLUMNS, RunReader, RunWriter, now_iso, package_versions
from coopetition.task.evaluators import eval_sets_tensors
from coopetition.task.metrics import query_loss
from coopetition.task.sampler import gather_features, sample_mixture
from coopetition.train.evaluate import evaluate, prepare_eval_sets
from coopetition.train.schedule import schedule_steps
from coopetition.train.setup import derive_sizes, eval_sets_for, load_run_bank, model_for, training_pool
from coopetition.train.state import optimizer_tensors, restore_optimizer

PROGRESS_METRICS = (("flip", "in_context_acc"), ("ciwl", "in_context_acc"), ("icl", "in_context_acc"))


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    steps: int
    wall_seconds: float
    final_eval: dict[tuple[str, str], float]


def weight_penalty(params, form: str) -> torch.Tensor:
    norms = [p.pow(2).sum() if form == "l2" else p.norm() for p in params]
    return torch.stack(norms).sum()


def train(config: RunConfig, run_dir: Path, overwrite: bool = False, resume: bool = False,
          progress: bool = True) -> TrainResult:
    """Train ``config`` into ``run_dir`` (fresh, or continuing it with ``resume``). Validates everything, and builds
    the bank, eval sets and model, before writing a byte."""
    tc = config.train
    if tc.threads:
        torch.set_num_threads(tc.threads)
    device = torch.device(tc.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device is cuda but no CUDA device is available")
    ckpt_steps = set(schedule_steps(tc.checkpoint_schedule, tc.steps, tc.batch_size))
    eval_steps = set(schedule_steps(tc.eval_schedule or tc.checkpoint_schedule, tc.steps, tc.batch_size))

    bank = load_run_bank(config)
    features = bank.features.to(device)
    pool = training_pool(config, bank)
    sizes = derive_sizes(config, bank)
    eval_sets = eval_sets_for(config, bank)
    prepared = prepare_eval_sets(eval_sets, features)
    model = model_for(config, sizes, device)
    init_step = init_from_checkpoint(model, tc.init_from, bank.fingerprint()) if tc.init_from and not resume else None
    forward = intervene(config.interventions, model, bank.fingerprint())  # grafts spliced, sources checked
    trainable = forward.trainable_parameters()
    optimizer = torch.optim.Adam(trainable, lr=tc.lr, betas=(0.9, 0.999), eps=1e-8)
    data_gen = torch.Generator(device).manual_seed(config.seeds.train)

    start_step, eval_rows, train_rows, manifest = 0, [], [], []
    if resume:
        writer = RunWriter(run_dir)
        writer.lock()
        start_step, eval_rows, train_rows, manifest = _restore(run_dir, model, optimizer, data_gen)
    else:
        writer = RunWriter.create(run_dir, overwrite)
        writer.write_json("config.json", {
            "config": config.to_dict(), "seeds": config.to_dict()["seeds"],
            "derived": {**sizes.__dict__, "n_parameters": model.n_parameters(), "bank_fingerprint": bank.fingerprint(),
                        "bank_shape": list(bank.features.shape), "init_from_step": init_step,
                        "graft_sources": forward.provenance()},
            "versions": package_versions(), "created": now_iso(),
        })
        save_tensors(run_dir / "eval_sets.safetensors", eval_sets_tensors(eval_sets),
                     {"bank_fingerprint": bank.fingerprint(), "eval_seed": config.seeds.eval})

    started = time.perf_counter()
    running_loss = torch.zeros((), device=device)
    since_log = 0
    last_eval: dict[tuple[str, str], float] = {}
    bar = tqdm(range(start_step, tc.steps + 1), initial=start_step, total=tc.steps + 1, disable=not progress,
               desc="train", unit="step", dynamic_ncols=True)
    try:
        for step in bar:
            sequences = step * tc.batch_size
            if step in eval_steps and not (resume and step == start_step):
                last_eval = evaluate(model, prepared, config.eval.batch_size, forward)
                eval_rows += [{"step": step, "sequences": sequences, "evaluator": e, "metric": m, "value": v}
                              for (e, m), v in last_eval.items()]
                writer.write_table("eval.csv", eval_rows, EVAL_COLUMNS)
                bar.set_postfix({f"{e}": f"{last_eval[(e, m)]:.2f}" for e, m in PROGRESS_METRICS
                                 if (e, m) in last_eval})
            if step in ckpt_steps and not (resume and step == start_step):
                _checkpoint(writer, model, optimizer, data_gen, step, sequences, config, manifest)
                writer.write_table("train.csv", train_rows, TRAIN_COLUMNS)
            if step == tc.steps:
                break
            batch = sample_mixture(list(config.task.mixture), list(config.task.mixture_weights), pool,
                                   tc.batch_size, data_gen, device)
            logits = forward(gather_features(features, batch), batch.context_labels, batch.target)
            loss = query_loss(logits, batch.target)
            penalty = weight_penalty(trainable, tc.weight_decay_form) if tc.weight_decay else 0.0
            total = loss + tc.weight_decay * penalty
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            optimizer.step()
            running_loss += loss.detach()
            since_log += 1
            if since_log == tc.log_every:
                train_rows.append({"step": step + 1, "sequences": (step + 1) * tc.batch_size,
                                   "metric": "loss", "value": (running_loss / since_log).item()})
                running_loss.zero_()
                since_log = 0
        writer.write_table("train.csv", train_rows, TRAIN_COLUMNS)
    finally:
        bar.close()
        writer.close()
    return TrainResult(run_dir, tc.steps, time.perf_counter() - started, last_eval)


def _checkpoint(writer: RunWriter, model, optimizer, data_gen, step: int, sequences: int, config: RunConfig,
                manifest: list) -> None:
    seeds = config.to_dict()["seeds"]
    writer.save_checkpoint(step, sequences, dict(model.state_dict()), {"seeds": seeds}, manifest)
    state = {**{f"model/{k}": v for k, v in model.state_dict().items()}, **optimizer_tensors(model, optimizer),
             "rng/train": data_gen.get_state()}
    save_tensors(writer.path / "resume.safetensors", state, {"step": step, "sequences": sequences, "seeds": seeds})


def _restore(run_dir: Path, model, optimizer, data_gen):
    """Load the latest resume state and keep only the table rows it has already produced."""
    reader = RunReader.open(run_dir)
    tensors, meta = load_tensors(run_dir / "resume.safetensors")
    step = int(meta["step"])
    model.load_state_dict({k[len("model/"):]: v for k, v in tensors.items() if k.startswith("model/")})
    restore_optimizer(model, optimizer, tensors)
    data_gen.set_state(tensors["rng/train"].to("cpu") if data_gen.device.type == "cpu" else tensors["rng/train"])
    frame = reader.eval_table() if (run_dir / "eval.csv").exists() else None
    eval_rows = frame[frame.step <= step].to_dict("records") if frame is not None else []
    train_path = run_dir / "train.csv"
    train_rows = pd.read_csv(train_path).query("step <= @step").to_dict("records") if train_path.exists() else []
    manifest = [e for e in reader.manifest() if e["step"] <= step]
    return step, eval_rows, train_rows, manifest


def resume_config(run_dir: Path) -> RunConfig:
    """The config a run was started with (``--resume`` never takes a new one)."""
    return config_from_dict(RunReader.open(run_dir).config()["config"])
