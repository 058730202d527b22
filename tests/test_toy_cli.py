"""``coopetition toy`` end to end on small settings: tables, figures, summary.json, errors, replot."""

import argparse
import dataclasses
import json
import time

import pandas as pd
import pytest

from coopetition.errors import ConfigError
from coopetition.toy import C25, solve
from coopetition.toy import __main__ as toy_main
from coopetition.toy import cli
from tests.test_toy_fit import write_synthetic_run


def parse(*argv):
    parser = argparse.ArgumentParser()
    cli.add_parser(parser.add_subparsers())
    return parser.parse_args(["toy", *argv])


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    """3 seeds, 3000 steps, a 2-value mu1 sweep, a synthetic network run and a 2x2x1 phase grid."""
    root = tmp_path_factory.mktemp("toy")
    toy = solve(dataclasses.replace(C25, seeds=(3,), steps=3000), record="losses").trace
    run_dir = write_synthetic_run(root / "net", toy)
    args = parse("--seeds", "3,5,8", "--steps", "3000", "--sweep-mu1", "0,0.1", "--network-run", str(run_dir),
                 "--phase-diagram", "--phase-alphas", "0.1,1", "--phase-mu1s", "0,0.1", "--phase-dds", "40",
                 "--phase-seeds", "2", "--phase-rounds", "1", "--out", str(root / "out"))
    assert args.func(args) == 0
    return root / "out"


def test_outputs_exist_and_figures_are_standalone(small_run):
    for name in ("config.json", "trace.csv", "summary.csv", "mu1_sweep_trace.csv", "mu1_sweep_summary.csv",
                 "network_losses.csv", "fit.csv", "phase_cells.csv", "phase_boundary.csv", "phase_runs.csv"):
        assert (small_run / name).is_file(), name
    for name in ("losses.html", "vectors.html", "mu1_sweep.html", "overlay.html", "phase_diagram.html"):
        html = (small_run / name).read_text()
        assert '<script src="http' not in html and len(html) > 1_000_000, name  # plotly.js embedded inline
    trace = pd.read_csv(small_run / "trace.csv")
    assert list(trace.columns) == ["condition", "seed", "step", "quantity", "value"]
    assert set(trace["seed"]) == {3, 5, 8}


def test_summary_json_reports_outcomes(small_run):
    report = json.loads((small_run / "summary.json").read_text())
    assert report["config"]["seeds"] == [3, 5, 8] and report["config"]["steps"] == 3000
    main = report["main"]
    assert sum(main["phases"].values()) == 3 and set(main["stop_steps"]) == {"3", "5", "8"}
    assert report["mu1_sweep"]["mu1=0"]["phases"]["transient"] == 0
    assert report["fit"]["best"]["seed"] == 3 and report["fit"]["best"]["r2"] > 0.95
    assert report["phase_diagram"]["runs"] >= 8 and {"solve_s", "figures_s"} <= set(report["timing"])


def test_replot_rebuilds_figures_from_tables_only(small_run):
    (small_run / "losses.html").unlink()
    summary = pd.read_csv(small_run / "summary.csv")
    summary.assign(phase="never").to_csv(small_run / "summary.csv", index=False)  # the figure must follow the table
    args = parse("--replot", "--out", str(small_run))
    assert args.func(args) == 0
    assert "0 transient" in (small_run / "losses.html").read_text()
    summary.to_csv(small_run / "summary.csv", index=False)


@pytest.mark.parametrize("argv, message", [
    (["--alpha=-1"], "alpha must be in [0, 1e6], got -1.0"),
    (["--dims", "20,20,20"], "dims for model 'c25' must have 4 entries"),
    (["--seeds", "0"], "seed count N must be in [1, 10000], got 0"),
    (["--clamp", "b:x"], "clamp count after ':' must be an integer"),
    (["--preset", "ih24", "--phase-diagram"], "--phase-diagram needs a c25 preset"),
    (["--network-run", "/nonexistent/run"], "eval.csv does not exist"),
])
def test_bad_input_exits_2_with_one_line(argv, message, capsys, tmp_path):
    assert toy_main.main([*argv, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_overrides_apply_to_the_preset():
    cfg = cli.config_from_args(parse("--preset", "c25-mu0", "--dims", "5,6,7,8", "--seeds", "4", "--clamp", "c:2"))
    assert cfg.mu1 == 0.0 and cfg.threshold == 1e-3 and cfg.dims == (5, 6, 7, 8)
    assert cfg.seeds == (0, 1, 2, 3) and cfg.clamp == (("c", 2),)
    with pytest.raises(ConfigError):
        cli.config_from_args(parse("--dims", "5,6.5,7,8"))


@pytest.mark.slow
def test_c25_preset_runs_in_under_a_minute(tmp_path):
    args = parse("--preset", "c25", "--out", str(tmp_path / "c25"))
    start = time.perf_counter()
    assert args.func(args) == 0
    assert time.perf_counter() - start < 60
    report = json.loads((tmp_path / "c25" / "summary.json").read_text())
    assert report["main"]["phases"]["transient"] >= 10
