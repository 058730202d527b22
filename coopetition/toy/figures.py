"""Interactive figures of the toy model, built only from the tables the CLI writes (so they can be regenerated).

Colours follow the reference's plots: mechanism 1 / ICL blue, mechanism 2 / CIWL green, total loss black.
Each ``*_figure`` takes DataFrames and returns a ``plotly.graph_objects.Figure``; ``write_figures`` reads the
tables in an output folder and writes every figure they allow as standalone HTML (plotly.js inline, opens offline).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from coopetition.toy.phase import boundary_position

COLOURS = {"loss_total": "black", "loss_1": "#1f77b4", "loss_2": "#2ca02c", "competition": "#ff7f0e",
           "a": "#1f77b4", "b": "#9467bd", "c": "#8c564b", "d": "#2ca02c", "loss_1_bc_at_target": "#17becf"}
NAMES = {"loss_total": "total L", "loss_1": "L1 (mechanism 1, ICL)", "loss_2": "L2 (mechanism 2, CIWL)",
         "competition": "competition C", "loss_1_bc_at_target": "L1 with b, c at targets"}
PHASE_COLOURS = {"transient": "#d62728", "persistent": "#1f77b4", "never": "#2ca02c"}
FAINT = 0.25


def shown_seed(summary: pd.DataFrame) -> int:
    """The seed drawn in bold: the transient seed with the median stop step (else the first seed)."""
    transient = summary[summary["phase"] == "transient"] if "phase" in summary else summary.iloc[:0]
    pool = transient.sort_values("stop_step", kind="stable") if len(transient) else summary
    return int(pool["seed"].iloc[(len(pool) - 1) // 2])


def _scale_buttons(fig: go.Figure) -> None:
    fig.update_layout(updatemenus=[dict(type="buttons", direction="left", x=1.0, xanchor="right", y=1.12,
                                        buttons=[dict(label="linear y", method="relayout",
                                                      args=[{f"yaxis{i}.type": "linear" for i in ("", 2, 3, 4)}]),
                                                 dict(label="log y", method="relayout",
                                                      args=[{f"yaxis{i}.type": "log" for i in ("", 2, 3, 4)}])])])


def _series(trace: pd.DataFrame, seed: int, quantity: str, condition: str | None = None) -> pd.DataFrame:
    rows = trace[(trace["seed"] == seed) & (trace["quantity"] == quantity)]
    return rows[rows["condition"] == condition] if condition is not None else rows


def loss_figure(trace: pd.DataFrame, summary: pd.DataFrame) -> go.Figure:
    """C25 Fig 5a: the shown seed's L, L1, L2, C (top) and L1, L2 of every seed (bottom)."""
    seed = shown_seed(summary)
    row = summary[summary["seed"] == seed].iloc[0]
    n_tr = int((summary.get("phase") == "transient").sum()) if "phase" in summary else 0
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08, subplot_titles=(
        f"seed {seed}: stops at step {int(row['stop_step'])} ({'converged' if row['converged'] else 'step budget'})",
        f"all {len(summary)} seeds: {n_tr} transient (bold = seed {seed})"))
    for q in ("loss_total", "loss_1", "loss_2", "competition"):
        s = _series(trace, seed, q)
        fig.add_trace(go.Scatter(x=s["step"], y=s["value"], name=NAMES[q], line=dict(color=COLOURS[q])), 1, 1)
    for q in ("loss_1", "loss_2"):
        for sd in summary["seed"]:
            s = _series(trace, sd, q)
            fig.add_trace(go.Scatter(x=s["step"], y=s["value"], name=f"{q} seed {sd}", showlegend=False,
                                     opacity=1.0 if sd == seed else FAINT, line=dict(color=COLOURS[q])), 2, 1)
    fig.update_xaxes(title_text="toy step", row=2, col=1)
    fig.update_yaxes(title_text="loss")
    fig.update_layout(title="Strategy coopetition toy model (C25 Fig 5a): L = (L1 + mu1)(L2 + mu2) + alpha C",
                      height=800, template="plotly_white")
    _scale_buttons(fig)
    return fig


