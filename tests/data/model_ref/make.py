"""Writes the model reference files: python tests/data/model_ref/make.py OUT_DIR TAG.

Run once, with the model code of release 0.x (TransformerLens's HookedTransformer with lean blocks), under
TransformerLens 2.18 (TAG tl2) and 3.9 (TAG tl3). For each seeded tiny model it stores, in one safetensors file:
``state.*`` (the state dict as that TransformerLens line saves it, attention ``mask`` buffers included), ``input.*``,
``logits`` (query) and ``logits_all`` (every position), ``cache.*`` (every activation ``run_with_cache`` records),
``head_cache.*`` (the same with ``per_head_hooks`` on) and ``grad.*`` (each parameter's gradient of one training
step's loss: cross-entropy of the query logits, train mode, no fused kernels). ``tests/test_model_reference.py``
checks today's model against them on every TransformerLens line. Uses only the model's public API, so it also runs
on the current code (to compare by hand).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from coopetition.model import ModelConfig, build_model

VARIANTS = {
    "learned": ModelConfig(n_layers=2, d_model=8, n_heads=2),
    "sinusoidal_mlp": ModelConfig(n_layers=2, d_model=8, n_heads=2, mlp_ratio=2, positional="sinusoidal",
                                  sin_time=30.0, max_seq_len=16),
    "rotary": ModelConfig(n_layers=2, d_model=8, n_heads=2, positional="rotary", sin_time=100.0, max_seq_len=16),
    "one_layer": ModelConfig(n_layers=1, d_model=8, n_heads=4, init_rescale=0.5),
}
DIM, LABELS, OUTPUTS, N_CTX, BATCH, SEED = 6, 5, 7, 3, 3, 11


def inputs() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    labels = torch.randint(0, LABELS, (BATCH, N_CTX), generator=gen)
    labels[0, 1] = LABELS  # an unknown label (embeds as zero)
    return {"exemplars": torch.randn(BATCH, N_CTX + 1, DIM, generator=gen), "labels": labels,
            "targets": torch.randint(0, OUTPUTS, (BATCH,), generator=gen)}


def record(config: ModelConfig) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = build_model(config, DIM, LABELS, OUTPUTS, init_seed=SEED)
    x = inputs()
    out = {f"input.{k}": v for k, v in x.items()}
    out |= {f"state.{k}": v for k, v in model.state_dict().items()}
    model.eval()
    with torch.no_grad():
        logits, cache = model.run_cached(x["exemplars"], x["labels"])
        out["logits"] = logits
        out["logits_all"] = model(x["exemplars"], x["labels"], positions="all")
        out |= {f"cache.{k}": v for k, v in cache.items()}
        with model.per_head_hooks():
            _, head_cache = model.run_cached(x["exemplars"], x["labels"])
        out |= {f"head_cache.{k}": v for k, v in head_cache.items()}
    model.train()
    loss = torch.nn.functional.cross_entropy(model(x["exemplars"], x["labels"]), x["targets"])
    loss.backward()
    out["loss"] = loss.detach().reshape(1)
    out |= {f"grad.{k}": p.grad for k, p in model.named_parameters()}
    return {k: v.detach().contiguous().clone() for k, v in out.items()}


def main(out_dir: Path, tag: str) -> None:
    torch.set_num_threads(1)
    out_dir.mkdir(parents=True, exist_ok=True)
    import importlib.metadata as meta

    for name, config in VARIANTS.items():
        save_file(record(config), out_dir / f"{tag}_{name}.safetensors",
                  metadata={"transformer_lens": meta.version("transformer-lens"), "torch": torch.__version__})


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
