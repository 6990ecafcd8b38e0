"""``--log tensorboard`` / ``--log wandb`` (purerl.loggers) and ``purerl eval --gif``
(purerl.render): TensorBoard's own event reader gets back exactly the CSV's values, also after a
resume that re-runs updates an interrupted attempt had logged; a resumed run continues its wandb
run; the GIF of an episode is readable and as long as the episode the evaluation measured.

One small PPO CartPole run (2 seeds) is trained by the CLI with both loggers and a checkpoint
halfway; the newest checkpoint is then deleted and the run resumed, as after a crash."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import purerl
from purerl import checkpoint, loggers, render
from purerl.cli import main

SEEDS = 2
UPDATES, HALF = 6, 3


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    pytest.importorskip("tensorboardX")
    pytest.importorskip("wandb")
    mp = pytest.MonkeyPatch()
    mp.setenv("WANDB_MODE", "offline")  # no network, no account
    mp.setenv("WANDB_SILENT", "true")
    out = tmp_path_factory.mktemp("loggers")
    args = ["train", "ppo", "--no-preset", "--env", "CartPole-v1", "--seeds", str(SEEDS),
            "--total-timesteps", str(4 * 32 * UPDATES), "--set", "num_envs=4",
            "--set", "num_steps=32", "--set", "update_epochs=2", "--set", "num_minibatches=2",
            "--set", "eval_every=2", "--set", "eval_episodes=2", "--chunk", "1",
            "--checkpoint-every", str(HALF), "--log", "tensorboard", "--log", "wandb",
            "--out", str(out), "--name", "run"]
    try:
        assert main(args) == 0
        run = out / "run"
        first_id = json.loads((run / "config.json").read_text())["wandb_id"]
        # a crash after the last update's logs but before its checkpoint: updates 4-6 are
        # logged twice, the second time by the resumed run
        shutil.rmtree(checkpoint.latest(run))
        assert main(["resume", str(run)]) == 0
        assert json.loads((run / "config.json").read_text())["wandb_id"] == first_id
    finally:
        mp.undo()
    return run


def csv_rows(run: Path) -> list[dict[str, str]]:
    with (run / "metrics.csv").open() as f:
        return list(csv.DictReader(f))


def test_tensorboard_reads_back_the_csv(run_dir):
    """Every seed's run holds every CSV value once, at its env_steps, as float32 (TensorBoard's
    scalar type); the purge marker of the resume removed the first attempt's updates 4-6."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    rows = csv_rows(run_dir)
    names = [k for k in rows[0] if k not in ("seed", "update", "env_steps")]
    assert len(rows) == SEEDS * UPDATES and {"episode_return", "eval_return"} <= set(names)
    for seed in range(SEEDS):
        events = EventAccumulator(str(run_dir / "tensorboard" / f"seed_{seed}"),
                                  size_guidance={"scalars": 0})
        events.Reload()
        assert sorted(events.Tags()["scalars"]) == sorted(names)
        for name in names:
            want = [(int(r["env_steps"]), np.float32(r[name])) for r in rows
                    if int(r["seed"]) == seed and r[name] != ""]
            got = [(e.step, np.float32(e.value)) for e in events.Scalars(name)]
            assert got == want, name


