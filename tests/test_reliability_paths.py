"""A run directory is untrusted input: the one containment rule (``store.contain.contained``) on every spelling of
a path we could think of, and a corpus of hostile run directories, each read by analyze, ``--resume``,
``init_from``, a graft, ``RunReader`` and ``sweep status``: a one-line refusal or a correct result (a hostile
checkpoint skipped and counted), never a traceback, a hang, a read outside the run, or a write into a run that is
only read."""

from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from coopetition.cli import main
from coopetition.errors import DataError
from coopetition.store.contain import CHECKPOINT, CONFIG, RESUME, SOURCE, RunFile, contained
from tests.hostile import Case, check_reader, ckpt

pytestmark = pytest.mark.e2e
STEP = 30  # the checkpoint a hostile entry takes over: analyze's "-2:" then reads 10 and 20 instead of 20 and 30


# ------------------------------------------------------------------------------------------------- the rule
@pytest.fixture
def fake_run(tmp_path) -> Path:
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text("{}")
    for step in (10, 20):
        (run / "checkpoints" / ckpt(step)).write_bytes(b"x")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / ckpt(10)).write_bytes(b"secret")
    return run


def test_a_plain_entry_resolves_inside(fake_run):
    assert contained(fake_run, CHECKPOINT, f"checkpoints/{ckpt(10)}", 10) == (fake_run / "checkpoints" / ckpt(10))
    assert contained(fake_run, CONFIG) == fake_run / "config.json"


BAD_SPELLINGS = {
    "absolute": "{outside}/" + ckpt(10),
    "dotdot": "../outside/" + ckpt(10),
    "inner dotdot": "checkpoints/../../outside/" + ckpt(10),
    "dot": "checkpoints/./" + ckpt(10),
    "double slash": "checkpoints//" + ckpt(10),
    "trailing slash": f"checkpoints/{ckpt(10)}/",
    "backslash": "checkpoints\\" + ckpt(10),
    "NUL": f"checkpoints/{ckpt(10)}\x00.txt",
    "newline": f"checkpoints/{ckpt(10)}\n",
    "fullwidth digit": "checkpoints/step_0000000001\uff10.safetensors",
    "arabic-indic digit": "checkpoints/step_0000000001\u0660.safetensors",
    "cyrillic s": "checkpoints/\u0455tep_00000000010.safetensors",
    "fullwidth slash": "checkpoints\uff0f" + ckpt(10),
    "folder case": "Checkpoints/" + ckpt(10),
    "name case": "checkpoints/STEP_00000000010.safetensors",
    "suffix case": "checkpoints/step_00000000010.SAFETENSORS",
    "other step": "checkpoints/" + ckpt(20),
    "other folder": "resume/" + ckpt(10),
    "top level": ckpt(10),
    "hidden temporary": "checkpoints/.step_00000000010.safetensors.abc.tmp",
    "empty": "",
    "long": "checkpoints/" + "a" * 300,
}


@pytest.mark.parametrize("name", BAD_SPELLINGS)
def test_every_other_spelling_is_refused_naming_the_entry(fake_run, name):
    entry = BAD_SPELLINGS[name].format(outside=fake_run.parent / "outside")
    with pytest.raises(DataError) as err:
        contained(fake_run, CHECKPOINT, entry, 10)
    message = str(err.value)
    assert "checkpoint entry" in message and "\n" not in message


@pytest.mark.parametrize("link", ["file out", "file to another step", "folder out", "folder inside", "loop",
                                  "dangling out"])
def test_symlinks_that_lead_elsewhere_are_refused(fake_run, link):
    target = fake_run / "checkpoints" / ckpt(10)
    outside = fake_run.parent / "outside"
    if link == "file out":
        target.unlink()
        target.symlink_to(outside / ckpt(10))
    elif link == "file to another step":
        target.unlink()
        target.symlink_to(ckpt(20))
    elif link == "folder out":
        shutil.rmtree(fake_run / "checkpoints")
        (fake_run / "checkpoints").symlink_to(outside)
    elif link == "folder inside":
        os.rename(fake_run / "checkpoints", fake_run / "real")
        (fake_run / "checkpoints").symlink_to("real")
    elif link == "loop":
        target.unlink()
        target.symlink_to(target.name)
    else:
        target.unlink()
        target.symlink_to(outside / "nothing")
    with pytest.raises(DataError, match="checkpoint entry"):
        contained(fake_run, CHECKPOINT, f"checkpoints/{ckpt(10)}", 10)


