"""Hostile and damaged files: loading never executes code, and a truncated or altered file is caught by its hash,
named in a one-line message, skipped by analyze (and counted) and refused by resume (which falls back)."""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from coopetition.store.run import Run, load_checkpoint
from coopetition.bank import BankConfig, load_bank
from coopetition.cli import main
from coopetition.errors import CoopetitionError, DataError
from coopetition.store.checkpoint import file_sha256, load_tensors
from coopetition.store.reader import RunReader
from coopetition.task.evaluators import load_eval_sets
from coopetition.train.loop import train
from tests.conftest import tiny_run_config

pytestmark = pytest.mark.e2e
PACKAGE = Path(__file__).resolve().parents[1] / "coopetition"


class Payload:
    """Unpickling this creates ``marker``: proof that a loader ran code from a file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A complete tiny run (checkpoints 0, 10, 20, 30); tests copy it before damaging it."""
    run = tmp_path_factory.mktemp("finished") / "run"
    train(tiny_run_config(), run, progress=False)
    return run


@pytest.fixture
def run(finished_run, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(finished_run, copy)
    return copy


@pytest.fixture
def marker(tmp_path) -> Path:
    """The file a payload would create; the fixture first proves the payload is armed."""
    probe = tmp_path / "ARMED"
    pickle.loads(pickle.dumps(Payload(probe)))
    assert probe.exists()
    return tmp_path / "MARKER"


def plant_pickle(path: Path, marker: Path, via_torch: bool = True) -> None:
    if via_torch:
        torch.save({"weights": Payload(marker)}, path)
    else:
        path.write_bytes(pickle.dumps(Payload(marker)))


def relist(run: Path, section: str, step_or_none: int | None, path: Path) -> None:
    """An attacker who can write the folder can rewrite the manifest too: make it vouch for ``path``."""
    manifest = json.loads((run / "manifest.json").read_text())
    entries = [manifest[section]] if step_or_none is None else [e for e in manifest[section]
                                                                 if e["step"] == step_or_none]
    for entry in entries:
        entry.update(bytes=path.stat().st_size, sha256=file_sha256(path))
    (run / "manifest.json").write_text(json.dumps(manifest))


def one_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    assert len(lines) == 1, text
    return lines[0]


def test_no_loader_in_the_package_can_unpickle():
    """Every load path is safetensors, JSON or numpy with allow_pickle=False: grep the source to keep it so. The one
    exception is torchvision's ResNet-18 weights (a .pth pickle, images/resnet.py), read only with
    ``torch.load(..., weights_only=True)``, whose unpickler builds tensors and containers and nothing else."""
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        for call in re.finditer(r"torch\.load\(([^)]*)\)", text):
            if "weights_only=True" not in call.group(1):
                offenders.append(f"{path.name}: {call.group(0)}")
        for pattern in (r"pickle\.loads?\(", r"allow_pickle\s*=\s*True",
                        r"(?m)^\s*(import|from)\s+(pickle|dill|joblib|cloudpickle)\b"):
            offenders += [f"{path.name}: {pattern}" for _ in re.finditer(pattern, text)]
        for call in re.finditer(r"np\.load\(([^)]*)\)", text):
            if "allow_pickle=False" not in call.group(1):
                offenders.append(f"{path.name}: {call.group(0)}")
    assert offenders == []


@pytest.mark.parametrize("via_torch", [True, False])
def test_a_pickle_disguised_as_a_checkpoint_is_refused_without_running(tmp_path, marker, via_torch):
    path = tmp_path / "step_00000000010.safetensors"
    plant_pickle(path, marker, via_torch)
    with pytest.raises(DataError) as err:
        load_tensors(path)
    assert str(path) in one_line(str(err.value)) and not marker.exists()


def test_analyze_refuses_a_planted_checkpoint_even_when_the_manifest_vouches_for_it(run, marker):
    path = run / "checkpoints" / "step_00000000020.safetensors"
    plant_pickle(path, marker)
    loaded = Run.open(run)  # manifest hash no longer matches: skipped
    assert [i.step for i, _ in loaded.skipped] == [20] and 20 not in [c.step for c in loaded.checkpoints]
    relist(run, "checkpoints", 20, path)
    loaded = Run.open(run)
    info = next(c for c in loaded.checkpoints if c.step == 20)
    model = loaded.build_model(loaded.bank())
    with pytest.raises(DataError, match="not a valid checkpoint") as err:
        load_checkpoint(model, info)
    assert str(path) in one_line(str(err.value)) and not marker.exists()


def test_resume_refuses_a_planted_resume_state_and_falls_back(run, finished_run, marker, capsys):
    path = run / "resume" / "step_00000000030.safetensors"
    plant_pickle(path, marker)
    relist(run, "resume", 30, path)
    assert main(["train", "--resume", "--run-dir", str(run), "--no-progress"]) == 0
    err = one_line(capsys.readouterr().err)
    assert "not resuming from step 30" in err and str(path) in err and not marker.exists()
    assert_same_run(run, finished_run)


@pytest.mark.parametrize("via_torch", [True, False])
def test_planted_eval_sets_are_refused(run, tmp_path, marker, capsys, via_torch):
    planted = tmp_path / "eval_sets.safetensors"
    plant_pickle(planted, marker, via_torch)
    with pytest.raises(DataError) as err:
        load_eval_sets(planted)
    assert str(planted) in one_line(str(err.value))
    assert main(["train", "--run-dir", str(tmp_path / "new"), "--config", str(tiny_config_file(tmp_path)),
                 "--eval-sets", str(planted)]) == 2
    assert str(planted) in one_line(capsys.readouterr().err)
    shutil.copy(planted, run / "eval_sets.safetensors")
    loaded = Run.open(run)
    with pytest.raises(DataError, match="corrupt eval sets"):
        loaded.eval_sets()
    assert not marker.exists() and not (tmp_path / "new").exists()


def tiny_config_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(tiny_run_config(steps=2).to_dict()))
    return path


