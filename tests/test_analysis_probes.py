"""Probes recover a planted linear feature and stay at chance on a shuffled one."""

import torch

from coopetition.analysis.probe_fit import Target, fit_probes, split
from coopetition.analysis.probes import probe_targets
from tests.analysis_handmade import handmade_data


def test_probe_recovers_a_planted_feature_and_not_a_shuffled_one():
    gen = torch.Generator().manual_seed(0)
    n, d = 600, 16
    x = torch.randn(2, n, d, generator=gen)  # two independent "sites"
    w = torch.randn(d, generator=gen)
    planted = (x[0] @ w > 0).long()
    shuffled = planted[torch.randperm(n, generator=gen)]
    three_way = torch.bucketize(x[0] @ w, torch.tensor([-0.5, 0.5]))
    everywhere = torch.ones(n, dtype=torch.bool)
    targets = [Target("planted", planted, 2, everywhere), Target("shuffled", shuffled, 2, everywhere),
               Target("three_way", three_way, 3, everywhere)]
    result = fit_probes(x, targets, split(n, 0.25, seed=1), steps=50)
    assert result["planted"][0, 0] > 0.93  # site 0 carries the feature
    assert abs(result["planted"][1, 0] - 0.5) < 0.12  # site 1 is independent noise
    assert abs(result["shuffled"][0, 0] - 0.5) < 0.12
    assert result["three_way"][0, 0] > 0.8
    assert 0.3 < result["shuffled"][0, 1] < 0.7  # the majority baseline is reported alongside


def test_probe_targets_follow_the_sequence():
    flip = handmade_data("flip", relabel="flip", n=64)
    targets = {t.name: t for t in probe_targets(flip)}
    expected = {"query_class", "match_0", "match_1", "label_class_0", "exemplar_class_0", "correct_position"}
    assert expected <= set(targets)
    # In Flip the label paired with the query-class exemplar is the distractor's class: never the exemplar's own.
    ctx = flip.classes[:, :2]
    assert (flip.context_labels != ctx).all()
    ciwl_iwl = handmade_data("iwl", burstiness=0, n=64)
    names = {t.name for t in probe_targets(ciwl_iwl)}
    assert "match_0" not in names and "correct_position" not in names  # constant or undefined on pure IWL


def test_probe_figure_draws_an_evaluator_that_lacks_a_target():
    """One evaluator probed ``query_class`` only, the other also ``label_pos``: the missing heatmap is drawn empty
    (pandas 3 once refused the empty frame's text + number site column)."""
    import pandas as pd

    from coopetition.plots.probes import figure

    rows = [dict(step=step, evaluator=evaluator, target=target, layer=layer, position=4, metric="heldout_acc",
                 value=0.5) for step in (0, 100) for layer in (0, 1)
            for evaluator, target in (("flip", "query_class"), ("flip", "label_pos"), ("icl", "query_class"))]
    fig = figure(pd.DataFrame(rows))
    heatmaps = [trace for trace in fig.data if trace.type == "heatmap"]  # (the rest: chance marks, their legend)
    assert len(heatmaps) == 4  # 2 evaluators x 2 targets
    empty = [trace for trace in heatmaps if not trace.y]
    assert len(empty) == 1 and not empty[0].visible  # icl's label_pos; flip is shown first
    full = [trace for trace in heatmaps if trace.y]
    assert all(list(trace.y) == ["resid 0 · q", "resid 1 · q"] for trace in full)  # position 4 of 5 is the query


