"""The README's Python API block, run as written against a tiny trained run, and the ``Run`` handle behind it."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest
import torch

import coopetition
from coopetition.errors import DataError
from coopetition.store.reader import RunReader

README = Path(__file__).resolve().parents[1] / "README.md"


def api_block() -> str:
    """The first ```python block after the README's "Python API" paragraph."""
    text = README.read_text()
    start = text.index("**Python API.**")
    match = re.search(r"```python\n(.*?)```", text[start:], re.S)
    assert match, "README has no python block after 'Python API'"
    return match.group(1)


def test_readme_block_is_short_and_on_the_first_screen():
    text = README.read_text()
    assert text.index("**Python API.**") < text.index("## What is in the box")
    lines = [line for line in api_block().splitlines() if line.strip()]
    assert len(lines) <= 6  # the import and five lines


def test_readme_api_block_runs_and_matches_the_runs_own_eval(trained_run):
    assert '"checkpoints/quick-circuit"' in api_block()  # the README's main command writes that run
    code = api_block().replace('"checkpoints/quick-circuit"', repr(str(trained_run)))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md (Python API)", "exec"), {})
    printed = out.getvalue()
    match = re.match(r"flip acc (\S+) torch.Size\(\[(\d+), (\d+), (\d+), (\d+)\]\)", printed)
    assert match, printed
    acc, n, heads, q, k = float(match.group(1)), *map(int, match.group(2, 3, 4, 5))
    evals = RunReader(trained_run).eval_table()
    last = evals[(evals["evaluator"] == "flip") & (evals["metric"] == "acc")].sort_values("step").iloc[-1]
    run = coopetition.Run.open(trained_run)
    assert int(last["step"]) == run.steps[-1]  # the tiny run evaluates at its last checkpoint
    batch = run.eval_batch("flip")
    assert n == batch.n and heads == run.config.model.n_heads
    assert q == k == 2 * batch.n_ctx + 1  # exemplar and label tokens of the context, then the query
    assert abs(acc - float(last["value"])) <= 1.0 / n  # the same sequences and weights training scored


def test_run_handle(trained_run):
    run = coopetition.Run.open(trained_run)
    assert run.steps == (0, 10, 20, 30)
    assert run.config.train.steps == 30
    early, late = run.network_at(0), run.network_at("last")
    assert early.model is not late.model  # a new model per call: two steps side by side
    assert not torch.equal(early.model.W_Q, late.model.W_Q)  # the checkpoints' weights, not an init
    assert all(not p.requires_grad for p in late.model.parameters())
    batch = run.eval_batch("icl", n=5)
    assert batch.n == 5 and batch.context_labels.shape == (5, batch.n_ctx)
    with pytest.raises(DataError, match="no checkpoint at step 15 .nearest: 10"):
        run.network_at(15)
    with pytest.raises(DataError, match="no evaluator 'nope'"):
        run.eval_batch("nope")
    with pytest.raises(DataError, match="does not exist"):
        coopetition.Run.open(trained_run / "missing")