def vector_figure(trace: pd.DataFrame, summary: pd.DataFrame) -> go.Figure:
    """Per-vector progress measures of the shown seed (and condition, for IH24): norm, gradient norm,
    1 - cos^2 to target, distance to target."""
    seed = shown_seed(summary)
    kinds = ("norm", "grad_norm", "one_minus_cos2", "dist")
    fig = make_subplots(rows=2, cols=2, shared_xaxes=True, subplot_titles=[
        "norm |v|", "gradient norm |dL/dv|", "1 - cos^2(v, v*)", "distance |v - v*|"])
    dashes = dict(zip(summary["condition"].unique(), ("solid", "dash", "dot", "dashdot")))
    for i, kind in enumerate(kinds):
        for q in sorted(x for x in trace["quantity"].unique() if x.rsplit("_", 1)[0] == kind):
            v = q.rsplit("_", 1)[1]
            for cond, dash in dashes.items():
                s = _series(trace, seed, q, cond)
                label = f"{v}" if len(dashes) == 1 else f"{v} ({cond})"
                fig.add_trace(go.Scatter(x=s["step"], y=s["value"], name=label, legendgroup=label, showlegend=i == 0,
                                         line=dict(color=COLOURS[v], dash=dash)), i // 2 + 1, i % 2 + 1)
    for r, c in ((1, 2), (2, 1)):
        fig.update_yaxes(type="log", row=r, col=c)
    fig.update_xaxes(title_text="toy step", row=2)
    fig.update_layout(title=f"Toy model: per-vector progress measures, seed {seed}", height=750,
                      template="plotly_white")
    return fig


def sweep_figure(trace: pd.DataFrame, summary: pd.DataFrame) -> go.Figure:
    """mu1 sweep: one column per mu1, L1 (top) and L2 (bottom) of every seed; titles give the phase counts."""
    conds = summary.drop_duplicates("condition").sort_values("mu1")
    seed = shown_seed(summary[summary["condition"] == conds["condition"].iloc[-1]])
    titles = []
    for cond in conds["condition"]:
        part = summary[summary["condition"] == cond]
        counts = part["phase"].value_counts()
        titles.append(f"mu1 = {part['mu1'].iloc[0]:g}<br>" + ", ".join(f"{counts.get(p, 0)} {p}"
                                                                     for p in PHASE_COLOURS))
    fig = make_subplots(rows=2, cols=len(conds), shared_xaxes=True, shared_yaxes=True, subplot_titles=titles,
                        vertical_spacing=0.1)
    for j, cond in enumerate(conds["condition"], start=1):
        for i, q in enumerate(("loss_1", "loss_2"), start=1):
            for sd in summary[summary["condition"] == cond]["seed"]:
                s = _series(trace, sd, q, cond)
                fig.add_trace(go.Scatter(x=s["step"], y=s["value"], name=f"{NAMES[q]}", legendgroup=q,
                                         showlegend=j == 1 and sd == seed, opacity=1.0 if sd == seed else FAINT,
                                         line=dict(color=COLOURS[q])), i, j)
    fig.update_yaxes(title_text="L1", row=1, col=1)
    fig.update_yaxes(title_text="L2", row=2, col=1)
    fig.update_xaxes(title_text="toy step", row=2)
    fig.update_layout(title=f"mu1 sweep: mechanism 1 is transient for mu1 > 0 and persists for mu1 = 0 "
                            f"(bold = seed {seed})", height=700, template="plotly_white")
    fig.update_annotations(font_size=11)
    return fig


def ih24_figure(trace: pd.DataFrame) -> go.Figure:
    """IH24 Fig 5a: loss and progress measures under each clamp condition."""
    fig = make_subplots(rows=1, cols=3, subplot_titles=("L1", "1 - cos^2(a, a*)", "L1 with b, c at targets"))
    dashes = ("solid", "dash", "dot", "dashdot")
    seed = int(trace["seed"].min())
    for k, cond in enumerate(pd.unique(trace["condition"])):
        for j, q in enumerate(("loss_1", "one_minus_cos2_a", "loss_1_bc_at_target"), start=1):
            s = _series(trace, seed, q, cond)
            fig.add_trace(go.Scatter(x=s["step"], y=s["value"], name=cond, legendgroup=cond, showlegend=j == 1,
                                     line=dict(dash=dashes[k % 4], color=("#1f77b4", "#ff7f0e", "#2ca02c")[k % 3])),
                          1, j)
    fig.update_xaxes(title_text="step")
    fig.update_layout(title=f"IH24 toy model (seed {seed}): clamping sub-circuits removes the plateau",
                      height=450, template="plotly_white")
    return fig


def overlay_figure(network: pd.DataFrame, trace: pd.DataFrame, fits: pd.DataFrame) -> go.Figure:
    """Network ICL / CIWL losses with the best-fitting toy seed's L1 / L2 mapped onto network time."""
    best = fits.iloc[0]
    fig = go.Figure()
    for evaluator, q, k, c in (("icl", "loss_1", best["scale_icl"], best["offset_icl"]),
                               ("ciwl", "loss_2", best["scale_ciwl"], best["offset_ciwl"])):
        net = network[network["evaluator"] == evaluator]
        fig.add_trace(go.Scatter(x=net["sequences"], y=net["value"], mode="markers", marker_size=5,
                                 name=f"network {evaluator} loss", marker=dict(color=COLOURS[q], opacity=0.6)))
        toy = _series(trace, int(best["seed"]), q, best["condition"])
        grid = np.linspace(net["sequences"].min(), net["sequences"].max(), 400)
        y = np.interp((grid - best["s0"]) / best["tau"], toy["step"], toy["value"])  # same map as the fit
        fig.add_trace(go.Scatter(x=grid, y=k * y + c, name=f"toy {NAMES[q]} x {k:.3g} + {c:.3g}",
                                 line=dict(color=COLOURS[q], dash="dash", width=3)))
    fig.update_layout(
        title=(f"Toy seed {int(best['seed'])} on network time: 1 toy step = {best['tau']:.4g} sequences, "
               f"step 0 at {best['s0']:.4g}; R^2 ICL {best['r2_icl']:.3f}, CIWL {best['r2_ciwl']:.3f} "
               f"(RMSE {best['rmse_icl']:.3g}, {best['rmse_ciwl']:.3g})"),
        xaxis_title="sequences seen (network)", yaxis_title="loss", height=550, template="plotly_white")
    return fig


def phase_figure(cells: pd.DataFrame, boundary: pd.DataFrame) -> go.Figure:
    """One heat map per d_d over (mu1, alpha): majority phase colour, run counts as text, bisected mu1
    boundaries as black diamonds (hover for the bracket)."""
    d_ds = sorted(cells["d_d"].unique())
    mu1s, alphas = sorted(cells["mu1"].unique()), sorted(cells["alpha"].unique())
    phases = list(PHASE_COLOURS)
    scale = []
    for i, p in enumerate(phases):
        scale += [[i / len(phases), PHASE_COLOURS[p]], [(i + 1) / len(phases), PHASE_COLOURS[p]]]
    n_cols = min(len(d_ds), 3)
    n_rows = -(-len(d_ds) // n_cols)
    fig = make_subplots(rows=n_rows, cols=n_cols, subplot_titles=[f"d_d = {d}" for d in d_ds],
                        horizontal_spacing=0.06, vertical_spacing=0.16)
    for k, d in enumerate(d_ds):
        r, j = k // n_cols + 1, k % n_cols + 1
        part = cells[cells["d_d"] == d].set_index(["alpha", "mu1"])
        z = [[phases.index(part.loc[(a, m), "phase"]) for m in mu1s] for a in alphas]
        counts = [[[int(part.loc[(a, m), "n_" + p]) for p in phases] for m in mu1s] for a in alphas]
        text = [[f"T{t} P{p}<br>N{n}" for t, p, n in row] for row in counts]
        fig.add_trace(go.Heatmap(z=z, x=list(range(len(mu1s))), y=list(range(len(alphas))), text=text,
                                 texttemplate="%{text}", textfont_size=11, zmin=-0.5, zmax=len(phases) - 0.5,
                                 colorscale=scale, showscale=False, hovertemplate="%{text}<extra></extra>",
                                 opacity=0.8), r, j)
        b = boundary[boundary["d_d"] == d]
        if len(b):
            fig.add_trace(go.Scatter(
                x=boundary_position(b["mu1_boundary"].to_numpy(), tuple(mu1s)),
                y=[alphas.index(a) for a in b["alpha"]], mode="markers", showlegend=False,
                marker=dict(symbol="diamond", size=11, color="black", line=dict(color="white", width=1)),
                customdata=b[["mu1_lo", "mu1_hi", "phase_lo", "phase_hi"]].to_numpy(),
                hovertemplate="mu1 in [%{customdata[0]:.3g}, %{customdata[1]:.3g}]: "
                              "%{customdata[2]} | %{customdata[3]}<extra></extra>"), r, j)
        fig.update_xaxes(tickvals=list(range(len(mu1s))), ticktext=[f"{m:g}" for m in mu1s], title_text="mu1",
                         row=r, col=j)
        fig.update_yaxes(tickvals=list(range(len(alphas))), ticktext=[f"{a:g}" for a in alphas],
                         title_text="alpha" if j == 1 else None, row=r, col=j)
    for p in phases:  # legend entries for the discrete colours
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=p,
                                 marker=dict(symbol="square", size=12, color=PHASE_COLOURS[p])))
    fig.update_layout(title="Phase of mechanism 1 at the step horizon (majority of seeds; T/P/N = runs transient/"
                            "persistent/never); diamonds: mu1 boundaries by bisection", height=440 * n_rows,
                      template="plotly_white")
    return fig


