"""``analyze`` replaces its output folder whole: SIGKILLed at a random moment it leaves the previous complete output
(or, the first time, none), never new tables beside old ones; the next ``analyze`` cleans the dead one's leftovers.
A folder that is not an analysis output is never replaced."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from coopetition.analysis.config import AnalysisConfig
from coopetition.pipeline import analyze
from coopetition.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
OLD = dict(spec="-1:", analyses=("strategies",))
NEW = dict(spec="-2:", analyses=("strategies", "progress"))


def contents(folder: Path) -> dict[str, bytes | None]:
    """Every file, with the bytes of its tables: pages carry random element ids and the record timings, so they are
    compared by name (and the record by the range it names)."""
    return {p.name: p.read_bytes() if p.suffix == ".csv" else None
            for p in sorted(folder.iterdir()) if p.name != "analysis.json"}


def run_analysis(run: Path, out: Path, which: dict) -> dict[str, bytes]:
    analyze(run, which["spec"], AnalysisConfig(analyses=which["analyses"], n_seqs=8, workers=1), out,
            progress_bar=False)
    return contents(out)


def child(run: Path, out: Path) -> subprocess.Popen:
    args = ["analyze", str(run), "--checkpoint-range", NEW["spec"], "--analyses", ",".join(NEW["analyses"]),
            "--n-seqs", "8", "--workers", "1", "--no-progress", "--out", str(out)]
    return subprocess.Popen([sys.executable, "-m", "coopetition.cli", *args], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(ROOT)})


def state_after_kill(out: Path, old: dict[str, bytes], new: dict[str, bytes]) -> str:
    if not out.exists():
        return "none"
    record = json.loads((out / "analysis.json").read_text())
    found = contents(out)
    if record["checkpoint_range"] == OLD["spec"]:
        assert found == old, "the previous output was changed in place"
        return "previous"
    assert record["checkpoint_range"] == NEW["spec"] and found == new, "a mix of old and new output"
    return "new"


def kill_trials(trained_run: Path, tmp_path: Path, trials: int, seed: int) -> dict[str, int]:
    rng, states = random.Random(seed), {}
    new = run_analysis(trained_run, tmp_path / "reference", NEW)
    started = time.monotonic()
    process = child(trained_run, tmp_path / "timed")
    assert process.wait() == 0
    duration = time.monotonic() - started
    for trial in range(trials):
        out = tmp_path / f"trial{trial}" / "analysis"
        old = run_analysis(trained_run, out, OLD) if trial % 3 else None  # every third trial: no previous output
        if old is None:
            out.parent.mkdir(parents=True)
        process = child(trained_run, out)
        time.sleep(rng.uniform(0.2, 1.1) * duration)
        process.send_signal(signal.SIGKILL)
        process.wait()
        state = state_after_kill(out, old or {}, new) if old is not None or out.exists() else "none"
        assert state != "previous" or old is not None
        states[state] = states.get(state, 0) + 1
        assert run_analysis(trained_run, out, NEW) == new  # the next analyze cleans up and replaces the folder
        # the result cache beside the output keeps what the killed analyze finished (by design); its entries are
        # written atomically, so every one that exists is whole
        assert sorted(p.name for p in out.parent.iterdir() if p.name != "analysis_cache") == ["analysis"], \
            "leftovers of the killed analyze"
        for entry in (out.parent / "analysis_cache").rglob("*.json"):
            json.loads(entry.read_text())
    return states


def test_analyze_sigkilled_at_random_moments_leaves_previous_or_new_output_never_a_mix(trained_run, tmp_path):
    states = kill_trials(trained_run, tmp_path, trials=3, seed=11)
    print(f"analyze SIGKILL trials: {states}")
    assert sum(states.values()) == 3


@pytest.mark.slow
def test_analyze_sigkill_many_trials(trained_run, tmp_path):
    states = kill_trials(trained_run, tmp_path, trials=24, seed=12)
    print(f"analyze SIGKILL trials: {states}")
    assert sum(states.values()) == 24


def test_a_folder_that_is_not_an_analysis_output_is_never_replaced(trained_run, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    with pytest.raises(ConfigError, match="not an analysis output"):
        run_analysis(trained_run, mine, OLD)
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]
