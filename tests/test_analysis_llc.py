"""The ``llc`` analysis: SGLD around each checkpoint on the training distribution (devinterp, an optional extra).

Known answers: the estimator's arithmetic on a hand-built trace; devinterp's L(w*) equals the run's own network's
training loss on the same sequences (so the encoding, the bank look-up and the interventions are the ones that
ran); without devinterp, ``--analyses llc`` is a one-line error, exit code 2, nothing written.
"""

from __future__ import annotations

import math
import sys
from dataclasses import replace

import pandas as pd
import pytest
import torch

from coopetition.analysis.config import AnalysisConfig
from coopetition.analysis.llc import FIELDS, LLCSettings, chain_rows, encode, make_loss
from coopetition.cli import main
from coopetition.errors import ConfigError
from coopetition.task.metrics import query_loss


def test_llc_is_opt_in_and_brings_the_strategy_curves():
    assert "llc" not in AnalysisConfig().analyses
    assert AnalysisConfig(analyses=("llc",)).analyses == ("strategies", "llc")
    assert AnalysisConfig(analyses=("llc", "strategies")).analyses == ("strategies", "llc")


@pytest.mark.parametrize("field,value", [("lr", 0.0), ("gamma", -1.0), ("nbeta", 0.0), ("chains", 0), ("draws", 1),
                                         ("batch_size", 1), ("n_seqs", 8)])
def test_bad_llc_settings_are_config_errors(field, value):
    with pytest.raises(ConfigError, match=f"llc.{field}"):
        replace(LLCSettings(batch_size=16), **{field: value})


def test_estimator_arithmetic_on_a_hand_built_trace():
    # chain 0 sits 0.1 above L(w*) = 1 for every draw; chain 1 climbs 0 -> 0.2 linearly; one burn-in step first
    trace = torch.tensor([[5.0, 1.1, 1.1, 1.1, 1.1], [5.0, 1.0, 1.0 + 0.2 / 3, 1.0 + 0.4 / 3, 1.2]])
    rows = chain_rows(trace, init_loss=1.0, nbeta=10.0, burnin=1, failed=[False, False])
    assert [r["chain"] for r in rows] == [0, 1, -1]
    assert rows[0]["llc_mean"] == pytest.approx(1.0) and rows[0]["llc_std"] == pytest.approx(0.0, abs=1e-9)
    assert rows[1]["llc_mean"] == pytest.approx(1.0)
    assert rows[1]["llc_first_half"] == pytest.approx(10 * 0.1 / 3) and rows[1]["llc_second_half"] == pytest.approx(
        10 * 0.5 / 3)
    assert rows[2]["llc_mean"] == pytest.approx(1.0) and rows[2]["llc_std"] == pytest.approx(0.0, abs=1e-9)
    assert rows[0]["loss_max"] == pytest.approx(1.1)  # burn-in (5.0) is not a draw
    failed = chain_rows(trace, 1.0, 10.0, 1, failed=[False, True])
    assert failed[-1]["failed"] and failed[-1]["llc_mean"] == pytest.approx(1.0) and math.isnan(failed[-1]["llc_std"])


def test_loss_decodes_the_sequences_and_returns_each_query_loss():
    features = torch.randn(5, 3, 4)
    classes = torch.tensor([[0, 1, 2], [3, 4, 0]])
    exemplars = torch.tensor([[0, 1, 2], [2, 1, 0]])
    labels = torch.tensor([[7, 8, 7], [9, 6, 6]])
    ids = encode(classes, exemplars, labels)
    assert ids.shape == (2, 3 * FIELDS) and ids[1, FIELDS:2 * FIELDS].tolist() == [4, 1, 6]
    seen = {}

    def oracle(exemplar_vectors, context_labels, target):
        # puts logit 2 on the target of a 10-class output: cross-entropy log(9 + e^2) - 2
        seen.update(x=exemplar_vectors, ctx=context_labels)
        return torch.nn.functional.one_hot(target, 10).float() * 2

    loss = make_loss(features)(oracle, ids)
    assert torch.equal(seen["x"], features[classes, exemplars]) and seen["ctx"].tolist() == [[7, 8], [9, 6]]
    assert loss.shape == (2, 3 * FIELDS - 1)
    assert torch.allclose(loss, torch.full_like(loss, math.log(9 + math.e ** 2) - 2))


