"""Helpers for the hostile-run tests: a case folder (the run, a decoy ``outside/`` copy of it, a sweep that points at
the run), every reader run the way a user would, a watch on every ``open`` (an audit hook), and snapshots that
show whether a reader wrote into a run it only reads.

Layout of a case::

    CASE/sweep/sweep.toml, CASE/sweep/runs/POINT   the run (the sweep's one point, so ``sweep status`` reads it)
    CASE/outside/                                    a complete copy of the run: the files a hostile entry points at
    CASE/scratch/                                    analyze's output and anything else a reader may write
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import sys
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

import torch

from coopetition.cli import main
from coopetition.errors import CoopetitionError
from coopetition.store.checkpoint import file_sha256

SWEEP = """
name = "hostile"
out = "{out}"
[base]
preset = "quick"
[set]
bank.classes = 48
bank.exemplars = 6
bank.dim = 16
model.d_model = 16
model.n_heads = 2
model.n_layers = 2
train.steps = 30
[grid]
seeds = [0]
[executor]
cluster = "debug"
"""

# ------------------------------------------------------------------------------------------------- watching opens
_OPENED: list[str] | None = None


def _audit(event: str, args: tuple) -> None:
    if _OPENED is not None and event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
        _OPENED.append(os.fsdecode(args[0]))


sys.addaudithook(_audit)  # once per process; records only inside ``watch_opens``


@contextlib.contextmanager
def watch_opens() -> Iterator[list[str]]:
    """Every path opened by Python code (``open``, ``io.open``, ``os.open``, numpy, pandas) while inside."""
    global _OPENED
    opened: list[str] = []
    _OPENED = opened
    try:
        yield opened
    finally:
        _OPENED = None


def outside_reads(opened: list[str], case: Path, allowed: list[Path]) -> list[str]:
    """Opened paths (after symlinks) inside the case folder but outside every ``allowed`` folder."""
    case = case.resolve()
    roots = [p.resolve() for p in allowed]
    bad = []
    for name in opened:
        try:
            real = Path(os.path.realpath(name))
        except (OSError, ValueError):
            continue
        if real.is_relative_to(case) and not any(real.is_relative_to(r) for r in roots):
            bad.append(str(real))
    return bad


def snapshot(root: Path) -> dict[str, tuple]:
    """Every entry under ``root`` (not following symlinks) with its kind, hash, size and mtime."""
    found = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder, name)
            info = path.lstat()
            rel = str(path.relative_to(root))
            if path.is_symlink():
                found[rel] = ("link", os.readlink(path))
            elif path.is_file():
                found[rel] = ("file", _digest(path) if info.st_size < 1 << 26 else "big", info.st_size,
                              info.st_mtime_ns, info.st_ino)
            elif path.is_dir():
                found[rel] = ("dir",)
            else:
                found[rel] = ("other", info.st_mode)
    return found


def _digest(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


# ------------------------------------------------------------------------------------------------- a case
@dataclass
class Case:
    root: Path
    run: Path
    sweep_file: Path
    outside: Path
    scratch: Path
    allowed_outside: list[Path] = field(default_factory=list)  # e.g. a bank file the config names (the policy)

    @classmethod
    def make(cls, trained: Path, root: Path) -> "Case":
        root.mkdir(parents=True, exist_ok=True)
        sweep_file = root / "sweep" / "sweep.toml"
        sweep_file.parent.mkdir()
        sweep_file.write_text(SWEEP.format(out=root / "sweep"))
        run = root / "sweep" / "runs" / "seeds=0"
        shutil.copytree(trained, run)
        shutil.copytree(trained, root / "outside")
        (root / "scratch").mkdir()
        return cls(root, run, sweep_file, root / "outside", root / "scratch")

    def manifest(self) -> dict:
        return json.loads((self.run / "manifest.json").read_text())

    def write_manifest(self, data: dict) -> None:
        (self.run / "manifest.json").write_text(json.dumps(data))

    def config(self) -> dict:
        return json.loads((self.run / "config.json").read_text())

    def write_config(self, data: dict) -> None:
        (self.run / "config.json").write_text(json.dumps(data))

    def relist(self, section: str, step: int | None, path: Path) -> None:
        """An attacker who can write the folder can rewrite the manifest too: make it vouch for ``path``."""
        manifest = self.manifest()
        entries = [manifest[section]] if step is None else [e for e in manifest[section] if e["step"] == step]
        for entry in entries:
            entry.update(bytes=path.stat().st_size, sha256=file_sha256(path))
        self.write_manifest(manifest)


def ckpt(step: int) -> str:
    return f"step_{step:011d}.safetensors"


# ------------------------------------------------------------------------------------------------- readers
@dataclass
class Outcome:
    reader: str
    ok: bool
    message: str = ""
    detail: dict = field(default_factory=dict)


def _cli(argv: list[str]) -> tuple[int, str]:
    err, threads = io.StringIO(), torch.get_num_threads()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            code = main(argv)
    finally:
        torch.set_num_threads(threads)
    text = err.getvalue()
    lines = [line for line in text.strip().splitlines() if not line.startswith("coopetition: warning:")]
    assert "Traceback" not in text, text
    if code == 2:
        assert len(lines) == 1, text
    return code, lines[0] if lines else ""


def read_analyze(case: Case, target: Path | None = None) -> Outcome:
    """``coopetition analyze`` on the last two checkpoints (strategies and progress), its output outside the run.
    Figures are left out: they are built from the output tables, never from the run (and cost 4 s a call)."""
    out = case.scratch / "analysis"
    shutil.rmtree(out, ignore_errors=True)
    with mock.patch("coopetition.pipeline.run.write_figures", lambda out_dir, frames, analyses, **_: {}):
        code, message = _cli(["analyze", str(target or case.run), "--checkpoint-range", "-2:", "--analyses",
                              "strategies,progress", "--n-seqs", "8", "--workers", "1", "--no-progress",
                              "--out", str(out)])
    assert code in (0, 2), message
    detail = {}
    if code == 0:
        import pandas as pd

        detail["steps"] = sorted(pd.read_csv(out / "progress.csv").step.unique().tolist())
        detail["skipped"] = pd.read_csv(out / "skipped_checkpoints.csv").step.tolist()
        assert detail["steps"], "analyze succeeded on no checkpoint"
    return Outcome("analyze", code == 0, message, detail)


def read_resume(case: Case) -> Outcome:
    code, message = _cli(["train", "--resume", str(case.run), "--no-progress"])
    assert code in (0, 2), message
    if code == 0:  # a correct result: a finished run whose last checkpoint (resume's own work) verifies
        from coopetition.store.checkpoint import verify_file
        from coopetition.store.reader import RunReader

        # Resume continues from the last verified state and does not re-hash the earlier checkpoints (a run of
        # 8 GB would pay for it on every restart); one corrupted before the kill stays listed, and analyze skips
        # and counts it.
        reader = RunReader(case.run)
        infos = reader.checkpoints()
        assert infos and infos[-1].step == reader.run_config().train.steps, [i.step for i in infos]
        assert verify_file(infos[-1].path, infos[-1].bytes, infos[-1].sha256) is None
    return Outcome("resume", code == 0, message)


def _like_model():
    from tests.conftest import tiny_run_config
    from coopetition.store.build import derive_sizes, load_run_bank, model_for

    config = tiny_run_config()
    bank = load_run_bank(config)
    return model_for(config, derive_sizes(config, bank)), bank.fingerprint()


def _library(reader: str, call: Callable[[], object]) -> Outcome:
    try:
        call()
    except CoopetitionError as err:
        assert str(err) and "\n" not in str(err), repr(str(err))
        return Outcome(reader, False, str(err))
    return Outcome(reader, True)


def read_init_from(case: Case) -> Outcome:
    from coopetition.store.sources import load_source_model, resolve_sources
    from tests.conftest import tiny_run_config

    model, fingerprint = _like_model()

    def load() -> None:
        for source in resolve_sources(tiny_run_config(init_from=f"{case.run}@last"), model, fingerprint):
            model.load_state_dict(load_source_model(source.path, model, source.bytes, source.sha256).state_dict())
    return _library("init_from", load)


def read_graft(case: Case) -> Outcome:
    from coopetition.store.sources import intervene_from_runs

    model, fingerprint = _like_model()
    return _library("graft", lambda: intervene_from_runs((f"graft_out:{case.run}@20:0",), model, fingerprint))


def read_run_reader(case: Case) -> Outcome:
    """``RunReader`` directly: each call either answers or is one DataError; a listed checkpoint that verifies loads."""
    from coopetition.store.checkpoint import load_tensors
    from coopetition.store.reader import RunReader
    from coopetition.task.evaluators import EVAL_SETS_LAYOUT
    from coopetition.store.build import checkpoint_bytes_bound

    def read() -> None:
        reader = RunReader.open(case.run)
        for call in (reader.config, reader.run_config, reader.derived, reader.manifest, reader.resume_points,
                     reader.eval_table, reader.train_table, lambda: reader.eval_sets(EVAL_SETS_LAYOUT)):
            with contextlib.suppress(CoopetitionError):
                call()
        bound = checkpoint_bytes_bound(reader.run_config(), reader.derived())  # as analyze: no hashing 8 GB
        good, _ = reader.verified_checkpoints(bound)
        for info in good[-1:]:
            load_tensors(info.path, "cpu", info.bytes, info.sha256)

    return _library("RunReader", read)


def read_sweep_status(case: Case) -> Outcome:
    code, message = _cli(["sweep", "status", str(case.sweep_file)])
    assert code == 0, message  # status reports on what it can read; it never fails on a run's content
    return Outcome("sweep status", True, message)


READ_ONLY = {"analyze": read_analyze, "init_from": read_init_from, "graft": read_graft, "RunReader": read_run_reader,
             "sweep status": read_sweep_status}


def check_reader(case: Case, name: str) -> Outcome:
    """Run one reader on the case and check the invariants: a clean outcome (the reader asserts that), no read
    outside the run (besides what the policy allows), and, for a read-only reader, the run exactly as before."""
    before = snapshot(case.run)
    allowed = [case.run, case.scratch, *case.allowed_outside]
    if name == "sweep status":
        allowed.append(case.sweep_file.parent)
    with watch_opens() as opened:
        outcome = READ_ONLY[name](case) if name in READ_ONLY else read_resume(case)
    bad = outside_reads(opened, case.root, allowed)
    assert not bad, f"{name} read outside the run: {bad[:3]}"
    if name in READ_ONLY or not outcome.ok:
        after = snapshot(case.run)
        assert after == before, f"{name} changed the run: {set(after.items()) ^ set(before.items())}"
    return outcome