def test_wandb_offline_run_is_continued(run_dir):
    """Both attempts wrote to the one wandb run whose id config.json holds; its history
    records name the CSV's metrics."""
    run_id = json.loads((run_dir / "config.json").read_text())["wandb_id"]
    files = sorted((run_dir / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb"))
    assert len(files) == 2  # the training and the resume
    data = files[0].read_bytes()
    for name in ("episode_return", "eval_return", "policy_loss", "env_steps"):
        assert name.encode() in data


def test_wandb_logger_means_over_seeds(monkeypatch, tmp_path):
    """What WandbLogger logs per update: the NaN-ignoring mean over seeds under the CSV name,
    at step = the run's update index, with env_steps; nothing for an all-NaN update."""
    logged = []

    class FakeRun:
        id = "abc"

        def define_metric(self, *args, **kwargs):
            pass

        def log(self, row, step):
            logged.append((step, row))

    class FakeWandb:
        @staticmethod
        def init(**kwargs):
            assert kwargs["id"] == "abc" and kwargs["resume"] == "allow"
            return FakeRun()

    monkeypatch.setitem(__import__("sys").modules, "wandb", FakeWandb)
    logger = loggers.WandbLogger(tmp_path, "run", {}, run_id="abc")
    nan = np.nan
    logger.write({"env_steps": np.array([[10, 20], [10, 20]]),
                  "eval_return": np.array([[nan, 3.0], [nan, 5.0]]),
                  "episode_return": np.array([[1.0, nan], [2.0, 4.0]])}, first_update=7)
    assert logged == [(7, {"env_steps": 10, "episode_return": 1.5}),
                      (8, {"env_steps": 20, "eval_return": 4.0, "episode_return": 4.0})]


def test_tensorboard_mean_min_max_for_many_seeds(tmp_path):
    """Past PER_SEED_MAX seeds, TensorBoard gets three runs: mean, min and max over seeds."""
    pytest.importorskip("tensorboardX")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    seeds = loggers.PER_SEED_MAX + 1
    values = np.arange(seeds * 2, dtype=np.float32).reshape(seeds, 2)
    logger = loggers.TensorBoardLogger(tmp_path, seeds)
    logger.write({"env_steps": np.tile([5, 9], (seeds, 1)), "episode_return": values}, 0)
    logger.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["max", "mean", "min"]
    for run, want in (("mean", values.mean(0)), ("min", values.min(0)), ("max", values.max(0))):
        events = EventAccumulator(str(tmp_path / run))
        events.Reload()
        assert [(e.step, e.value) for e in events.Scalars("episode_return")] == \
            [(5, pytest.approx(want[0])), (9, pytest.approx(want[1]))]


def test_eval_gif_is_the_evaluated_episode(run_dir, tmp_path, capfd, monkeypatch,
                                           purerl_jit_level0):
    """The GIF has one frame per step of seed 1's first evaluation episode; on CartPole (reward
    1 per step) that is its return. The recording's rewards sum to the evaluated return for a
    stochastic policy too. On a machine without a display nothing is printed per frame (SDL
    said "XDG_RUNTIME_DIR is invalid or not set" once per frame)."""
    pytest.importorskip("pygame")
    from PIL import Image

    for name in ("DISPLAY", "WAYLAND_DISPLAY", "XDG_RUNTIME_DIR", "SDL_VIDEODRIVER"):
        monkeypatch.delenv(name, raising=False)
    gif = tmp_path / "episode.gif"
    assert main(["eval", str(run_dir), "--episodes", "3", "--gif", str(gif),
                 "--gif-seed", "1"]) == 0
    run = purerl.load(run_dir)
    returns = run.evaluate(3)
    with Image.open(gif) as image:
        assert image.n_frames == int(returns[1, 0]) > 1
    out, err = capfd.readouterr()  # file-descriptor level: SDL writes there, not to sys.stderr
    assert f"{int(returns[1, 0])} steps" in out
    assert "XDG_RUNTIME_DIR" not in err and err.count("\n") <= 2, err

    key = __import__("jax").random.key(3)
    stochastic = run.evaluate(4, key, deterministic=False)
    recording = run.record_episode(0, 4, key, deterministic=False)
    assert recording.reward[recording.active].sum() == pytest.approx(stochastic[0, 0])
    assert recording.active.sum() == stochastic[0, 0]


def test_gif_refused_where_gymnax_cannot_draw(run_dir, tmp_path, capsys, monkeypatch):
    """An environment without a visualiser, a seed the run lacks, a missing directory, a
    --seed outside the PRNG's range: one line, exit 2, no file written."""
    with pytest.raises(ValueError, match="cannot draw 'DeepSea-bsuite'"):
        render.check_renderable("DeepSea-bsuite")
    for args, message in ((["--gif-seed", "5"], "--gif-seed 5 is not one of the run's 2 seeds"),
                          ([], "no directory")):
        gif = tmp_path / "missing" / "x.gif" if not args else tmp_path / "x.gif"
        assert main(["eval", str(run_dir), "--gif", str(gif), *args]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1
        assert not gif.exists()
    assert main(["eval", str(run_dir), "--seed", str(2**70)]) == 2  # no traceback from jax
    err = capsys.readouterr().err
    assert "outside the PRNG's seed range" in err and err.count("\n") == 1


def test_log_needs_its_package(monkeypatch, tmp_path, capsys):
    """--log with the package missing: one line naming the extra, before any file is written."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "tensorboardX" else real(name, *a))
    assert main(["train", "ppo", "--log", "tensorboard", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "pip install 'purerl[tensorboard]'" in err and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []
