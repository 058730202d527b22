"""Classification rule, majority counts and the phase diagram's boundary bisection."""

import dataclasses

import numpy as np
import pandas as pd
import pytest

from coopetition.errors import ConfigError
from coopetition.toy import C25
from coopetition.toy.classify import PhaseRule, classify, phase_counts
from coopetition.toy.phase import PhaseGrid, _midpoint, boundary_position, phase_diagram


def runs(*rows):
    """Hand-built solver summary rows: (min L1, final L1, L1_off, max one-step rise of the total)."""
    return pd.DataFrame([dict(seed=i, min_loss_1=m, final_loss_1=f, loss_1_off=o, max_total_rise=r)
                         for i, (m, f, o, r) in enumerate(rows)])


def test_rule_on_hand_built_runs():
    out = classify(runs(
        (0.001, 0.45, 0.5, -1e-9),  # dipped to 0.2% of L1_off, ended at 90%: transient, monotone
        (0.001, 0.002, 0.5, 1e-3),  # dipped and stayed: persistent; total rose once
        (0.45, 0.5, 0.5, -1e-9),  # never got below 90%: never
        (0.12, 0.25, 0.5, -1e-9),  # dipped to exactly 24%: emerged; ended at 50% = lost_above: transient
        (0.13, 0.13, 0.5, -1e-9),  # 26% > emerge_below: never
    ))
    assert out["phase"].tolist() == ["transient", "persistent", "never", "transient", "never"]
    assert out["total_monotone"].tolist() == [True, False, True, True, True]
    np.testing.assert_allclose(out["r1_min"], [0.002, 0.002, 0.9, 0.24, 0.26])


def test_rule_thresholds_move_the_labels():
    table = runs((0.2, 0.3, 1.0, 0.0))
    assert classify(table, PhaseRule(0.25, 0.5))["phase"].item() == "persistent"
    assert classify(table, PhaseRule(0.25, 0.3))["phase"].item() == "transient"
    assert classify(table, PhaseRule(0.1, 0.5))["phase"].item() == "never"


@pytest.mark.parametrize("bad", [dict(emerge_below=0.0), dict(emerge_below=1.0), dict(lost_above=0.1),
                                 dict(lost_above=1.0)])
def test_bad_rule_raises(bad):
    with pytest.raises(ConfigError):
        PhaseRule(**bad)


def test_phase_counts_majority_and_ties():
    table = pd.DataFrame({"g": [1, 1, 1, 2, 2], "phase": ["never", "transient", "never", "persistent", "transient"]})
    out = phase_counts(table, ["g"]).set_index("g")
    assert out.loc[1, "phase"] == "never" and out.loc[1, "n_never"] == 2 and out.loc[1, "agreement"] == 2 / 3
    assert out.loc[2, "phase"] == "transient"  # a 1-1 tie goes to the first of PHASES


def test_midpoint_and_boundary_position():
    assert _midpoint(0.01, 1.0) == pytest.approx(0.1) and _midpoint(0.0, 0.1) == pytest.approx(0.025)
    grid = (0.0, 0.01, 0.1, 1.0)
    np.testing.assert_allclose(boundary_position(np.array([0.005, 0.01, np.sqrt(0.1), 1.0]), grid),
                               [0.5, 1.0, 2.5, 3.0])


@pytest.mark.parametrize("bad", [dict(alphas=()), dict(mu1s=(0.1, 0.0)), dict(mu1s=(0.1,)), dict(d_ds=(0, 4)),
                                 dict(rounds=13), dict(seeds=(1, 1))])
def test_bad_grid_raises(bad):
    with pytest.raises(ConfigError):
        PhaseGrid(**bad)


def test_phase_diagram_locates_the_persistent_transient_boundary():
    """mu1 = 0 persists and mu1 = 0.1 is transient (d_d = 40, 4000 steps); bisection must shrink the bracket
    between them and every bisection point must agree with the side it was assigned to."""
    grid = PhaseGrid(alphas=(0.1,), mu1s=(0.0, 0.1), d_ds=(40,), seeds=(0, 1, 2), rounds=2)
    diagram = phase_diagram(dataclasses.replace(C25, steps=4000), grid)
    cells = diagram.cells.set_index("mu1")
    assert cells.loc[0.0, "phase"] == "persistent" and cells.loc[0.1, "phase"] == "transient"
    (b,) = diagram.boundary.itertuples()
    assert (b.phase_lo, b.phase_hi) == ("persistent", "transient")
    assert 0.0 < b.mu1_lo < b.mu1_boundary < b.mu1_hi < 0.1
    assert b.mu1_hi / b.mu1_lo == pytest.approx(4.0)  # [0, 0.1] -> [0, 0.025] -> [0.00625, 0.025]
    bisect = phase_counts(diagram.runs[diagram.runs["source"] == "bisect"], ["mu1"]).set_index("mu1")["phase"]
    assert bisect[b.mu1_lo] == "persistent" and bisect[b.mu1_hi] == "transient"
    assert len(diagram.runs) == 3 * (2 + 2)


def test_phase_diagram_needs_c25():
    from coopetition.toy import IH24
    with pytest.raises(ConfigError):
        phase_diagram(IH24, PhaseGrid())
