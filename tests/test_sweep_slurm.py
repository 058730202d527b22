"""The Slurm path without a cluster: stand-in ``sbatch``/``srun``/``sacct`` scripts on PATH take the job array that
submitit writes, so the sbatch parameters, the job ids in sweep.json and the status mapping are checked for real."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from coopetition.cli import main

SWEEPS = Path(__file__).resolve().parent.parent / "sweeps"
SBATCH = """#!/bin/sh
n=$(($(cat "{bin}/count" 2>/dev/null || echo 0) + 1)); echo $n > "{bin}/count"
cp "$1" "{bin}/submission_$n.sh"
echo "Submitted batch job $((4241 + n))"
"""
SACCT = """#!/bin/sh
printf 'JobID|State|NodeList\\n4242_0|PENDING|None\\n4242_1|RUNNING|n1\\n4242_2|FAILED|n2\\n4242_3|TIMEOUT|n3\\n'
"""


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("sbatch", SBATCH.format(bin=bin_dir)), ("sacct", SACCT), ("srun", "#!/bin/sh\n")):
        path = bin_dir / name
        path.write_text(text)
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return bin_dir


def test_the_shipped_sweep_file_becomes_one_slurm_job_array(fake_slurm, tmp_path, capsys):
    sweep, out = SWEEPS / "quick_seeds.toml", tmp_path / "out"
    assert main(["sweep", "run", str(sweep), "--out", str(out), "--dry-run"]) == 0
    assert "cluster slurm (auto)" in capsys.readouterr().out  # auto picks Slurm where srun exists

    assert main(["sweep", "run", str(sweep), "--out", str(out)]) == 1  # returns at once; sacct says one failed
    script = (fake_slurm / "submission_1.sh").read_text()
    for line in ("#SBATCH --array=0-3%2", "#SBATCH --time=60", "#SBATCH --mem=4GB", "#SBATCH --cpus-per-task=1",
                 "#SBATCH --job-name=sweep-quick_seeds", f"#SBATCH --output={out.resolve()}/submitit_logs/%A_%a/"):
        assert line in script
    points = json.loads((out / "sweep.json").read_text())["points"]
    assert [p["jobs"][0]["job_id"] for p in points] == [f"4242_{i}" for i in range(4)]
    assert all(p["jobs"][0]["cluster"] == "slurm" and "outcome" not in p["jobs"][0] for p in points)
    assert not (out / "runs").exists()  # nothing ran here: the jobs are Slurm's

    capsys.readouterr()
    assert main(["sweep", "status", str(sweep), "--out", str(out)]) == 0
    rows = [line.split(maxsplit=3) for line in capsys.readouterr().out.splitlines()[1:]]
    assert [r[2] for r in rows] == ["queued", "running", "failed", "failed"]
    assert rows[2][3].endswith("Slurm state FAILED") and rows[3][3].endswith("Slurm state TIMEOUT")

    # Running it again submits only the failed points (queued and running ones are left to Slurm).
    assert main(["sweep", "run", str(sweep), "--out", str(out)]) == 0
    assert "#SBATCH --array=0-1%2" in (fake_slurm / "submission_2.sh").read_text()
    jobs = [[j["job_id"] for j in p["jobs"]] for p in json.loads((out / "sweep.json").read_text())["points"]]
    assert jobs == [["4242_0"], ["4242_1"], ["4242_2", "4243_0"], ["4242_3", "4243_1"]]


def test_slurm_parameters_reach_sbatch(fake_slurm, tmp_path):
    sweep = tmp_path / "s.toml"
    sweep.write_text((SWEEPS / "quick_seeds.toml").read_text().replace(
        '# slurm_partition = "cpu"', 'slurm_partition = "gpu"\nslurm_array_parallelism = 3\ngpus_per_node = 1'))
    assert main(["sweep", "run", str(sweep), "--out", str(tmp_path / "out"), "--cluster", "slurm"]) in (0, 1)
    script = (fake_slurm / "submission_1.sh").read_text()
    assert "#SBATCH --partition=gpu" in script and "#SBATCH --array=0-3%3" in script
    assert "#SBATCH --gpus-per-node=1" in script


class _Payload:
    """Unpickling this would create ``marker``: status must never unpickle submitit's result files."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_status_reads_the_json_outcome_and_never_unpickles_results(fake_slurm, tmp_path, capsys):
    import pickle

    (fake_slurm / "sacct").write_text("#!/bin/sh\nprintf 'JobID|State|NodeList\\n"
                                      "4242_0|COMPLETED|n0\\n4242_1|COMPLETED|n1\\n"
                                      "4242_2|COMPLETED|n2\\n4242_3|COMPLETED|n3\\n'\n")
    sweep, out = SWEEPS / "quick_seeds.toml", tmp_path / "out"
    assert main(["sweep", "run", str(sweep), "--out", str(out)]) == 0
    marker = tmp_path / "payload-ran"
    for index in range(4):
        folder = out / "submitit_logs" / f"4242_{index}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"4242_{index}_0_result.pkl").write_bytes(pickle.dumps(("success", _Payload(marker))))
    (out / "submitit_logs" / "4242_2" / "coopetition_outcome.json").write_text(
        json.dumps({"outcome": "failed", "error": "ConfigError: planted failure"}))
    capsys.readouterr()
    assert main(["sweep", "status", str(sweep), "--out", str(out)]) == 0
    rows = [line.split(maxsplit=3) for line in capsys.readouterr().out.splitlines()[1:]]
    assert rows[2][2] == "failed" and rows[2][3].endswith("ConfigError: planted failure")
    assert not marker.exists()
