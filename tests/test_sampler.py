"""Sampler invariants: bursty/distractor counts, no_support, unique_rest, relabelling, flip, CIWL data, MQ."""

import pytest
import torch

from coopetition.errors import ConfigError
from coopetition.task.sampler import ClassPool, sample_mixture, sample_sequences, zipf_weights
from coopetition.task.sequence import BURSTY, DISTRACTOR, OTHER, QUERY, SequenceSpec

POOL = ClassPool(class_lo=10, class_hi=60, exemplar_lo=2, exemplar_hi=7)


def draw(spec, n=2000, pool=POOL, seed=0):
    return sample_sequences(spec, pool, n, torch.Generator().manual_seed(seed))


def test_bursty_with_distractor_counts_and_rest():
    batch = draw(SequenceSpec(context_len=8, burstiness=3))
    ctx_types, ctx_classes, query = batch.types[:, :-1], batch.classes[:, :-1], batch.classes[:, -1:]
    assert ((ctx_types == BURSTY).sum(1) == 3).all() and ((ctx_types == DISTRACTOR).sum(1) == 3).all()
    assert ((ctx_types == OTHER).sum(1) == 2).all() and (batch.types[:, -1] == QUERY).all()
    assert (ctx_classes[ctx_types == BURSTY].view(-1, 3) == query).all()
    distractor = ctx_classes[ctx_types == DISTRACTOR].view(-1, 3)
    assert (distractor == distractor[:, :1]).all() and (distractor[:, 0] != query[:, 0]).all()
    # the default rest is i.i.d. from the full distribution, so it sometimes hits the query class
    assert (ctx_classes[ctx_types == OTHER].view(-1, 2) == query).any()
    assert ((batch.classes >= 10) & (batch.classes < 60)).all()
    assert ((batch.exemplars >= 2) & (batch.exemplars < 7)).all()


def test_context_order_is_shuffled():
    batch = draw(SequenceSpec(context_len=2, burstiness=1))
    first_is_bursty = (batch.types[:, 0] == BURSTY).float().mean().item()
    assert 0.45 < first_is_bursty < 0.55


def test_no_support_unique_rest_excludes_query_and_repeats():
    batch = draw(SequenceSpec(context_len=8, burstiness=0, no_support=True, unique_rest=True))
    ctx, query = batch.classes[:, :-1], batch.classes[:, -1:]
    assert not (ctx == query).any()
    assert all(len(set(row.tolist())) == 8 for row in ctx)


def test_labels_are_class_indices_by_default():
    batch = draw(SequenceSpec())
    assert torch.equal(batch.labels, batch.classes)


def test_fewshot_relabel_gives_a_distinct_pair_per_sequence():
    batch = draw(SequenceSpec(context_len=4, burstiness=2, relabel="fewshot", fewshot_labels=5))
    bursty = batch.labels[batch.types == BURSTY].view(-1, 2)
    distractor = batch.labels[batch.types == DISTRACTOR].view(-1, 2)
    assert (bursty[:, 0] == batch.target).all() and (bursty == bursty[:, :1]).all()
    assert (distractor[:, 0] != bursty[:, 0]).all()
    assert batch.target.max() < 5 and set(batch.target.tolist()) == set(range(5))


def test_01_relabel_targets_are_zero_or_one_equally():
    batch = draw(SequenceSpec(relabel="01"))
    assert set(batch.labels[:, :].unique().tolist()) == {0, 1}
    assert 0.45 < batch.target.float().mean().item() < 0.55


def test_flip_swaps_labels_and_targets_the_distractor_class():
    batch = draw(SequenceSpec(relabel="flip"))
    is_bursty, is_dis = batch.types[:, :-1] == BURSTY, batch.types[:, :-1] == DISTRACTOR
    q, d = batch.classes[:, -1], batch.classes[:, :-1][is_dis]
    assert torch.equal(batch.target, d)  # the target is the distractor's class label ...
    assert torch.equal(batch.labels[:, :-1][is_bursty], d)  # ... attached to the query-class exemplar
    assert torch.equal(batch.labels[:, :-1][is_dis], q)


def test_ciwl_data_has_exactly_one_query_label_next_to_another_class():
    spec = SequenceSpec(context_len=2, burstiness=0, no_support=True, unique_rest=True,
                        assign_query_label_random=True)
    batch = draw(spec)
    hits = batch.context_labels == batch.target[:, None]
    assert (hits.sum(1) == 1).all()
    assert not (batch.classes[:, :-1] == batch.classes[:, -1:]).any()  # no query-class exemplar in context
    assert 0.45 < hits[:, 0].float().mean().item() < 0.55  # the slot is uniform


def test_match_exemplars_shares_one_exemplar_between_query_and_bursty():
    batch = draw(SequenceSpec(context_len=8, burstiness=3, match_exemplars=True))
    qb = batch.exemplars[(batch.types == BURSTY) | (batch.types == QUERY)].view(-1, 4)
    dis = batch.exemplars[batch.types == DISTRACTOR].view(-1, 3)
    assert (qb == qb[:, :1]).all() and (dis == dis[:, :1]).all()


def test_zipf_skews_query_classes():
    pool = ClassPool(0, 50, 0, 5, zipf_weights(50, 1.0))
    batch = draw(SequenceSpec(), n=4000, pool=pool)
    counts = torch.bincount(batch.classes[:, -1], minlength=50)
    assert counts[0] > 5 * counts[40]


def test_mixture_draws_each_component_in_proportion():
    specs = [SequenceSpec(context_len=2, burstiness=1), SequenceSpec(context_len=2, burstiness=0)]
    batch = sample_mixture(specs, [0.25, 0.75], POOL, 4000, torch.Generator().manual_seed(1))
    bursty_share = (batch.types == BURSTY).any(1).float().mean().item()
    assert 0.22 < bursty_share < 0.28


def test_same_seed_same_batch():
    a, b = draw(SequenceSpec(), seed=7), draw(SequenceSpec(), seed=7)
    assert all(torch.equal(getattr(a, f), getattr(b, f)) for f in a.FIELDS)


@pytest.mark.parametrize("kwargs", [
    dict(context_len=2, burstiness=2),  # 2B > N with a distractor
    dict(context_len=20),
    dict(relabel="fewshot", fewshot_labels=1),
    dict(relabel="flip", burstiness=0),
    dict(relabel="01", assign_query_label_random=True),
])
def test_invalid_specs_are_rejected(kwargs):
    with pytest.raises(ConfigError):
        SequenceSpec(**kwargs)
