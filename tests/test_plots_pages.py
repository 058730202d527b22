"""Every figure page, read back from the HTML that ``analyze`` writes (the figure JSON Plotly draws): a title naming
what is plotted, the run and the steps; labelled axes; an SVG download; and one colour convention for "helps / hurts
the clean answer" (blue / red) on the ablation, patching and circuit pages. Plus the page-specific fixes: low-gap
patching cells greyed, chance marks on probes, "not yet peaked", scorecard checks that cannot be judged, a
one-checkpoint circuit without an empty curve panel."""

from __future__ import annotations

import base64
import json
import re

import numpy as np

import pandas as pd
import pytest

from coopetition.analysis.config import AnalysisConfig
from coopetition.analysis.registry import get, names
from coopetition.pipeline import analyze
from coopetition.plots import circuit, patching, probes, scorecard, strategies
from coopetition.plots.common import HELPS, HELPS_RGB, HURTS

pytestmark = pytest.mark.e2e

SMALL = dict(n_seqs=24, settings={"patching": {"seqs": 12}, "probes": {"seqs": 48, "steps": 5}})
ANALYSES = tuple(n for n in names() if get(n).by_default) + ("circuit",)


@pytest.fixture(scope="module")
def pages(trained_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("pages")
    result = analyze(trained_run, "0:", AnalysisConfig(analyses=ANALYSES, **SMALL), out, progress_bar=False)
    found = {name: read_page(path) for name, path in result.figures.items() if name != "index.html"}
    assert len(found) >= 15, sorted(found)
    return found


def read_page(path) -> tuple[list[dict], dict, dict]:
    """``(data, layout, config)`` of the one ``Plotly.newPlot`` call in a page written by ``write_figure``."""
    text = path.read_text()
    at = text.index("Plotly.newPlot(")
    at = text.index(",", at) + 1  # past the div id
    decoder = json.JSONDecoder()
    parts = []
    for _ in range(3):
        while text[at] in " \n\t,":
            at += 1
        value, at = decoder.raw_decode(text, at)
        parts.append(value)
    return parts[0], parts[1], parts[2]


def axis_key(ref: str) -> str:
    return f"{ref[0]}axis{ref[1:]}"


def test_every_page_has_a_title_with_the_run_and_its_steps(pages):
    for name, (_, layout, _) in pages.items():
        title = layout["title"]["text"]
        assert len(re.sub(r"<[^>]+>", "", title).split("run ")[0]) > 15, (name, title)  # what is plotted
        assert "run run" in title and "checkpoints, steps 0..30" in title, (name, title)


def test_every_used_axis_is_labelled_or_shares_its_column_with_a_labelled_one(pages):
    for name, (data, layout, _) in pages.items():
        used = {axis_key(t.get(a, a[0])) for t in data if t.get("type") != "table" for a in ("xaxis", "yaxis")}
        shown = [k for k in used if layout.get(k, {}).get("visible", True)]
        assert shown or name.startswith("circuit_") and "agreement" not in name, name
        for key in shown:
            axis = layout.get(key, {})
            titled = [k for k in shown if k[0] == key[0] and layout.get(k, {}).get("title", {}).get("text")
                      and layout.get(k, {}).get("domain") == axis.get("domain")]
            assert titled, (name, key)


def test_every_page_downloads_an_svg_at_its_own_size(pages):
    for name, (_, layout, config) in pages.items():
        options = config["toImageButtonOptions"]
        assert options["format"] == "svg" and options["filename"] == name.removesuffix(".html"), name
        assert options["width"] == layout.get("width", 1000) and options["height"] == layout.get("height", 700)


def rgb(colour: str) -> tuple[float, float, float]:
    if colour.startswith("#"):
        return tuple(int(colour[i:i + 2], 16) for i in (1, 3, 5))
    return tuple(float(v) for v in re.findall(r"[\d.]+", colour)[:3])


def colour_at(trace: dict, z: float) -> tuple[float, ...]:
    """The colour a heatmap gives ``z``: its own colour scale, linearly interpolated, as Plotly draws it."""
    scale, low, high = trace["colorscale"], trace["zmin"], trace["zmax"]
    at = min(max((z - low) / (high - low), 0.0), 1.0)
    for (a, ca), (b, cb) in zip(scale, scale[1:]):
        if a <= at <= b:
            f = (at - a) / (b - a) if b > a else 0.0
            return tuple(x + f * (y - x) for x, y in zip(rgb(ca), rgb(cb)))
    raise AssertionError(scale)


def blue(colour) -> bool:
    r, _, b = colour
    return b > r + 40


def red(colour) -> bool:
    r, _, b = colour
    return r > b + 40


def array(value) -> np.ndarray:
    """A figure-JSON array: a plain list (None for NaN) or Plotly's base64 typed array."""
    if isinstance(value, dict) and "bdata" in value:
        flat = np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"])
        return flat.reshape([int(n) for n in str(value.get("shape", len(flat))).split(",")]).astype(float)
    return np.array([[np.nan if v is None else v for v in row] for row in value], dtype=float)


def cells(trace: dict) -> list[float]:
    return [float(z) for z in array(trace["z"]).ravel() if not np.isnan(z)]


def test_one_colour_convention_blue_helps_red_hurts_on_every_page(pages):
    checked = {"ablation": 0, "patching": 0, "circuit": 0}
    for name, (data, _, _) in pages.items():
        for trace in data:
            if trace.get("type") != "heatmap" or isinstance(trace.get("colorscale"), str):
                continue
            scale = [c for _, c in trace["colorscale"]]
            if name == "ablation.html":  # a negative delta: removing the unit lowers accuracy, it helped
                assert blue(colour_at(trace, -0.8 * trace["zmax"])) and red(colour_at(trace, 0.8 * trace["zmax"]))
                checked["ablation"] += 1
            elif name.startswith("patching_") and HELPS in scale:  # positive: restores the clean answer
                assert blue(colour_at(trace, 0.8)) and red(colour_at(trace, -0.8)), name
                checked["patching"] += 1
            assert not (HELPS in scale and HURTS in scale and name.startswith(("probes", "attention"))), name
        if name.startswith("circuit_") and name != "circuit_agreement.html":
            lines = [t for t in data if t.get("mode") == "lines" and "effect" in t.get("name", "")]
            helps = [t for t in lines if "helps" in t["name"]]
            hurts = [t for t in lines if "hurts" in t["name"]]
            assert helps and hurts and all(HELPS_RGB in t["line"]["color"] for t in helps)
            assert all(red(rgb(t["line"]["color"])) for t in hurts)
            legend = [t["name"] for t in data if t.get("showlegend", True) and "edge" in t.get("name", "")]
            assert any("helps" in n for n in legend) and any("hurts" in n for n in legend), name
            checked["circuit"] += 1
    assert all(checked.values()), checked


def test_a_unit_that_helps_is_blue_on_ablation_and_patching_pages():
    """Known answers: L0H0 removed costs 0.4 accuracy (it helps); L0H0 patched in restores 0.9 (it helps)."""
    from coopetition.plots.ablation import figure as ablation_figure

    rows = [{"step": 0, "sequences": 0, "evaluator": "flip", "metric": "in_context_acc", "method": "zero",
             "unit": u, "delta": d} for u, d in (("L0H0", -0.4), ("L0H1", 0.3))]
    fig = ablation_figure(pd.DataFrame(rows)).to_plotly_json()
    heat = next(t for t in fig["data"] if t["type"] == "heatmap")
    assert blue(colour_at(heat, -0.4)) and red(colour_at(heat, 0.3))
    table = patch_table(gap=5.0)
    heads = patching.heads_figure(table).to_plotly_json()
    shown = next(t for t in heads["data"] if t["type"] == "heatmap" and t.get("visible", True) is True
                 and t.get("name") != "low gap")
    assert blue(colour_at(shown, 0.9))


def patch_table(gap: float) -> pd.DataFrame:
    base = [{"kind": "baseline", "component": c, "layer": -1, "head": -1, "position": -1, "value": v}
            for c, v in (("clean", gap), ("corrupt", 0.0))]
    heads = [{"kind": k, "component": "z", "layer": 0, "head": h, "position": -1, "value": v}
             for k in ("exact", "attribution") for h, v in ((0, 0.9), (1, -0.7))]
    return pd.DataFrame([{"step": 0, "sequences": 0, "pair": "icl_swap", "metric": "norm_ld", **r}
                         for r in base + heads])


def test_low_gap_patching_cells_are_grey_with_their_value_and_gap_in_the_hover():
    fig = patching.heads_figure(patch_table(gap=0.3)).to_plotly_json()
    first = [t for t in fig["data"] if t["type"] == "heatmap"][:2]  # z · exact: values, then the grey layer
    assert cells(first[0]) == [] and cells(first[1]) == [0.0, 0.0]
    assert first[1]["text"] == [["0.900"], ["-0.700"]] and array(first[1]["customdata"]).tolist() == [[0.3], [0.3]]
    note = " ".join(a["text"] for a in fig["layout"]["annotations"])
    assert "Grey cells" in note and "NaN" in note
    fig = patching.heads_figure(patch_table(gap=5.0)).to_plotly_json()
    first = [t for t in fig["data"] if t["type"] == "heatmap"][:2]
    assert cells(first[0]) == [0.9, -0.7] and cells(first[1]) == []


def strategy_table(flip: list[float], peak_step: int) -> pd.DataFrame:
    rows = [{"step": 100 * i, "sequences": 100 * i, "evaluator": "flip", "metric": m, "value": v}
            for i, v in enumerate(flip) for m in ("in_context_acc", "loss")]
    rows.append({"step": peak_step, "sequences": peak_step, "evaluator": "flip", "metric": "icl_peak",
                 "value": max(flip)})
    return pd.DataFrame(rows)


def test_a_maximum_on_the_last_step_is_not_yet_a_peak():
    rising = strategies.figure(strategy_table([0.5, 0.6, 0.8], 200)).to_plotly_json()
    assert any("not yet peaked" in t.get("name", "") for t in rising["data"])
    peaked = strategies.figure(strategy_table([0.5, 0.9, 0.4], 100)).to_plotly_json()
    labels = [t["name"] for t in peaked["data"] if t.get("mode") == "markers+text"]
    assert labels == ["ICL peak"]


def test_scorecard_names_its_checkpoint_and_says_what_it_cannot_judge():
    rows = [("flip_peak_fraction", 1.0, 0.03, 0.13), ("icl_eval_peak_fraction", 0.5, 0.06, 0.24),
            ("peak_ratio", 1.0, 1.0, float("inf")), ("final_acc_train", 0.99, 0.9, 1.0)]
    table = pd.DataFrame([{"step": 40, "sequences": 4_000_000, "check": c, "paper": 0.1, "measured": m, "unit": "u",
                           "low": lo, "high": hi, "section": "§9.6"} for c, m, lo, hi in rows])
    assert scorecard.unjudgeable(table) == {"flip_peak", "flip_peak_fraction", "peak_ratio"}
    fig = scorecard.figure(table).to_plotly_json()
    assert "checkpoint step 40 (4M sequences)" in fig["layout"]["title"]["text"]
    verdicts = next(t for t in fig["data"] if t["type"] == "table")["cells"]["values"][-1]
    assert verdicts == ["cannot judge", "differs", "cannot judge", "as paper"]


def test_one_checkpoint_circuit_has_no_empty_curve_panel():
    table = pd.DataFrame([{"step": 1500, "sequences": 1, "pair": "icl_swap", "sender": "label", "receiver": "L0H0",
                           "input": "v", "method": m, "effect": 0.4} for m in ("exact", "attribution")])
    curves = strategy_table([0.7], 1500).assign(step=1500)
    fig = circuit.figure(table, "icl_swap", curves).to_plotly_json()
    assert "xaxis2" not in fig["layout"] and not fig["layout"].get("sliders")
    assert "step 1500" in fig["layout"]["title"]["text"]


def test_probe_cells_at_or_below_chance_are_marked():
    rows = []
    for layer, acc in ((0, 0.5), (1, 0.95)):
        for metric, value in (("heldout_acc", acc), ("chance", 0.55)):
            rows.append({"step": 0, "sequences": 0, "evaluator": "flip", "target": "query_class", "layer": layer,
                         "position": 4, "metric": metric, "value": value})
    fig = probes.figure(pd.DataFrame(rows)).to_plotly_json()
    crosses = next(t for t in fig["data"] if t.get("mode") == "markers" and t.get("x") != [None])
    assert crosses["y"] == ["resid 0 · q"]
    heat = next(t for t in fig["data"] if t["type"] == "heatmap")
    assert array(heat["customdata"]).tolist() == [[0.55], [0.55]] and cells(heat) == [0.5, 0.95]


def test_placed_traces_make_the_figure_add_traces_makes():
    """``common.placed`` (plain-dict traces put in their subplots without plotly's per-trace validation, what makes a
    201-checkpoint page fast to draw) gives the same figure JSON as validated traces through ``add_traces``."""
    import plotly.graph_objects as go
    import plotly.io as pio
    from plotly.subplots import make_subplots

    from coopetition.plots.common import colour_bar, placed

    def layout():
        fig = make_subplots(rows=2, cols=3, subplot_titles=[f"panel {i}" for i in range(6)])
        fig.update_yaxes(autorange="reversed")
        fig.update_xaxes(title_text="x", row=2)
        fig.update_layout(template="plotly_white", title="t", height=500)
        return fig

    blues = go.Heatmap(colorscale="Blues").colorscale
    rng = np.random.default_rng(0)
    traces, places = [], []
    for i in range(14):
        row, col = 1 + i % 2, 1 + i % 3
        if i % 2:
            traces.append(dict(type="heatmap", z=rng.random((3, 4)), x=list("abcd"), y=["p", "q", "r"], zmin=0,
                               zmax=1, colorscale=blues, showscale=i == 1, colorbar=colour_bar("w"),
                               visible=i > 10, hovertemplate="%{z:.3f}<extra></extra>"))
        else:
            traces.append(dict(type="scatter", x=np.arange(5.0), y=rng.random(5), mode="lines+markers", name=f"h{i}",
                               line=dict(color="#123456", dash="dot"), visible=i > 10, customdata=np.arange(5)))
        places.append((row, col))
    slow = layout()
    slow.add_traces([go.Heatmap(**{k: v for k, v in t.items() if k != "type"}) if t["type"] == "heatmap" else
                     go.Scatter(**{k: v for k, v in t.items() if k != "type"}) for t in traces],
                    rows=[p[0] for p in places], cols=[p[1] for p in places])
    fast = placed(layout(), [dict(t) for t in traces], places)
    for fig in (slow, fast):
        fig.update_layout(sliders=[dict(steps=[dict(label="1", method="restyle", args=[{"visible": [True] * 14}])])])
    assert json.loads(pio.to_json(fast)) == json.loads(pio.to_json(slow))
    assert [t.xaxis for t in fast.data][:3] == ["x", "x5", "x3"]  # row-major subplot axes: (1,1), (2,2), (1,3)


def test_pages_drawn_in_forked_processes_are_the_pages_drawn_here(trained_run, tmp_path):
    """``write_figures(processes=2)`` draws pages in two forked processes: the same files, the same figures."""
    from coopetition.analysis.tables import read_analysis_table
    from coopetition.pipeline import write_figures

    chosen = ("progress", "patching", "probes")
    out = tmp_path / "analysis"
    analyze(trained_run, "0:", AnalysisConfig(analyses=chosen, workers=1, **SMALL), out, progress_bar=False)
    frames = {t: read_analysis_table(out, t) for a in chosen for t in get(a).tables}
    drawn = {}
    for processes in (1, 2):
        folder = tmp_path / f"p{processes}"
        folder.mkdir()
        for t in frames:
            (folder / f"{t}.csv").write_bytes((out / f"{t}.csv").read_bytes())
        written = write_figures(folder, frames, chosen, run="r", processes=processes)
        drawn[processes] = {name: read_page(path) for name, path in written.items() if name != "index.html"}
    assert len(drawn[1]) >= 6 and drawn[1].keys() == drawn[2].keys()
    for name in drawn[1]:
        assert drawn[1][name] == drawn[2][name], name
