"""Time-rescaling fit of toy losses to a network run's eval.csv, on a synthetic run with a known answer."""

import dataclasses

import numpy as np
import pandas as pd
import pytest

from coopetition.errors import DataError
from coopetition.toy import C25, solve
from coopetition.toy.fit import fit_all_seeds, fit_time_scale, read_network_losses

TAU, S0 = 1700.0, 1.5e6  # network sequences per toy step; network time of toy step 0


@pytest.fixture(scope="module")
def toy_trace():
    return solve(dataclasses.replace(C25, seeds=(3, 5)), record="losses").trace


def write_synthetic_run(run_dir, trace, seed=3, noise=0.02):
    """eval.csv in the network run format whose icl / ciwl losses are seed 3's L1 / L2 mapped by TAU, S0 and an
    affine loss map, plus noise and unrelated rows (other evaluators and metrics)."""
    wide = trace[trace["seed"] == seed].pivot_table(index="step", columns="quantity", values="value")
    sequences = np.arange(0, 20_000_001, 100_000)
    rng = np.random.default_rng(0)
    rows = []
    for evaluator, quantity, k, c in (("icl", "loss_1", 4.0, 0.6), ("ciwl", "loss_2", 5.0, 0.05)):
        y = k * np.interp((sequences - S0) / TAU, wide.index, wide[quantity]) + c + rng.normal(0, noise, len(sequences))
        rows += [dict(step=s // 32, sequences=s, evaluator=evaluator, metric="loss", value=v)
                 for s, v in zip(sequences, y)]
        rows += [dict(step=s // 32, sequences=s, evaluator=evaluator, metric="acc", value=0.5) for s in sequences]
    rows += [dict(step=s // 32, sequences=s, evaluator="flip", metric="loss", value=9.0) for s in sequences]
    run_dir.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(run_dir / "eval.csv", index=False)
    return run_dir


def test_fit_recovers_the_known_time_scale(tmp_path, toy_trace):
    network = read_network_losses(write_synthetic_run(tmp_path / "run", toy_trace))
    assert set(network["evaluator"]) == {"icl", "ciwl"}
    fit = fit_time_scale(toy_trace[toy_trace["seed"] == 3], network, seed=3)
    assert fit.tau == pytest.approx(TAU, rel=0.02)
    assert fit.s0 == pytest.approx(S0, abs=0.02 * 20e6)
    assert fit.scale == pytest.approx((4.0, 5.0), rel=0.05) and fit.offset[0] == pytest.approx(0.6, abs=0.05)
    assert fit.r2_icl > 0.99 and fit.r2_ciwl > 0.99 and fit.rmse_icl < 0.03


def test_the_generating_seed_fits_best(tmp_path, toy_trace):
    fits = fit_all_seeds(toy_trace, read_network_losses(write_synthetic_run(tmp_path / "run", toy_trace)))
    assert fits["seed"].tolist()[0] == 3 and fits["r2"].iloc[0] > fits["r2"].iloc[1]


def test_network_run_errors_are_data_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_network_losses(tmp_path)
    pd.DataFrame({"step": [1], "evaluator": ["icl"], "value": [1.0]}).to_csv(tmp_path / "eval.csv", index=False)
    with pytest.raises(DataError, match="has columns"):
        read_network_losses(tmp_path)
    pd.DataFrame({"step": [1, 2, 3, 4], "sequences": [32, 64, 96, 128], "evaluator": ["icl"] * 4,
                  "metric": ["loss"] * 4, "value": [1.0, 0.5, 0.4, 0.3]}).to_csv(tmp_path / "eval.csv", index=False)
    with pytest.raises(DataError, match="'ciwl'"):
        read_network_losses(tmp_path)
