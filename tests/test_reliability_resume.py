"""Crash-safe runs and exact resume: a training process SIGKILLed at a random moment and resumed with ``--resume``
ends with bit-identical weights, eval.csv and train.csv to an uninterrupted run (CPU, one thread).

The killed processes are real OS processes running ``coopetition.cli.main(["train", ...])``. In the default suite
they are forked from a forkserver that imported the package once (importing torch + TransformerLens costs ~7 CPU-s,
more than the run); under ``-m slow`` each is a fresh ``python -m coopetition train`` subprocess.
"""

from __future__ import annotations

import json
import multiprocessing
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from coopetition.cli import main
from coopetition.store.checkpoint import load_tensors
from coopetition.store.reader import RunReader
from coopetition.store.writer import RunWriter
from coopetition.train.loop import train
from tests.conftest import tiny_run_config

pytestmark = pytest.mark.e2e

# 120 steps; checkpoints every 10, evals every 15 and loss logs every 7 so that neither divides the other: a resume
# must restore the partial loss interval, and eval rows after the checkpoint must be dropped and recomputed.
CONFIG = tiny_run_config(steps=120, checkpoint_schedule="every:10", eval_schedule="every:15", log_every=7)
DEFAULT_TRIALS, SLOW_TRIALS = 3, 8


def _cli(argv: list[str]) -> None:
    """Forkserver target: the CLI exactly as the console script runs it."""
    sys.exit(main(argv))


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, float]:
    """An uninterrupted run, and its training wall time (to spread the kill moments over)."""
    run = tmp_path_factory.mktemp("reference") / "run"
    result = train(CONFIG, run, progress=False)
    return run, result.wall_seconds


@pytest.fixture(scope="module")
def config_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("config") / "tiny.json"
    path.write_text(json.dumps(CONFIG.to_dict()))
    return path


def assert_identical(run: Path, reference: Path) -> None:
    """Every tensor of the final checkpoint equal, eval.csv and train.csv byte-equal, every checkpoint's hash equal."""
    final = RunReader(reference).checkpoints()[-1]
    ours, theirs = (load_tensors(r / final.path.relative_to(reference))[0] for r in (run, reference))
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in theirs)
    for table in ("eval.csv", "train.csv"):
        assert (run / table).read_bytes() == (reference / table).read_bytes(), table
    hashes = [{c.step: c.sha256 for c in RunReader(r).checkpoints(verify=True)} for r in (run, reference)]
    assert hashes[0] == hashes[1]
    assert not (run / ".lock").exists() and not list(run.glob("**/.*.tmp"))


def wait_for_first_checkpoint(run: Path, alive, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and alive():
        if (run / "manifest.json").exists() and RunReader(run).manifest().checkpoints:
            return
        time.sleep(0.02)
    raise AssertionError(f"no checkpoint appeared in {run}")


def kill_and_resume(run: Path, reference: Path, delay: float, start, capsys) -> bool:
    """Start a training process, SIGKILL it ``delay`` s after its first checkpoint, resume in this process.
    Returns whether the kill landed before the run finished."""
    handle, alive = start()
    wait_for_first_checkpoint(run, alive)
    time.sleep(delay)
    interrupted = alive()
    handle.kill()
    if hasattr(handle, "join"):
        handle.join()
    else:
        handle.wait()
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0  # the form: --resume RUN
    assert_identical(run, reference)
    return interrupted


def trial_delays(n: int, wall: float, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [rng.uniform(0.0, 0.8 * wall) for _ in range(n)]


def test_sigkill_at_random_moments_then_resume_is_bit_identical(tmp_path, reference, config_file, capsys):
    ref_run, wall = reference
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["coopetition.cli", "coopetition.train.loop"])
    interrupted = 0
    for index, delay in enumerate(trial_delays(DEFAULT_TRIALS, wall, seed=7)):
        run = tmp_path / f"trial{index}"

        def start():
            proc = context.Process(target=_cli, args=(["train", "--config", str(config_file), "--run-dir", str(run),
                                                        "--no-progress"],))
            proc.start()
            return proc, proc.is_alive

        interrupted += kill_and_resume(run, ref_run, delay, start, capsys)
    print(f"kill/resume trials: {DEFAULT_TRIALS} run, {DEFAULT_TRIALS} identical, {interrupted} killed mid-run")
    assert interrupted >= 1


@pytest.mark.slow
def test_sigkill_of_the_console_command_then_resume_is_bit_identical(tmp_path, reference, config_file, capsys):
    ref_run, wall = reference
    interrupted = 0
    for index, delay in enumerate(trial_delays(SLOW_TRIALS, wall, seed=11)):
        run = tmp_path / f"trial{index}"

        def start():
            proc = subprocess.Popen([sys.executable, "-m", "coopetition", "train", "--config", str(config_file),
                                     "--run-dir", str(run), "--no-progress"],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            return proc, lambda: proc.poll() is None

        interrupted += kill_and_resume(run, ref_run, delay, start, capsys)
    print(f"kill/resume trials (console command): {SLOW_TRIALS} run, {SLOW_TRIALS} identical, "
          f"{interrupted} killed mid-run")
    assert interrupted >= SLOW_TRIALS // 2


def test_a_crash_inside_a_checkpoint_write_is_invisible_and_resumable(tmp_path, reference, monkeypatch, capsys):
    """Killed between writing step 40's files and committing them: a half-written temporary and an unlisted
    checkpoint + resume state are on disk. Readers see steps 0..30 only; resume cleans up and ends identical."""
    ref_run, _ = reference
    run = tmp_path / "run"
    original = RunWriter.save_checkpoint

    def crash_at_40(self, step, sequences, weights, resume, metadata):
        if step == 40:
            from coopetition.store.checkpoint import save_tensors

            save_tensors(self.path / "checkpoints" / "step_00000000040.safetensors", weights, {"step": 40})
            save_tensors(self.path / "resume" / "step_00000000040.safetensors", resume, {"step": 40})
            (self.path / "checkpoints" / ".step_00000000050.safetensors.x1y2.tmp").write_bytes(b"\0" * 100)
            raise KeyboardInterrupt  # stands in for SIGKILL; the run dir is not cleaned up either way
        original(self, step, sequences, weights, resume, metadata)

    monkeypatch.setattr(RunWriter, "save_checkpoint", crash_at_40)
    with pytest.raises(KeyboardInterrupt):
        train(CONFIG, run, progress=False)
    monkeypatch.setattr(RunWriter, "save_checkpoint", original)
    assert [c.step for c in RunReader(run).checkpoints(verify=True)] == [0, 10, 20, 30]
    assert (run / "checkpoints" / "step_00000000040.safetensors").exists()
    assert main(["train", "--resume", "--run-dir", str(run), "--no-progress"]) == 0
    assert_identical(run, ref_run)


def test_the_last_two_resume_states_and_every_tenth_checkpoints_are_kept(reference):
    """Checkpoints 0, 10, ..., 120: the newest two (110, 120) for --resume, plus the 10th checkpoint (step 100) by
    the default train.resume_schedule (step 0 is never kept: the seeds rebuild it)."""
    ref_run, _ = reference
    manifest = RunReader(ref_run).manifest()
    assert [e.step for e in manifest.resume] == [100, 110, 120]
    assert sorted(p.name for p in (ref_run / "resume").iterdir()) == [
        "step_00000000100.safetensors", "step_00000000110.safetensors", "step_00000000120.safetensors"]
    assert manifest.eval_sets.file == "eval_sets.safetensors"
