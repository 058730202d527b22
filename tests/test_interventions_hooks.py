"""Activation interventions with known answers: what the cache reads back is exactly what was imposed."""

import math

import pytest
import torch

from coopetition.errors import ConfigError
from coopetition.interventions import Intervened, intervene
from coopetition.model import ModelConfig, build_model

N_LABELS = 10


def tiny_model(n_heads: int = 2, positional: str = "learned"):
    config = ModelConfig(n_layers=2, d_model=16, n_heads=n_heads, positional=positional)
    return build_model(config, 8, N_LABELS, N_LABELS, init_seed=0)


def inputs(batch: int = 6, ctx: int = 2, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    exemplars = torch.randn(batch, ctx + 1, 8, generator=gen)
    labels = torch.stack([torch.randperm(N_LABELS, generator=gen)[:ctx] for _ in range(batch)])
    target = labels[torch.arange(batch), torch.randint(0, ctx, (batch,), generator=gen)]
    return exemplars, labels, target


def run(model, specs, data, names=None):
    return intervene(specs, model).run_cached(*data, names=names)


def test_no_intervention_is_the_bare_model():
    model, data = tiny_model(), inputs()
    logits, _ = run(model, (), data)
    assert torch.equal(logits, model(*data[:2]))


def test_zero_ablated_head_contributes_exactly_zero_to_the_residual():
    model, data = tiny_model(), inputs()
    model.set_use_attn_result(True)  # per-head outputs [batch, pos, head, d_model] in hook_result
    _, cache = run(model, ("ablate:0:1",), data)
    assert torch.count_nonzero(cache["blocks.0.attn.hook_z"][:, :, 1]) == 0
    assert torch.count_nonzero(cache["blocks.0.attn.hook_result"][:, :, 1]) == 0
    assert torch.count_nonzero(cache["blocks.0.attn.hook_result"][:, :, 0]) > 0
    # the residual update is exactly the other head's output (attention biases are zero)
    update = cache["blocks.0.hook_resid_post"] - cache["blocks.0.hook_resid_pre"]
    torch.testing.assert_close(update, cache["blocks.0.attn.hook_result"][:, :, 0], rtol=0, atol=1e-6)


def test_clamped_induction_pattern_is_the_pattern_the_model_uses():
    model, data = tiny_model(), inputs()
    exemplars, labels, target = data
    logits, cache = run(model, ("induction:1:0:0.8",), data)
    pattern = cache["blocks.1.attn.hook_pattern"]
    expected = torch.zeros(6, 5)
    expected[:, 1] = torch.where(labels[:, 0] == target, 0.8, 0.2)
    expected[:, 3] = torch.where(labels[:, 1] == target, 0.8, 0.2)
    assert torch.equal(pattern[:, 0, -1], expected)
    # ... and the head's output at the query is that pattern applied to its values
    z = torch.einsum("bk,bkd->bd", expected, cache["blocks.1.attn.hook_v"][:, :, 0])
    torch.testing.assert_close(cache["blocks.1.attn.hook_z"][:, -1, 0], z, rtol=0, atol=1e-6)
    # the other head, and earlier rows, are untouched
    _, clean = model.run_cached(exemplars, labels)
    assert torch.equal(pattern[:, 1], clean["blocks.1.attn.hook_pattern"][:, 1])
    assert torch.equal(pattern[:, 0, :-1], clean["blocks.1.attn.hook_pattern"][:, 0, :-1])
    assert not torch.allclose(logits, model(exemplars, labels))


def test_induction_needs_the_target():
    model, data = tiny_model(), inputs()
    with pytest.raises(ConfigError, match="target"):
        intervene(("induction:1:0:1",), model)(*data[:2])


def test_pattern_preserving_ablation_leaves_downstream_patterns_bit_identical():
    model, data = tiny_model(), inputs()
    _, clean = model.run_cached(*data[:2])
    _, preserved = run(model, ("ablate:0:*", "preserve:patterns"), data)
    _, ablated = run(model, ("ablate:0:*",), data)
    assert torch.equal(preserved["blocks.1.attn.hook_pattern"], clean["blocks.1.attn.hook_pattern"])
    assert not torch.equal(ablated["blocks.1.attn.hook_pattern"], clean["blocks.1.attn.hook_pattern"])
    assert torch.count_nonzero(preserved["blocks.0.attn.hook_z"]) == 0  # the ablation itself still happened


@pytest.mark.parametrize("specs", [("preserve:values", "ablate:0:1"), ("ablate:0:1", "preserve:values"),
                                   ("preserve:patterns+values", "ablate:0:1:mean")])
def test_ablation_wins_over_preservation_in_either_order(specs):
    model, data = tiny_model(), inputs()
    _, clean = model.run_cached(*data[:2])
    _, cache = run(model, specs, data)
    expected = clean["blocks.0.attn.hook_z"][:, :, 1].mean(0, keepdim=True) if specs[1].endswith("mean") else 0.0
    torch.testing.assert_close(cache["blocks.0.attn.hook_z"][:, :, 1],
                               torch.zeros_like(clean["blocks.0.attn.hook_z"][:, :, 1]) + expected, rtol=0, atol=1e-6)


def test_mean_and_resample_ablation_use_the_clean_batch():
    model, data = tiny_model(), inputs()
    _, clean = model.run_cached(*data[:2])
    z = clean["blocks.1.attn.hook_z"]
    _, mean = run(model, ("ablate:1:0:mean",), data)
    _, resample = run(model, ("ablate:1:0:resample",), data)
    torch.testing.assert_close(mean["blocks.1.attn.hook_z"][:, :, 0], z[:, :, 0].mean(0).expand(6, -1, -1))
    assert torch.equal(resample["blocks.1.attn.hook_z"][:, :, 0], z[[5, 0, 1, 2, 3, 4], :, 0])  # the previous one
    assert torch.equal(mean["blocks.1.attn.hook_z"][:, :, 1], z[:, :, 1])


@pytest.mark.parametrize("positional, q, k", [("learned", "hook_q", "hook_k"), ("rotary", "hook_rot_q", "hook_rot_k")])
def test_preserving_queries_keys_and_values_fixes_layer_1_against_layer_0_ablation(positional, q, k):
    model, data = tiny_model(positional=positional), inputs()
    _, clean = model.run_cached(*data[:2])
    _, cache = run(model, ("ablate:0:*", "preserve:queries+keys+values:1"), data)
    for name in (q, k, "hook_v", "hook_pattern"):
        assert torch.equal(cache[f"blocks.1.attn.{name}"], clean[f"blocks.1.attn.{name}"]), name
    _, recompute_k = run(model, ("ablate:0:*", "preserve:queries+values:1"), data)
    assert not torch.equal(recompute_k[f"blocks.1.attn.{k}"], clean[f"blocks.1.attn.{k}"])


def test_ablating_everything_leaves_only_the_query_token_path():
    model = tiny_model()
    a, b = inputs(seed=1), inputs(seed=2)
    other = (a[0].clone(), b[1], b[2])
    other[0][:, :-1] = b[0][:, :-1]  # same query exemplar, different context
    specs = ("ablate:0:*,1:*",)
    torch.testing.assert_close(run(model, specs, a)[0], run(model, specs, other)[0], rtol=0, atol=1e-6)
    # with the token embedding ablated too, nothing about the input is left: the logits are constant
    _, cache = run(model, specs + ("ablate_embed",), a)
    assert torch.count_nonzero(cache["hook_embed"]) == 0
    logits = run(model, specs + ("ablate_embed",), a)[0]
    torch.testing.assert_close(logits, logits[:1].expand_as(logits), rtol=0, atol=1e-6)


@pytest.mark.parametrize("labels_only", [False, True])
def test_prev_token_clamp_is_exactly_the_requested_pattern(labels_only):
    model, data = tiny_model(), inputs()
    spec = "prev_token:0:1:0.7" + (":labels" if labels_only else "")
    _, cache = run(model, (spec,), data)
    _, clean = model.run_cached(*data[:2])
    pattern, before = cache["blocks.0.attn.hook_pattern"][:, 1], clean["blocks.0.attn.hook_pattern"][:, 1]
    ideal = torch.diag(torch.full((4,), 0.7), -1) + torch.diag(torch.full((5,), 0.3))
    ideal[0, 0] = 1.0
    for t in range(5):
        clamped = (t % 2 == 1) or not labels_only
        assert torch.equal(pattern[:, t], (ideal[t] if clamped else before[:, t]).expand_as(pattern[:, t])), t


def test_match_heads_attend_to_the_label_of_the_matching_exemplar():
    model, (exemplars, labels, target) = tiny_model(), inputs()
    exemplars[:, -1] = exemplars[:, 1]  # the query repeats context exemplar 1
    _, cache = run(model, ("match:1:1:0",), (exemplars, labels, target))
    assert torch.equal(cache["blocks.1.attn.hook_pattern"][:, 1, -1], torch.tensor([0, 0, 0, 1.0, 0]).expand(6, 5))
    _, soft = run(model, ("match:1:1:0.5",), (exemplars, labels, target))
    row = soft["blocks.1.attn.hook_pattern"][:, 1, -1]
    assert torch.allclose(row.sum(-1), torch.ones(6)) and (row[:, 3] > row[:, 1]).all()
    assert (row[:, 0::2] == 0).all()


def test_no_prev_token_bars_only_the_previous_token():
    model, data = tiny_model(), inputs()
    _, cache = run(model, ("no_prev_token:0:*:labels",), data)
    pattern = cache["blocks.0.attn.hook_pattern"]
    for t in range(1, 5):
        assert (pattern[:, :, t, t - 1] == 0).all() == (t % 2 == 1), t
    _, every = run(model, ("no_prev_token:0:0",), data)
    assert all((every["blocks.0.attn.hook_pattern"][:, 0, t, t - 1] == 0).all() for t in range(1, 5))
    assert torch.allclose(every["blocks.0.attn.hook_pattern"].sum(-1), torch.ones(6, 2, 5))


def test_silenced_heads_attend_from_the_query_only_to_labels():
    model, data = tiny_model(), inputs()
    _, cache = run(model, ("silence:1:*",), data)
    row = cache["blocks.1.attn.hook_pattern"][:, :, -1]
    assert (row[..., 0::2] == 0).all() and torch.allclose(row.sum(-1), torch.ones(6, 2))


def test_temperature_divides_the_attention_logits():
    model, data = tiny_model(), inputs()
    _, clean = model.run_cached(*data[:2])
    _, cache = run(model, ("temperature:1:1:4",), data)
    expected = torch.softmax(clean["blocks.1.attn.hook_attn_scores"][:, 1] / 4, dim=-1)
    torch.testing.assert_close(cache["blocks.1.attn.hook_pattern"][:, 1], expected)
    assert torch.equal(cache["blocks.1.attn.hook_pattern"][:, 0], clean["blocks.1.attn.hook_pattern"][:, 0])


def test_perfect_copy_outputs_the_heads_attention_over_labels():
    model, (exemplars, labels, target) = tiny_model(), inputs()
    labels[0] = torch.tensor([4, 4])  # a repeated label gets both tokens' attention
    logits, cache = run(model, ("copy:1:0",), (exemplars, labels, target))
    scores = cache["blocks.1.attn.hook_attn_scores"][:, 0, -1, 1::2]
    probs = torch.softmax(logits, dim=-1)
    attention = torch.softmax(scores, dim=-1)  # the head's attention renormalised over the label tokens
    for b in range(1, 6):
        assert probs[b, labels[b]].tolist() == pytest.approx(attention[b].tolist(), abs=1e-6)
        assert probs[b].sum().item() == pytest.approx(1.0, abs=1e-6)
    assert probs[0, 4].item() == pytest.approx(1.0)
    assert logits[0, 4].item() == pytest.approx(torch.logsumexp(scores[0], 0).item(), abs=1e-5)
    assert (logits[1, [c for c in range(N_LABELS) if c not in labels[1]]] == -1e9).all()


def test_copy_passes_gradient_to_the_copied_heads_queries_only():
    model, data = tiny_model(), inputs()
    logits = intervene(("copy:1:0",), model)(*data)
    torch.nn.functional.cross_entropy(logits, data[2]).backward()
    assert model.blocks[1].attn.W_Q.grad[0].abs().sum() > 0
    assert model.blocks[1].attn.W_Q.grad[1].abs().sum() == 0
    assert model.unembed.W_U.grad is None


def test_interventions_compose_in_one_pass():
    model, data = tiny_model(n_heads=4), inputs()
    specs = ("ablate:0:0,0:3", "prev_token:0:1:1.0:labels", "induction:1:2:1.0", "silence:1:3", "temperature:1:0:2")
    wrapped = intervene(specs, model)
    logits, cache = wrapped.run_cached(*data)
    assert torch.count_nonzero(cache["blocks.0.attn.hook_z"][:, :, [0, 3]]) == 0
    label_rows = cache["blocks.0.attn.hook_pattern"][:, 1, [1, 3]]
    assert (label_rows[:, 0, 0] == 1).all() and (label_rows[:, 1, 2] == 1).all()  # labels attend to their exemplar
    assert (cache["blocks.1.attn.hook_pattern"][:, 3, -1, 0::2] == 0).all()
    correct = torch.where(data[1][:, 0] == data[2], 1, 3)
    assert (cache["blocks.1.attn.hook_pattern"][torch.arange(6), 2, -1, correct] == 1.0).all()
    assert torch.equal(logits, wrapped(*data))  # the cached pass is the plain intervened pass
    assert isinstance(wrapped, Intervened) and wrapped.active


def test_clean_pass_is_not_differentiated_but_the_intervened_pass_is():
    model, data = tiny_model(), inputs()
    logits = intervene(("ablate:0:1", "preserve:patterns"), model)(*data)
    torch.nn.functional.cross_entropy(logits, data[2]).backward()
    # patterns are constants: no gradient reaches any W_Q / W_K; values and the unembedding still learn
    assert all(b.attn.W_Q.grad is None or b.attn.W_Q.grad.abs().sum() == 0 for b in model.blocks)
    assert model.blocks[1].attn.W_V.grad.abs().sum() > 0
    assert math.isfinite(model.unembed.W_U.grad.abs().sum().item())
