"""Sweeps (purerl.sweeps, ``purerl sweep``) and their statistics (purerl.stats): the IQM,
stratified bootstrap intervals and performance profiles against direct NumPy computations and
SciPy, the interval's coverage on a synthetic population; a sweep's runs against separate
``train`` runs of each configuration; a diverging configuration marked while the others are
ranked; ``train --config best.json`` reproducing the best configuration; a sweep killed and
resumed; bad input refused in one line before compiling."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import jax
import numpy as np
import pytest
import scipy.stats
from helpers import SMALL, assert_trees_close

import purerl
from purerl import ppo, rundir, stats, sweeps
from purerl.cli import main

# ------------------------------------------------------------------------------ statistics


def test_iqm_is_the_mean_of_the_middle_half():
    x = np.random.default_rng(0).exponential(size=(40, 3))
    middle = np.sort(x.ravel())[30:90]  # 120 runs: drop 30 at each end
    assert stats.iqm(x) == pytest.approx(middle.mean(), rel=1e-12)
    assert stats.iqm([1.0, 2.0, 3.0, 100.0]) == pytest.approx(2.5)  # the outlier is trimmed
    with pytest.raises(ValueError, match="NaN"):
        stats.iqm([1.0, np.nan])


def test_bootstrap_interval_is_the_percentile_interval_of_the_resampled_statistic():
    """A direct loop over resamples, with the same draws (a seeded Generator's integers), gives
    the same interval; and SciPy's percentile bootstrap (other draws) agrees to Monte Carlo
    error."""
    x = np.random.default_rng(1).normal(3.0, 2.0, size=(12, 2))
    got = stats.bootstrap_interval(x, stats.iqm, reps=3000, seed=7)
    rng = np.random.default_rng(7)
    rows = [rng.integers(0, 12, size=(3000, 12)) for _ in range(2)]  # task by task
    values = []
    for r in range(3000):
        resample = np.stack([x[rows[t][r], t] for t in range(2)], axis=1)
        m = np.sort(resample.ravel())
        values.append(m[6:18].mean())  # 24 runs: trim 6 at each end
    assert got.value == pytest.approx(np.sort(x.ravel())[6:18].mean())
    assert (got.low, got.high) == pytest.approx(tuple(np.percentile(values, [2.5, 97.5])))
    # one task: SciPy's bootstrap of the mean, percentile method
    y = x[:, 0]
    ours = stats.bootstrap_interval(y, stats.mean, reps=20000, seed=0)
    theirs = scipy.stats.bootstrap((y,), np.mean, n_resamples=20000, method="percentile",
                                   random_state=0).confidence_interval
    spread = theirs.high - theirs.low
    assert abs(ours.low - theirs.low) < 0.03 * spread
    assert abs(ours.high - theirs.high) < 0.03 * spread


def test_tasks_may_have_different_numbers_of_runs():
    a, b = np.array([1.0, 2.0, 3.0, 4.0]), np.array([10.0, 20.0])
    assert stats.iqm([a, b]) == pytest.approx(scipy.stats.trim_mean([1, 2, 3, 4, 10, 20], 0.25))
    np.testing.assert_allclose(stats.performance_profile([a, b], [2.5, 15.0]),
                               [(0.5 + 1.0) / 2, (0.0 + 0.5) / 2])
    interval = stats.bootstrap_interval([a, b], stats.iqm, reps=200)
    assert interval.low <= interval.value <= interval.high


def test_bootstrap_is_stratified_by_task():
    """Task 0 scores 0 on every run, task 1 scores 1: resampling runs within each task keeps
    half the runs at 0 and half at 1, so every resample has the same mean -- an unstratified
    bootstrap would move it."""
    x = np.stack([np.zeros(10), np.ones(10)], axis=1)
    interval = stats.bootstrap_interval(x, stats.mean, reps=500)
    assert interval.low == interval.high == interval.value == 0.5


def test_iqm_interval_covers_the_population_iqm_at_about_its_nominal_rate():
    """Exponential(1) scores: the population IQM is E[X | q1 < X < q3] =
    2 * integral_{q1}^{q3} x e^-x dx, closed form. Over 400 seeded samples of 20 runs the 95%
    interval covers it in 0.88-0.99 of them (the percentile bootstrap undercovers slightly at
    small n; a broken interval lands far outside)."""
    q1, q3 = -np.log(0.75), -np.log(0.25)
    antiderivative = lambda t: -(t + 1) * np.exp(-t)  # noqa: E731
    truth = 2 * (antiderivative(q3) - antiderivative(q1))
    rng = np.random.default_rng(123)
    covered = 0
    for trial in range(400):
        sample = rng.exponential(size=20)
        interval = stats.bootstrap_interval(sample, stats.iqm, reps=1000, seed=trial)
        covered += interval.low <= truth <= interval.high
    assert 0.88 <= covered / 400 <= 0.99, covered / 400


def test_performance_profile_and_normalisation():
    x = np.array([[0.1, 0.5], [0.4, 0.9], [0.8, 0.2], [0.9, 0.7]])
    taus = np.array([0.0, 0.3, 0.6, 1.0])
    direct = [np.mean([np.mean(x[:, t] > tau) for t in range(2)]) for tau in taus]
    np.testing.assert_allclose(stats.performance_profile(x, taus), direct)
    np.testing.assert_allclose(stats.normalize([-500.0, -100.0, -300.0], -500.0, -100.0),
                               [0.0, 1.0, 0.5])


# ---------------------------------------------------------------------------------- plans


def test_plans_grids_and_seeded_samples():
    config = ppo.Config(**SMALL["ppo"])
    plan = sweeps.make_plan(config, sweeps.parse_grid(["lr=1e-3,3e-3", "ent_coef=0,0.01"]),
                            seeds=3)
    assert plan.points == ({"lr": 1e-3, "ent_coef": 0.0}, {"lr": 1e-3, "ent_coef": 0.01},
                           {"lr": 3e-3, "ent_coef": 0.0}, {"lr": 3e-3, "ent_coef": 0.01})
    assert plan.num_runs == 12
    np.testing.assert_array_equal(plan.hparams()["lr"], np.repeat([1e-3, 1e-3, 3e-3, 3e-3], 3)
                                  .astype(np.float32))
    keys = jax.random.split(jax.random.key(0), 3)  # what `train --seeds 3` uses, per config
    np.testing.assert_array_equal(jax.random.key_data(plan.keys()),
                                  jax.random.key_data(keys[np.tile(np.arange(3), 4)]))
    a = sweeps.make_plan(config, samples={"lr": "loguniform(1e-4,1e-2)", "gae_lambda":
                                          "choice(0.9,0.95)"}, num_samples=50, sample_seed=3)
    b = sweeps.make_plan(config, samples={"lr": "loguniform(1e-4,1e-2)", "gae_lambda":
                                          "choice(0.9,0.95)"}, num_samples=50, sample_seed=3)
    assert a.points == b.points and len(a.points) == 50
    lrs = np.array([p["lr"] for p in a.points])
    assert (lrs >= 1e-4).all() and (lrs <= 1e-2).all() and lrs.min() < 1e-3 < lrs.max()
    assert {p["gae_lambda"] for p in a.points} == {0.9, 0.95}


@pytest.mark.parametrize("kwargs, message", [
    (dict(grid={"hidden_sizes": [8, 16]}), "static field of ppo .* separate programs"),
    (dict(grid={"lrr": [1e-3]}), "unknown ppo config key 'lrr'.*'lr'"),
    (dict(grid={}), "nothing to sweep"),
    (dict(grid={"lr": [-1.0]}), "lr"),
    (dict(samples={"lr": "gaussian(0,1)"}, num_samples=2), "cannot parse distribution"),
    (dict(samples={"lr": "loguniform(0,1)"}, num_samples=2), "0 < LO"),
    (dict(samples={"lr": "uniform(1e-3,1e-4)"}, num_samples=2), "LO < HI"),
    (dict(samples={"lr": "uniform(1e-4,1e-3)"}), "number of samples"),
])
def test_plans_refuse_what_cannot_be_one_program(kwargs, message):
    with pytest.raises(ValueError, match=message):
        sweeps.make_plan(ppo.Config(**SMALL["ppo"]), **kwargs)


# ------------------------------------------------------------------------------ sweeping


def test_a_sweep_equals_separate_train_runs_of_each_configuration(purerl_jit_level0):
    """Each configuration's seeds are the runs `train` makes with that configuration and the
    same keys, to the float32 rounding of a batched hyperparameter (docs/contract.md)."""
    config = ppo.Config(**SMALL["ppo"])
    result = purerl.sweep(config, {"lr": [1e-3, 3e-3]}, seeds=2)
    keys = jax.random.split(jax.random.key(0), 2)
    for c, lr in enumerate([1e-3, 3e-3]):
        _, metrics = purerl.jit(jax.vmap(ppo.make_train(config.replace(lr=lr))))(keys)
        assert_trees_close({k: v[c] for k, v in result.metrics.items()},
                           jax.device_get(metrics))
    assert (result.diverged_at == 0).all()
    ranking = result.ranking()
    assert [r.index for r in ranking] == sorted(
        range(2), key=lambda c: -scipy.stats.trim_mean(result.final_eval[c], 0.25))


SWEEP = ["sweep", "ppo", "--no-preset", "--env", "CartPole-v1", "--seeds", "2",
         "--total-timesteps", str(4 * 32 * 6), "--set", "num_envs=4", "--set", "num_steps=32",
         "--set", "update_epochs=2", "--set", "num_minibatches=2", "--set", "eval_every=2",
         "--set", "eval_episodes=2", "--grid", "lr=1e-3,1e30,3e-3", "--chunk", "1",
         "--checkpoint-every", "2"]


@pytest.fixture(scope="module")
def swept(tmp_path_factory) -> Path:
    """A finished sweep in which lr=1e30 diverges (Adam's first step moves every weight by
    ~1e30; the next forward pass overflows)."""
    out = tmp_path_factory.mktemp("sweep")
    assert main([*SWEEP, "--out", str(out), "--name", "s"]) == 0
    return out / "s"


def test_a_diverging_configuration_is_marked_and_the_others_are_ranked(swept):
    summary = json.loads((swept / "summary.json").read_text())
    ranking = summary["ranking"]
    assert [r["config"] for r in ranking][-1] == 1 and ranking[-1]["rank"] is None
    assert ranking[-1]["diverged_seeds"] == [0, 1] and ranking[-1]["diverged_after_update"]
    assert [r["rank"] for r in ranking[:2]] == [1, 2]
    assert ranking[0]["iqm"] >= ranking[1]["iqm"]
    for r in ranking[:2]:
        assert r["iqm_low"] <= r["iqm"] <= r["iqm_high"] and r["diverged_seeds"] == []
    rows = (swept / "results.csv").read_text().splitlines()
    assert rows[0].startswith("config,seed,lr,final_eval_return")
    assert len(rows) == 1 + 3 * 2
    diverged = [r for r in rows[1:] if r.split(",")[-1]]
    assert [r.split(",")[0] for r in diverged] == ["1", "1"]
    text = (swept / "summary.txt").read_text()
    assert "diverged" in text and "IQM" in text
    for name in [*rundir.SWEEP_RESULTS, "sweep_lr.png"]:
        assert (swept / name).is_file(), name
    assert rundir.missing_results(swept) == []
    best = json.loads((swept / "best.json").read_text())
    assert best["lr"] == ranking[0]["hyperparameters"]["lr"] and best["algo"] == "ppo"


def test_train_with_the_best_config_reproduces_the_best_configuration(swept, tmp_path):
    assert main(["train", "ppo", "--no-preset", "--config", str(swept / "best.json"),
                 "--chunk", "1", "--out", str(tmp_path), "--name", "best"]) == 0
    saved = json.loads((tmp_path / "best" / "config.json").read_text())
    best = json.loads((swept / "best.json").read_text())
    assert saved["seeds"] == 2 and saved["lr"] == best["lr"]
    run = json.loads((tmp_path / "best" / "metrics.json").read_text())
    sweep = json.loads((swept / "metrics.json").read_text())
    c = best["sweep_config"]
    for name in ("eval_return", "value_loss", "policy_loss", "entropy"):
        np.testing.assert_allclose(np.array(run[name], float), np.array(sweep[name][c], float),
                                   rtol=1e-4, atol=1e-5, err_msg=name)


def test_a_killed_sweep_resumes_to_the_uninterrupted_results(swept, tmp_path):
    from test_faults import finish, launch, wait_paused

    marker = tmp_path / "paused"
    proc = launch([*SWEEP, "--out", str(tmp_path), "--name", "k"], marker, "chunk:3")
    wait_paused(proc, marker)
    marker.unlink()
    proc.send_signal(signal.SIGKILL)
    finish(proc)
    run_dir = tmp_path / "k"
    assert rundir.missing_results(run_dir)  # not finished: resumable from checkpoint 2
    code, _, err = finish(launch(["resume", str(run_dir)]))
    assert code == 0, err
    for name in ("metrics.json", "results.csv"):
        assert (run_dir / name).read_bytes() == (swept / name).read_bytes(), name
    ranking = json.loads((run_dir / "summary.json").read_text())["ranking"]
    assert ranking == json.loads((swept / "summary.json").read_text())["ranking"]


def test_a_random_search_from_the_command_line_is_seeded_and_recorded(tmp_path,
                                                                      purerl_jit_level0):
    args = ["sweep", "ppo", "--no-preset", "--total-timesteps", "768", "--seeds", "1",
            *[a for kv in ("num_envs=4", "num_steps=32", "update_epochs=1", "num_minibatches=1",
                           "eval_episodes=2") for a in ("--set", kv)],
            "--sample", "3", "lr=loguniform(1e-4,1e-2)", "--sample", "3",
            "ent_coef=choice(0,0.01)", "--sample-seed", "5", "--out", str(tmp_path),
            "--name", "r"]
    assert main(args) == 0
    saved = json.loads((tmp_path / "r" / "config.json").read_text())["sweep"]
    again = sweeps.make_plan(ppo.Config(**SMALL["ppo"]), samples={
        "lr": "loguniform(1e-4,1e-2)", "ent_coef": "choice(0,0.01)"}, num_samples=3,
        sample_seed=5)
    assert saved["points"] == list(again.points) and saved["sample_seed"] == 5
    assert saved["samples"] == {"lr": "loguniform(0.0001,0.01)", "ent_coef": "choice(0,0.01)"}
    rows = (tmp_path / "r" / "results.csv").read_text().splitlines()
    assert rows[0].startswith("config,seed,lr,ent_coef,") and len(rows) == 4


@pytest.mark.parametrize("extra, message", [
    (["--grid", "lrr=1e-3"], "unknown ppo config key 'lrr'"),
    (["--grid", "hidden_sizes=8,16"], "static field"),
    (["--grid", "lr="], "has no values"),
    ([], "nothing to sweep"),
    (["--sample", "4", "lr=normal(0,1)"], "cannot parse distribution"),
    (["--sample", "4", "lr=loguniform(1e-4,x)"], "must be numbers"),
    (["--sample", "0", "lr=uniform(0,1)"], "N must be a positive integer"),
])
def test_bad_sweeps_are_one_line_and_exit_2_before_compiling(extra, message, tmp_path, capsys):
    args = ["sweep", "ppo", "--no-preset", "--total-timesteps", "768", "--out", str(tmp_path),
            *extra]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("purerl: error:") and message in err[0], err
    assert not any(tmp_path.iterdir())  # no run directory


def test_a_config_file_of_another_algorithm_or_with_unknown_keys_is_refused(tmp_path, capsys):
    other = tmp_path / "dqn.json"
    other.write_text(json.dumps({"algo": "dqn", "lr": 1e-3}))
    typo = tmp_path / "typo.json"
    typo.write_text(json.dumps({"lrr": 1e-3}))
    none = tmp_path / "best.json"
    none.write_text(json.dumps({"algo": "ppo", "best": None,
                                "why": "every configuration diverged"}))
    for path, message in ((other, "is a dqn config, not ppo's"),
                          (none, "holds no configuration: every configuration diverged"),
                          (typo, "unknown ppo config key 'lrr'"),
                          (tmp_path / "missing.json", "cannot read it")):
        assert main(["train", "ppo", "--config", str(path), "--out", str(tmp_path)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err


def test_the_memory_estimate_covers_configurations_times_seeds(tmp_path, capsys, monkeypatch):
    """2 seeds fit in the limit, 2 seeds x 64 configurations do not: refused before
    compiling, naming what to lower."""
    from purerl import memory

    config = ppo.Config(**SMALL["ppo"])
    per_run = sum(memory.estimate(ppo.make_agent(config), True).values())
    monkeypatch.setenv(memory.ENV_VAR, str(per_run * 10))
    lrs = "lr=" + ",".join(f"{1e-4 * (i + 1):g}" for i in range(64))
    small = [f"{k}={v}" for k, v in SMALL["ppo"].items() if k != "total_timesteps"]
    args = ["sweep", "ppo", "--no-preset", "--total-timesteps", "768", "--seeds", "2",
            *[a for kv in small for a in ("--set", kv)], "--out", str(tmp_path)]
    assert main([*args, "--grid", lrs]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the configurations x --seeds" in err[0], err
    assert not any(tmp_path.iterdir())
