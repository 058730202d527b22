"""Hostile run directories, generated (hypothesis): random mutations of a real tiny run's manifest, config,
checkpoint and eval-set headers and bytes, tables and file-system entries (symlinks, FIFOs, hard links, folders),
each read by every reader. Each reader ends in a clean one-line error or a correct result; none tracebacks, hangs,
opens a file outside the run (an audit hook watches every ``open``), or writes into a run it only reads.

The default profile runs ``EXAMPLES`` examples (about a minute); ``-m slow`` runs ``EXAMPLES_SLOW``. Each prints
how many examples ran and how each reader ended.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.hostile import Case, check_reader, ckpt, file_sha256

pytestmark = pytest.mark.e2e
EXAMPLES, EXAMPLES_SLOW = 80, 600
SETTINGS = dict(deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, database=None)
CHEAP_READERS = ("RunReader", "init_from", "graft", "sweep status")

# ------------------------------------------------------------------------------------------------- values
PATHS = ["{outside}/checkpoints/" + ckpt(30), "../../../outside/checkpoints/" + ckpt(30),
         "checkpoints/../../../../outside/checkpoints/" + ckpt(30), "checkpoints/./" + ckpt(30),
         "checkpoints//" + ckpt(30), "checkpoints\\" + ckpt(30), f"checkpoints/{ckpt(30)}\x00",
         "checkpoints/step_0000000003\uff10.safetensors", "Checkpoints/" + ckpt(30), "checkpoints/" + ckpt(20),
         "resume/" + ckpt(30), "{outside}/eval_sets.safetensors", "../outside/eval_sets.safetensors",
         "eval_sets.safetensors", "/dev/zero", "/proc/self/environ", "{outside}/config.json", "{outside}/bank.npy",
         "{outside}/fifo.npy", "sources/x.safetensors", ""]
SPECIAL_INTS = [0, 1, -1, 7, 30, 2**31, 2**40, 2**63, -(2**63), 10**30, 65536]
values = st.recursive(
    st.none() | st.booleans() | st.sampled_from(SPECIAL_INTS) | st.integers(-3, 40)
    | st.sampled_from([0.5, -0.0, 1e308, 1e-300]) | st.sampled_from(PATHS) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=2),
    max_leaves=4)


def leaf_paths(data: Any, prefix: tuple = ()) -> list[tuple]:
    if isinstance(data, dict):
        return [prefix] * bool(prefix) + [p for k, v in data.items() for p in leaf_paths(v, (*prefix, k))]
    if isinstance(data, list):
        return [prefix] * bool(prefix) + [p for i, v in enumerate(data) for p in leaf_paths(v, (*prefix, i))]
    return [prefix]


def fill(value: Any, case: Case) -> Any:
    if isinstance(value, str):
        return value.replace("{outside}", str(case.outside))
    if isinstance(value, list):
        return [fill(v, case) for v in value]
    if isinstance(value, dict):
        return {k: fill(v, case) for k, v in value.items()}
    return value


def mutate_json(data: Any, draw, case: Case) -> Any:
    """One edit of a JSON document: set a leaf (or a subtree) to a drawn value, delete it, or add an unknown key."""
    paths = leaf_paths(data)
    if not paths or paths == [()]:
        return fill(draw(values), case)
    path = draw(st.sampled_from([p for p in paths if p]))
    node = data
    for key in path[:-1]:
        node = node[key]
    how, value = draw(st.sampled_from(["set", "set", "delete", "unknown"])), fill(draw(values), case)
    if how == "delete" and isinstance(node, dict):
        del node[path[-1]]
    elif how == "delete":
        node.pop(path[-1])
    elif how == "unknown" and isinstance(node, dict):
        node[f"{path[-1]}_x"] = value
    else:
        node[path[-1]] = value
    return data


# ------------------------------------------------------------------------------------------------- mutations
TENSOR_FILES = [f"checkpoints/{ckpt(s)}" for s in (0, 10, 20, 30)] + [f"resume/{ckpt(s)}" for s in (20, 30)] \
    + ["eval_sets.safetensors"]
RUN_FILES = TENSOR_FILES + ["config.json", "manifest.json", "eval.csv", "train.csv"]


def relist(case: Case, rel: str) -> None:
    """Make the manifest vouch for the file's new bytes, as an attacker who can write the folder can."""
    manifest = case.manifest()
    path = case.run / rel
    if not path.is_file() or path.is_symlink():
        return
    for entry in [*manifest.get("checkpoints", []), *manifest.get("resume", []), manifest.get("eval_sets", {})]:
        if isinstance(entry, dict) and entry.get("file") == rel:
            entry.update(bytes=path.stat().st_size, sha256=file_sha256(path))
    case.write_manifest(manifest)


