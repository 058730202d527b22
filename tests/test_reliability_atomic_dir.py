"""``atomic_directory``: a folder is replaced whole or not at all, even when its writer is SIGKILLed at a random
moment; a failed writer leaves the previous folder untouched; a killed writer's leftovers go on the next use."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from coopetition.errors import ConfigError
from coopetition.store import atomic
from coopetition.store.atomic import atomic_directory

ROOT = Path(__file__).resolve().parents[1]
N_FILES = 40
KILL_TRIALS, KILL_TRIALS_SLOW = 4, 40

WRITER = f"""
import sys
from pathlib import Path
from coopetition.store.atomic import atomic_directory
target, version = Path(sys.argv[1]), 0
while True:
    version += 1
    with atomic_directory(target) as tmp:
        for i in range({N_FILES}):
            (tmp / f"part_{{i:03d}}.txt").write_text(f"{{version}}\\n")
    print(version, flush=True)
"""


def write_version(path: Path, version: str, n: int = N_FILES) -> None:
    with atomic_directory(path) as tmp:
        for i in range(n):
            (tmp / f"part_{i:03d}.txt").write_text(f"{version}\n")


def versions(path: Path) -> tuple[set[str], int]:
    """(the versions the folder's files hold, how many files)."""
    files = sorted(path.iterdir())
    return {f.read_text() for f in files}, len(files)


def leftovers(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir() if p.name != path.name)


def test_a_new_folder_appears_whole(tmp_path):
    out = tmp_path / "analysis"
    write_version(out, "1")
    assert versions(out) == ({"1\n"}, N_FILES) and leftovers(out) == []


@pytest.mark.parametrize("swap", ["exchange", "two renames"])
def test_a_folder_is_replaced_whole(tmp_path, monkeypatch, swap):
    if swap == "two renames":
        monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)
    out = tmp_path / "analysis"
    write_version(out, "1")
    write_version(out, "2", n=3)
    assert versions(out) == ({"2\n"}, 3) and leftovers(out) == []


def test_a_failed_writer_leaves_the_previous_folder_untouched(tmp_path):
    out = tmp_path / "analysis"
    write_version(out, "1")
    with pytest.raises(RuntimeError), atomic_directory(out) as tmp:
        (tmp / "part_000.txt").write_text("2\n")
        raise RuntimeError("analysis failed")
    assert versions(out) == ({"1\n"}, N_FILES) and leftovers(out) == []


def test_a_second_writer_is_refused_and_a_file_is_never_replaced(tmp_path):
    out = tmp_path / "analysis"
    with atomic_directory(out), pytest.raises(ConfigError, match="another process"):
        with atomic_directory(out):
            pass
    (tmp_path / "file").write_text("keep")
    with pytest.raises(ConfigError, match="not a directory"):
        with atomic_directory(tmp_path / "file"):
            pass
    assert (tmp_path / "file").read_text() == "keep"


def test_a_writer_killed_between_the_two_renames_gets_its_previous_folder_back(tmp_path):
    out = tmp_path / "analysis"
    write_version(out, "1")
    os.rename(out, tmp_path / ".analysis.old-abc")  # the fallback swap's first rename, then SIGKILL
    (tmp_path / ".analysis.new-def").mkdir()
    (tmp_path / ".analysis.new-def" / "part_000.txt").write_text("2\n")
    with pytest.raises(RuntimeError), atomic_directory(out):  # the next use cleans up before anything else
        assert versions(out) == ({"1\n"}, N_FILES)
        raise RuntimeError
    assert versions(out) == ({"1\n"}, N_FILES) and leftovers(out) == []


def kill_trial(tmp_path: Path, rng: random.Random, first: bool) -> str:
    """Start a child that rewrites the folder in a loop, SIGKILL it at a random moment (``first``: while it may still
    be writing its first version; else while it replaces one), check what is left."""
    out = tmp_path / "analysis"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen([sys.executable, "-c", WRITER, str(out)], stdout=subprocess.PIPE, env=env, cwd=ROOT)
    try:
        if not first:
            assert child.stdout.readline()
        time.sleep(rng.uniform(0, 0.2))
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    if out.exists():
        found, count = versions(out)
        assert len(found) == 1 and count == N_FILES, f"a mix after SIGKILL: {found}, {count} files"
        state = "complete"
    else:
        state = "none yet"
    write_version(out, "next")  # the next use cleans the dead writer's leftovers
    assert versions(out) == ({"next\n"}, N_FILES) and leftovers(out) == []
    return state


def run_kill_trials(tmp_path: Path, trials: int, seed: int) -> dict[str, int]:
    rng, states = random.Random(seed), {}
    for trial in range(trials):
        folder = tmp_path / f"trial{trial}"
        folder.mkdir()
        state = kill_trial(folder, rng, first=trial % 4 == 0)
        states[state] = states.get(state, 0) + 1
    return states


def test_sigkill_at_random_moments_leaves_a_complete_folder_or_none(tmp_path):
    states = run_kill_trials(tmp_path, KILL_TRIALS, seed=15)
    print(f"atomic_directory SIGKILL trials: {states}")
    assert sum(states.values()) == KILL_TRIALS


@pytest.mark.slow
def test_sigkill_at_random_moments_many(tmp_path):
    states = run_kill_trials(tmp_path, KILL_TRIALS_SLOW, seed=1515)
    print(f"atomic_directory SIGKILL trials (slow): {states}")