def test_without_devinterp_llc_exits_2_with_the_install_hint(trained_run, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "devinterp", None)  # import devinterp now raises ImportError
    monkeypatch.setitem(sys.modules, "devinterp.slt.sampling", None)
    out = tmp_path / "out"
    assert main(["analyze", str(trained_run), "--checkpoint-range", "10", "--analyses", "llc", "--out", str(out),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "coopetition: error: the llc analysis needs devinterp: pip install 'coopetition[devinterp]'"
    assert not out.exists()


def test_llc_on_a_tiny_run(trained_run, tmp_path):
    pytest.importorskip("devinterp.slt.sampling")
    from coopetition.analysis.execution import build_context
    from coopetition.pipeline import analyze
    from coopetition.store.run import Run, load_checkpoint
    from coopetition.task.metrics import query_loss

    llc = LLCSettings(lr=1e-5, gamma=100.0, chains=2, draws=6, burnin=2, batch_size=8, n_seqs=32)
    # an added intervention: the sampled network is the analysed one (here L1 ablated), not the bare model
    config = AnalysisConfig(analyses=("llc",), settings={"llc": llc}, workers=1, interventions=("ablate:1:*",))
    result = analyze(trained_run, "30", config, tmp_path, progress_bar=False)
    table = pd.read_csv(result.tables["llc"])
    trace = pd.read_csv(result.tables["llc_trace"])
    assert set(result.tables) == {"strategies", "llc", "llc_trace"}
    assert {"llc.html", "llc_traces.html", "strategies.html"} <= set(result.figures)
    assert len(table) == 3 and len(trace) == 2 * (6 + 2)
    assert not table["failed"].any() and ((table["nbeta"] - 8 / math.log(8)).abs() < 1e-4).all()

    # L(w*): the analysed network's mean query loss over the sampled sequences, recomputed here
    run = Run.open(trained_run)
    context, analyses = build_context(run, tuple(run.evaluator_specs()), config)
    sampled = analyses[-1]
    ids = torch.stack([d["input_ids"] for d in sampled.dataset])
    for step in (30,):
        info = next(c for c in run.checkpoints if c.step == step)
        load_checkpoint(context.model, info)
        with torch.no_grad():
            ours = make_loss(sampled.features)(context.forward, ids)[:, 0].mean().item()
            items = ids.view(len(ids), -1, FIELDS)
            bare = query_loss(context.model(sampled.features[items[..., 0], items[..., 1]], items[:, :-1, 2]),
                              items[:, -1, 2]).item()
        rows = table[table["step"] == step]
        assert rows["init_loss"].iloc[0] == pytest.approx(ours, rel=1e-4)
        assert abs(ours - bare) > 1e-3  # the ablation is on
        # each chain's LLC is nbeta * (mean of its draws - L(w*)), from the trace table
        for chain in (0, 1):
            drawn = trace[(trace["step"] == step) & (trace["chain"] == chain) & (trace["draw"] >= 0)]
            assert len(drawn) == 6 and drawn["sgld_step"].min() == 2
            expected = 8 / math.log(8) * (drawn["loss"].mean() - rows["init_loss"].iloc[0])
            assert rows[rows["chain"] == chain]["llc_mean"].iloc[0] == pytest.approx(expected, abs=2e-4)
        summary = rows[rows["chain"] == -1].iloc[0]
        assert summary["llc_mean"] == pytest.approx(rows[rows["chain"] >= 0]["llc_mean"].mean(), rel=1e-5)

    # both pages draw in a browser (offline, from the folder's own plotly.js)
    import shutil

    from tests.test_analysis_runner import rendered_plots

    if shutil.which("chromium") or shutil.which("chromium-browser"):
        for page in ("llc.html", "llc_traces.html"):
            assert rendered_plots(tmp_path / page, tmp_path / f"profile_{page}") >= 1, page


def test_cli_flags_reach_the_llc_settings():
    from coopetition.pipeline.cli import config_from_args
    from coopetition.cli import build_parser

    args = build_parser().parse_args(["analyze", "run", "--checkpoint-range", "0", "--analyses", "llc",
                                      "--llc-lr", "2e-5", "--llc-gamma", "300", "--llc-nbeta", "50",
                                      "--llc-chains", "3", "--llc-draws", "40", "--llc-burnin", "5"])
    config = config_from_args(args)
    assert config.analyses == ("strategies", "llc")
    c = config.settings_for("llc")
    assert (c.lr, c.gamma, c.nbeta, c.chains, c.draws, c.burnin) == (2e-5, 300, 50, 3, 40, 5)
    assert config.to_dict()["settings"]["llc"]["gamma"] == 300  # recorded in analysis.json


def _tiny_network(n_labels: int = 40):
    from coopetition.model import ICLTransformer, ModelConfig

    return ICLTransformer(ModelConfig(n_layers=2, d_model=16, n_heads=2), input_dim=6, n_labels=n_labels,
                          n_outputs=n_labels, init_seed=1)


@pytest.mark.parametrize("interventions", [(), ("ablate:0:1",)])
def test_only_the_label_rows_the_sample_reads_are_sampled(interventions):
    """Known answers for ``Sampled``'s compact label table: the loss is the same function of the weights (same
    bits), the gradient of the sampled rows is the table's gradient at those rows, and every other row's gradient
    is exactly zero, so leaving those rows out of SGLD changes no loss a chain sees."""
    from coopetition.analysis.llc import Sampled, read_label_rows
    from coopetition.interventions import intervene

    gen = torch.Generator().manual_seed(0)
    exemplars = torch.randn(12, 3, 6, generator=gen)
    context_labels = torch.randint(5, 17, (12, 2), generator=gen)  # rows 5..16 of 40 at most
    context_labels[0, 0] = 40  # an unknown label (reads as zero) is no row
    target = torch.randint(0, 40, (12,), generator=gen)
    forward = intervene(list(interventions), _tiny_network())
    ours = {id(p) for p in forward.model.parameters()}
    rows = read_label_rows(forward.network, ours, context_labels)
    known = context_labels[context_labels < 40]
    assert rows.tolist() == sorted(set(known.tolist())) and len(rows) <= 12
    assert read_label_rows(forward.network, set(), context_labels) is None  # a frozen (grafted) table: no rows

    plain, compact = Sampled(forward), Sampled(forward, rows)
    assert compact.compact and not plain.compact
    torch.testing.assert_close(compact.label_rows, forward.network.embed.W_L[rows], rtol=0, atol=0)

    def loss_of(module):
        return query_loss(module(exemplars, context_labels, target), target)
    full = loss_of(plain)
    grad_table, = torch.autograd.grad(full, [forward.network.embed.W_L])
    part = loss_of(compact)
    grad_rows, = torch.autograd.grad(part, [compact.label_rows])
    assert torch.equal(full, part)
    torch.testing.assert_close(grad_rows, grad_table[rows], rtol=0, atol=0)
    others = torch.ones(40, dtype=torch.bool)
    others[rows] = False
    assert grad_table[rows].abs().sum() > 0 and grad_table[others].abs().max() == 0
    # the pass leaves the table as it was (a parameter, not the per-pass copy)
    assert isinstance(forward.network.embed.W_L, torch.nn.Parameter)