def test_a_symlinked_run_dir_and_a_hard_link_inside_are_fine(fake_run):
    link = fake_run.parent / "link"
    link.symlink_to(fake_run)
    path = contained(link, CHECKPOINT, f"checkpoints/{ckpt(10)}", 10)
    assert path == fake_run.resolve() / "checkpoints" / ckpt(10)
    hard = fake_run / "checkpoints" / ckpt(30)
    os.link(fake_run.parent / "outside" / ckpt(10), hard)  # its path is inside; its bytes are checked by hash
    assert contained(fake_run, CHECKPOINT, f"checkpoints/{ckpt(30)}", 30) == hard


def test_a_new_run_folder_is_declared_as_one_run_file(fake_run):
    assert contained(fake_run, SOURCE, "sources/main_step_500.safetensors").name == "main_step_500.safetensors"
    for bad in ("sources/.hidden.safetensors", "sources/x.pt", "sources/a/b.safetensors", "checkpoints/x.safetensors"):
        with pytest.raises(DataError, match="graft source entry"):
            contained(fake_run, SOURCE, bad)
    figures = RunFile("figure", "figures", r"[a-z_]+\.html")
    assert contained(fake_run, figures, "figures/progress.html") == fake_run.resolve() / "figures" / "progress.html"
    with pytest.raises(ValueError):
        RunFile("bad", "../up", r".*")
    assert contained(fake_run, RESUME, f"resume/{ckpt(10)}", 10).parent.name == "resume"


# ------------------------------------------------------------------------------------------------- forged files
def forge_header_length(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[:8] = struct.pack("<Q", 1 << 40)
    path.write_bytes(bytes(data))


def forge_many_tensors(path: Path) -> None:
    header = json.dumps({f"t{i}": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]} for i in range(100_000)})
    path.write_bytes(struct.pack("<Q", len(header)) + header.encode())


def forge_shape(path: Path) -> None:
    tensors = load_file(path)
    with open(path, "rb") as handle:
        length = struct.unpack("<Q", handle.read(8))[0]
        metadata = json.loads(handle.read(length))["__metadata__"]
    name = next(iter(tensors))
    tensors[name] = torch.zeros(*[2 * d for d in tensors[name].shape] or [2])
    save_file(tensors, str(path), metadata=metadata)


def forge_eval_index(path: Path) -> None:
    tensors = load_file(path)
    with open(path, "rb") as handle:
        length = struct.unpack("<Q", handle.read(8))[0]
        metadata = json.loads(handle.read(length))["__metadata__"]
    tensors["flip/classes"][0, 0] = 10**6
    save_file(tensors, str(path), metadata=metadata)


def sparse(path: Path, size: int) -> None:
    path.unlink(missing_ok=True)
    with open(path, "wb") as handle:
        handle.truncate(size)


def huge_listed(case: Case, rel: str, size: int) -> None:
    """A sparse file of ``size`` bytes that the manifest lists with that size (and some sha256: hashing it would be
    the denial of service)."""
    sparse(case.run / rel, size)
    manifest = case.manifest()
    next(e for e in manifest["checkpoints"] if e["file"] == rel).update(bytes=size, sha256="0" * 64)
    case.write_manifest(manifest)


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


# ------------------------------------------------------------------------------------------------- the corpus
def entry(case: Case, text: str, step: int = STEP) -> None:
    manifest = case.manifest()
    next(e for e in manifest["checkpoints"] if e["step"] == step)["file"] = text
    case.write_manifest(manifest)


def replace_file(case: Case, rel: str, how: str) -> None:
    path = case.run / rel
    path.unlink()
    if how == "symlink out":
        path.symlink_to(case.outside / rel)
    elif how == "fifo":
        os.mkfifo(path)
    elif how == "hard link inside":
        os.link(case.outside / rel, path)


def forged(case: Case, rel: str, forge, section: str = "checkpoints", step: int | None = STEP) -> None:
    forge(case.run / rel)
    case.relist(section, step, case.run / rel)


