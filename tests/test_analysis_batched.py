"""Batched interventions equal the simple path: one plain forward pass per variant, edits applied by a hook.

``run_variants`` tiles the input once per variant, chunks the tiles to ``max_rows`` sequences, starts a variant from
the cached residual of its first edited block and reads only a few logits; the oracle here does none of that. Every
ablation variant (all heads x five methods, layers, composition, embeddings) and every patching variant is checked,
on a 3-layer model so that some variants start mid-network and the clamps of later layers matter.
"""

import pytest
import torch

from coopetition.analysis.ablation import ablation_variants
from coopetition.analysis.edits import Variant, run_variants
from coopetition.analysis.pairs import build_pairs
from coopetition.analysis.patching import patch_variants
from coopetition.analysis.readout import readout_labels
from coopetition.model import ICLTransformer, ModelConfig
from tests.analysis_handmade import handmade_data, handmade_model


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Hundreds of tiny forward passes: a second torch thread on a busy 2-core machine only adds waiting."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def deep_model() -> ICLTransformer:
    return ICLTransformer(ModelConfig(n_layers=3, d_model=16, n_heads=2), input_dim=8, n_labels=8, n_outputs=8,
                          init_seed=4).eval()


@torch.no_grad()
def one_forward_per_variant(model: ICLTransformer, exemplars, context_labels, readout,
                            variants: list[Variant]) -> torch.Tensor:
    out = []
    for variant in variants:
        def edit(act, hook, edits=[e for e in variant.edits]):
            for e in edits:
                if e.hook == hook.name:
                    act[(slice(None), *e.index)] = e.source[(slice(None), *e.index)]
            return act
        hooks = [(name, edit) for name in {e.hook for e in variant.edits}]
        with model.hooks(fwd_hooks=hooks):
            out.append(model(exemplars, context_labels).gather(1, readout))
    return torch.stack(out)


@pytest.mark.parametrize("build", [handmade_model, deep_model], ids=["handmade", "3-layer"])
def test_batched_ablation_equals_the_oracle(build):
    model, data = build(), handmade_data("flip", n=24, relabel="flip")
    _, cache = model.run_with_cache(data.exemplars, data.context_labels)
    perm = torch.randperm(data.n, generator=torch.Generator().manual_seed(0))
    variants, aliases = ablation_variants(cache, model.cfg.n_layers, model.cfg.n_heads, perm)
    readout = readout_labels(data.context_labels, data.target)
    run = [v for i, v in enumerate(variants) if i not in aliases]  # aliases: moot clamps, tested in _readout
    expected = one_forward_per_variant(model, data.exemplars, data.context_labels, readout, run)
    for max_rows in (data.n, 5 * data.n + 3, 1 << 20):  # one variant per pass, uneven chunks, one pass per start
        got = run_variants(model, data.exemplars, data.context_labels, readout, run, cache, max_rows)
        assert torch.allclose(got, expected, atol=1e-5)


def test_batched_patching_equals_the_oracle():
    model = deep_model()
    [pair] = build_pairs({"flip": handmade_data("flip", n=16, relabel="flip")})
    _, clean = model.run_with_cache(pair.clean.exemplars, pair.clean.context_labels)
    _, corrupt = model.run_with_cache(pair.corrupt.exemplars, pair.corrupt.context_labels)
    variants = patch_variants(clean, model.cfg.n_layers, model.cfg.n_heads, n_pos=5)
    args = (model, pair.corrupt.exemplars, pair.corrupt.context_labels, pair.answers)
    expected = one_forward_per_variant(*args, variants)
    got = run_variants(*args, variants, corrupt, max_rows=7 * pair.corrupt.n)
    assert torch.allclose(got, expected, atol=1e-5)
    assert (got - got[:1]).abs().amax() > 0.01  # the patches change the answer somewhere
