"""The one forward engine (``Intervened._run_chunk``): the plain, cached and capturing forwards are its one-variant
case, and ``run_variants`` over k variants is k single passes.

The oracle for one pass is the definition written out by hand (the engine's docstring): clean values from a
hook-free no-grad pass, every edit's hooks installed on the spliced network, then the logit edits."""

import pytest
import torch

from coopetition.interventions import intervene, parse_spec
from coopetition.interventions.base import Inputs
from tests.test_interventions_hooks import N_LABELS, inputs, tiny_model

OWN = ((), ("ablate:0:1:mean",), ("temperature:1:0:2", "preserve:patterns:1"), ("copy:1:1",))


def oracle(forward, exemplars, context_labels, target, labels=None):
    """One pass of ``forward`` by its definition, without the engine."""
    network = forward.network
    pass_inputs = Inputs(exemplars, context_labels, target)
    if forward.clean_names:
        with torch.no_grad():
            _, pass_inputs.clean = network.run_cached(exemplars, context_labels, names=forward.clean_names)
    hooks = [hook for edit in forward.edits for hook in edit.hooks(pass_inputs, forward.config)]
    with network.hooked(hooks):
        logits = network(exemplars, context_labels, labels=labels)
    for edit in forward.edits:
        logits = edit.edit_logits(logits, pass_inputs, labels)
    return logits


def grads(model, logits, target):
    model.zero_grad(set_to_none=True)
    torch.nn.functional.cross_entropy(logits, target).backward()
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def test_plain_forward_is_the_bare_model_bit_for_bit_with_gradients():
    """No edits: the engine's single variant installs no hook, so training (fused kernels in train mode) runs
    exactly the bare network: same logits, same gradients, same bits."""
    model, (exemplars, labels, target) = tiny_model(), inputs(batch=8)
    model.fuse_training_kernels()
    model.train()
    forward = intervene((), model)
    ours = forward(exemplars, labels, target)
    assert ours.requires_grad
    ours_grads = grads(model, ours, target)
    bare = model(exemplars, labels)
    assert torch.equal(ours, bare)
    bare_grads = grads(model, bare, target)
    assert ours_grads.keys() == bare_grads.keys() and len(ours_grads) > 5
    assert all(torch.equal(ours_grads[k], bare_grads[k]) for k in ours_grads)


@pytest.mark.parametrize("own", OWN)
def test_single_variant_equals_the_definition_of_one_pass_logits_and_gradients(own):
    model, (exemplars, labels, target) = tiny_model(), inputs(batch=8)
    forward = intervene(own, model)
    ours = forward(exemplars, labels, target)
    ours_grads = grads(model, ours, target)
    theirs = oracle(forward, exemplars, labels, target)
    theirs_grads = grads(model, theirs, target)
    assert torch.equal(ours, theirs)
    assert ours_grads.keys() == theirs_grads.keys() and ours_grads
    assert all(torch.equal(ours_grads[k], theirs_grads[k]) for k in ours_grads)


@pytest.mark.parametrize("own", OWN)
def test_cached_and_capturing_forwards_are_the_same_pass(own):
    model, data = tiny_model(), inputs(batch=5)
    forward = intervene(own, model)
    plain = forward(*data)
    logits, cache = forward.run_cached(*data, names=["blocks.1.attn.hook_pattern", "blocks.0.hook_resid_post"])
    assert torch.equal(logits, plain)
    assert sorted(cache.keys()) == ["blocks.0.hook_resid_post", "blocks.1.attn.hook_pattern"]
    captured_logits, grabbed = forward.capture(*data, ["blocks.0.hook_resid_post"])
    assert torch.equal(captured_logits, plain)
    assert torch.equal(grabbed["blocks.0.hook_resid_post"], cache["blocks.0.hook_resid_post"])
    # the captured activation is in the graph: d(sum of logits)/d(resid) exists and is not zero
    (grad,) = torch.autograd.grad(captured_logits.sum(), grabbed["blocks.0.hook_resid_post"])
    assert grad.abs().sum() > 0


@pytest.mark.parametrize("own", OWN[:3])
def test_k_variants_equal_k_single_passes(own):
    """``run_variants`` tiles the input and edits each variant's rows; each variant's logits equal a single pass
    of a network with the run's own interventions plus that variant's (they touch other hook points here, so the
    order of edits at one point does not arise)."""
    model, (exemplars, labels, target) = tiny_model(), inputs(batch=7)
    forward = intervene(own, model)
    variants = [(), ("ablate:0:0",), ("ablate:1:1",), ("ablate:0:0,1:0",), ("no_prev_token:0:1",)]
    readout = torch.cat([labels, target[:, None]], dim=1)
    for max_rows in (2048, 7 * 2):  # one chunk, and chunks of two variants
        batched = forward.run_variants(exemplars, labels, target, [tuple(map(parse_spec, v)) for v in variants],
                                       labels=readout, max_rows=max_rows)
        assert batched.shape == (len(variants), 7, readout.shape[1])
        for got, variant in zip(batched, variants):
            single = intervene((*own, *variant), model)(exemplars, labels, target, labels=readout)
            torch.testing.assert_close(got, single, rtol=0, atol=1e-5)
    # a single variant is the single pass bit for bit (no tiling)
    (alone,) = forward.run_variants(exemplars, labels, target, [()], labels=readout)
    assert torch.equal(alone, forward(exemplars, labels, target, labels=readout))


def test_every_class_readout_matches_the_labels_readout():
    model, (exemplars, labels, target) = tiny_model(), inputs(batch=4)
    forward = intervene(("ablate:0:1:mean",), model)
    full = forward(exemplars, labels, target)
    assert full.shape == (4, N_LABELS)
    picked = forward(exemplars, labels, target, labels=labels)
    torch.testing.assert_close(picked, full.gather(1, labels), rtol=0, atol=1e-5)
