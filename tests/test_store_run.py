"""The run handle and the store's pieces behind it: the typed manifest, the writer's one context manager, and
``Run`` offering everything analyses, resume, zoom and notebooks read from a run."""

from __future__ import annotations

import copy
import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from coopetition.errors import DataError
from coopetition.store.lock import is_locked
from coopetition.store.manifest import CheckpointEntry, Manifest, load_manifest
from coopetition.store.reader import RunReader
from coopetition.store.run import Run
from coopetition.store.writer import RunWriter

SHA = "ab" * 32
GOOD = {
    "checkpoints": [{"step": 0, "sequences": 0, "file": "checkpoints/step_00000000000.safetensors", "bytes": 10,
                     "sha256": SHA},
                    {"step": 10, "sequences": 80, "file": "checkpoints/step_00000000010.safetensors", "bytes": 10,
                     "sha256": SHA}],
    "resume": [{"step": 10, "file": "resume/step_00000000010.safetensors", "bytes": 5, "sha256": SHA}],
    "eval_sets": {"file": "eval_sets.safetensors", "bytes": 7, "sha256": SHA},
    "sources": [{"role": "graft", "index": 0, "spec": "graft_out:r@10:0", "step": 10, "sha256_of_source": SHA,
                 "file": "sources/graft_0.safetensors", "bytes": 3, "sha256": SHA}],
    "zoom_eval": {"file": "eval_zoom.csv", "bytes": 40, "sha256": SHA},
    "sessions": [{"started": "2026-01-01T00:00:00+00:00", "from_step": 0, "threads": None, "device": "cpu",
                  "how": "fresh"}],
}


def test_a_manifest_loads_into_typed_entries_and_writes_back_the_same_json():
    manifest = load_manifest(copy.deepcopy(GOOD), Path("m.json"))
    assert manifest.checkpoints[1] == CheckpointEntry(file="checkpoints/step_00000000010.safetensors", bytes=10,
                                                      sha256=SHA, step=10, sequences=80)
    assert manifest.committed and manifest.sources[0].role == "graft" and manifest.sessions[0].threads is None
    assert manifest.to_json() == GOOD  # key for key, in the writer's order
    assert list(manifest.to_json()["checkpoints"][0]) == ["step", "sequences", "file", "bytes", "sha256"]
    assert Manifest().to_json() == {"checkpoints": [], "resume": []} and not Manifest().committed


def _edit(path: list, value) -> dict:
    data = copy.deepcopy(GOOD)
    node = data
    for key in path[:-1]:
        node = node[key]
    if value is KeyError:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return data


@pytest.mark.parametrize("path, value", [
    (["checkpoints", 0, "step"], True),  # JSON true is not step 1
    (["checkpoints", 0, "step"], -1),
    (["checkpoints", 0, "step"], 10**11),
    (["checkpoints", 0, "sequences"], 2.5),
    (["checkpoints", 0, "bytes"], 1 << 62),
    (["checkpoints", 0, "sha256"], "zz" * 32),
    (["checkpoints", 0, "file"], 3),
    (["checkpoints", 0, "step"], KeyError),
    (["checkpoints", 0, "extra"], 1),
    (["checkpoints", 1, "step"], 0),  # a step listed twice
    (["resume"], {"step": 1}),
    (["eval_sets", "bytes"], "7"),
    (["zoom_eval", "bytes"], (256 << 20) + 1),
    (["sources", 0, "role"], "anything"),
    (["sources", 0, "index"], 1 << 17),
    (["sources", 0, "spec"], "x" * 5000),
    (["sessions"], [GOOD["sessions"][0]] * 65),
    (["sessions", 0, "threads"], False),
    (["sessions", 0, "how"], "x" * 100),
    (["surprise"], []),
])
def test_each_bad_field_of_a_manifest_is_one_line_naming_the_file(path, value):
    with pytest.raises(DataError) as err:
        load_manifest(_edit(path, value), Path("RUN/manifest.json"))
    message = str(err.value)
    assert message.startswith("malformed manifest RUN/manifest.json: ") and "\n" not in message, message


def test_a_manifest_that_is_not_an_object_is_refused():
    for data in ([], "x", None, {"checkpoints": {}}, {"checkpoints": [[1, 2]]}):
        with pytest.raises(DataError, match="malformed manifest"):
            load_manifest(data, Path("m.json"))


def _checkpoint(writer: RunWriter, step: int) -> None:
    writer.save_checkpoint(step, step * 8, {"w": torch.full((2,), float(step))}, {"s": torch.zeros(1)}, {})


