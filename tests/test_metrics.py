"""Per-sequence metrics on hand-built logits."""

import math

import pytest
import torch

from coopetition.task.metrics import all_finite, query_metrics


def test_in_context_metrics_mask_labels_absent_from_context():
    # 5 classes; context labels {1, 3}; the model prefers class 4 overall, then 3, then 1.
    logits = torch.tensor([[0.0, 1.0, 0.0, 2.0, 5.0]])
    context = torch.tensor([[1, 3]])
    m = query_metrics(logits, torch.tensor([3]), context)
    assert m["acc"].item() == 0.0  # argmax over all classes is 4
    assert m["in_context_acc"].item() == 1.0  # among {1, 3}, 3 wins
    assert m["in_context_prob"].item() == pytest.approx(math.exp(2) / (math.exp(1) + math.exp(2)))
    total = sum(math.exp(v) for v in [0, 1, 0, 2, 5])
    assert m["use_context_prob"].item() == pytest.approx((math.exp(1) + math.exp(2)) / total)
    assert m["loss"].item() == pytest.approx(-(2 - math.log(total)))
    assert m["out_context_acc"].item() == 0.0  # target 3 is in context, so it cannot win out of context


def test_target_absent_from_context_scores_zero_in_context():
    m = query_metrics(torch.tensor([[9.0, 0.0, 0.0]]), torch.tensor([0]), torch.tensor([[1, 2]]))
    assert m["in_context_acc"].item() == 0.0 and m["in_context_prob"].item() == 0.0
    assert m["acc"].item() == 1.0 and m["out_context_acc"].item() == 1.0


def test_labels_past_the_output_layer_cost_nothing():
    m = query_metrics(torch.zeros(1, 3), torch.tensor([7]), torch.tensor([[7, 1]]))
    assert m["loss"].item() == 0.0 and m["prob"].item() == 0.0


def _compare_with_definition(logits, target, context, atol=1e-5):
    from coopetition.task.metrics import METRICS, reference_query_metrics

    fast, ref = query_metrics(logits, target, context), reference_query_metrics(logits, target, context)
    for metric in METRICS:
        torch.testing.assert_close(fast[metric], ref[metric], atol=atol, rtol=1e-5, equal_nan=True,
                                   msg=lambda text, metric=metric: f"{metric}: {text}")


def test_fast_metrics_equal_the_definitions_on_random_logits():
    gen = torch.Generator().manual_seed(0)
    for n_classes, n_ctx in ((5, 2), (64, 2), (1000, 8), (12800, 2)):
        logits = 3 * torch.randn(300, n_classes, generator=gen)
        target = torch.randint(0, n_classes + 3, (300,), generator=gen)  # some labels past the outputs
        context = torch.randint(0, n_classes + 2, (300, n_ctx), generator=gen)
        context[::3, 0] = target[::3]  # target in context for a third of the rows
        context[::5, 1] = context[::5, 0]  # duplicated context labels
        _compare_with_definition(logits, target, context)


def test_fast_metrics_break_ties_like_argmax_and_stay_stable_when_confident():
    gen = torch.Generator().manual_seed(1)
    # integer logits in {0, 1, 2}: ties everywhere, in and out of context
    logits = torch.randint(0, 3, (500, 6), generator=gen).float()
    target = torch.randint(0, 6, (500,), generator=gen)
    context = torch.randint(0, 6, (500, 2), generator=gen)
    _compare_with_definition(logits, target, context)
    # a model that puts all its mass on one context label (exp underflows out of context without a stable lse)
    logits = torch.zeros(4, 50)
    context = torch.tensor([[1, 2]] * 4)
    logits[:, 1] = 300.0
    target = torch.tensor([1, 2, 7, 60])
    _compare_with_definition(logits, target, context)
    m = query_metrics(logits, target, context)
    assert m["out_context_prob"][2].item() == pytest.approx(1 / 48)  # uniform over the 48 classes left