def edit_header(path: Path, draw, case: Case) -> None:
    data = path.read_bytes()
    if len(data) < 9:  # an earlier edit left no header to edit: truncate it further instead
        path.write_bytes(data[:max(0, len(data) - 1)])
        return
    (length,) = struct.unpack("<Q", data[:8])
    try:  # an earlier edit may have broken the header: then only the edits that need no parsed header apply
        json.loads(data[8:8 + length])
        parsed = 8 + length < len(data)
    except ValueError:
        parsed = False
    how = draw(st.sampled_from(["length", "byte", "json", "truncate", "data byte"] if parsed
                               else ["length", "byte", "truncate"]))
    if how == "length":
        data = struct.pack("<Q", draw(st.sampled_from([0, 1, 2, max(0, length - 1), length + 1, 2**24, 2**40, 2**64 - 1])))\
            + data[8:]
    elif how == "byte":
        at = draw(st.integers(0, min(len(data), 8 + length) - 1))
        data = data[:at] + bytes([draw(st.integers(0, 255))]) + data[at + 1:]
    elif how == "json":
        header = mutate_json(json.loads(data[8:8 + length]), draw, case)
        text = json.dumps(header).encode()
        data = struct.pack("<Q", len(text)) + text + data[8 + length:]
    elif how == "truncate":
        data = data[:draw(st.integers(0, len(data) - 1))]
    else:  # a data byte: the file still parses; only hashes, layouts and index checks can tell
        at = draw(st.integers(8 + length, len(data) - 1))
        data = data[:at] + bytes([data[at] ^ (1 << draw(st.integers(0, 7)))]) + data[at + 1:]
    path.write_bytes(data)


def edit_table(path: Path, draw) -> None:
    text = path.read_text()
    lines = text.splitlines()
    how = draw(st.sampled_from(["truncate", "line", "cell", "header", "binary"]))
    if how == "truncate":
        text = text[:draw(st.integers(0, len(text)))]
    elif how == "line":
        lines.insert(draw(st.integers(0, len(lines))), draw(st.text(max_size=30)))
        text = "\n".join(lines)
    elif how == "cell":
        row = draw(st.integers(0, len(lines) - 1))
        cells = lines[row].split(",")
        cells[draw(st.integers(0, len(cells) - 1))] = draw(st.sampled_from(["", "nan", "1e999", "-1", "x", "99" * 20,
                                                                            '"a,b"', "true"]))
        lines[row] = ",".join(cells)
        text = "\n".join(lines)
    elif how == "header":
        lines[0] = draw(st.sampled_from(["step,sequences,metric,value", "a,b", "", "step;value",
                                         "step,sequences,evaluator,metric,value,extra"]))
        text = "\n".join(lines)
    else:
        path.write_bytes(text.encode()[:40] + draw(st.binary(max_size=40)))
        return
    path.write_text(text)


def edit_entry(case: Case, rel: str, how: str) -> None:
    path = case.run / rel
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
    if how == "symlink out":
        path.symlink_to(case.outside / rel)
    elif how == "fifo":
        os.mkfifo(path)
    elif how == "folder":
        path.mkdir()
    elif how == "hard link to outside" and (case.outside / rel).is_file():
        os.link(case.outside / rel, path)
    elif how == "symlink inside":
        path.symlink_to(case.run / "train.csv")


