"""Evaluator sets and the oracle score table of REFERENCE.md 2.4 / 9.3."""

import pytest
import torch

from coopetition.bank import BankConfig, load_bank
from coopetition.task.evaluators import EvalConfig, build_eval_sets, eval_sets_tensors, load_eval_sets
from coopetition.task.metrics import query_metrics
from coopetition.task.sampler import SequenceBatch
from coopetition.task.sequence import BURSTY, DISTRACTOR

N_CLASSES = 2000
BIG = 10.0


@pytest.fixture(scope="module")
def eval_sets():
    bank = load_bank(BankConfig(classes=N_CLASSES, exemplars=20, dim=4, seed=0))
    return build_eval_sets(EvalConfig(suite="ctx2").evaluators(), bank, eval_seed=1)


def _random_context_label(batch: SequenceBatch, gen: torch.Generator) -> torch.Tensor:
    pick = torch.randint(batch.context_labels.shape[1], (batch.size,), generator=gen)
    return batch.context_labels[torch.arange(batch.size), pick]


def oracle_icl(batch: SequenceBatch, gen: torch.Generator) -> torch.Tensor:
    """Copy the label paired with an exemplar of the query's class; guess among context labels if there is none."""
    match = batch.classes[:, :-1] == batch.classes[:, -1:]
    first = match.float().argmax(1)
    label = torch.where(match.any(1), batch.context_labels[torch.arange(batch.size), first],
                        _random_context_label(batch, gen))
    return torch.zeros(batch.size, N_CLASSES).scatter_(1, label[:, None], BIG)


def oracle_ciwl(batch: SequenceBatch, gen: torch.Generator) -> torch.Tensor:
    """In-weights class -> label, but only a label present in context may be output."""
    query_class = batch.classes[:, -1]
    in_context = (batch.context_labels == query_class[:, None]).any(1)
    label = torch.where(in_context, query_class, _random_context_label(batch, gen))
    return torch.zeros(batch.size, N_CLASSES).scatter_(1, label[:, None], BIG)


def oracle_iwl(batch: SequenceBatch, gen: torch.Generator) -> torch.Tensor:
    """In-weights class -> label over all classes, ignoring the context."""
    return torch.zeros(batch.size, N_CLASSES).scatter_(1, batch.classes[:, -1:], BIG)


# (evaluator, metric) -> expected score; None means "about 0.5".
EXPECTED = {
    oracle_icl: {"train": 1, "icl": 1, "flip": 1, "ciwl": None, "iwl": 0},
    oracle_ciwl: {"train": 1, "icl": None, "flip": 0, "ciwl": 1, "iwl": 0},
    oracle_iwl: {"train": 1, "icl": None, "flip": 0, "ciwl": 1, "iwl": 1},
}
HEADLINE = {"train": "in_context_acc", "icl": "in_context_acc", "flip": "in_context_acc", "ciwl": "in_context_acc",
            "iwl": "acc"}


@pytest.mark.parametrize("oracle", list(EXPECTED), ids=lambda f: f.__name__)
def test_oracle_score_table(eval_sets, oracle):
    gen = torch.Generator().manual_seed(0)
    for name, expected in EXPECTED[oracle].items():
        batch = eval_sets[name]
        metrics = query_metrics(oracle(batch, gen), batch.target, batch.context_labels)
        score = metrics[HEADLINE[name]].mean().item()
        if expected is None:
            assert score == pytest.approx(0.5, abs=0.03), (oracle.__name__, name)
        else:
            assert score == expected, (oracle.__name__, name, score)
        assert metrics["in_context_acc"].mean().item() == 0 or name != "iwl"  # target never in context


def test_iwl_oracle_full_accuracy_on_icl_eval_is_about_zero(eval_sets):
    batch = eval_sets["icl"]
    acc = query_metrics(oracle_iwl(batch, torch.Generator()), batch.target, batch.context_labels)["acc"]
    assert acc.mean().item() < 0.01  # it names the query's class, never the 0/1 label


def test_eval_set_construction_matches_reference(eval_sets):
    assert set(eval_sets) == {"train", "icl", "flip", "ciwl", "iwl"}
    for batch in eval_sets.values():
        assert batch.size == 5000
        assert batch.classes.max() < 1600 and batch.exemplars.max() < 5
    ciwl = eval_sets["ciwl"]
    hits = ciwl.context_labels == ciwl.target[:, None]
    assert (hits.sum(1) == 1).all()
    assert not (ciwl.classes[:, :-1][hits] == ciwl.target).any()  # that label sits next to another class
    flip = eval_sets["flip"]
    is_bursty = flip.types[:, :-1] == BURSTY
    assert torch.equal(flip.context_labels[is_bursty], flip.target)
    assert torch.equal(flip.classes[:, :-1][flip.types[:, :-1] == DISTRACTOR], flip.target)


def test_eval_sets_round_trip_and_bank_guard(tmp_path, eval_sets):
    from safetensors.torch import save_file

    from coopetition.errors import DataError

    path = tmp_path / "sets.safetensors"
    save_file(eval_sets_tensors(eval_sets), str(path), metadata={"bank_fingerprint": "abc"})
    loaded = load_eval_sets(path, "abc")
    assert all(torch.equal(loaded[n].labels, eval_sets[n].labels) for n in eval_sets)
    with pytest.raises(DataError, match="drawn from bank"):
        load_eval_sets(path, "different")


def test_eval_sets_are_a_function_of_the_eval_seed():
    bank = load_bank(BankConfig(classes=50, exemplars=5, dim=4))
    specs = EvalConfig(n_seqs=100).evaluators()
    a, b, c = (build_eval_sets(specs, bank, s) for s in (1, 1, 2))
    assert torch.equal(a["flip"].classes, b["flip"].classes)
    assert not torch.equal(a["flip"].classes, c["flip"].classes)
