"""Incremental analysis and fan-out: results cached per checkpoint (sha256) and settings are read back instead of
recomputed (counted through ``AnalysisResult.computed``, not timed); after ``zoom`` only the new checkpoints are
computed; tables always equal a from-scratch analysis byte for byte; damaged cache entries are recomputed; an
interrupted analysis keeps what it finished; ``--executor local`` (real submitit processes) and the Slurm path
(stand-in ``sbatch``/``srun``/``sacct`` that really run the job array) give the single process's tables."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import pytest

from coopetition.analysis.cache import Store
from coopetition.analysis.config import AnalysisConfig
from coopetition.analysis.fanout import FanOut, chunks
from coopetition.pipeline import analyze as _analyze
from coopetition.cli import main
from coopetition.errors import ConfigError
from coopetition.train.loop import train
from tests.conftest import tiny_run_config

SPARSE = dict(steps=30, checkpoint_schedule="every:10", eval_schedule="every:15", resume_schedule="at:10")
# cheap but covering: forward-pass analyses with batched variants, the figures, and strategies (no model)
CONFIG = AnalysisConfig(analyses=("strategies", "ablation", "progress", "clamp"), n_seqs=24, workers=1,
                        settings={"clamp": {"strengths": (0.0, 0.5, 1.0)}})
MODEL = ("ablation", "progress", "clamp")


@pytest.fixture(scope="module")
def sparse_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("incremental") / "run"
    train(tiny_run_config(**SPARSE), run, progress=False)
    return run


@pytest.fixture
def run(sparse_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(sparse_run, copy)
    return copy


def analyze(run: Path, spec: str, config: AnalysisConfig, out: Path, **kwargs):
    """``analyze`` with one cache per run for the whole test (the default is one beside each output folder)."""
    if kwargs.get("use_cache", True):
        kwargs.setdefault("cache_dir", run.parent / "cache")
    return _analyze(run, spec, config, out, **kwargs)


def _tables(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.glob("*.csv"))}


def _scratch(run: Path, spec: str, out: Path, config: AnalysisConfig = CONFIG) -> dict[str, bytes]:
    result = analyze(run, spec, config, out, progress_bar=False, use_cache=False)
    assert sum(result.reused.values()) == 0
    return _tables(out)


def test_a_second_identical_analyze_computes_nothing_and_writes_the_same_tables(run, tmp_path):
    first = analyze(run, "0:", CONFIG, tmp_path / "a", progress_bar=False)
    assert first.computed == {name: 4 for name in MODEL} and first.reused == {name: 0 for name in MODEL}
    second = analyze(run, "0:", CONFIG, tmp_path / "b", progress_bar=False)
    assert second.computed == {name: 0 for name in MODEL} and second.reused == {name: 4 for name in MODEL}
    assert _tables(tmp_path / "b") == _tables(tmp_path / "a") == _scratch(run, "0:", tmp_path / "c")
    assert {p.name for p in (tmp_path / "b").glob("*.html")} == {p.name for p in (tmp_path / "a").glob("*.html")}
    # other settings are other entries; changing only how the work is spread reuses them
    assert analyze(run, "0:", AnalysisConfig(**{**CONFIG.__dict__, "n_seqs": 20}), tmp_path / "d",
                   progress_bar=False).computed == {name: 4 for name in MODEL}
    spread = AnalysisConfig(**{**CONFIG.__dict__, "workers": 2, "threads": 2})
    assert analyze(run, "0:", spread, tmp_path / "e", progress_bar=False).computed == {name: 0 for name in MODEL}
    # adding an analysis computes only that one
    more = AnalysisConfig(**{**CONFIG.__dict__, "analyses": (*CONFIG.analyses, "patching")})
    assert analyze(run, "0:", more, tmp_path / "f", progress_bar=False).computed == {
        **{name: 0 for name in MODEL}, "patching": 4}


def test_after_zoom_only_the_new_checkpoints_are_computed_and_tables_cover_all(run, tmp_path, capsys):
    analyze(run, "0:", CONFIG, tmp_path / "a", progress_bar=False)
    assert main(["zoom", str(run), "--window", "2:8", "--checkpoints", "every:2", "--no-progress"]) == 0
    result = analyze(run, "0:", CONFIG, tmp_path / "b", progress_bar=False)
    assert result.steps == (0, 2, 4, 6, 8, 10, 20, 30)
    assert result.computed == {name: 4 for name in MODEL} and result.reused == {name: 4 for name in MODEL}
    assert _tables(tmp_path / "b") == _scratch(run, "0:", tmp_path / "c")
    # a longer range over the same checkpoints: nothing new
    assert analyze(run, "2:30", CONFIG, tmp_path / "d", progress_bar=False).computed == {n: 0 for n in MODEL}


def test_an_analysis_that_reads_the_eval_log_is_recomputed_when_the_log_changes(run, tmp_path):
    """The scorecard's run-level checks (flip peak, ...) come from eval.csv and its layer-0 reference from the
    checkpoint nearest the flip peak: both are part of its cache key."""
    import pandas as pd

    config = AnalysisConfig(analyses=("scorecard", "progress"), n_seqs=16, workers=1)
    # the scorecard brings the ablation and clamp analyses whose tables it reads
    assert analyze(run, "0:", config, tmp_path / "a", progress_bar=False).computed == {
        "ablation": 4, "clamp": 4, "scorecard": 4, "progress": 4}
    log = pd.read_csv(run / "eval.csv")
    flip = (log["evaluator"] == "flip") & (log["metric"] == "in_context_acc")
    log.loc[flip, "value"] = 0.1
    log.loc[flip & (log["step"] == 15), "value"] = 0.9
    log.to_csv(run / "eval.csv", index=False)
    again = analyze(run, "0:", config, tmp_path / "b", progress_bar=False)
    assert again.computed == {"ablation": 0, "clamp": 0, "scorecard": 4, "progress": 0}
    assert _tables(tmp_path / "b") == _scratch(run, "0:", tmp_path / "c", config)


def test_damaged_planted_or_foreign_cache_entries_are_recomputed_never_trusted(run, tmp_path):
    analyze(run, "0:", CONFIG, tmp_path / "a", progress_bar=False)
    truth = _tables(tmp_path / "a")
    entries = sorted((run.parent / "cache").glob("*/*/*.json"))
    assert len(entries) == 12
    damage = [
        lambda p: p.write_bytes(p.read_bytes()[:100]),  # truncated
        lambda p: p.write_text("[1, 2, 3]"),  # wrong shape
        lambda p: p.write_text(json.dumps({**json.loads(p.read_text()), "step": 999})),  # another checkpoint's
        lambda p: p.write_text(p.read_text().replace('"metric":"', '"metric":{"x":"', 1)),  # not JSON any more
        lambda p: p.write_bytes(b"\xff\xfe\x00garbage"),  # not text
    ]

    def planted_value(p):  # a value that is not a scalar
        entry = json.loads(p.read_text())
        table = next(iter(entry["tables"]))
        entry["tables"][table][0]["value"] = [1, 2]
        p.write_text(json.dumps(entry))

    def foreign_column(p):  # a column the table does not have
        entry = json.loads(p.read_text())
        table = next(iter(entry["tables"]))
        entry["tables"][table][0]["evil"] = 1
        p.write_text(json.dumps(entry))

    def symlink(p):
        target = tmp_path / "elsewhere.json"
        target.write_bytes(p.read_bytes())
        p.unlink()
        p.symlink_to(target)

    for fn, path in zip([*damage, planted_value, foreign_column, symlink], entries):
        fn(path)
    result = analyze(run, "0:", CONFIG, tmp_path / "b", progress_bar=False)
    assert sum(result.computed.values()) == 8 and sum(result.reused.values()) == 4
    assert _tables(tmp_path / "b") == truth
    # recomputed entries were rewritten: now everything is reused
    assert sum(analyze(run, "0:", CONFIG, tmp_path / "c", progress_bar=False).computed.values()) == 0


def test_an_interrupted_analysis_keeps_what_it_finished_and_the_old_folder(run, tmp_path, monkeypatch):
    from coopetition.analysis.clamp import ClampAnalysis

    out = tmp_path / "out"
    analyze(run, "0:10", CONFIG, out, progress_bar=False)
    before = _tables(out)
    original, calls = ClampAnalysis.checkpoint_rows, []

    def failing(self, checkpoint):
        calls.append(checkpoint.step)
        if checkpoint.step == 30:
            raise KeyboardInterrupt
        return original(self, checkpoint)

    monkeypatch.setattr(ClampAnalysis, "checkpoint_rows", failing)
    with pytest.raises(KeyboardInterrupt):
        analyze(run, "0:", CONFIG, out, progress_bar=False)
    assert calls == [20, 30] and _tables(out) == before  # the folder swap is still all-or-nothing
    monkeypatch.setattr(ClampAnalysis, "checkpoint_rows", original)
    result = analyze(run, "0:", CONFIG, out, progress_bar=False)
    # step 20 was finished (every analysis) and kept; step 30 is computed again, all of it
    assert result.computed == {"ablation": 1, "progress": 1, "clamp": 1}
    assert _tables(out) == _scratch(run, "0:", tmp_path / "scratch")


def test_no_cache_the_default_cache_and_a_cache_dir_elsewhere(run, tmp_path):
    analyze(run, "0:", CONFIG, tmp_path / "a", progress_bar=False, use_cache=False)
    assert not (tmp_path / "a_cache").exists() and not (tmp_path / "cache").exists()
    # default: beside the output folder (the run untouched when the output is elsewhere) ...
    result = _analyze(run, "0:", CONFIG, tmp_path / "b", progress_bar=False)
    assert sum(result.computed.values()) == 12 and len(list((tmp_path / "b_cache").glob("*/*/*.json"))) == 12
    assert not (run / "analysis_cache").exists()
    # ... and RUN/analysis_cache for the default output RUN/analysis
    assert sum(_analyze(run, "0:", CONFIG, progress_bar=False).computed.values()) == 12
    assert len(list((run / "analysis_cache").glob("*/*/*.json"))) == 12 and (run / "analysis" / "index.html").exists()
    result = analyze(run, "0:", CONFIG, tmp_path / "d", progress_bar=False, cache_dir=tmp_path / "elsewhere")
    assert sum(result.computed.values()) == 12 and len(list((tmp_path / "elsewhere").glob("*/*/*.json"))) == 12
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="analysis cache"):
        analyze(run, "0:", CONFIG, tmp_path / "c", progress_bar=False, cache_dir=tmp_path / "file")
    with pytest.raises(ConfigError, match="--executor needs the analysis cache"):
        analyze(run, "0:", CONFIG, tmp_path / "c", progress_bar=False, use_cache=False, fan_out=FanOut())


def test_store_round_trips_floats_exactly():
    import math

    values = [0.1, 1 / 3, float("nan"), float("inf"), -0.0, 1e-300, 5, True, None, "L0H1"]
    store = Store(Path(os.environ.get("TMPDIR", "/tmp")) / f"store-{os.getpid()}")
    rows = [{"step": 7, "sequences": 1, "value": v} for v in values]
    store.save("ablation", "k" * 64, "s" * 64, 7, {"ablation": rows})
    back = store.load("ablation", "k" * 64, "s" * 64, 7, {"ablation": ("step", "sequences", "value")})
    shutil.rmtree(store.root)
    for a, b in zip(values, [r["value"] for r in back["ablation"]]):
        assert type(a) is type(b) and (a == b or (math.isnan(a) and math.isnan(b)))
        assert math.copysign(1, a) == math.copysign(1, b) if isinstance(a, float) and not math.isnan(a) else True


def test_chunks_are_contiguous_and_cover_everything():
    assert chunks(list(range(7)), 3) == [[0, 1, 2], [3, 4], [5, 6]]
    assert chunks([1, 2], 5) == [[1], [2]]
    assert sum(chunks(list(range(100)), 7), []) == list(range(100))


def test_local_executor_with_three_jobs_gives_the_single_process_tables(run, tmp_path, capsys):
    truth = _scratch(run, "0:", tmp_path / "single")
    argv = ["analyze", str(run), "--checkpoint-range", "0:", "--analyses", ",".join(CONFIG.analyses),
            "--n-seqs", "24", "--clamp-strengths", "0,0.5,1", "--no-progress", "--out", str(tmp_path / "fan")]
    assert main([*argv, "--executor", "local", "--jobs", "3"]) == 0
    assert "computed 12, reused 0" in capsys.readouterr().out
    assert _tables(tmp_path / "fan") == truth
    logs = tmp_path / "fan_cache" / "jobs"
    assert len(list(logs.glob("*_submitted.pkl"))) == 3  # three real submitit jobs


SBATCH = """#!/bin/sh
n=$(($(cat "{bin}/count" 2>/dev/null || echo 0) + 1)); echo $n > "{bin}/count"
cp "$1" "{bin}/submission_$n.sh"
last=$(sed -n 's/^#SBATCH --array=0-\\([0-9]*\\).*/\\1/p' "$1")
for i in $(seq 0 ${{last:-0}}); do
  (sleep 1; SLURM_ARRAY_JOB_ID=$((4241 + n)) SLURM_ARRAY_TASK_ID=$i SLURM_JOB_ID=$((5000 + i)) SLURM_NTASKS=1 \\
   SLURM_JOB_NUM_NODES=1 SLURM_NODEID=0 SLURM_JOB_NODELIST=n1 SLURM_PROCID=0 SLURM_LOCALID=0 sh "$1") \\
   >> "{bin}/jobs.log" 2>&1 &