def _padded_reference(features, targets, train, steps, l2, dtype):
    """The formulation ``fit_probes`` replaced (every target padded to the largest class count with -inf logits,
    held-out rows in every matmul, ``log_softmax`` and autograd): the same objective, so the same LBFGS iterates."""
    x = features.detach().to(dtype)
    mu = x[:, train].mean(dim=1, keepdim=True)
    sd = x[:, train].std(dim=1, keepdim=True).clamp(min=1e-6)
    x = torch.cat([(x - mu) / sd, torch.ones_like(x[..., :1])], dim=-1)
    n_probe, n, width = x.shape
    n_target, n_class = len(targets), max(t.n_classes for t in targets)
    labels = torch.stack([t.labels for t in targets], dim=1)
    valid = torch.stack([t.valid for t in targets], dim=1)
    unused = torch.arange(n_class)[None, :] >= torch.tensor([t.n_classes for t in targets])[:, None]
    fit_rows = (valid & train[:, None]).to(dtype)
    fit_rows = fit_rows / fit_rows.sum(dim=0).clamp(min=1)
    weights = torch.zeros(n_probe, width, n_target * n_class, dtype=dtype, requires_grad=True)
    optimizer = torch.optim.LBFGS([weights], lr=1.0, max_iter=steps, history_size=20, line_search_fn="strong_wolfe")

    def logits():
        return (x @ weights).view(n_probe, n, n_target, n_class).masked_fill(unused, float("-inf"))

    def closure():
        optimizer.zero_grad()
        log_p = torch.log_softmax(logits(), dim=-1).gather(-1, labels[None, :, :, None].expand(n_probe, -1, -1, 1))
        loss = -(log_p[..., 0] * fit_rows).sum() + l2 * weights[:, :-1].pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    out = {}
    with torch.no_grad():
        correct = logits().argmax(dim=-1) == labels
        for index, t in enumerate(targets):
            test, fit = valid[:, index] & ~train, valid[:, index] & train
            acc = correct[:, test, index].to(dtype).mean(dim=1)
            majority = torch.bincount(labels[fit, index], minlength=t.n_classes).argmax()
            out[t.name] = torch.stack([acc, (labels[test, index] == majority).to(dtype).mean().expand_as(acc)], 1)
    return out


def test_fit_equals_the_padded_autograd_formulation_in_float64():
    """Block layout, training rows only and a hand-written gradient: the same function and gradient as the padded
    autograd formulation, so in float64 the same LBFGS iterates and the same held-out accuracies, probe for probe
    (2-, 3- and 5-way targets, one defined on some rows only, several sites of partly informative features)."""
    gen = torch.Generator().manual_seed(4)
    n, d, sites = 240, 12, 4
    x = torch.randn(sites, n, d, generator=gen, dtype=torch.float64)
    score = x[0] @ torch.randn(d, generator=gen, dtype=torch.float64) + 0.8 * torch.randn(n, generator=gen,
                                                                                           dtype=torch.float64)
    x[2] += 0.5 * score[:, None]
    everywhere = torch.ones(n, dtype=torch.bool)
    some = torch.rand(n, generator=gen) < 0.6
    targets = [Target("two", (score > 0).long(), 2, everywhere),
               Target("five", torch.bucketize(score, torch.tensor([-1.0, -0.3, 0.3, 1.0], dtype=torch.float64)), 5,
                      everywhere),
               Target("three_some", torch.randint(0, 3, (n,), generator=gen), 3, some),
               Target("two_again", (x[1, :, 0] > 0).long(), 2, everywhere)]
    train = split(n, 0.25, seed=2)
    for steps in (1, 5, 20):
        fast = fit_probes(x, targets, train, steps=steps, l2=1e-3, dtype=torch.float64)
        slow = _padded_reference(x, targets, train, steps, 1e-3, torch.float64)
        assert list(fast) == [t.name for t in targets]
        for name in fast:
            torch.testing.assert_close(fast[name].double(), slow[name], rtol=0, atol=1e-6)  # shares of ~60 rows
    assert fast["two"][0, 0] > 0.75 and fast["five"][0, 0] > 0.4  # the test is not vacuous: site 0 decodes


def test_fit_without_targets_is_empty():
    assert fit_probes(torch.randn(2, 20, 3), [], split(20, 0.25, seed=0)) == {}
