"""Training throughput of a preset on this machine (run on demand; prints one figure per line).

    python bench/train_speed.py [PRESET] [STEPS] [THREADS]

Times the trainer's own step (``coopetition.train.step.TrainStep``: sampling, forward, backward, Adam) and one full evaluation, then projects the
preset's wall time from its schedule. Nothing is written to disk.
"""

import sys
import time

import torch

from coopetition.interventions import intervene
from coopetition.presets import get_preset
from coopetition.train.evaluate import evaluate, prepare_eval_sets
from coopetition.train.schedule import schedule_steps
from coopetition.store.build import derive_sizes, load_run_bank, model_for, training_pool
from coopetition.store.evalsets import eval_sets_for
from coopetition.train.step import TrainStep, make_optimizer


def main() -> None:
    preset = sys.argv[1] if len(sys.argv) > 1 else "quick"
    steps = int(sys.argv[2]) if len(sys.argv) > 2 else 300
    torch.set_num_threads(int(sys.argv[3]) if len(sys.argv) > 3 else 2)
    config = get_preset(preset)
    bank = load_run_bank(config)
    pool, sizes = training_pool(config, bank), derive_sizes(config, bank)
    model = model_for(config, sizes)
    model.fuse_training_kernels()  # as the trainer does
    forward = intervene(config.interventions, model)
    params = forward.trainable_parameters()
    step = TrainStep(forward, make_optimizer(params, config.train.lr, config.train.fused_adam), params, bank.features,
                     pool, config.task.mixture, config.task.mixture_weights, config.train.batch_size,
                     torch.Generator().manual_seed(0), config.train.weight_decay, config.train.weight_decay_form,
                     config.train.amp)

    for _ in range(20):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    per_step = (time.perf_counter() - start) / steps
    prepared = prepare_eval_sets(eval_sets_for(config, bank), bank.features)
    start = time.perf_counter()
    evaluate(model, prepared, config.eval.batch_size)
    per_eval = time.perf_counter() - start
    n_evals = len(schedule_steps(config.train.eval_schedule or config.train.checkpoint_schedule,
                                 config.train.steps, config.train.batch_size))
    print(f"preset {preset}, {torch.get_num_threads()} threads, batch {config.train.batch_size}")
    print(f"step time: {per_step * 1e3:.1f} ms")
    print(f"throughput: {config.train.batch_size / per_step:.0f} sequences/s, {1 / per_step:.1f} steps/s")
    print(f"one evaluation (all evaluators): {per_eval:.2f} s")
    print(f"projected wall time for {config.train.steps} steps + {n_evals} evals: "
          f"{(config.train.steps * per_step + n_evals * per_eval) / 60:.1f} min")


if __name__ == "__main__":
    main()