done
echo "Submitted batch job $((4241 + n))"
"""
SRUN = """#!/bin/sh
while [ $# -gt 0 ]; do case "$1" in --output|--error) shift 2;; --*) shift;; *) break;; esac; done
exec "$@"
"""


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    """``sbatch`` that really runs each array task (in the background, with Slurm's environment variables), an
    ``srun`` that runs its command, and an ``sacct`` that knows nothing (so only result files finish a job)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("sbatch", SBATCH.format(bin=bin_dir)), ("srun", SRUN),
                       ("sacct", "#!/bin/sh\nprintf 'JobID|State|NodeList\\n'\n")):
        path = bin_dir / name
        path.write_text(text)
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return bin_dir


def test_slurm_executor_submits_one_array_with_the_flags_and_merges_its_results(run, tmp_path, fake_slurm, capsys):
    truth = _scratch(run, "0:", tmp_path / "single")
    argv = ["analyze", str(run), "--checkpoint-range", "0:", "--analyses", ",".join(CONFIG.analyses),
            "--n-seqs", "24", "--clamp-strengths", "0,0.5,1", "--no-progress", "--out", str(tmp_path / "fan"),
            "--executor", "slurm", "--jobs", "2", "--partition", "cpu", "--time", "2", "--mem", "3", "--cpus", "2"]
    assert main(argv) == 0, (fake_slurm / "jobs.log").read_text()
    script = (fake_slurm / "submission_1.sh").read_text()
    for line in ("#SBATCH --array=0-1%2", "#SBATCH --time=2", "#SBATCH --mem=3GB", "#SBATCH --cpus-per-task=2",
                 "#SBATCH --partition=cpu", "#SBATCH --job-name=coopetition-analyze"):
        assert line in script
    assert _tables(tmp_path / "fan") == truth
    assert not (fake_slurm / "submission_2.sh").exists()
    # everything is cached now: a second run submits nothing
    capsys.readouterr()
    assert main(argv) == 0 and "computed 0, reused 12" in capsys.readouterr().out
    assert not (fake_slurm / "submission_2.sh").exists()


def test_slurm_without_sbatch_and_bad_executor_flags_are_one_line_errors(run, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch/srun
    base = ["analyze", str(run), "--checkpoint-range", "0:", "--analyses", "progress", "--no-progress",
            "--out", str(tmp_path / "o")]
    assert main([*base, "--executor", "slurm"]) == 2
    assert "needs Slurm's sbatch and srun" in capsys.readouterr().err
    assert main([*base, "--executor", "local", "--jobs", "0"]) == 2
    assert "--jobs must be >= 1" in capsys.readouterr().err
    assert main([*base, "--executor", "local", "--no-cache"]) == 2
    assert not (tmp_path / "o").exists()


def test_entry_validation_rejects_each_bad_row_shape_and_accepts_good_ones():
    """``_validated``'s all-rows-at-once checks, on hand-built entries: each defect alone makes the entry absent."""
    from coopetition.analysis.cache import FORMAT, _validated

    tables = {"t": ("step", "metric", "value")}

    def entry(rows):
        return {"format": FORMAT, "analysis": "a", "key": "k", "sha256": "s", "step": 7, "tables": {"t": rows}}

    good = [{"step": 7, "metric": "acc", "value": 0.5}, {"step": 7, "metric": "n", "value": None}]
    assert _validated(entry(good), "a", "k", "s", 7, tables) == {"t": good}
    assert _validated(entry([]), "a", "k", "s", 7, tables) == {"t": []}
    bad = [
        [*good, [7, "acc", 0.5]],  # a row that is not a dict
        [*good, {"step": 8, "metric": "acc", "value": 0.5}],  # another step's row
        [*good, {"metric": "acc", "value": 0.5}],  # a row without its step
        [*good, {"step": 7, "metric": "acc", "value": 0.5, "evil": 1}],  # a column the table does not have
        [*good, {"step": 7, "metric": {"x": 1}, "value": 0.5}],  # a value that is not a scalar
        [*good, {"step": 7, "metric": "acc", "value": [0.5]}],
    ]
    for rows in bad:
        assert _validated(entry(rows), "a", "k", "s", 7, tables) is None, rows
    assert _validated({**entry(good), "tables": {"t": "rows"}}, "a", "k", "s", 7, tables) is None