def set_config(case: Case, edit) -> None:
    meta = case.config()
    edit(meta)
    case.write_config(meta)


def bank_file(case: Case, kind: str) -> None:
    path = case.outside / "bank.npy"
    if kind == "fifo":
        os.mkfifo(path)
    else:
        shape = (2, 2, 2) if kind == "wrong shape" else (48, 6, 16)
        np.save(path, np.random.default_rng(0).normal(size=shape).astype(np.float32))
        case.allowed_outside.append(path)  # the policy: a bank file the config names may be opened (then checked)
    set_config(case, lambda m: m["config"]["bank"].update(source=str(path)))


C = f"checkpoints/{ckpt(STEP)}"
SKIP = (STEP,)  # analysed, with the hostile checkpoint skipped and counted
WHOLE = ()  # analysed, nothing to skip (the spelling is fine)
REFUSED = "refused"
CORPUS = {
    "ckpt absolute path": (lambda c: entry(c, str(c.outside / C)), SKIP),
    "ckpt ../outside": (lambda c: entry(c, "../../../outside/" + C), SKIP),
    "ckpt checkpoints/../..": (lambda c: entry(c, "checkpoints/../../../../outside/" + C), SKIP),
    "ckpt checkpoints/./x": (lambda c: entry(c, "checkpoints/./" + ckpt(STEP)), SKIP),
    "ckpt checkpoints//x": (lambda c: entry(c, "checkpoints//" + ckpt(STEP)), SKIP),
    "ckpt backslash": (lambda c: entry(c, "checkpoints\\" + ckpt(STEP)), SKIP),
    "ckpt NUL byte": (lambda c: entry(c, C + "\x00"), SKIP),
    "ckpt unicode digit": (lambda c: entry(c, C.replace("30.", "3\uff10.")), SKIP),
    "ckpt cyrillic letter": (lambda c: entry(c, C.replace("step", "\u0455tep")), SKIP),
    "ckpt folder case": (lambda c: entry(c, "Checkpoints/" + ckpt(STEP)), SKIP),
    "ckpt name case": (lambda c: entry(c, C.upper()), SKIP),
    "ckpt other step's file": (lambda c: entry(c, f"checkpoints/{ckpt(20)}"), SKIP),
    "ckpt file symlink out": (lambda c: replace_file(c, C, "symlink out"), SKIP),
    "ckpt symlink to another step": (lambda c: (c.run / C).unlink() or (c.run / C).symlink_to(ckpt(20)), SKIP),
    "ckpt symlink loop": (lambda c: (c.run / C).unlink() or (c.run / C).symlink_to(ckpt(STEP)), SKIP),
    "ckpt FIFO": (lambda c: replace_file(c, C, "fifo"), SKIP),
    "ckpt hard link inside": (lambda c: replace_file(c, C, "hard link inside"), WHOLE),
    "checkpoints/ symlinked out": (lambda c: shutil.rmtree(c.run / "checkpoints")
                                   or (c.run / "checkpoints").symlink_to(c.outside / "checkpoints"), REFUSED),
    "run dir itself a symlink": (None, WHOLE),
    "ckpt header length 2^40": (lambda c: forged(c, C, forge_header_length), REFUSED),
    "ckpt 100k tensors": (lambda c: forged(c, C, forge_many_tensors), REFUSED),
    "ckpt tensor shape not the model's": (lambda c: forged(c, C, forge_shape), REFUSED),
    "ckpt huge (sparse, listed)": (lambda c: huge_listed(c, C, 1 << 33), SKIP),
    "eval sets absolute path": (lambda c: c.write_manifest({**c.manifest(), "eval_sets": {
        **c.manifest()["eval_sets"], "file": str(c.outside / "eval_sets.safetensors")}}), REFUSED),
    "eval sets symlink out": (lambda c: replace_file(c, "eval_sets.safetensors", "symlink out"), REFUSED),
    "eval sets index out of range": (lambda c: forged(c, "eval_sets.safetensors", forge_eval_index, "eval_sets",
                                                      None), REFUSED),
    "config.json symlink out": (lambda c: replace_file(c, "config.json", "symlink out"), REFUSED),
    "config.json FIFO": (lambda c: replace_file(c, "config.json", "fifo"), REFUSED),
    "config.json nested 100k deep": (lambda c: (c.run / "config.json").write_text(nested(100_000)), REFUSED),
    "config.json huge (sparse)": (lambda c: sparse(c.run / "config.json", 1 << 33), REFUSED),
    "config absurd model size": (lambda c: set_config(c, lambda m: m["config"]["model"].update(
        n_layers=256, d_model=65536, n_heads=1)), REFUSED),
    "config wrong type": (lambda c: set_config(c, lambda m: m["config"]["train"].update(steps="many")), REFUSED),
    "config unknown field": (lambda c: set_config(c, lambda m: m["config"]["model"].update(evil=1)), REFUSED),
    "config eval n_seqs 10^12": (lambda c: set_config(c, lambda m: m["config"]["eval"].update(n_seqs=10**12)),
                                 REFUSED),
    "config derived is a list": (lambda c: set_config(c, lambda m: m.update(derived=[1])), REFUSED),
    "config bank /dev/zero": (lambda c: set_config(c, lambda m: m["config"]["bank"].update(source="/dev/zero")),
                              REFUSED),
    "config bank a FIFO": (lambda c: bank_file(c, "fifo"), REFUSED),
    "config bank of another shape": (lambda c: bank_file(c, "wrong shape"), REFUSED),
    "config bank of other content": (lambda c: bank_file(c, "other content"), REFUSED),
    "config edited eval seed": (lambda c: set_config(c, lambda m: m["config"]["seeds"].update(eval=99)), WHOLE),
    "manifest symlink out": (lambda c: replace_file(c, "manifest.json", "symlink out"), REFUSED),
    "manifest nested 100k deep": (lambda c: (c.run / "manifest.json").write_text(nested(100_000)), REFUSED),
    "manifest huge (sparse)": (lambda c: sparse(c.run / "manifest.json", 1 << 34), REFUSED),
    "manifest sha256 not hex": (lambda c: c.write_manifest(json.loads(json.dumps(c.manifest()).replace(
        '"sha256": "', '"sha256": "zz'))), REFUSED),
    "manifest step true": (lambda c: c.write_manifest(json.loads(json.dumps(c.manifest()).replace(
        '"step": 30', '"step": true'))), REFUSED),
    "manifest bytes 2^62": (lambda c: c.write_manifest(json.loads(json.dumps(c.manifest()).replace(
        '"bytes": ', '"bytes": 4611686018427387904', 1))), REFUSED),
    "eval.csv symlink out": (lambda c: replace_file(c, "eval.csv", "symlink out"), REFUSED),
    "eval.csv FIFO": (lambda c: replace_file(c, "eval.csv", "fifo"), REFUSED),
    "eval.csv huge (sparse)": (lambda c: sparse(c.run / "eval.csv", 1 << 34), REFUSED),
    "eval.csv wrong columns": (lambda c: (c.run / "eval.csv").write_text("a,b\n1,2\n"), REFUSED),
    "eval.csv text values": (lambda c: (c.run / "eval.csv").write_text(
        "step,sequences,evaluator,metric,value\n0,0,flip,in_context_acc,lots\n"), REFUSED),
    ".lock a FIFO": (lambda c: os.mkfifo(c.run / ".lock"), WHOLE),
    ".lock symlink out": (lambda c: (c.run / ".lock").symlink_to(c.outside / "config.json"), WHOLE),
    "resume/ symlinked out": (lambda c: shutil.rmtree(c.run / "resume")
                              or (c.run / "resume").symlink_to(c.outside / "resume"), WHOLE),
    "resume state absolute path": (lambda c: c.write_manifest(json.loads(json.dumps(c.manifest()).replace(
        '"resume/', f'"{c.outside}/resume/'))), WHOLE),
}
READERS = ("analyze", "resume", "init_from", "graft", "RunReader", "sweep status")
TALLY: dict[str, dict[str, int]] = {}


