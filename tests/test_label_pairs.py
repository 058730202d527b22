"""Few-shot label pairs (REFERENCE 1.3, 1.6) and IH24's sizing and evaluators (REFERENCE 1.9, 2.6, 3.4)."""

from dataclasses import replace

import pytest
import torch

from coopetition.config import RunConfig
from coopetition.errors import ConfigError
from coopetition.presets import get_preset
from coopetition.task.config import TaskConfig
from coopetition.task.label_pairs import all_pairs, split_pairs, split_sizes
from coopetition.task.sampler import ClassPool, sample_sequences
from coopetition.task.sequence import BURSTY, DISTRACTOR, SequenceSpec
from coopetition.store.build import derive_sizes, load_run_bank, model_for
from coopetition.store.evalsets import eval_sets_for

IH24_PAIRS = dict(relabel="fewshot", fewshot_labels=5, fewshot_split=(8, 2, 0))


def as_set(pairs):
    return {tuple(p) for p in pairs.tolist()}


def test_pairs_are_every_i_below_j_in_order():
    assert all_pairs(5).tolist() == [[0, 1], [0, 2], [0, 3], [0, 4], [1, 2], [1, 3], [1, 4], [2, 3], [2, 4], [3, 4]]
    assert len(all_pairs(12800 // 100)) == 128 * 127 // 2


@pytest.mark.parametrize("n_pairs, shares, sizes", [
    (10, (8, 2, 0), (8, 2, 0)),  # IH24, 5 labels
    (45, (36, 9, 0), (36, 9, 0)),  # IH24 scaling, 10 labels
    (105, (84, 21, 0), (84, 21, 0)),  # 15 labels
    (10, (1, 1, 1), (4, 3, 3)),  # val and test floor 10/3 = 3.33; train takes the remainder
    (10, (0.7, 0.3, 0), (7, 3, 0)),  # int(10 * 0.3 / 1.0) = int(3.0000000000000004) = 3, as numpy
])
def test_split_sizes_follow_the_reference_arithmetic(n_pairs, shares, sizes):
    assert split_sizes(n_pairs, shares) == sizes


def test_ih24_split_is_8_train_2_val_with_every_label_in_train_and_fixed_by_seed_20():
    split = split_pairs(5, (8, 2, 0), 20)
    train, val = as_set(split["train"]), as_set(split["val"])
    assert (len(train), len(val), len(split["test"])) == (8, 2, 0)
    assert train | val == as_set(all_pairs(5)) and not train & val
    assert {label for pair in train for label in pair} == set(range(5))
    split_pairs.cache_clear()
    assert as_set(split_pairs(5, (8, 2, 0), 20)["val"]) == val  # a pure function of (K, shares, seed) ...
    assert val == {(0, 2), (0, 3)}  # ... which pins the pairs IH24 runs hold out (torch.randperm, seed 20)
    assert as_set(split_pairs(5, (8, 2, 0), 21)["val"]) == {(0, 4), (2, 3)}


def test_split_is_redrawn_until_every_label_is_in_a_train_pair():
    """6 labels, 3 train pairs of 15: only a perfect matching covers all labels (15 of 455 draws). Seed 2's first
    permutation misses a label and a later one covers all; seed 0 finds none in 10 tries."""
    split = split_pairs(6, (3, 12, 0), 2)
    assert len(split["train"]) == 3 and sorted(split["train"].flatten().tolist()) == list(range(6))
    gen = torch.Generator().manual_seed(2)
    first = all_pairs(6)[torch.randperm(15, generator=gen)][12:]
    assert first.unique().numel() < 6
    with pytest.raises(ConfigError, match="no split in 10 tries"):
        split_pairs(6, (3, 12, 0), 0)
    with pytest.raises(ConfigError, match="too few to cover"):
        SequenceSpec(relabel="fewshot", fewshot_labels=6, fewshot_split=(2, 13, 0))


@pytest.mark.parametrize("fields, message", [
    (dict(relabel="fewshot", fewshot_labels=5, fewshot_pairs="val"), "needs a fewshot_split"),
    (dict(fewshot_split=(8, 2, 0)), "relabel 'fewshot' only"),
    (dict(IH24_PAIRS, fewshot_split=(8, -2, 0)), "three finite shares"),
    (dict(IH24_PAIRS, fewshot_pairs="test"), "no test pairs"),
    (dict(IH24_PAIRS, fewshot_pairs="dev"), "fewshot_pairs must be one of"),
    (dict(relabel="fewshot", fewshot_labels=2000, fewshot_split=(8, 2, 0)), "at most"),
])
def test_bad_pair_splits_are_config_errors(fields, message):
    with pytest.raises(ConfigError, match=message):
        SequenceSpec(**fields)


def test_sequences_draw_only_their_pair_set_in_both_orders():
    pool = ClassPool(0, 50, 0, 1)
    for which in ("train", "val"):
        batch = sample_sequences(SequenceSpec(**IH24_PAIRS, fewshot_pairs=which), pool, 2000,
                                 torch.Generator().manual_seed(0))
        context, types = batch.context_labels, batch.types[:, :-1]
        first, second = context[types == BURSTY], context[types == DISTRACTOR]
        assert torch.equal(first, batch.target)  # the query's label is the first of the pair
        drawn = set(zip(first.tolist(), second.tolist()))
        assert {tuple(sorted(p)) for p in drawn} == as_set(split_pairs(5, (8, 2, 0), 20)[which])
        assert len(drawn) == 2 * len(split_pairs(5, (8, 2, 0), 20)[which])  # each pair in both orders


@pytest.fixture(scope="module")
def ih24():
    config = get_preset("ih24")
    return replace(config, bank=replace(config.bank, dim=8))  # the layout of IH24's bank; small vectors


def test_ih24_outputs_are_the_five_labels_not_the_training_classes(ih24):
    sizes = derive_sizes(ih24, load_run_bank(ih24))
    assert (sizes.n_labels, sizes.n_outputs) == (5, 5)
    model = model_for(get_preset("ih24"), replace(sizes, input_dim=512))
    assert model.unembed.W_U.shape == (64, 5) and model.embed.W_L.shape == (5, 64)
    assert model.n_parameters() == 66_629  # REFERENCE 3.4: IH24, 2L RoPE, 5 labels


def test_outputs_cover_the_classes_when_some_training_spec_keeps_class_labels(ih24):
    mixed = replace(ih24, task=TaskConfig(mixture=(ih24.task.mixture[0], SequenceSpec()), mixture_weights=(1, 1)))
    assert derive_sizes(mixed, load_run_bank(mixed)).n_outputs == 50  # the 50 train classes, > 5 labels


def test_ih24_evaluators_draw_the_reference_sets(ih24):
    sets = eval_sets_for(ih24, load_run_bank(ih24))
    assert list(sets) == ["fsl_train", "fsl_val_rl", "fsl_train_valex", "fsl_test_class"]
    split = split_pairs(5, (8, 2, 0), 20)
    for name, batch in sets.items():
        assert batch.size == 1000 and batch.classes.shape[1] == 3  # ctx 2: x1 y1 x2 y2 xq
        pairs = {tuple(sorted(p)) for p in batch.context_labels.tolist()}
        assert pairs <= as_set(split["val" if name == "fsl_val_rl" else "train"])
    assert as_set(split["val"]) == {tuple(sorted(p)) for p in sets["fsl_val_rl"].context_labels.tolist()}
    assert sets["fsl_train"].classes.max() < 50 and (sets["fsl_train"].exemplars == 0).all()
    assert set(sets["fsl_train_valex"].exemplars.unique().tolist()) == {1, 2, 3, 4}
    assert sets["fsl_test_class"].classes.min() >= 1523 and (sets["fsl_test_class"].exemplars == 0).all()


def test_the_ih24_suite_needs_training_with_the_same_pair_split(ih24):
    with pytest.raises(ConfigError, match="must relabel the same way"):
        replace(ih24, task=TaskConfig(mixture=(SequenceSpec(),)))
    other = replace(ih24.task.mixture[0], fewshot_split_seed=21)
    with pytest.raises(ConfigError, match="fsl_train"):
        RunConfig(bank=ih24.bank, task=TaskConfig(mixture=(other,)), model=ih24.model, eval=ih24.eval)
