"""Per-sequence metrics on hand-built logits."""

import math

import pytest
import torch

from coopetition.task.metrics import query_metrics


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
