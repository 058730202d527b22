"""SWEEP.toml -> points: the cartesian product, readable run names, the seeds shorthand, and every mistake as one
line with exit code 2 before anything is written or submitted."""

from __future__ import annotations

from pathlib import Path

import pytest

from coopetition.cli import main
from coopetition.sweep.expand import expand, point_name
from coopetition.sweep.spec import read_sweep

SWEEPS = Path(__file__).resolve().parent.parent / "sweeps"
TINY = (SWEEPS / "quick_seeds_ci.toml").read_text().split("[grid]")[0]  # base + tiny [set], no grid/executor


def sweep_file(tmp_path: Path, grid: str, extra: str = "", head: str = TINY) -> Path:
    path = tmp_path / "s.toml"
    path.write_text(f"{head}\n[grid]\n{grid}\n{extra}\n")
    return path


def test_grid_is_the_cartesian_product_in_file_order(tmp_path):
    grid = 'seeds.init = [1, 2]\ntrain.lr = [0.001, 3e-4]\n"task.mixture.0.burstiness" = [0, 1]'
    spec = read_sweep(sweep_file(tmp_path, grid), out=tmp_path / "out")
    points = expand(spec)
    assert len(points) == 8
    assert points[0].name == "seeds.init=1__train.lr=0.001__task.mixture.0.burstiness=0"
    assert points[1].name == "seeds.init=1__train.lr=0.001__task.mixture.0.burstiness=1"  # last axis fastest
    assert points[-1].values == {"seeds.init": 2, "train.lr": 0.0003, "task.mixture.0.burstiness": 1}
    last = points[-1].config
    assert (last["seeds"]["init"], last["train"]["lr"], last["task"]["mixture"][0]["burstiness"]) == (2, 3e-4, 1)
    assert last["train"]["steps"] == 20 and last["bank"]["classes"] == 48  # the fixed [set] overrides
    assert last["preset"] == "quick" and last["bank"]["within_class_noise"] == 0.4  # the rest is the preset's
    assert points[-1].run_dir == tmp_path / "out" / "runs" / points[-1].name
    assert points[-1].group == "train.lr=0.0003__task.mixture.0.burstiness=1"  # the non-seed axes
    assert not (tmp_path / "out").exists()


def test_seeds_shorthand_sets_init_and_train_seed(tmp_path):
    points = expand(read_sweep(sweep_file(tmp_path, "seeds = [0, 1, 2, 3]")))
    assert [p.name for p in points] == ["seeds=0", "seeds=1", "seeds=2", "seeds=3"]
    assert [(p.config["seeds"]["init"], p.config["seeds"]["train"]) for p in points] == [(s, s) for s in range(4)]
    assert {p.config["seeds"]["eval"] for p in points} == {1}  # every seed scored on the same eval sequences
    assert {p.group for p in points} == {"all"}


def test_default_out_and_names_of_odd_values(tmp_path):
    spec = read_sweep(sweep_file(tmp_path, 'train.checkpoint_schedule = ["every:10", "log:5+at:3"]'))
    assert spec.out == Path("checkpoints/sweeps/s") and spec.name == "s"
    assert [p.name for p in expand(spec)] == ["train.checkpoint_schedule=every-10",
                                              "train.checkpoint_schedule=log-5+at-3"]
    assert point_name({"a": True, "b": [1, 2], "c": 1e-5}) == "a=true__b=-1,2-__c=1e-05"


def test_base_config_file_is_relative_to_the_sweep_file(tmp_path):
    (tmp_path / "base.toml").write_text("[train]\nlr = 0.002\n")
    head = TINY.replace('preset = "quick"', 'preset = "quick"\nconfig = "base.toml"')
    points = expand(read_sweep(sweep_file(tmp_path, "seeds = [0]", head=head)))
    assert points[0].config["train"]["lr"] == 0.002


def test_the_shipped_sweep_files_expand_to_four_valid_points():
    for name in ("quick_seeds.toml", "quick_seeds_ci.toml"):
        spec = read_sweep(SWEEPS / name)
        assert [p.name for p in expand(spec)] == [f"seeds={s}" for s in range(4)]
    full = expand(read_sweep(SWEEPS / "quick_seeds.toml"))[0].config
    assert full["train"]["steps"] == 18_000 and full["bank"]["classes"] == 12800  # the real quick preset