def build_case(trained_run: Path, tmp_path: Path, name: str) -> Case:
    case = Case.make(trained_run, tmp_path / "case")
    mutate, _ = CORPUS[name]
    if mutate is None:  # the run dir is reached through a symlink
        link = case.root / "link"
        link.symlink_to(case.run)
        case.run = link
    else:
        mutate(case)
    return case


@pytest.mark.parametrize("name", CORPUS)
def test_hostile_run_dirs(trained_run, tmp_path, name):
    _, expected = CORPUS[name]
    case = build_case(trained_run, tmp_path, name)
    outcomes = {reader: check_reader(case, reader) for reader in READERS if reader != "resume"}
    analyzed = outcomes["analyze"]
    if expected == REFUSED:
        assert not analyzed.ok, f"analyze accepted {name}"
    else:
        assert analyzed.ok, f"analyze refused {name}: {analyzed.message}"
        assert tuple(analyzed.detail["skipped"]) == expected, analyzed.detail
        assert analyzed.detail["steps"] == ([10, 20] if expected else [20, 30])
    outcomes["resume"] = check_reader(case, "resume")  # last: it may change the run
    for reader, outcome in outcomes.items():
        tally = TALLY.setdefault(reader, {"tried": 0, "refused": 0, "read": 0})
        tally["tried"] += 1
        tally["refused" if not outcome.ok else "read"] += 1


