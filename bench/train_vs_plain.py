"""Training throughput of ``ICLTransformer`` (TransformerLens, through the trainer's ``intervene`` forward) against
the same model in plain PyTorch (``bench/plain_model.py``), in the same process, plus the FLOP-count floor.

    python bench/train_vs_plain.py                                   # quick,c25 x batch 32,128 x 1,2 threads
    python bench/train_vs_plain.py --shapes quick --batches 128 --threads 1 --blocks 9

Both variants run ``coopetition.train.step.TrainStep`` (sample a batch, gather features, forward, cross-entropy,
backward, Adam) on the preset's bank with the same seeds; only the forward differs. Timed blocks alternate between
the variants, so background load hits both alike; each figure is the fastest block (the least disturbed), with the
median ratio printed too; wall and process CPU time are both reported (CPU time counts every thread). One figure
per line.

The floor: forward+backward matmul FLOPs per sequence (counted from the shapes; backward = 2 x forward, except the
exemplar embedding's input gradient, which is never needed) divided into the GFLOP/s this machine measures for a
``torch.matmul`` at the same thread count, once for a large square matmul (peak) and once for the unembedding's
own shape ([batch, d_model] x [d_model, classes], the largest matmul of both presets). Elementwise work (softmax
over 12,800 classes, Adam over 1.7M parameters) costs no matmul FLOPs, so it is what separates real steps from
the floor.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from plain_model import PlainICLTransformer, max_logit_difference  # noqa: E402

from coopetition.interventions import intervene  # noqa: E402
from coopetition.model import ICLTransformer  # noqa: E402
from coopetition.presets import get_preset  # noqa: E402
from coopetition.store.build import derive_sizes, load_run_bank, model_for, training_pool  # noqa: E402
from coopetition.train.allocator import keep_freed_memory  # noqa: E402
from coopetition.train.step import TrainStep, make_optimizer  # noqa: E402


@dataclass
class Timing:
    wall: list[float]
    cpu: list[float]

    @property
    def step_s(self) -> float:
        """The fastest block: the least disturbed by other processes."""
        return min(self.wall)

    @property
    def cpu_step_s(self) -> float:
        return min(self.cpu)

    @property
    def median_step_s(self) -> float:
        return statistics.median(self.wall)


def interleaved(steps: dict[str, callable], blocks: int, per_block: int, warmup: int) -> dict[str, Timing]:
    """Median seconds per step of each callable, timed in alternating blocks of ``per_block`` steps."""
    for step in steps.values():
        for _ in range(warmup):
            step()
    out = {name: Timing([], []) for name in steps}
    for block in range(blocks):
        names = list(steps) if block % 2 == 0 else list(reversed(steps))  # neither always runs second
        for name in names:
            wall, cpu = time.perf_counter(), time.process_time()
            for _ in range(per_block):
                steps[name]()
            out[name].wall.append((time.perf_counter() - wall) / per_block)
            out[name].cpu.append((time.process_time() - cpu) / per_block)
    return out


def matmul_gflops(m: int, k: int, n: int, seconds: float = 0.3) -> float:
    a, b = torch.randn(m, k), torch.randn(k, n)
    for _ in range(3):
        a @ b
    reps, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        a @ b
        reps += 1
    return 2 * m * k * n * reps / (time.perf_counter() - started) / 1e9


def flops_per_sequence(model, n_ctx: int) -> float:
    """Matmul FLOPs of one training sequence, forward + backward (see the module docstring)."""
    cfg = model.cfg
    d, n_tokens, n_items = cfg.d_model, 2 * n_ctx + 1, n_ctx + 1
    embed = 2 * n_items * model.input_dim * d
    block = n_tokens * (2 * d * 3 * d + 2 * d * d) + 2 * (2 * n_tokens * n_tokens * d)  # qkv, out, QK^T, AV
    if not cfg.attn_only:
        block += n_tokens * 2 * (2 * d * cfg.d_mlp)
    unembed = 2 * d * model.n_outputs  # the query position only
    forward = embed + cfg.n_layers * block + unembed
    return 3 * forward - embed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shapes", default="quick,c25", help="presets whose model/bank shapes to time")
    parser.add_argument("--batches", default="32,128")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--blocks", type=int, default=5, help="timed blocks per variant")
    parser.add_argument("--block-seconds", type=float, default=0.6, help="target length of one timed block")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile of the hooked model")
    parser.add_argument("--stock", action="store_true",
                        help="also time the hooked model with the fused training kernels off (the hooked path)")
    parser.add_argument("--unfused-loss", action="store_true",
                        help="also time the hooked model with the unfused unembedding + cross-entropy (train.fused_loss "
                             "false, the step before it was the default)")
    parser.add_argument("--adam", choices=("fused", "single", "both"), default="fused",
                        help="Adam kernel of both variants: fused (train.fused_adam, the default) or single-tensor; "
                             "both: fused, plus the hooked model with the single-tensor kernel as a third variant")
    args = parser.parse_args()
    keep_freed_memory()  # as the trainer does (train/allocator.py): no page faults for the step's large tensors

    print(f"machine: {os.cpu_count()} CPUs visible, torch {torch.__version__}, 1-min load average at start "
          f"{os.getloadavg()[0]:.2f}")
    for shape in args.shapes.split(","):
        config = get_preset(shape)
        bank = load_run_bank(config)
        pool, sizes = training_pool(config, bank), derive_sizes(config, bank)
        n_ctx = config.task.context_len
        check = max_logit_difference(model_for(config, sizes), n_ctx=n_ctx)
        print(f"{shape} plain-vs-hooked max |logit diff|: {check:.1e}")
        assert check < 1e-5, "the plain model does not compute the same function"
        for batch in map(int, args.batches.split(",")):
            for threads in map(int, args.threads.split(",")):
                torch.set_num_threads(threads)
                tag = f"{shape} batch {batch} threads {threads}"
                steps = _steps(config, sizes, bank.features, pool, batch, args.compile, args.adam, args.stock,
                               args.unfused_loss)
                once = time.perf_counter()
                steps["hooked"]()
                per_block = max(3, round(args.block_seconds / (time.perf_counter() - once)))
                timing = interleaved(steps, args.blocks, per_block, warmup=max(5, per_block // 3))
                for name, t in timing.items():
                    print(f"{tag} {name} sequences/s: {batch / t.step_s:.0f}")
                    print(f"{tag} {name} steps/s: {1 / t.step_s:.2f}")
                    print(f"{tag} {name} ms/step wall: {t.step_s * 1e3:.2f}")
                    print(f"{tag} {name} ms/step process CPU: {t.cpu_step_s * 1e3:.2f}")
                for name in (n for n in timing if n != "plain"):
                    ratio = timing[name].step_s / timing["plain"].step_s
                    cpu_ratio = timing[name].cpu_step_s / timing["plain"].cpu_step_s
                    print(f"{tag} {name}/plain step-time ratio wall: {ratio:.3f}")
                    print(f"{tag} {name}/plain step-time ratio CPU: {cpu_ratio:.3f}")
                    print(f"{tag} {name}/plain step-time ratio wall, median blocks: "
                          f"{timing[name].median_step_s / timing['plain'].median_step_s:.3f}")
                for name in ("hooked-single-adam", "hooked-stock", "hooked-unfused-loss"):
                    if name in timing:
                        print(f"{tag} {name}/hooked step-time ratio wall: "
                              f"{timing[name].step_s / timing['hooked'].step_s:.3f}")
                        print(f"{tag} {name}/hooked step-time ratio wall, median blocks: "
                              f"{timing[name].median_step_s / timing['hooked'].median_step_s:.3f}")
                flops = flops_per_sequence(steps["hooked"].forward.model, n_ctx)
                peak = matmul_gflops(1024, 1024, 1024)
                shaped = matmul_gflops(batch, config.model.d_model, sizes.n_outputs)
                print(f"{tag} matmul GFLOP/s peak (1024^3): {peak:.1f}")
                print(f"{tag} matmul GFLOP/s unembedding shape ({batch}x{config.model.d_model}x{sizes.n_outputs}): "
                      f"{shaped:.1f}")
                print(f"{tag} MFLOP per sequence (fwd+bwd matmuls): {flops / 1e6:.2f}")
                print(f"{tag} FLOP floor sequences/s at peak: {peak * 1e9 / flops:.0f}")
                print(f"{tag} FLOP floor sequences/s at unembedding-shape rate: {shaped * 1e9 / flops:.0f}")
                print(f"{tag} 1-min load average: {os.getloadavg()[0]:.2f}")
                sys.stdout.flush()


def _steps(config, sizes, features, pool, batch: int, compiled: bool = False,
           adam: str = "fused", stock: bool = False, unfused_loss: bool = False) -> dict[str, TrainStep]:
    """The trainer's step for the hooked model and for its plain copy: same data stream, same optimizer (``adam``
    "both": fused, plus a twin hooked model stepped by the single-tensor kernel; ``stock``: plus a twin whose
    fused training kernels are off, i.e. every op on the hooked path; ``unfused_loss``: plus a twin that takes
    cross-entropy of the full logits instead of the fused unembedding + loss). The hooked step is the trainer's
    default (``train.fused_loss``); the plain model takes ``F.cross_entropy`` of its logits."""
    model = model_for(config, sizes)
    plain = PlainICLTransformer.from_hooked(model)
    model.fuse_training_kernels()  # as the trainer does
    specs, weights, lr = config.task.mixture, config.task.mixture_weights, config.train.lr

    def step(forward, params, fused: bool = adam != "single", loss=None) -> TrainStep:
        gen = torch.Generator().manual_seed(config.seeds.train)
        return TrainStep(forward, make_optimizer(params, lr, fused), params, features, pool, specs, weights, batch,
                         gen, loss_forward=loss)

    forward = intervene([], model)
    out = {"hooked": step(forward, forward.trainable_parameters(), loss=forward.loss),
           "plain": step(lambda x, labels, target: plain(x, labels), list(plain.parameters()))}
    if adam == "both":
        single_model = model_for(config, sizes)
        single_model.fuse_training_kernels()
        single = intervene([], single_model)
        out["hooked-single-adam"] = step(single, single.trainable_parameters(), fused=False, loss=single.loss)
    if unfused_loss:
        twin_model = model_for(config, sizes)
        twin_model.fuse_training_kernels()
        twin = intervene([], twin_model)
        out["hooked-unfused-loss"] = step(twin, twin.trainable_parameters())
    if stock:
        twin = ICLTransformer(config.model, sizes.input_dim, sizes.n_labels, sizes.n_outputs, config.seeds.init)
        stocked = intervene([], twin)  # fuse_training_kernels is never switched on for it
        out["hooked-stock"] = step(stocked, stocked.trainable_parameters(), loss=stocked.loss)
    if compiled:
        twin = model_for(config, sizes)
        fast = torch.compile(twin)
        out["compiled"] = step(lambda x, labels, target: fast(x, labels), list(twin.parameters()))
    return out


if __name__ == "__main__":
    main()
