"""Analyses are plug-ins: one file declares an analysis's settings (its CLI flags, its record in analysis.json, its
cache key), its tables, its figures and what it needs, and the pipeline does the rest. Proven with a plug-in written
here into a temporary folder and loaded by ``coopetition analyze`` through ``COOPETITION_PLUGINS``."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from coopetition.analysis.base import Context
from coopetition.analysis.config import AnalysisConfig
from coopetition.analysis.execution import cache_keys
from coopetition.store.run import Run
from coopetition.analysis.registry import get
from coopetition.errors import ConfigError
from coopetition.pipeline import analyze

ROOT = Path(__file__).resolve().parents[1]

PLUGIN = '''
"""A plug-in analysis in one file: the norm of the residual stream at the query, times a setting, per evaluator;
a page that draws it beside the strategy curves it needs."""

from dataclasses import dataclass, field
from typing import ClassVar

import plotly.graph_objects as go

from coopetition.analysis.base import Analysis, Figure
from coopetition.errors import ConfigError
from coopetition.tables import FLOAT, INT, STR


@dataclass(frozen=True)
class NormSettings:
    scale: float = field(default=1.0, metadata={"help": "multiply every norm by this"})

    def __post_init__(self) -> None:
        if not self.scale > 0:
            raise ConfigError(f"analysis query_norm.scale (--qn-scale) must be > 0, got {self.scale}")


def draw(table, strategies):
    fig = go.Figure(go.Scatter(x=table["sequences"], y=table["value"], mode="lines+markers"))
    return fig.update_layout(title=f"Query norm beside {strategies['evaluator'].nunique()} strategy curves",
                             xaxis_title="sequences", yaxis_title="norm")


class QueryNorm(Analysis):
    name: ClassVar[str] = "query_norm"
    caption: ClassVar[str] = "residual norm at the query, scaled"
    tables: ClassVar[dict] = {"query_norm": {"step": INT, "sequences": INT, "evaluator": STR, "value": FLOAT}}
    Settings = NormSettings
    flag_prefix: ClassVar[str] = "qn"
    needs: ClassVar[tuple] = ("strategies",)
    figures: ClassVar[tuple] = (Figure("query_norm_page.html", "Query norm", "the norm at the query, scaled", draw,
                                       tables=("query_norm", "strategies")),)

    def checkpoint_rows(self, checkpoint):
        rows = []
        for name, data in self.context.data.items():
            _, cache = checkpoint.baseline(data)
            norm = float(cache["blocks.1.hook_resid_post"][:, -1].norm(dim=-1).mean())
            rows.append({"evaluator": name, "value": norm * self.settings.scale})
        return {"query_norm": rows}
'''


def coopetition(*argv: str, plugins: str | None, folder: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(folder)]), "OMP_NUM_THREADS": "1"}
    if plugins is not None:
        env["COOPETITION_PLUGINS"] = plugins
    return subprocess.run([sys.executable, "-m", "coopetition", *argv], capture_output=True, text=True, env=env,
                          timeout=600)


@pytest.fixture(scope="module")
def plugin_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("plugin")
    (folder / "my_query_norm.py").write_text(textwrap.dedent(PLUGIN))
    return folder


def test_a_plugin_in_one_file_gets_flags_table_settings_record_and_page(plugin_folder, trained_run, tmp_path):
    help_text = coopetition("analyze", "--help", plugins="my_query_norm", folder=plugin_folder)
    assert help_text.returncode == 0, help_text.stderr
    assert "--qn-scale" in help_text.stdout and "multiply every norm by this (default: 1)" in help_text.stdout
    assert "query_norm" in help_text.stdout.split("analyses:")[-1]  # listed with the built-in analyses

    outs = {}
    for scale in ("1", "2"):
        out = tmp_path / f"scale{scale}"
        done = coopetition("analyze", str(trained_run), "--checkpoint-range", "0:", "--analyses", "query_norm",
                           "--qn-scale", scale, "--n-seqs", "8", "--workers", "1", "--no-progress", "--out", str(out),
                           plugins="my_query_norm", folder=plugin_folder)
        assert done.returncode == 0, done.stderr
        outs[scale] = out
    table = pd.read_csv(outs["2"] / "query_norm.csv")
    assert list(table.columns) == ["step", "sequences", "evaluator", "value"]
    assert sorted(table["step"].unique()) == [0, 10, 20, 30] and (table["value"] > 0).all()
    # the setting reaches the rows: scale 2 doubles every norm of scale 1 (up to the CSV's 6 digits)
    assert table["value"].tolist() == pytest.approx(2 * pd.read_csv(outs["1"] / "query_norm.csv")["value"], rel=1e-5)
    # the dependency was requested and computed first; its table is written beside
    record = json.loads((outs["2"] / "analysis.json").read_text())
    assert record["analysis"]["analyses"] == ["strategies", "query_norm"]
    assert len(pd.read_csv(outs["2"] / "strategies.csv"))
    assert record["analysis"]["settings"] == {"query_norm": {"scale": 2.0}}
    index = (outs["2"] / "index.html").read_text()
    assert 'href="query_norm_page.html"' in index and "the norm at the query, scaled" in index
    assert "Query norm beside" in (outs["2"] / "query_norm_page.html").read_text()


def test_a_plugin_setting_is_checked_and_a_broken_plugin_is_one_line(plugin_folder, trained_run, tmp_path):
    bad = coopetition("analyze", str(trained_run), "--checkpoint-range", "0:", "--analyses", "query_norm",
                      "--qn-scale", "0", "--out", str(tmp_path / "bad"), plugins="my_query_norm", folder=plugin_folder)
    assert bad.returncode == 2 and "--qn-scale" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "bad").exists()
    missing = coopetition("analyze", "--help", plugins="no_such_plugin_module", folder=plugin_folder)
    assert missing.returncode == 2 and "no_such_plugin_module" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1


# --- settings: Python API, validation, analysis.json, cache keys --------------------------------------------------

def test_settings_from_dicts_or_dataclasses_are_checked_and_only_the_requested_kept():
    config = AnalysisConfig(analyses=("clamp", "probes"), settings={"clamp": {"strengths": [0, 1]},
                                                                     "llc": {"chains": 2}})
    assert config.settings_for("clamp").strengths == (0.0, 1.0)
    assert set(config.settings) == {"clamp", "probes"}  # llc not requested: dropped; probes: its defaults
    assert config.settings_for("probes") == get("probes").Settings()
    same = AnalysisConfig(analyses=("clamp",), settings={"clamp": get("clamp").Settings(strengths=(0.0, 1.0))})
    assert same.settings_for("clamp") == config.settings_for("clamp")
    assert AnalysisConfig(analyses=("circuit",)).settings_for("patching").seqs == 64  # circuit reads patching's
    for settings, message in (({"nope": {}}, "unknown analysis 'nope'"), ({"clamp": {"strength": (0, 1)}}, "clamp"),
                              ({"clamp": {"strengths": (0, 2)}}, "--clamp-strengths"),
                              ({"probes": {"seqs": "many"}}, "probes"), ({"clamp": 3}, "clamp")):
        with pytest.raises(ConfigError, match=message):
            AnalysisConfig(analyses=("clamp", "probes"), settings=settings)


def test_analysis_json_records_every_requested_analysis_settings(trained_run, tmp_path):
    config = AnalysisConfig(analyses=("strategies", "clamp"), n_seqs=8, workers=1,
                            settings={"clamp": {"strengths": (0.0, 1.0), "exact": True}})
    result = analyze(trained_run, "30", config, tmp_path, progress_bar=False)
    record = json.loads((result.out_dir / "analysis.json").read_text())["analysis"]
    assert record["settings"] == {"clamp": {"strengths": [0.0, 1.0], "exact": True}}
    assert record["n_seqs"] == 8 and record["analyses"] == ["strategies", "clamp"]
    assert set(pd.read_csv(result.tables["clamp"])["strength"]) == {0.0, 1.0}


def test_an_analysis_cache_key_has_only_the_shared_fields_and_its_own_settings(trained_run, tmp_path):
    run = Run.open(trained_run)
    classes = [get(n) for n in ("ablation", "probes", "clamp", "patching", "circuit")]

    def keys(**settings):
        config = AnalysisConfig(analyses=tuple(c.name for c in classes), settings=settings)
        return cache_keys(Context(run, config, ("train", "flip")), classes)

    base = keys()
    probes = keys(probes={"steps": 3})
    assert probes["ablation"] == base["ablation"] and probes["clamp"] == base["clamp"]
    assert probes["probes"] != base["probes"]
    patch = keys(patching={"seqs": 8})
    assert patch["patching"] != base["patching"] and patch["circuit"] != base["circuit"]  # circuit reads it
    assert patch["ablation"] == base["ablation"] and patch["probes"] == base["probes"]
    shared = cache_keys(Context(run, AnalysisConfig(analyses=("ablation",), n_seqs=64), ("train", "flip")),
                        classes[:1])
    assert shared["ablation"] != base["ablation"]  # a shared field keys every analysis

    # end to end: new clamp strengths recompute clamp and reuse ablation
    config = AnalysisConfig(analyses=("ablation", "clamp"), n_seqs=8, workers=1,
                            settings={"clamp": {"strengths": (0.0, 1.0)}})
    cache = tmp_path / "cache"
    first = analyze(trained_run, "20:", config, tmp_path / "a", progress_bar=False, cache_dir=cache)
    assert first.computed == {"ablation": 2, "clamp": 2}
    config = AnalysisConfig(analyses=("ablation", "clamp"), n_seqs=8, workers=1,
                            settings={"clamp": {"strengths": (0.0, 0.5, 1.0)}})
    again = analyze(trained_run, "20:", config, tmp_path / "b", progress_bar=False, cache_dir=cache)
    assert again.computed == {"ablation": 0, "clamp": 2} and again.reused == {"ablation": 2, "clamp": 0}


def test_needs_come_first_and_cycles_are_refused(monkeypatch):
    from coopetition.analysis.base import REGISTRY, Analysis

    assert AnalysisConfig(analyses=("scorecard",)).analyses == ("ablation", "clamp", "scorecard")
    assert AnalysisConfig(analyses=("llc", "strategies")).analyses == ("strategies", "llc")
    try:
        class A(Analysis):
            name = "test_cycle_a"
            needs = ("test_cycle_b",)

        class B(Analysis):
            name = "test_cycle_b"
            needs = ("test_cycle_a",)

        with pytest.raises(ConfigError, match="needs itself"):
            AnalysisConfig(analyses=("test_cycle_a",))
    finally:
        REGISTRY.pop("test_cycle_a", None)
        REGISTRY.pop("test_cycle_b", None)


# --- plots draw DataFrames and never import the analyses --------------------------------------------------------

def test_plots_never_import_analysis_and_share_its_constants():
    for path in (ROOT / "coopetition" / "plots").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any(m.startswith(("coopetition.analysis", "coopetition.pipeline")) for m in modules), path
    from coopetition.analysis import patching, strategies
    from coopetition.plots import patching as patching_plot
    from coopetition.plots import strategies as strategies_plot

    assert strategies_plot.EVENTS == strategies.EVENTS
    assert patching_plot.MIN_GAP == patching.MIN_GAP


def test_every_declared_figure_names_a_drawing_function():
    from coopetition.analysis.registry import names
    from coopetition.pipeline.figures import resolve

    for name in names():
        for figure in get(name).figures:
            assert callable(resolve(figure.draw)), (name, figure.file)
            assert figure.values is None or callable(resolve(figure.values))
            assert set(figure.tables) <= {t for n in (name, *get(name).needs) for t in get(n).tables}, figure


# --- pages reused from the cache while their tables and drawing code are unchanged ---------------------------------

def test_unchanged_pages_are_copied_and_changed_ones_drawn(trained_run, tmp_path, monkeypatch):
    import coopetition.plots.ablation as ablation_plot
    import coopetition.plots.strategies as strategies_plot

    drawn = []
    for module in (ablation_plot, strategies_plot):
        original = module.figure
        monkeypatch.setattr(module, "figure",
                            lambda *a, f=original, m=module.__name__, **k: drawn.append(m) or f(*a, **k))
    config = AnalysisConfig(analyses=("strategies", "ablation"), n_seqs=8, workers=1)
    cache = tmp_path / "cache"
    first = analyze(trained_run, "10:", config, tmp_path / "a", progress_bar=False, cache_dir=cache)
    assert sorted(drawn) == ["coopetition.plots.ablation", "coopetition.plots.strategies"]
    drawn.clear()
    again = analyze(trained_run, "10:", config, tmp_path / "b", progress_bar=False, cache_dir=cache)
    assert drawn == ["coopetition.plots.strategies"]  # the inline headline is drawn for index.html; ablation copied
    assert (again.out_dir / "ablation.html").read_bytes() == (first.out_dir / "ablation.html").read_bytes()
    assert 'href="ablation.html"' in (again.out_dir / "index.html").read_text()
    drawn.clear()
    wider = analyze(trained_run, "0:", config, tmp_path / "c", progress_bar=False, cache_dir=cache)
    assert sorted(drawn) == ["coopetition.plots.ablation", "coopetition.plots.strategies"]  # new steps: new tables
    assert "steps 0..30" in (wider.out_dir / "ablation.html").read_text()
    drawn.clear()
    analyze(trained_run, "10:", config, tmp_path / "d", progress_bar=False, use_cache=False)
    assert len(drawn) == 2  # no cache: every page drawn


def test_flags_are_the_prefix_and_field_with_dashes_and_keep_the_built_in_names():
    from coopetition.pipeline.cli import flag

    flags = {flag(get(n), f.name) for n in ("patching", "probes", "clamp", "llc") for f in get(n).setting_fields()}
    assert {"--patch-seqs", "--probe-seqs", "--probe-classes", "--probe-steps", "--probe-l2", "--clamp-strengths",
            "--clamp-exact", "--llc-lr", "--llc-gamma", "--llc-nbeta", "--llc-chains", "--llc-draws",
            "--llc-burnin"} <= flags
    assert get("circuit").setting_fields() == ()  # reads patching's: no flags of its own

    class Named:
        name, flag_prefix = "my_thing", ""
        prefix = classmethod(get("ablation").prefix.__func__)

    assert flag(Named, "max_depth") == "--my-thing-max-depth"