def mutate(case: Case, draw) -> None:
    """One to three edits of a fresh copy of the run, drawn as they are applied (each sees what the last left)."""
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["manifest", "manifest", "config", "config", "header", "header", "table",
                                     "entry", "folder", "bank"]))
        try:
            apply(case, kind, draw)
        except (OSError, ValueError, KeyError, TypeError, IndexError, UnicodeDecodeError):
            pass  # an edit that does not apply to what earlier edits left (a deleted file, a non-JSON manifest)


def apply(case: Case, kind: str, draw) -> None:
    def plain(rel: str) -> bool:
        return (case.run / rel).is_file() and not (case.run / rel).is_symlink()

    if kind in ("manifest", "config") and plain(f"{kind}.json"):
        path = case.run / f"{kind}.json"
        path.write_text(json.dumps(mutate_json(json.loads(path.read_text()), draw, case)))
    elif kind == "header":
        rel = draw(st.sampled_from(TENSOR_FILES))
        if plain(rel):
            edit_header(case.run / rel, draw, case)
            if draw(st.booleans()):
                relist(case, rel)
    elif kind == "table":
        rel = draw(st.sampled_from(["eval.csv", "train.csv"]))
        if plain(rel):
            edit_table(case.run / rel, draw)
    elif kind == "entry":
        edit_entry(case, draw(st.sampled_from(RUN_FILES + [".lock"])),
                   draw(st.sampled_from(["symlink out", "fifo", "folder", "delete", "hard link to outside",
                                         "symlink inside"])))
    elif kind == "folder":
        edit_entry(case, draw(st.sampled_from(["checkpoints", "resume"])),
                   draw(st.sampled_from(["symlink out", "delete"])))
    elif kind == "bank" and plain("config.json"):
        bank_edit(case, draw)


def bank_edit(case: Case, draw) -> None:
    import numpy as np

    target = draw(st.sampled_from(["fifo.npy", "bank.npy", "bank.npz", "bank.txt"]))
    path = case.outside / target
    if target == "fifo.npy":
        os.mkfifo(path)
    else:
        shape = draw(st.sampled_from([(48, 6, 16), (2, 2, 2), (48, 6)]))
        np.save(path.with_suffix(".npy"), np.zeros(shape, np.float32))
        if target == "bank.npz":
            np.savez(path, feat=np.zeros(shape, np.float32))
        case.allowed_outside.append(path)  # the policy: a config's bank file may be opened, then checked
        case.allowed_outside.append(path.with_suffix(".npy"))
    meta = json.loads((case.run / "config.json").read_text())
    meta["config"]["bank"]["source"] = str(path)
    (case.run / "config.json").write_text(json.dumps(meta))


# ------------------------------------------------------------------------------------------------- the property
def check(trained: Path, workdir: Path, data, tally: dict) -> None:
    shutil.rmtree(workdir, ignore_errors=True)
    case = Case.make(trained, workdir)
    mutate(case, data.draw)
    heavy = data.draw(st.sampled_from(["analyze", "analyze", "resume"]))
    for reader in (*CHEAP_READERS, heavy):
        outcome = check_reader(case, reader)
        if reader == "analyze" and outcome.ok:
            assert set(outcome.detail["steps"]) <= {0, 10, 20, 30}, outcome.detail
        counts = tally.setdefault(reader, {"ok": 0, "refused": 0})
        counts["ok" if outcome.ok else "refused"] += 1
    tally["examples"] = tally.get("examples", 0) + 1


def run_fuzz(trained: Path, examples: int) -> dict:
    tally: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp) / "case"
        settings(max_examples=examples, **SETTINGS)(given(st.data())(
            lambda data: check(trained, workdir, data, tally)))()
    return tally


def test_readers_on_random_hostile_runs(trained_run):
    tally = run_fuzz(trained_run, EXAMPLES)
    print(f"reader fuzz: {tally}")
    assert tally["examples"] >= EXAMPLES // 2
    assert tally["analyze"]["ok"] and tally["analyze"]["refused"]


@pytest.mark.slow
def test_readers_on_random_hostile_runs_many(trained_run):
    print(f"reader fuzz (slow): {run_fuzz(trained_run, EXAMPLES_SLOW)}")