def test_hostile_corpus_tally():
    """Runs after the corpus (file order): prints how many hostile run dirs each reader refused or read."""
    if not TALLY:
        pytest.skip("the corpus did not run in this session")
    for reader, tally in TALLY.items():
        print(f"hostile corpus, {reader}: {tally}")
    assert TALLY["analyze"]["tried"] == len(CORPUS)


def test_the_watch_catches_a_reader_that_trusts_the_manifest(trained_run, tmp_path, monkeypatch):
    """The corpus' checks have teeth: with containment replaced by ``RUN / entry``, a checkpoint entry pointing
    outside is read, and the open watch says so."""
    import coopetition.store.reader as reader_module

    case = build_case(trained_run, tmp_path, "ckpt absolute path")
    monkeypatch.setattr(reader_module, "contained", lambda run, kind, entry=None, step=None: Path(run, entry or kind.name))
    with pytest.raises(AssertionError, match="read outside the run"):
        check_reader(case, "RunReader")


# ------------------------------------------------------------------------------------------------- --resume's eval sets
def resume_from_20(run: Path, capsys) -> int:
    """Damage step 30's resume state so ``--resume`` falls back to step 20 and evaluates step 30 again."""
    state = run / "resume" / ckpt(30)
    data = bytearray(state.read_bytes())
    data[-1] ^= 1
    state.write_bytes(bytes(data))
    code = main(["train", "--resume", str(run), "--no-progress"])
    capsys.readouterr()
    return code


def test_resume_scores_on_the_runs_own_eval_sets_whatever_the_seed_says(trained_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    meta = json.loads((run / "config.json").read_text())
    meta["config"]["seeds"]["eval"] += 1  # edited after training: rebuilt sets would differ
    (run / "config.json").write_text(json.dumps(meta))
    assert resume_from_20(run, capsys) == 0
    assert (run / "eval.csv").read_bytes() == (trained_run / "eval.csv").read_bytes()


@pytest.mark.parametrize("edit, message", [
    ("eval sets replaced", "corrupt eval sets"),
    ("eval sets unlisted", "lists no eval sets"),
    ("bank seed edited", "not the bank it was trained on"),
    ("bank shape edited", "not the bank it was trained on"),
])
def test_resume_refuses_eval_sets_or_a_bank_that_are_not_the_runs(trained_run, tmp_path, capsys, edit, message):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    meta, manifest = json.loads((run / "config.json").read_text()), json.loads((run / "manifest.json").read_text())
    if edit == "eval sets replaced":
        shutil.copy(run / "checkpoints" / ckpt(0), run / "eval_sets.safetensors")
    elif edit == "eval sets unlisted":
        del manifest["eval_sets"]
    elif edit == "bank seed edited":
        meta["config"]["bank"]["seed"] += 1
    else:
        meta["config"]["bank"]["classes"] = 64
    (run / "config.json").write_text(json.dumps(meta))
    (run / "manifest.json").write_text(json.dumps(manifest))
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert main(["train", "--resume", str(run), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