def test_non_finite_logits_and_all_classes_in_context_use_the_definitions():
    logits = torch.tensor([[0.0, float("-inf"), 1.0], [float("nan"), 0.0, 0.0]])
    _compare_with_definition(logits, torch.tensor([2, 1]), torch.tensor([[0, 1], [1, 2]]))
    every = torch.tensor([[0.5, 0.25]])
    m = query_metrics(every, torch.tensor([0]), torch.tensor([[0, 1]]))
    assert m["out_context_acc"].item() == 0.0 and m["out_context_prob"].item() == 0.0
    assert m["in_context_acc"].item() == 1.0


def test_all_finite_is_isfinite_all():
    for values in ([0.0, 1.0], [float("nan"), 0.0], [0.0, float("inf")], [float("-inf"), 2.0], [3e38, -3e38], []):
        tensor = torch.tensor(values)
        assert all_finite(tensor) == bool(torch.isfinite(tensor).all()), values


def test_fast_metrics_break_ties_like_argmax_at_full_width():
    """12,800 classes with ties everywhere (the vectorised max over a wide row must still pick the first
    maximum, as argmax and the definitions do), in CPU row blocks."""
    gen = torch.Generator().manual_seed(2)
    logits = torch.randint(0, 3, (90, 12800), generator=gen).float()
    logits[::3, :5000] = -1.0  # the first maxima deep in the row
    target = torch.randint(0, 12800, (90,), generator=gen)
    target[::2] = 0
    context = torch.randint(0, 12800, (90, 2), generator=gen)
    _compare_with_definition(logits, target, context)


def test_distinct_mask_keeps_the_first_occurrence_of_each_label():
    from coopetition.task.metrics import distinct_mask

    labels = torch.tensor([[3, 3, 5], [1, 2, 1], [4, 4, 4]])
    expected = torch.tensor([[True, False, True], [True, True, False], [True, False, False]])
    assert torch.equal(distinct_mask(labels), expected)


def test_in_context_scores_on_hand_built_readouts():
    """Readout logits are ``[context labels..., target]``; a repeated label is one candidate."""
    from coopetition.task.metrics import in_context_scores, readout_labels

    context, target = torch.tensor([[3, 3, 5], [1, 2, 1]]), torch.tensor([5, 7])
    assert torch.equal(readout_labels(context, target), torch.tensor([[3, 3, 5, 5], [1, 2, 1, 7]]))
    logits = torch.tensor([[1.0, 1.0, 2.0, 2.0], [0.5, 3.0, 0.5, 9.0]])
    scores = in_context_scores(logits, context, target)
    assert scores["in_context_acc"].tolist() == [1.0, 0.0]  # row 2: the target is not in context
    assert scores["in_context_prob"][0].item() == pytest.approx(math.exp(2) / (math.exp(1) + math.exp(2)))
    assert scores["in_context_prob"][1].item() == 0.0
    # the target's logit minus the mean of the other distinct context labels' (row 2: labels 1 and 2)
    assert scores["target_logit_diff"].tolist() == pytest.approx([1.0, 9.0 - (0.5 + 3.0) / 2])


def test_in_context_scores_equal_the_full_vocabulary_metrics_for_every_variant():
    from coopetition.task.metrics import in_context_scores, readout_labels

    gen = torch.Generator().manual_seed(3)
    n, classes = 64, 20
    context = torch.randint(0, classes, (n, 4), generator=gen)
    target = torch.where(torch.rand(n, generator=gen) < 0.7, context[:, 0], torch.randint(0, classes, (n,), generator=gen))
    full = torch.randn(3, n, classes, generator=gen) * 3
    readout = readout_labels(context, target)
    picked = full.gather(2, readout.expand(3, -1, -1))
    together = in_context_scores(picked, context, target)
    for v in range(3):
        alone = in_context_scores(picked[v], context, target)
        reference = query_metrics(full[v], target, context)
        for metric in ("in_context_acc", "in_context_prob"):
            assert torch.equal(together[metric][v], alone[metric])
            torch.testing.assert_close(alone[metric], reference[metric], rtol=0, atol=1e-6)
