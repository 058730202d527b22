"""Across checkpoints: one process looping over them, or ``torch.func.vmap`` over their stacked weights?

    python bench/analyze_vmap.py RUN [--checkpoints 8] [--evaluator flip] [--repeat 3]

Times two jobs on ``--checkpoints`` consecutive checkpoints, each both ways, interleaved:

- ``clean``: the plain forward pass of one evaluator's sequences (what the strategy curves' in-context accuracy
  comes from; the ``strategies`` analysis itself only reads the eval log and has nothing to batch);
- ``ablation``: a clean ``run_with_cache`` pass and every ablation variant of ``analysis.ablation`` (hooks and
  all) on one evaluator, with the vmapped chunk ``max_rows / checkpoints`` so that both ways run forwards of the
  same size.

``vmap`` goes through ``torch.func.functional_call`` on a wrapper module, so TransformerLens hooks,
``run_with_cache`` and the in-place edits of ``edits.run_variants`` run inside it; the results must equal the loop's
(printed max |difference|). Prints wall and CPU seconds per job and the 1-minute load average.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings
from pathlib import Path

import torch
from torch import nn
from torch.func import functional_call, vmap

from coopetition.analysis.ablation import ablation_variants
from coopetition.analysis.edits import run_variants
from coopetition.analysis.loading import LoadedRun
from coopetition.analysis.readout import readout_labels
from coopetition.store.checkpoint import load_tensors


class Job(nn.Module):
    """``forward()`` runs one job on the wrapped model, so ``functional_call`` can swap its weights."""

    def __init__(self, model, data, kind: str, max_rows: int):
        super().__init__()
        self.model, self.data, self.kind, self.max_rows = model, data, kind, max_rows
        self.perm = torch.randperm(data.n, generator=torch.Generator().manual_seed(0))
        self.readout = readout_labels(data.context_labels, data.target)

    def forward(self) -> torch.Tensor:
        d = self.data
        if self.kind == "clean":
            return self.model(d.exemplars, d.context_labels)
        _, cache = self.model.run_with_cache(d.exemplars, d.context_labels)
        variants, aliases = ablation_variants(cache, self.model.cfg.n_layers, self.model.cfg.n_heads, self.perm)
        run = [v for i, v in enumerate(variants) if i not in aliases]
        return run_variants(self.model, d.exemplars, d.context_labels, self.readout, run, cache, self.max_rows)


def timed(fn):
    start, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - start, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("--checkpoints", type=int, default=8)
    parser.add_argument("--evaluator", default="flip")
    parser.add_argument("--n-seqs", type=int, default=128)
    parser.add_argument("--max-rows", type=int, default=2048)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    run = LoadedRun.open(args.run)
    bank = run.bank()
    model = run.build_model(bank)
    data = run.eval_data(bank, (args.evaluator,), args.n_seqs)[args.evaluator]
    infos = run.checkpoints[-args.checkpoints:]
    states = [load_tensors(info.path)[0] for info in infos]
    stacked = {f"model.{k}": torch.stack([s[k] for s in states]) for k in states[0]}
    k = len(states)
    print(f"{k} checkpoints (steps {infos[0].step}..{infos[-1].step}), evaluator {args.evaluator}, "
          f"{args.n_seqs} sequences, 1 thread, load average {os.getloadavg()[0]:.2f}")
    with torch.no_grad():
        for kind in ("clean", "ablation"):
            loop_job = Job(model, data, kind, args.max_rows)
            vmap_job = Job(model, data, kind, max(data.n, args.max_rows // k))

            def loop():
                out = []
                for state in states:
                    model.load_state_dict(state)
                    out.append(loop_job())
                return torch.stack(out)

            def batched():
                return vmap(lambda p: functional_call(vmap_job, p, ()))(stacked)

            for rep in range(args.repeat):
                a, wall_a, cpu_a = timed(loop)
                b, wall_b, cpu_b = timed(batched)
                print(f"  {kind:<9} loop {wall_a:6.2f} s wall {cpu_a:6.2f} s CPU | vmap {wall_b:6.2f} s wall "
                      f"{cpu_b:6.2f} s CPU | vmap/loop CPU {cpu_b / cpu_a:.2f} | max|diff| {(a - b).abs().max():.1e}"
                      f" | load {os.getloadavg()[0]:.2f}", flush=True)


if __name__ == "__main__":
    main()