@pytest.mark.parametrize("name", ["bank.npy", "bank.npz", "bank.safetensors"])
def test_pickled_banks_are_refused(tmp_path, marker, name):
    path = tmp_path / name
    objects = np.array([Payload(marker)] * 3, dtype=object)
    if name.endswith(".npy"):
        np.save(path, objects, allow_pickle=True)
    elif name.endswith(".npz"):
        np.savez(path, feat=objects)
    else:
        plant_pickle(path, marker)
    with pytest.raises(DataError) as err:
        load_bank(BankConfig(source=str(path)))
    assert str(path) in one_line(str(err.value)) and not marker.exists()
    raw = tmp_path / f"raw_{name}"
    plant_pickle(raw, marker, via_torch=False)  # a bare pickle stream under a bank's name
    with pytest.raises(DataError):
        load_bank(BankConfig(source=str(raw)))
    assert not marker.exists()


def damage(path: Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "truncate":
        path.write_bytes(bytes(data[: len(data) // 2]))
    else:  # one flipped bit in the last tensor's data: still a valid safetensors file
        data[-3] ^= 0x01
        path.write_bytes(bytes(data))


def test_analyze_skips_damaged_checkpoints_with_a_warning_and_counts_them(run, capsys):
    truncated, flipped = (run / "checkpoints" / f"step_{s:011d}.safetensors" for s in (10, 20))
    damage(truncated, "truncate")
    damage(flipped, "flip")
    load_tensors(flipped)  # the flipped file still parses: only the hash can tell
    code = main(["analyze", str(run), "--checkpoint-range", "0:", "--analyses", "strategies,progress",
                 "--n-seqs", "8", "--no-progress"])
    captured = capsys.readouterr()
    assert code == 0
    warnings = [line for line in captured.err.splitlines() if "corrupt checkpoint" in line]
    assert len(warnings) == 2 and str(truncated) in warnings[0] and "truncated" in warnings[0]
    assert str(flipped) in warnings[1] and "sha256" in warnings[1]
    assert "analysed 2 checkpoints" in captured.out and "skipped 2 corrupt checkpoint(s)" in captured.out
    skipped = pd.read_csv(run / "analysis" / "skipped_checkpoints.csv")
    assert list(skipped.step) == [10, 20]
    assert sorted(pd.read_csv(run / "analysis" / "progress.csv").step.unique()) == [0, 30]


def test_resume_refuses_a_damaged_checkpoint_and_falls_back_to_the_previous_good_one(run, finished_run, capsys):
    path = run / "checkpoints" / "step_00000000030.safetensors"
    damage(path, "flip")
    assert main(["train", "--resume", "--run-dir", str(run), "--no-progress"]) == 0
    err = one_line(capsys.readouterr().err)
    assert "not resuming from step 30" in err and str(path) in err and "sha256" in err
    assert_same_run(run, finished_run)  # steps 20 -> 30 retrained; the damaged file is replaced


def test_resume_with_no_usable_state_refuses_and_changes_nothing(run, capsys):
    for step in (20, 30):
        damage(run / "resume" / f"step_{step:011d}.safetensors", "truncate")
    before = snapshot(run)
    assert main(["train", "--resume", "--run-dir", str(run), "--no-progress"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 3 and "no complete checkpoint to resume from" in lines[-1]
    assert snapshot(run) == before


@pytest.mark.parametrize("command", ["analyze", "resume"])
def test_a_garbled_manifest_is_a_one_line_error(run, capsys, command):
    (run / "manifest.json").write_text('{"checkpoints": [{"step": 0}')
    argv = (["analyze", str(run), "--checkpoint-range", "0:", "--analyses", "strategies"] if command == "analyze"
            else ["train", "--resume", "--run-dir", str(run)])
    assert main(argv) == 2
    assert "manifest.json" in one_line(capsys.readouterr().err)


def test_load_checkpoint_checks_the_hash_at_load_time(run):
    """A file altered after the run was opened (or by a racing writer) is still caught when it is loaded."""
    loaded = Run.open(run)
    damage(loaded.checkpoints[-1].path, "flip")
    with pytest.raises(CoopetitionError, match="corrupt checkpoint .*step_00000000030"):
        load_checkpoint(loaded.build_model(loaded.bank()), loaded.checkpoints[-1])


def snapshot(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def assert_same_run(run: Path, reference: Path) -> None:
    for table in ("eval.csv", "train.csv"):
        assert (run / table).read_bytes() == (reference / table).read_bytes()
    ours, theirs = (RunReader(r).checkpoints(verify=True) for r in (run, reference))
    assert [(c.step, c.sha256) for c in ours] == [(c.step, c.sha256) for c in theirs]
