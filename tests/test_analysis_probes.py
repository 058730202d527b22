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