def test_opened_removes_a_fresh_run_stopped_before_its_first_commit(tmp_path):
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        with RunWriter.opened(run, resume=False) as writer:
            writer.write_json("config.json", {"config": {}})
            writer.write_eval_sets({"t": torch.zeros(3, dtype=torch.int64)}, {})  # listed, but no checkpoint
            assert is_locked(run)
            raise KeyboardInterrupt
    assert not run.exists()  # the folder this run made goes
    mine = tmp_path / "mine"
    mine.mkdir()
    with pytest.raises(RuntimeError):
        with RunWriter.opened(mine, resume=False) as writer:
            writer.write_json("config.json", {"config": {}})
            raise RuntimeError("boom")
    assert mine.is_dir() and not any(mine.iterdir())  # a folder the user made stays, empty


def test_opened_keeps_a_committed_run_and_always_releases_the_lock(tmp_path):
    run = tmp_path / "run"
    with pytest.raises(RuntimeError):
        with RunWriter.opened(run, resume=False, keep_resume=frozenset({0})) as writer:
            writer.write_json("config.json", {"config": {}})
            for step in (0, 10, 20, 30):
                _checkpoint(writer, step)
            raise RuntimeError("after the commit")
    assert not is_locked(run) and not (run / ".lock").exists()
    manifest = RunReader(run).manifest()
    assert [e.step for e in manifest.checkpoints] == [0, 10, 20, 30]
    assert [e.step for e in manifest.resume] == [0, 20, 30]  # the newest two and the kept step
    assert sorted(p.name for p in (run / "resume").iterdir()) == [e.file.split("/")[1] for e in manifest.resume]
    with pytest.raises(RuntimeError):  # a resumed run is never removed, whatever happens
        with RunWriter.opened(run, resume=True) as writer:
            writer.truncate_after(10)
            raise RuntimeError("while resuming")
    assert not is_locked(run) and [e.step for e in RunReader(run).manifest().checkpoints] == [0, 10]
    holder = RunWriter.reopen(run)
    try:
        with pytest.raises(Exception, match="being written by another process"):
            with RunWriter.opened(run, resume=True):
                pass
        assert (run / "checkpoints").is_dir()  # the refused writer touched nothing
    finally:
        holder.close()


def test_run_offers_what_analyses_notebooks_resume_and_zoom_read(trained_run, tmp_path):
    run = Run.open(trained_run)
    for name in ("open", "path", "config", "checkpoints", "skipped", "report_skipped", "eval_table",
                 "evaluator_specs", "bank", "build_model", "check_added", "intervened", "eval_sets", "eval_data",
                 "probe_data", "steps", "checkpoint", "network_at", "model_at", "eval_batch", "manifest"):
        assert hasattr(run, name), name
    assert run.steps == tuple(c.step for c in run.checkpoints) == (0, 10, 20, 30) and run.skipped == ()
    assert run.manifest().committed and run.checkpoint("last").step == 30
    assert run.bank() is run.bank()  # read once per handle
    clone = pickle.loads(pickle.dumps(run))  # a spawned analysis worker gets the handle without the bank
    assert clone._bank is None and clone.path == run.path and clone.config == run.config
    assert set(run.eval_data(run.bank(), ("flip", "icl"), 4)) == {"flip", "icl"}

    damaged = tmp_path / "damaged"
    shutil.copytree(trained_run, damaged)
    target = damaged / "checkpoints" / "step_00000000010.safetensors"
    target.write_bytes(target.read_bytes()[:-1] + b"\0")
    checked = Run.open(damaged)
    assert checked.steps == (0, 20, 30) and [i.step for i, _ in checked.skipped] == [10]
    listed = Run.open(damaged, verify=False)  # resume and zoom: nothing hashed until it is loaded
    assert listed.steps == (0, 10, 20, 30)
    with pytest.raises(DataError, match="step_00000000010"):
        listed.model_at(10)


def test_run_open_refuses_an_edited_config_and_a_malformed_manifest(trained_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["checkpoints"][0]["step"] = True
    (run / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match="malformed manifest"):
        Run.open(run)
    shutil.copy(trained_run / "manifest.json", run / "manifest.json")
    meta = json.loads((run / "config.json").read_text())
    meta["config"]["train"]["lr"] = -1
    (run / "config.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match="config.json"):
        Run.open(run)


def test_store_sits_below_train_and_analysis_and_imports_config_at_the_top():
    """The run handle lives in ``store``: nothing there reaches up into ``train``, ``analysis`` or the apps, and
    ``config`` (below ``store``) is imported at module level, never late inside a function."""
    import ast

    from tests.test_layering import PACKAGE, graph

    above = ("coopetition.train", "coopetition.analysis", "coopetition.plots", "coopetition.pipeline",
             "coopetition.cli", "coopetition.zoom", "coopetition.sweep")
    for module, targets in graph().items():
        if module.startswith("coopetition.store"):
            assert not {t for t in targets if t.startswith(above)}, module
    for path in (PACKAGE / "store").glob("*.py"):
        for func in (n for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.FunctionDef)):
            late = [n.module for n in ast.walk(func) if isinstance(n, ast.ImportFrom)]
            assert not [m for m in late if m and m.startswith(("coopetition.config", "coopetition.train"))], path
