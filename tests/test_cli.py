"""Bad input: one line on stderr, exit code 2, nothing written."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from coopetition.cli import build_parser, main


@pytest.mark.parametrize("argv, message", [
    (["--preset", "nope"], "unknown preset"),
    (["--lr", "-0.1"], "train.lr"),
    (["--set", "task.mixture.0.burstiness=2"], "2B <= N"),
    (["--bank", "/no/such/bank.npy"], "not found"),
    (["--set", "train.nope=1"], "unknown field"),
    (["--checkpoints", "every:0"], "interval"),
    (["--set", "train.steps=\"many\""], "train.steps"),
])
def test_bad_train_input_exits_2_and_writes_nothing(tmp_path, capsys, argv, message):
    run_dir = tmp_path / "run"
    assert main(["train", "--run-dir", str(run_dir), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not run_dir.exists()


def test_existing_run_dir_is_not_overwritten(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "precious.txt").write_text("keep me")
    assert main(["train", "--run-dir", str(run_dir), "--steps", "2"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (run_dir / "precious.txt").read_text() == "keep me"


def test_config_file_errors(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\nlr = 1")
    assert main(["train", "--run-dir", str(tmp_path / "r"), "--config", str(bad)]) == 2
    assert "cannot parse" in capsys.readouterr().err
    unknown = tmp_path / "unknown.json"
    unknown.write_text(json.dumps({"train": {"lr": 1e-3, "warmup": 5}}))
    assert main(["train", "--run-dir", str(tmp_path / "r"), "--config", str(unknown)]) == 2
    assert "warmup" in capsys.readouterr().err


def test_resume_refuses_a_new_config(tmp_path, capsys):
    assert main(["train", "--run-dir", str(tmp_path), "--resume", "--lr", "0.1"]) == 2
    assert "--lr" in capsys.readouterr().err


def test_presets_lists_every_preset(capsys):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    for name in ("quick", "c25", "ciwl-only", "icl-only", "mq", "12l", "ih24"):
        assert name in out


def test_console_entry_point_reports_usage_errors_in_one_line():
    proc = subprocess.run([sys.executable, "-m", "coopetition", "train"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "--run-dir" in proc.stderr
    assert "Warning" not in proc.stderr


def test_top_level_listing_matches_each_subcommands_own_help():
    """The static one-line help that ``coopetition --help`` shows is the help each subcommand's builder gives."""
    from coopetition.cli import COMMANDS

    full = build_parser()._subparsers._group_actions[0]
    lazy = build_parser(lazy=True)._subparsers._group_actions[0]
    shown = {a.dest: a.help for a in full._choices_actions}
    assert list(full.choices) == list(lazy.choices) == list(COMMANDS)
    assert shown == {a.dest: a.help for a in lazy._choices_actions} == {n: h for n, (h, _) in COMMANDS.items()}


def _light(code: str) -> subprocess.CompletedProcess:
    """Runs ``code`` in a fresh interpreter and prints the heavy packages it imported."""
    probe = f"{code}\nimport sys\nprint(sorted(m for m in ('torch', 'pandas', 'transformer_lens') if m in sys.modules))"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env)


def test_top_level_help_and_an_unknown_command_import_neither_torch_nor_pandas():
    for argv, code in ((["--help"], 0), (["bogus"], 2), ([], 2)):
        result = _light(f"from coopetition.cli import main\ntry:\n    main({argv!r})\nexcept SystemExit as e:\n"
                        f"    assert e.code == {code}, e.code")
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines()[-1] == "[]", (argv, result.stdout[-300:])


@pytest.mark.parametrize("argv, message", [
    (["train", "--help"], None),
    (["train", "--steps", "-3", "--run-dir", "/nonexistent/r"], "train.steps"),
    (["train", "--preset", "zzz", "--run-dir", "/nonexistent/r"], "unknown preset"),
    (["train", "--intervene", "ablate:x", "--run-dir", "/nonexistent/r"], "ablate"),
    (["presets"], None),
])
def test_train_help_and_config_mistakes_are_answered_without_torch(argv, message):
    """Parsing and validating a run config needs no torch: the registries and configs import it only to compute."""
    result = _light(f"import contextlib, io, sys\nfrom coopetition.cli import main\nerr = io.StringIO()\n"
                    f"with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):\n"
                    f"    try:\n        code = main({argv!r})\n    except SystemExit as e:\n        code = e.code\n"
                    f"print(code, repr(err.getvalue()))")
    assert result.returncode == 0, result.stderr
    status, heavy = result.stdout.splitlines()[-2:]
    assert heavy == "[]", (argv, status)
    code, err = status.split(" ", 1)
    assert code == ("0" if message is None else "2"), status
    assert message is None or message in err, status
