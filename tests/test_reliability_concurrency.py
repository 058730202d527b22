"""Two processes, one run dir: a second writer is refused (exit 2) without touching the first, and a reader of a run
still training sees only committed, complete checkpoints."""

from __future__ import annotations

import json
import multiprocessing
import shutil
import sys
import time

import pytest

from coopetition.store.run import Run
from coopetition.cli import main
from coopetition.store.reader import RunReader
from coopetition.train.loop import train
from tests.conftest import tiny_run_config

pytestmark = pytest.mark.e2e
CONFIG = tiny_run_config(steps=240, checkpoint_schedule="every:10", eval_schedule="every:15", log_every=7)


def _cli(argv: list[str]) -> None:
    sys.exit(main(argv))


def test_a_second_writer_is_refused_and_a_reader_sees_only_complete_checkpoints(tmp_path, capsys):
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(CONFIG.to_dict()))
    run = tmp_path / "run"
    # The refusals below run in this process; importing TransformerLens on the first of them took ~20 s on a loaded
    # 2-core machine, by which time the writer had finished and --overwrite legitimately succeeded. Import it first.
    import coopetition.model.hooked  # noqa: F401
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["coopetition.cli", "coopetition.train.loop"])
    first = context.Process(target=_cli, args=(["train", "--config", str(config), "--run-dir", str(run),
                                                 "--no-progress"],))
    first.start()
    deadline = time.monotonic() + 120
    while not ((run / "manifest.json").exists() and RunReader(run).manifest().checkpoints):
        assert time.monotonic() < deadline and first.is_alive()
        time.sleep(0.02)
    refusals = {
        "overwrite": (["--config", str(config), "--overwrite"], "locked by a running process"),
        "resume": (["--resume"], "being written by another process"),
        "plain": (["--config", str(config)], "not empty"),
    }
    for argv, message in refusals.values():
        assert main(["train", "--run-dir", str(run), "--no-progress", *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1
    seen = []
    while first.is_alive():  # analyze's view of a run that is being written
        loaded = Run.open(run)
        assert not loaded.skipped
        steps = [c.step for c in loaded.checkpoints]
        assert steps == list(range(0, 10 * len(steps), 10))
        seen.append(len(steps))
        time.sleep(0.05)
    first.join()
    assert first.exitcode == 0 and len(set(seen)) > 1
    assert [c.step for c in RunReader(run).checkpoints(verify=True)] == list(range(0, CONFIG.train.steps + 1, 10))
    assert not (run / ".lock").exists()


def test_readers_ignore_unlisted_checkpoints_and_temporaries(tmp_path):
    """What a reader finds mid-write: the manifest lists 0..30, step 40 is on disk but not yet listed, step 50 is
    a half-written temporary."""
    run = tmp_path / "run"
    train(tiny_run_config(), run, progress=False)
    ckpts = run / "checkpoints"
    shutil.copy(ckpts / "step_00000000030.safetensors", ckpts / "step_00000000040.safetensors")
    (ckpts / ".step_00000000050.safetensors.abc123.tmp").write_bytes(b"half a file")
    loaded = Run.open(run)
    assert [c.step for c in loaded.checkpoints] == [0, 10, 20, 30] and not loaded.skipped


def test_a_stale_lock_file_does_not_block_and_a_held_one_does(tmp_path, capsys):
    """The lock is an OS lock, not a pid file: a leftover .lock naming a live pid (here 1, init) is no lock, while
    a lock held in this very process is."""
    run = tmp_path / "run"
    train(tiny_run_config(steps=10), run, progress=False)
    (run / ".lock").write_text("1")
    assert main(["train", "--resume", "--run-dir", str(run), "--no-progress"]) == 0
    from coopetition.store.writer import RunWriter

    holder = RunWriter.reopen(run)
    try:
        assert main(["train", "--resume", "--run-dir", str(run), "--no-progress"]) == 2
        assert "being written by another process" in capsys.readouterr().err
    finally:
        holder.close()
    assert not (run / ".lock").exists()
