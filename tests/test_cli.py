"""The ``purerl`` command line: a short training run, its outputs, one-line input errors, and
the listings of algorithms, environments and config fields."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys

import pytest
from helpers import subprocess_xla_flags

from purerl import ppo, probes
from purerl.cli import main, parse_overrides

TRAIN = ["train", "ppo", "--env", "CartPole-v1", "--total-timesteps", "20000"]


def test_train_writes_run_directory(tmp_path, capsys, purerl_jit_level0):
    assert main([*TRAIN, "--seeds", "2", "--out", str(tmp_path), "--name", "t"]) == 0
    run = tmp_path / "t"
    for name in ("config.json", "metrics.json", "metrics.csv", "learning_curve.png",
                 "summary.txt"):
        assert (run / name).is_file(), name

    config = json.loads((run / "config.json").read_text())
    assert (config["algo"], config["seeds"], config["env"]) == ("ppo", 2, "CartPole-v1")
    num_updates = ppo.Config(total_timesteps=20000).num_updates

    metrics = json.loads((run / "metrics.json").read_text())
    assert len(metrics["eval_return"]) == 2
    for row in metrics["eval_return"]:
        assert len(row) == num_updates
        assert isinstance(row[-1], float) and math.isfinite(row[-1])
    assert None in metrics["eval_return"][0]  # NaN (not evaluated) is written as null

    with (run / "metrics.csv").open(newline="") as f:
        rows = list(csv.reader(f))
    header = rows[0]
    assert header[:3] == ["seed", "update", "env_steps"]
    assert "eval_return" in header
    assert len(rows) - 1 == 2 * num_updates

    out = capsys.readouterr().out
    assert "final eval return" in out and str(run) in out
    assert "final eval return" in (run / "summary.txt").read_text(encoding="utf-8")


def test_module_entry_point(tmp_path):
    """``python -m purerl train ...`` as documented (the only subprocess training run)."""
    result = subprocess.run([sys.executable, "-m", "purerl", *TRAIN, "--out", str(tmp_path)],
                            capture_output=True, text=True, timeout=300,
                            env={**os.environ, "XLA_FLAGS": subprocess_xla_flags(level=0)})
    assert result.returncode == 0, result.stderr
    (run,) = tmp_path.iterdir()
    assert run.name.startswith("ppo_CartPole-v1_")
    assert (run / "metrics.csv").is_file()


@pytest.mark.parametrize("args, expected", [
    (["--set", "lr"], "key=value"),
    (["--set", "lrr=0.1"], "'lr'"),
    (["--set", "num_envs=abc"], "num_envs"),
    (["--set", "num_minibatches=3"], "must divide"),
    (["--env", "CartPol-v1"], "CartPole-v1"),
])
def test_bad_train_input_is_one_line_exit_2(args, expected, tmp_path, capsys):
    assert main([*TRAIN, "--out", str(tmp_path), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("purerl: error: ") and err.count("\n") == 1, err
    assert expected in err
    assert not any(tmp_path.iterdir())  # nothing written, nothing compiled


@pytest.mark.parametrize("command", ["train", "list"])
def test_unknown_algorithm(command, capsys):
    assert main([command, "ppp"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown algorithm 'ppp'" in err and "'ppo'" in err


def test_argparse_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main([*TRAIN, "--seeds", "0"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("purerl: error: ") and err.count("\n") == 1 and "--seeds" in err


def test_list_shows_algorithms_and_gymnax_environments(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "ppo" in out and "CartPole-v1" in out and "Breakout-MinAtar" in out


def test_list_shows_the_probe_environments(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert probes.IDS and all(env_id in out for env_id in probes.IDS)


def config_table_rows(out: str) -> dict[str, str]:
    """Field name -> its line, for the lines of ``out`` that start with a ppo config field."""
    names = set(ppo.Config.field_names())
    return {line.split()[0]: line for line in out.splitlines()
            if line.split() and line.split()[0] in names}


def test_list_algo_prints_every_config_field_with_its_help(capsys):
    assert main(["list", "ppo"]) == 0
    rows = config_table_rows(capsys.readouterr().out)
    assert set(rows) == set(ppo.Config.field_names())
    assert "Adam learning rate" in rows["lr"] and "traced" in rows["lr"]
    assert "must be > 0" in rows["lr"]
    assert "static" in rows["num_envs"] and "traced" not in rows["num_envs"]
    assert "'clip'" in rows["variant"] and "kl_penalty" in rows["variant"]


def test_train_help_prints_the_config_table_of_list_algo(capsys):
    assert main(["list", "ppo"]) == 0
    table = capsys.readouterr().out.strip()
    with pytest.raises(SystemExit) as exc:
        main(["train", "ppo", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "--seeds" in out and table in out


def test_set_values_parse_by_field_type():
    parsed = parse_overrides(["hidden_sizes=32,32", "anneal_lr=false", "lr=3e-4", "num_envs=8",
                              "variant=kl_penalty"], ppo.Config)
    assert parsed == {"hidden_sizes": (32, 32), "anneal_lr": False, "lr": 3e-4, "num_envs": 8,
                      "variant": "kl_penalty"}
    assert type(parsed["num_envs"]) is int and type(parsed["anneal_lr"]) is bool
    for text in ("(64, 64)", "[64,64]", " 64 , 64 "):
        assert parse_overrides([f"hidden_sizes={text}"], ppo.Config) == {"hidden_sizes": (64, 64)}
    for text in ("1", "yes", "True"):
        assert parse_overrides([f"anneal_lr={text}"], ppo.Config) == {"anneal_lr": True}
    with pytest.raises(ValueError, match="anneal_lr"):
        parse_overrides(["anneal_lr=maybe"], ppo.Config)
