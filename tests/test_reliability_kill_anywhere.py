"""A run killed at any moment of its life resumes to the same bits (issue: the start of a run was never hit).

Each trial SIGKILLs a real ``coopetition train`` process at a named moment, aimed with the ``COOPETITION_FAULT``
test hook (``coopetition/faults.py``: the process kills itself the n-th time it passes a named point), not with a
sleep. Then ``coopetition train --resume RUN`` must finish it with byte-identical ``eval.csv`` and ``train.csv``,
the same manifest checkpoint hashes and the same final weights as an uninterrupted run. Where there is nothing to
resume (killed before the run recorded its config), ``--resume`` must say why in one line (exit 2) and the command
that created the run must start it again in the same folder, to the same bits: never a run that neither resumes
nor restarts.

Default suite: the killed processes are forked from a forkserver that imported the package once (importing torch
costs more than the run). ``-m slow``: each is a fresh ``python -m coopetition`` subprocess, over every point at
several passes, and some resumes killed again.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import pytest

from coopetition.cli import main
from coopetition.faults import ENV
from coopetition.store.reader import RunReader
from coopetition.train.loop import train
from tests.conftest import tiny_run_config
from tests.test_reliability_resume import assert_identical

pytestmark = pytest.mark.e2e

# 40 steps: checkpoints at 0, 10, 20, 30, 40; evals at 0, 15, 30; loss rows every 7 steps (the first at step 7, so a
# kill in steps 1..6 finds checkpoint 0 committed with a header-only train.csv: the second row).
CONFIG = tiny_run_config(steps=40, checkpoint_schedule="every:10", eval_schedule="every:15", log_every=7)

# (point, n, what the first --resume must do): "resume" exit 0 and identical; "restart" one line, exit 2, and the
# creating command starts it again. The named moments of the issue, each hit by its point:
DEFAULT_TRIALS = [
    ("startup", 1, "restart"),           # during start-up: config valid, nothing built or written
    ("run_dir", 1, "restart"),           # right after the run dir appears (locked, empty)
    ("config_written", 1, "resume"),     # config.json written, no eval sets: --resume starts it from step 0
    ("checkpoint_files", 1, "resume"),   # during the first checkpoint write (eval.csv, train.csv exist; none listed)
    ("train_step", 3, "resume"),         # before the first log row: checkpoint 0 listed, train.csv header-only
    ("checkpoint_files", 3, "resume"),   # during a checkpoint write mid-run (step 20's files, not yet listed)
    ("evaluate", 2, "resume"),           # during an evaluation (step 15's)
    ("final_write", 1, "resume"),        # during the final write (trained to the end, last train.csv rows pending)
]
# -m slow: every point at passes spread over the run, then resumes that are themselves killed (point, n, then the
# resume's point, n).
SLOW_TRIALS = ([("startup", 1, "restart"), ("run_dir", 1, "restart"), ("config_written", 1, "resume"),
                ("final_write", 1, "resume")]
               + [("train_step", n, "resume") for n in (1, 6, 7, 8, 15, 27, 39)]
               + [("evaluate", n, "resume") for n in (1, 2, 3)]
               + [("checkpoint_files", n, "resume") for n in (1, 2, 3, 4, 5)]
               + [("atomic_write", n, "resume" if n > 1 else "restart") for n in (1, 2, 3, 4, 5, 6, 7, 9, 13, 21)])
SLOW_DOUBLE = [(("checkpoint_files", 1), ("train_step", 5)), (("config_written", 1), ("checkpoint_files", 2)),
               (("train_step", 3), ("evaluate", 1)), (("evaluate", 2), ("atomic_write", 4)),
               (("checkpoint_files", 3), ("final_write", 1))]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("reference") / "run"
    train(CONFIG, run, progress=False)
    return run


@pytest.fixture(scope="module")
def config_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("config") / "tiny.json"
    path.write_text(json.dumps(CONFIG.to_dict()))
    return path


def _cli(argv: list[str], fault: str) -> None:
    """Forkserver target: the CLI as the console script runs it, with the fault hook armed."""
    os.environ[ENV] = fault
    sys.exit(main(argv))


def _train_argv(config_file: Path, run: Path) -> list[str]:
    return ["train", "--config", str(config_file), "--run-dir", str(run), "--no-progress"]


def _killed(run: Path) -> str:
    """What a kill left, for the trial's report line."""
    if not run.exists():
        return "no run dir"
    if not (run / "config.json").exists():
        return "run dir without config.json"
    listed = [c.step for c in RunReader(run).listed_checkpoints()[0]]
    return f"checkpoints {listed}" if listed else "config, no checkpoint"


