"""``analyze`` end to end on a tiny trained run: every table and figure, tidy columns, and one-line CLI errors."""

import os

import pandas as pd
import pytest
import torch

from coopetition.analysis.registry import get, names
from coopetition.analysis.config import AnalysisConfig
from coopetition.analysis.runner import SelectionWarning
from coopetition.pipeline import analyze
from coopetition.cli import main
from coopetition.errors import ConfigError
from coopetition.train.loop import train
from tests.conftest import tiny_run_config

pytestmark = pytest.mark.e2e

SMALL = dict(n_seqs=24, settings={"patching": {"seqs": 12}, "probes": {"seqs": 48, "steps": 5}})
DEFAULT = [name for name in names() if get(name).by_default]  # llc is opt-in (tests/test_analysis_llc.py)
TABLES = {table: list(columns) for name in DEFAULT for table, columns in get(name).tables.items()}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("analyze") / "run"
    train(tiny_run_config(steps=20, checkpoint_schedule="every:10", eval_schedule="every:5"), path, progress=False)
    return path


@pytest.fixture(scope="module")
def analysed(tiny_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("analysis")
    return analyze(tiny_run, "0:", AnalysisConfig(**SMALL), out, progress_bar=False)


def test_every_table_is_tidy_with_a_step_column(analysed):
    assert set(analysed.tables) == set(TABLES)
    for name, columns in TABLES.items():
        frame = pd.read_csv(analysed.tables[name])
        assert list(frame.columns) == columns and len(frame), name
        assert set(frame["step"]) <= {0, 5, 10, 15, 20}
    ablation = pd.read_csv(analysed.tables["ablation"])
    assert set(ablation["step"]) == {0, 10, 20}
    assert set(ablation["evaluator"]) == {"train", "icl", "flip", "ciwl", "iwl"}
    patching = pd.read_csv(analysed.tables["patching"])
    assert set(patching["pair"]) == {"flip_vs_train", "icl_swap", "ciwl_vs_iwl"}
    final = patching.query("kind == 'exact' and component == 'resid' and layer == 2 and position == 4")["value"]
    assert final.dropna().round(4).eq(1.0).all()  # the final residual at the query carries the whole answer


def test_analysis_json_records_what_ran(analysed, tiny_run):
    import json

    record = json.loads((analysed.out_dir / "analysis.json").read_text())
    assert record["steps"] == [0, 10, 20] and record["checkpoint_range"] == "0:"
    assert record["analysis"]["analyses"] == DEFAULT and record["analysis"]["n_seqs"] == 24
    assert record["run_interventions"] == [] and record["added_interventions"] == []
    assert record["versions"]["torch"] and record["run"] == str(tiny_run.resolve())


def test_every_figure_and_the_index_are_written(analysed):
    out = analysed.out_dir
    expected = {"strategies.html", "ablation.html", "patching_positions.html", "patching_heads.html",
                "patching_attribution.html", "probes.html", "progress.html", "index.html", "clamp_ciwl.html",
                "clamp_flip.html", "scorecard.html"}
    assert expected <= set(analysed.figures)
    index = (out / "index.html").read_text()
    for name in analysed.figures:
        if name != "index.html":
            assert f'href="{name}"' in index
            assert 'src="plotly.min.js"' in (out / name).read_text()
    assert (out / "plotly.min.js").stat().st_size > 1_000_000


def test_worker_processes_give_the_same_tables(tiny_run, analysed, tmp_path):
    config = AnalysisConfig(analyses=("ablation", "patching", "progress", "clamp", "scorecard"), workers=2, **SMALL)
    parallel = analyze(tiny_run, "0:", config, tmp_path, progress_bar=False, use_cache=False)  # computed, not read back
    assert parallel.computed == {name: 3 for name in config.analyses if get(name).needs_model}
    for name in ("ablation", "patching", "progress", "progress_attention", "clamp", "scorecard"):
        assert pd.read_csv(parallel.tables[name]).equals(pd.read_csv(analysed.tables[name])), name


def test_worker_count():
    assert AnalysisConfig(workers=3).n_workers(2) == 2
    assert AnalysisConfig(workers=None).n_workers(3) == 1  # too few checkpoints to pay for starting a worker
    assert AnalysisConfig(workers=None).n_workers(1000) == os.cpu_count()
    with pytest.raises(ConfigError, match="workers"):
        AnalysisConfig(workers=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_gives_the_cpu_tables(tiny_run, analysed, tmp_path):
    config = AnalysisConfig(analyses=("ablation", "patching", "progress"), device="cuda", **SMALL)
    on_gpu = analyze(tiny_run, "0:", config, tmp_path, progress_bar=False)
    for name in ("ablation", "patching", "progress"):
        ours, cpu = pd.read_csv(on_gpu.tables[name]), pd.read_csv(analysed.tables[name])
        assert ours.drop(columns="value").equals(cpu.drop(columns="value")), name
        assert ((ours["value"] - cpu["value"]).abs().fillna(0) < 1e-3).mean() > 0.99, name  # argmax ties may flip


def test_snapping_and_a_stride(tiny_run, tmp_path):
    with pytest.warns(SelectionWarning, match="step 12"):
        result = analyze(tiny_run, "12,0:20:2", AnalysisConfig(analyses=("strategies", "progress"), **SMALL),
                         tmp_path, progress_bar=False)
    assert result.steps == (0, 10, 20)
    assert set(pd.read_csv(result.tables["progress"])["step"]) == {0, 10, 20}


def test_circuit_is_opt_in_and_brings_the_strategy_curves(tiny_run, tmp_path):
    result = analyze(tiny_run, "10,20", AnalysisConfig(analyses=("circuit",), **SMALL), tmp_path, progress_bar=False)
    circuit = pd.read_csv(result.tables["circuit"])
    assert list(circuit.columns) == ["step", "sequences", "pair", "sender", "receiver", "input", "method", "effect"]
    assert set(circuit["pair"]) == {"flip_vs_train", "icl_swap", "ciwl_vs_iwl", "exemplar_swap"}
    assert set(circuit["method"]) == {"baseline", "exact", "attribution", "agreement"}
    assert "strategies" in result.tables and "circuit" not in DEFAULT
    assert {"circuit_exemplar_swap.html", "circuit_agreement.html"} <= set(result.figures)
    assert len(pd.read_csv(result.tables["strategies"]))  # the curves above the graph


def test_cli_analyze(tiny_run, tmp_path, capsys):
    code = main(["analyze", str(tiny_run), "--checkpoint-range", "-2:", "--analyses", "strategies,progress",
                    "--evaluators", "flip,ciwl", "--out", str(tmp_path / "a"), "--no-progress"])
    assert code == 0 and "index.html" in capsys.readouterr().out
    progress = pd.read_csv(tmp_path / "a" / "progress.csv")
    assert set(progress["evaluator"]) == {"flip", "ciwl"} and set(progress["step"]) == {10, 20}


@pytest.mark.parametrize("argv, message", [
    (["/no/such/run", "--checkpoint-range", "0:"], "does not exist"),
    (["RUN", "--checkpoint-range", "0:x"], "not an integer"),
    (["RUN", "--checkpoint-range", "100:200"], "selects no checkpoint"),
    (["RUN", "--checkpoint-range", "0:", "--analyses", "ablation,nope"], "unknown analysis 'nope'"),
    (["RUN", "--checkpoint-range", "0:", "--evaluators", "flip,bogus"], "unknown evaluator 'bogus'"),
    (["RUN", "--checkpoint-range", "0:", "--n-seqs", "0"], "n_seqs"),
    (["RUN", "--checkpoint-range", "0:", "--intervene", "optogenetics:1"], "unknown intervention 'optogenetics'"),
    (["RUN", "--checkpoint-range", "0:", "--intervene", "ablate:0:5"], "head 0:5 does not exist"),
    (["RUN", "--checkpoint-range", "0:", "--intervene", "ablate:3:0"], "head 3:0 does not exist"),
    (["RUN", "--checkpoint-range", "0:", "--intervene", "graft_out:/no/such/run@10:0"], "is not a coopetition run"),
    (["RUN", "--checkpoint-range", "0:", "--intervene", "preserve:patterns:4"], "layer 4 does not exist"),
    (["RUN", "--checkpoint-range", "0:", "--clamp-strengths", "0,2"], "--clamp-strengths"),
])
def test_bad_input_is_one_line_and_exit_2(tiny_run, tmp_path, capsys, argv, message):
    argv = [str(tiny_run) if a == "RUN" else a for a in argv]
    assert main(["analyze", *argv, "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()


CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--virtual-time-budget=20000"]


def rendered_plots(page, profile) -> int:
    """How many Plotly plots Chromium drew on ``page`` (offline, fresh profile): count of ``main-svg`` layers."""
    import shutil
    import subprocess

    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        pytest.skip("chromium is not installed")
    result = subprocess.run([binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", page.as_uri()],
                            capture_output=True, text=True, timeout=180)
    return result.stdout.count('class="main-svg"')


@pytest.mark.parametrize("page", ["index.html", "ablation.html"])
def test_pages_render_offline_in_headless_chromium(analysed, tmp_path, page):
    assert rendered_plots(analysed.out_dir / page, tmp_path / "profile") >= 1


@pytest.mark.slow
def test_every_page_renders_offline_in_headless_chromium(analysed, tmp_path):
    for index, page in enumerate(sorted(analysed.figures)):
        assert rendered_plots(analysed.out_dir / page, tmp_path / f"profile{index}") >= 1, page


def test_every_table_reads_back_with_its_declared_kinds_with_rows_or_none(analysed, tmp_path):
    """``coopetition.analysis.tables`` declares what the writer produces: a real table read by pandas alone has
    the declared kinds, and the same table with its header only reads as no rows of the same dtypes."""
    from coopetition.analysis.tables import read_analysis_table, schemas
    from coopetition.tables import FLOAT, INT

    for name, path in analysed.tables.items():
        inferred = pd.read_csv(path).dtypes
        for column, kind in schemas()[name].items():
            if kind in (INT, FLOAT):
                assert inferred[column] == {INT: "int64", FLOAT: "float64"}[kind], (name, column)
        full = read_analysis_table(path.parent, name)
        (tmp_path / path.name).write_text(path.read_text().splitlines()[0] + "\n")
        empty = read_analysis_table(tmp_path, name)
        assert len(empty) == 0 and empty.dtypes.to_dict() == full.dtypes.to_dict(), name