@pytest.mark.parametrize("grid, extra, message", [
    ("train.lrr = [1, 2]", "", "grid: override 'train.lrr': unknown field 'lrr'"),
    ("train.lr = []", "", "grid axis 'train.lr' must be a non-empty list"),
    ("train.lr = 0.001", "", "must be a non-empty list"),
    ("train.lr = [0.001, 0.001]", "", "repeats a value"),
    ("", "", "[grid] is missing or empty"),
    ("seeds = [1]\nseeds.init = [2]", "", "cannot parse sweep file"),  # TOML: seeds both a value and a table
    ("seeds = [1]\n\"seeds.train\" = [2]", "", "seeds shorthand"),
    ("train.lr = [0.001, -1.0]", "", "sweep point train.lr=-1.0: train.lr must be in (0, 10)"),
    ("seeds = [0]", "[executor]\ncluster = \"sge\"", "executor.cluster must be one of"),
    ("seeds = [0]", "[executor]\nmax_parallel = 0", "executor.max_parallel must be an integer >= 1"),
    ("seeds = [0]", "[executor]\nslurm_partitio = \"gpu\"", "unknown setting 'slurm_partitio'"),
    ("seeds = [0]", "[executor]\nwhatever = 1", "unknown setting 'whatever'"),
    ("seeds = [0]", "bogus = 1", "grid axis 'bogus' must be a non-empty list"),
    ("seeds = [0]\ntrain.checkpoint_schedule = [\"every:0\"]", "", "the interval must be > 0"),
    ("bank.source = [\"/no/such/bank.npy\"]", "", "bank.source file not found"),
])
def test_bad_sweep_files_exit_2_with_one_line_and_write_nothing(tmp_path, capsys, grid, extra, message):
    path = sweep_file(tmp_path, grid, extra)
    out = tmp_path / "out"
    code = main(["sweep", "run", str(path), "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith("coopetition: error:"), err
    assert message in err
    assert not out.exists()


def test_missing_file_and_bad_toml_and_unknown_top_level_key(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("[grid\nseeds = [0]")
    typo = tmp_path / "typo.toml"
    typo.write_text("[grids]\nseeds = [0]\n")
    for path, message in ((tmp_path / "none.toml", "sweep file not found"), (bad, "cannot parse sweep file"),
                          (typo, "unknown key(s) grids")):
        for command in ("run", "status", "aggregate"):
            assert main(["sweep", command, str(path)]) == 2
            err = capsys.readouterr().err.strip()
            assert message in err and len(err.splitlines()) == 1, err


def test_slurm_without_sbatch_is_one_line_and_submits_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))  # no sbatch, no srun
    path = sweep_file(tmp_path, "seeds = [0, 1]", '[executor]\ncluster = "slurm"\nslurm_partition = "gpu"')
    out = tmp_path / "out"
    assert main(["sweep", "run", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "cluster 'slurm' needs Slurm's sbatch and srun on PATH" in err and len(err.splitlines()) == 1
    assert not out.exists()
    assert main(["sweep", "run", str(path), "--out", str(out), "--cluster", "auto", "--dry-run"]) == 0
    assert "cluster local (auto)" in capsys.readouterr().out  # what auto picks without srun


def test_dry_run_prints_the_points_and_writes_nothing(tmp_path, capsys):
    path = sweep_file(tmp_path, "seeds = [0, 1]\ntrain.lr = [0.001, 0.002]")
    out = tmp_path / "out"
    assert main(["sweep", "run", str(path), "--out", str(out), "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("4 points") and lines[1].split() == ["point", "action", "state", "run", "dir"]
    assert lines[2].split()[:4] == ["seeds=0__train.lr=0.001", "start", "not", "started"]
    assert not out.exists()


def test_a_failed_job_is_reported_by_its_own_exception():
    from submitit.core.utils import FailedJobError

    from coopetition.sweep.submit import error_line

    wrapped = FailedJobError("Job (task=0) failed during processing with trace:\n----------------------\n"
                             "Traceback (most recent call last):\n  File \"x.py\", line 1\n"
                             "coopetition.errors.DataError: bank /b.npy is not an array\n\n----------------------\n"
                             "You can check full logs with 'job.stderr(0)' and 'job.stdout(0)'or at paths:\n  - /l.err")
    assert error_line(wrapped) == "coopetition.errors.DataError: bank /b.npy is not an array"
    assert error_line(ValueError("bad\nthing")) == "ValueError: thing"
