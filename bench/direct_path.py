"""How much of the in-weights task the direct path alone can learn on a bank: exemplar embedding -> LayerNorm ->
unembedding (the network with every head removed), trained on its own with the run's optimiser, batch and step
count, scored as the 2-way in-context choice of the Train evaluator (query's label against a random other class's).

    python bench/direct_path.py --set bank.modes=8 --steps 6000

Why: in C25, removing all heads leaves 0.63 Train in-context accuracy (REFERENCE 9.7); on a bank where this probe
reaches ~1.0 within the run's budget, the network's in-weights answer is free to live in the direct path, and the
scorecard's "all heads removed" check cannot come near the paper's. It is a cheap screen (seconds to minutes) before
a 10-seed sweep, not a substitute for the run's own scorecard. One figure per line.
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

from coopetition.bank import load_bank
from coopetition.config import apply_override, config_from_dict
from coopetition.presets import get_preset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE")
    parser.add_argument("--steps", type=int, default=None, help="default: the preset's train.steps")
    parser.add_argument("--report", type=int, default=1000, help="score every this many steps")
    parser.add_argument("--eval-classes", type=int, default=1600)
    parser.add_argument("--eval-exemplars", type=int, default=5)
    args = parser.parse_args()
    data = get_preset(args.preset).to_dict()
    for item in args.set:
        data = apply_override(data, item)
    config = config_from_dict(data)
    torch.manual_seed(config.seeds.init)
    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    features = load_bank(config.bank).features
    n_cls, n_ex, dim = features.shape
    d_model = config.model.d_model
    model = nn.Sequential(nn.Linear(dim, d_model), nn.LayerNorm(d_model), nn.Linear(d_model, n_cls))
    opt = torch.optim.Adam(model.parameters(), lr=config.train.lr)
    gen = torch.Generator().manual_seed(config.seeds.train)
    eval_gen = torch.Generator().manual_seed(config.seeds.eval)
    n_eval = 5000
    q_cls = torch.randint(0, min(args.eval_classes, n_cls), (n_eval,), generator=eval_gen)
    d_cls = (q_cls + torch.randint(1, min(args.eval_classes, n_cls), (n_eval,), generator=eval_gen)) % min(
        args.eval_classes, n_cls)
    q_ex = torch.randint(0, min(args.eval_exemplars, n_ex), (n_eval,), generator=eval_gen)
    steps = args.steps or config.train.steps
    print(f"bank {' '.join(args.set) or '(preset)'}: {n_cls} x {n_ex} x {dim}, d_model {d_model}, "
          f"batch {config.train.batch_size}, lr {config.train.lr}")
    for step in range(steps + 1):
        if step % args.report == 0 or step == steps:
            with torch.no_grad():
                logits = model(features[q_cls, q_ex])
                two_way = (logits.gather(1, q_cls[:, None]) > logits.gather(1, d_cls[:, None])).float().mean()
            print(f"step {step}: direct-path 2-way accuracy {two_way:.3f}", flush=True)
        if step == steps:
            break
        cls = torch.randint(0, n_cls, (config.train.batch_size,), generator=gen)
        ex = torch.randint(0, n_ex, (config.train.batch_size,), generator=gen)
        loss = nn.functional.cross_entropy(model(features[cls, ex]), cls)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


if __name__ == "__main__":
    main()
