"""How much of the in-weights task the direct path alone can learn on a bank: exemplar embedding -> LayerNorm ->
unembedding (the network with every head removed), trained on its own with the run's optimiser, batch and step
count, scored as the 2-way in-context choice of the Train evaluator (query's label against a random other class's).

    python bench/direct_path.py --set bank.modes=8 --steps 6000
    python bench/direct_path.py --preset quick-b256 --set bank.siblings=8 --set bank.transforms=8 --steps 4000

The direct path starts from the reference's initialisation (REFERENCE 3.3: lecun-normal weights, zero biases; the
network's own ``coopetition.model.init``), and ``--unembed-lr-scale`` multiplies the unembedding's learning rate
(the class-specific rows; H1 of issue 27). Before training it prints the bank's matching screen: mean centred cosine
of two eval exemplars of one class, of sibling classes (same family, family banks only) and of unrelated classes,
and the 2-way accuracy of matching the query to the context exemplar of its class by that cosine (what a pure
exemplar-matching ICL circuit can reach on the Train evaluator without learning any feature map).

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
from coopetition.model.init import lecun_normal_
from coopetition.presets import get_preset


def matching_screen(features: torch.Tensor, n_eval_cls: int, n_eval_ex: int, siblings: int, gen: torch.Generator,
                    n: int = 5000) -> str:
    """Centred-cosine statistics of eval exemplars (classes < n_eval_cls, exemplars < n_eval_ex)."""
    centred = features - features.mean(dim=(0, 1), keepdim=True)
    unit = nn.functional.normalize(centred, dim=-1)
    q_cls = torch.randint(0, n_eval_cls, (n,), generator=gen)
    d_cls = (q_cls + torch.randint(1, n_eval_cls, (n,), generator=gen)) % n_eval_cls
    q_ex, s_ex, d_ex = (torch.randint(0, n_eval_ex, (n,), generator=gen) for _ in range(3))
    same = (unit[q_cls, q_ex] * unit[q_cls, s_ex]).sum(-1)
    other = (unit[q_cls, q_ex] * unit[d_cls, d_ex]).sum(-1)
    text = (f"matching screen: cos same class {same.mean():.3f}, unrelated class {other.mean():.3f}, "
            f"2-way match accuracy {(same > other).float().mean():.3f}")
    if siblings > 1:
        sib = q_cls - q_cls % siblings + (q_cls % siblings + torch.randint(1, siblings, (n,), generator=gen)) % siblings
        sib = sib.clamp_max(features.shape[0] - 1)
        sib_cos = (unit[q_cls, q_ex] * unit[sib, d_ex]).sum(-1)
        text += f", sibling class {sib_cos.mean():.3f} (match vs sibling {(same > sib_cos).float().mean():.3f})"
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE")
    parser.add_argument("--steps", type=int, default=None, help="default: the preset's train.steps")
    parser.add_argument("--report", type=int, default=1000, help="score every this many steps")
    parser.add_argument("--eval-classes", type=int, default=1600)
    parser.add_argument("--eval-exemplars", type=int, default=5)
    parser.add_argument("--unembed-lr-scale", type=float, default=1.0,
                        help="learning-rate multiplier of the unembedding (class-specific rows)")
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
    init_gen = torch.Generator().manual_seed(config.seeds.init)
    for layer in (model[0], model[2]):  # the reference's init (REFERENCE 3.3), as the network's own
        lecun_normal_(layer.weight, layer.in_features, init_gen)
        nn.init.zeros_(layer.bias)
    opt = torch.optim.Adam([{"params": model[:2].parameters()},
                            {"params": model[2].parameters(), "lr": config.train.lr * args.unembed_lr_scale}],
                           lr=config.train.lr)
    gen = torch.Generator().manual_seed(config.seeds.train)
    eval_gen = torch.Generator().manual_seed(config.seeds.eval)
    n_eval = 5000
    q_cls = torch.randint(0, min(args.eval_classes, n_cls), (n_eval,), generator=eval_gen)
    d_cls = (q_cls + torch.randint(1, min(args.eval_classes, n_cls), (n_eval,), generator=eval_gen)) % min(
        args.eval_classes, n_cls)
    q_ex = torch.randint(0, min(args.eval_exemplars, n_ex), (n_eval,), generator=eval_gen)
    steps = args.steps or config.train.steps
    print(f"bank {' '.join(args.set) or '(preset)'}: {n_cls} x {n_ex} x {dim}, d_model {d_model}, "
          f"batch {config.train.batch_size}, lr {config.train.lr}, unembedding lr x {args.unembed_lr_scale}")
    print(matching_screen(features, min(args.eval_classes, n_cls), min(args.eval_exemplars, n_ex),
                          config.bank.siblings, torch.Generator().manual_seed(config.seeds.eval + 1)), flush=True)
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
