"""``coopetition zoom`` killed at any moment leaves the run exactly as before (or, past its commit, exactly as after):
what every reader sees (the manifest's checkpoints and resume states, the listed files' bytes, the merged eval table,
eval_zoom.csv's committed rows, train.csv) is one of the two. The same zoom run again then gives exactly the
uninterrupted zoom's run.

The kills are aimed with the ``COOPETITION_FAULT`` test hook (``coopetition/faults.py``): during re-training
(``zoom_step``), during an evaluation (``evaluate``), while a checkpoint is staged or eval_zoom.csv or the manifest
is written (``atomic_write``: the temporary complete, not renamed), and with everything written but the manifest
commit (``zoom_commit``). The first zoom of a run and a second one, appending to eval_zoom.csv, are both killed.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from coopetition.cli import main
from coopetition.faults import ENV
from coopetition.store.reader import RunReader
from coopetition.train.loop import train
from tests.conftest import tiny_run_config

pytestmark = pytest.mark.e2e

SPARSE = dict(steps=30, checkpoint_schedule="every:10", eval_schedule="every:15", resume_schedule="at:10")
FIRST = ["--window", "2:8", "--checkpoints", "every:2"]  # from the seeds: 4 staged checkpoints, eval rows at each
SECOND = ["--window", "12:16", "--checkpoints", "every:2"]  # from step 10's resume state, appends to eval_zoom.csv

# (which zoom, point, n). Writes of a zoom: 4 (or 3) staged checkpoints, eval_zoom.csv, the manifest.
DEFAULT_TRIALS = [("first", "zoom_step", 3), ("first", "evaluate", 2), ("first", "atomic_write", 1),
                  ("first", "zoom_commit", 1), ("second", "atomic_write", 4), ("second", "zoom_commit", 1)]
SLOW_TRIALS = ([("first", "zoom_step", n) for n in (1, 2, 5, 8, 10)] + [("first", "evaluate", n) for n in (1, 3, 4)]
               + [("first", "atomic_write", n) for n in (1, 2, 3, 4, 5, 6)] + [("first", "zoom_commit", 1)]
               + [("second", "zoom_step", n) for n in (1, 4)] + [("second", "atomic_write", n) for n in (1, 3, 4, 5)]
               + [("second", "zoom_commit", 1)])


def visible(run: Path) -> dict:
    """Everything a reader of the run sees (files the manifest does not list are not part of the run)."""
    reader = RunReader(run)
    manifest = reader.manifest()
    zoomed = reader.zoom_eval_table()
    return {"checkpoints": [(c.step, c.sha256, c.path.read_bytes()) for c in reader.checkpoints(verify=True)],
            "resume": manifest.resume, "eval_sets": manifest.eval_sets,
            "eval": reader.eval_table().to_csv(index=False), "train": reader.train_table().to_csv(index=False),
            "zoom_eval": None if zoomed is None else zoomed.to_csv(index=False)}


def _zoom_argv(run: Path, which: str) -> list[str]:
    return ["zoom", str(run), *(FIRST if which == "first" else SECOND), "--no-progress"]


@pytest.fixture(scope="module")
def states(tmp_path_factory) -> dict[str, Path]:
    """The run before any zoom, after the first zoom, after both (uninterrupted)."""
    root = tmp_path_factory.mktemp("zoomkill")
    train(tiny_run_config(**SPARSE), root / "base", progress=False)
    shutil.copytree(root / "base", root / "first")
    assert main(_zoom_argv(root / "first", "first")) == 0
    shutil.copytree(root / "first", root / "second")
    assert main(_zoom_argv(root / "second", "second")) == 0
    return {"first": root / "base", "second": root / "first", "after": root / "second"}


def _cli(argv: list[str], fault: str) -> None:
    os.environ[ENV] = fault
    sys.exit(main(argv))


def trial(tmp_path: Path, states: dict[str, Path], which: str, fault: str, start) -> str:
    """Copy the run as it is before ``which`` zoom, kill that zoom at ``fault``, check the run is exactly as before
    or after, zoom again, check it is exactly the uninterrupted zoom's."""
    run = tmp_path / f"{which}-{fault.replace(':', '-')}"
    shutil.copytree(states[which], run)
    before = visible(states[which])
    after = visible(states["second" if which == "first" else "after"])
    code = start(_zoom_argv(run, which), fault)
    assert code == -9, f"zoom was not killed at {fault} (exit {code}): the point was never passed"
    now = visible(run)
    assert now in (before, after), f"killed at {fault}: the run is neither as before nor as after the zoom"
    seen = "before" if now == before else "after"
    assert main(_zoom_argv(run, which)) == 0
    assert visible(run) == after
    assert not (run / ".lock").exists() and not list(run.glob("**/.*.tmp"))
    return f"{which} zoom killed at {fault}: run exactly as {seen}; zoomed again: identical to the uninterrupted zoom"


def test_a_zoom_killed_at_named_moments_leaves_the_run_as_before_then_zooms_identically(tmp_path, states, capsys):
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["coopetition.cli", "coopetition.train.loop"])

    def start(argv, fault):
        proc = context.Process(target=_cli, args=(argv, fault))
        proc.start()
        proc.join()
        return proc.exitcode

    report = [trial(tmp_path, states, which, f"{point}:{n}", start) for which, point, n in DEFAULT_TRIALS]
    with capsys.disabled():
        print(f"\nkill-anywhere (zoom): {len(report)} trials\n" + "\n".join(report))


@pytest.mark.slow
def test_the_zoom_console_command_killed_anywhere_leaves_the_run_as_before(tmp_path, states, capsys):
    def start(argv, fault):
        env = {**os.environ, ENV: fault, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        return subprocess.run([sys.executable, "-m", "coopetition", *argv], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL).returncode

    report = [trial(tmp_path, states, which, f"{point}:{n}", start) for which, point, n in SLOW_TRIALS]
    with capsys.disabled():
        print(f"\nkill-anywhere (zoom console command): {len(report)} trials\n" + "\n".join(report))
