"""Integrate the minimal models for many rows (seeds x conditions) at once and return tidy tables.

Rows that reach their loss threshold stop at that step (their trace ends there); the loop ends when every
row has stopped or after ``steps`` updates. The minimum of L1, its step and the largest one-step rise of the total
loss are tracked at every step, so classification and the monotonicity check never depend on ``record_every``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from coopetition.errors import ConfigError
from coopetition.threads import one_torch_thread
from coopetition.toy.config import ToyConfig
from coopetition.toy.model import Evaluation, Problem, evaluate, loss_1_off, vector_measures

Record = Literal["all", "losses", "none"]
DTYPE = torch.float64
SHARED = ("model", "lr", "steps", "method", "record_every")


@dataclass(frozen=True)
class ToyResult:
    """``trace``: long table ``condition, seed, step, quantity, value`` (every ``record_every`` steps up to each
    row's stop step, plus that step). ``summary``: one row per (condition, seed) with its parameters and
    outcomes tracked at every step (minimum of L1 and its step, largest one-step rise of the total loss)."""

    trace: pd.DataFrame
    summary: pd.DataFrame


def _draw(seed: int, index: int, dim: int) -> tuple[Tensor, Tensor]:
    """Target and initial value of one vector, N(0, 1), from a stream that depends only on (seed, vector index),
    as the reference splits its PRNG key once per vector: changing d_d leaves a, b, c unchanged."""
    state = np.random.SeedSequence([seed, index]).generate_state(1)[0]
    gen = torch.Generator().manual_seed(int(state))
    return torch.randn(dim, generator=gen, dtype=DTYPE), torch.randn(dim, generator=gen, dtype=DTYPE)


def build_problem(cfgs: Sequence[ToyConfig]) -> tuple[Problem, Tensor, pd.DataFrame]:
    """Stack every (config, seed) into rows, zero-padding all vectors to the widest size among the configs.

    Returns the problem, the initial stack ``x[row, vector, coord]`` and one info row per (config, seed)."""
    names = cfgs[0].vectors
    width = max(max(c.dims) for c in cfgs)
    targets, init, free, rows = [], [], [], []
    for ci, cfg in enumerate(cfgs):
        clamp = dict(cfg.clamp)
        for seed in cfg.seeds:
            t_row, x_row, f_row = (torch.zeros(len(names), width, dtype=DTYPE) for _ in range(3))
            for i, (k, d) in enumerate(zip(names, cfg.dims)):
                t, x = _draw(seed, i, d)
                held = clamp.get(k, 0)
                x[:held] = t[:held]
                t_row[i, :d], x_row[i, :d], f_row[i, held:d] = t, x, 1.0
            targets.append(t_row)
            init.append(x_row)
            free.append(f_row.bool())
            rows.append(dict(condition_index=ci, seed=seed, alpha=cfg.alpha, mu1=cfg.mu1, mu2=cfg.mu2,
                             threshold=cfg.threshold, **{f"d_{k}": d for k, d in zip(names, cfg.dims)}))
    info = pd.DataFrame(rows)
    dim = {k: torch.tensor(info[f"d_{k}"].to_numpy(), dtype=DTYPE) for k in names}
    col = lambda name: torch.tensor(info[name].to_numpy(), dtype=DTYPE)  # noqa: E731
    c25 = cfgs[0].model == "c25"
    problem = Problem(
        model=cfgs[0].model,
        targets=torch.stack(targets),
        free=torch.stack(free),
        alpha=col("alpha"),
        mu=torch.stack([col("mu1"), col("mu2")], 1) if c25 else torch.zeros(len(info), 1, dtype=DTYPE),
        norm=torch.stack([dim["a"] * dim["b"] * dim["c"]] + ([dim["d"] * dim["b"] * dim["c"]] if c25 else []), 1),
        norm_c=dim["a"] * dim["d"] if c25 else torch.ones(len(info), dtype=DTYPE),
    )
    return problem, torch.stack(init), info


def _quantities(problem: Problem, x: Tensor, ev: Evaluation, record: Record, names) -> dict[str, Tensor]:
    q = {"loss_total": ev.loss_total, "loss_1": ev.loss_1}
    if problem.model == "c25":
        q |= {"loss_2": ev.loss_2, "competition": ev.competition}
    if record == "all":
        q |= vector_measures(problem, x, ev.grad, names)
    return q


def _step(problem: Problem, x: Tensor, ev: Evaluation, lr: float, method: str, scale: Tensor) -> Tensor:
    """One update: GD, or classical RK4 on the gradient flow with time step ``lr``. ``scale`` is 0 for clamped
    and padded coordinates, 1 elsewhere."""
    if method == "gd":
        return x - lr * scale * ev.grad
    k1 = -scale * ev.grad
    k2 = -scale * evaluate(problem, x + 0.5 * lr * k1).grad
    k3 = -scale * evaluate(problem, x + 0.5 * lr * k2).grad
    k4 = -scale * evaluate(problem, x + lr * k3).grad
    return x + lr / 6 * (k1 + 2 * k2 + 2 * k3 + k4)


def solve_batch(cfgs: Sequence[ToyConfig], labels: Sequence[str] | None = None, record: Record = "all") -> ToyResult:
    """Integrate several configs in one vectorised loop. They must share model, lr, steps, method and
    record_every; sizes, loss weights, thresholds, clamps and seeds may differ per config."""
    if not cfgs:
        raise ConfigError("solve_batch needs at least one config")
    for key in SHARED:
        values = {getattr(c, key) for c in cfgs}
        if len(values) > 1:
            raise ConfigError(f"configs solved together must share {key}, got {sorted(map(str, values))}")
    labels = list(labels) if labels is not None else [str(i) for i in range(len(cfgs))]
    if len(labels) != len(cfgs) or len(set(labels)) != len(labels):
        raise ConfigError(f"labels must be {len(cfgs)} distinct names, got {labels}")
    cfg = cfgs[0]
    problem, x, info = build_problem(cfgs)
    with torch.inference_mode(), one_torch_thread():
        return _integrate(problem, x, info, cfg, labels, record)


def solve(cfg: ToyConfig, label: str = "main", record: Record = "all") -> ToyResult:
    """Integrate one config for all its seeds."""
    return solve_batch([cfg], [label], record)


def _integrate(problem: Problem, x: Tensor, info: pd.DataFrame, cfg: ToyConfig, labels, record: Record
               ) -> ToyResult:
    """The loop works on the rows still running: a row that reaches its threshold is written back and dropped,
    so the batch shrinks as seeds converge and no step is spent on frozen rows."""
    n, steps = len(info), cfg.steps
    full_x = x.clone()
    stats = {k: np.zeros(n) for k in ("min_l1", "argmin_l1", "max_rise")}
    stop = np.full(n, steps)
    converged = np.zeros(n, dtype=bool)
    rows = torch.arange(n)
    sub = problem
    threshold = torch.tensor(info["threshold"].to_numpy(), dtype=DTYPE)
    min_l1 = torch.full((n,), float("inf"), dtype=DTYPE)
    argmin_l1 = torch.zeros(n, dtype=torch.long)
    prev_total = torch.full((n,), float("inf"), dtype=DTYPE)
    max_rise = torch.full((n,), float("-inf"), dtype=DTYPE)
    first = evaluate(problem, x)
    records: list[tuple[int, np.ndarray, dict[str, Tensor]]] = []

    def retire(mask: Tensor) -> None:
        ids = rows[mask]
        full_x[ids] = x[mask]
        for key, value in (("min_l1", min_l1), ("argmin_l1", argmin_l1), ("max_rise", max_rise)):
            stats[key][ids.numpy()] = value[mask].double().numpy()

    for t in range(steps + 1):
        ev = evaluate(sub, x)
        better = ev.loss_1 < min_l1
        min_l1 = torch.where(better, ev.loss_1, min_l1)
        argmin_l1.masked_fill_(better, t)
        max_rise = torch.maximum(max_rise, ev.loss_total - prev_total)
        prev_total = ev.loss_total
        if record != "none" and t % cfg.record_every == 0:
            records.append((t, rows.numpy(), _quantities(sub, x, ev, record, cfg.vectors)))
        finished = ev.loss_total < threshold
        if bool(finished.any()):
            stop[rows[finished].numpy()] = t
            converged[rows[finished].numpy()] = True
        if t == steps:
            retire(torch.ones_like(finished))
            break
        if bool(finished.any()):
            retire(finished)
            keep = ~finished
            if not bool(keep.any()):
                break
            rows, x, threshold, sub = rows[keep], x[keep], threshold[keep], sub.take(keep)
            min_l1, argmin_l1, prev_total, max_rise = (v[keep] for v in (min_l1, argmin_l1, prev_total, max_rise))
            ev = Evaluation(*(v[keep] for v in (ev.loss, ev.competition, ev.loss_total, ev.grad)))
        x = _step(sub, x, ev, cfg.lr, cfg.method, sub.free.to(DTYPE))
    last = evaluate(problem, full_x)
    if record != "none":
        records.append((-1, np.arange(n), _quantities(problem, full_x, last, record, cfg.vectors)))
    summary = info.drop(columns="condition_index").assign(
        condition=[labels[i] for i in info["condition_index"]],
        converged=converged,
        stop_step=stop,
        loss_1_off=loss_1_off(problem).numpy(),
        loss_1_init=first.loss_1.numpy(),
        loss_2_init=first.loss_2.numpy(),
        loss_total_init=first.loss_total.numpy(),
        min_loss_1=stats["min_l1"],
        step_min_loss_1=stats["argmin_l1"].astype(int),
        final_loss_1=last.loss_1.numpy(),
        final_loss_2=last.loss_2.numpy(),
        final_competition=last.competition.numpy(),
        final_loss_total=last.loss_total.numpy(),
        max_total_rise=stats["max_rise"],
    )
    summary = summary[["condition"] + [c for c in summary.columns if c != "condition"]]
    return ToyResult(_tidy(records, summary), summary)


def _tidy(records: list[tuple[int, np.ndarray, dict[str, Tensor]]], summary: pd.DataFrame) -> pd.DataFrame:
    """Long table of the recorded steps, plus every row's last state at its stop step (``t = -1`` records)."""
    columns = ["condition", "seed", "step", "quantity", "value"]
    if not records:
        return pd.DataFrame(columns=columns)
    names = list(records[0][2])
    stop = summary["stop_step"].to_numpy()
    condition, seed = summary["condition"].to_numpy(), summary["seed"].to_numpy()
    frames = []
    for t, ids, q in records:
        values = torch.stack([q[k] for k in names], 1).numpy()
        frames.append(pd.DataFrame({
            "condition": np.repeat(condition[ids], len(names)),
            "seed": np.repeat(seed[ids], len(names)),
            "step": np.repeat(stop[ids] if t < 0 else np.full(len(ids), t), len(names)),
            "quantity": np.tile(names, len(ids)),
            "value": values.reshape(-1),
        }))
    out = pd.concat(frames, ignore_index=True).drop_duplicates(["condition", "seed", "step", "quantity"], keep="last")
    order = {c: i for i, c in enumerate(pd.unique(summary["condition"]))}  # keep the callers' condition order
    out = out.sort_values(["condition", "seed", "step"], key=lambda col: col.map(order) if col.name == "condition"
                          else col, kind="stable", ignore_index=True)
    return out[columns]