def write_figures(out: str | Path) -> list[Path]:
    """Read the tables in ``out`` and write every figure they support; returns the HTML paths written."""
    out = Path(out)
    read = lambda name: pd.read_csv(out / name) if (out / name).is_file() else None  # noqa: E731
    trace, summary = read("trace.csv"), read("summary.csv")
    figures: dict[str, go.Figure] = {}
    if trace is not None and summary is not None:
        if "loss_2" in set(trace["quantity"]):
            figures["losses.html"] = loss_figure(trace, summary)
        else:
            figures["ih24_losses.html"] = ih24_figure(trace)
        figures["vectors.html"] = vector_figure(trace, summary)
    sweep_trace, sweep_summary = read("mu1_sweep_trace.csv"), read("mu1_sweep_summary.csv")
    if sweep_trace is not None and sweep_summary is not None:
        figures["mu1_sweep.html"] = sweep_figure(sweep_trace, sweep_summary)
    network, fits = read("network_losses.csv"), read("fit.csv")
    if network is not None and fits is not None and trace is not None:
        figures["overlay.html"] = overlay_figure(network, trace, fits)
    cells, boundary = read("phase_cells.csv"), read("phase_boundary.csv")
    if cells is not None and boundary is not None:
        figures["phase_diagram.html"] = phase_figure(cells, boundary)
    paths = []
    for name, fig in figures.items():
        fig.write_html(out / name, include_plotlyjs=True, full_html=True)
        paths.append(out / name)
    return paths