def recover(run: Path, reference: Path, argv: list[str], expected: str, capsys) -> str:
    """Resume (in this process) what a kill left, or restart it with the creating command where ``--resume`` says
    in one line why it cannot; assert the result is the uninterrupted run's. Returns the outcome line."""
    left = _killed(run)
    capsys.readouterr()
    code = main(["train", "--resume", str(run), "--no-progress"])
    err = capsys.readouterr().err.strip()
    if code == 0:
        outcome = "resumed" + (" (restarted from step 0: no checkpoint yet)" if "no checkpoint yet" in err else "")
    else:
        assert code == 2 and len(err.splitlines()) == 1 and err.startswith("coopetition: error:"), err
        assert main(argv) == 0, f"{run}: neither resumes nor restarts ({err})"
        outcome = f"restarted by the same command after: {err.removeprefix('coopetition: error: ')}"
    assert ("restart" if code else "resume") == expected, (left, err)
    assert_identical(run, reference)
    return f"{left} -> {outcome}"


def kill_at(start, fault: str) -> None:
    code = start(fault)
    assert code == -9, f"the process was not killed at {fault} (exit {code}): the point was never passed"


def test_sigkill_at_named_moments_then_resume_is_bit_identical(tmp_path, reference, config_file, capsys):
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["coopetition.cli", "coopetition.train.loop"])
    report = []
    for index, (point, n, expected) in enumerate(DEFAULT_TRIALS):
        run = tmp_path / f"trial{index}"
        argv = _train_argv(config_file, run)

        def start(fault):
            proc = context.Process(target=_cli, args=(argv, fault))
            proc.start()
            proc.join()
            return proc.exitcode

        kill_at(start, f"{point}:{n}")
        report.append(f"{point}:{n}: {recover(run, reference, argv, expected, capsys)}")
    with capsys.disabled():
        print(f"\nkill-anywhere (train): {len(report)} trials, {len(report)} identical")
        print("\n".join(report))


def _subprocess_start(argv: list[str]):
    def start(fault):
        env = {**os.environ, ENV: fault, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        return subprocess.run([sys.executable, "-m", "coopetition", *argv], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL).returncode
    return start


@pytest.mark.slow
def test_sigkill_of_the_console_command_anywhere_then_resume_is_bit_identical(tmp_path, reference, config_file,
                                                                              capsys):
    report = []
    for index, (point, n, expected) in enumerate(SLOW_TRIALS):
        run = tmp_path / f"trial{index}"
        argv = _train_argv(config_file, run)
        kill_at(_subprocess_start(argv), f"{point}:{n}")
        report.append(f"{point}:{n}: {recover(run, reference, argv, expected, capsys)}")
    for index, ((point, n), (again, m)) in enumerate(SLOW_DOUBLE):
        run = tmp_path / f"double{index}"
        argv = _train_argv(config_file, run)
        kill_at(_subprocess_start(argv), f"{point}:{n}")
        kill_at(_subprocess_start(["train", "--resume", str(run), "--no-progress"]), f"{again}:{m}")
        report.append(f"{point}:{n}, its resume {again}:{m}: {recover(run, reference, argv, 'resume', capsys)}")
    with capsys.disabled():
        print(f"\nkill-anywhere (console command): {len(report)} trials, {len(report)} identical")
        print("\n".join(report))
    assert len(report) >= 30
