"""PPO: the metrics and adaptive beta of the KL-penalty variant, a vmapped learning-rate sweep
equal to separate runs, config errors, and learning to stated returns. The generic trainer
contract (vmap over seeds, determinism, chunked runs, evaluation schedule) is in
test_contract.py."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import SMALL, assert_trees_close, final_seed_evals, purerl_jit_at_level0

import purerl
from purerl import ppo

SMALL_PPO = SMALL["ppo"]


@pytest.fixture(scope="module")
def kl_penalty_metrics():
    """The metrics of one run of the small config with ``variant="kl_penalty"``, at LLVM level 0
    (the tests check the metrics against each other)."""
    train = ppo.make_train({**SMALL_PPO, "variant": "kl_penalty"})
    with purerl_jit_at_level0():
        _, metrics = purerl.jit(train)(jax.random.key(0))
    return metrics


def test_kl_penalty_run_reports_ppo_metrics_and_env_steps(kl_penalty_metrics):
    m = kl_penalty_metrics
    for name in ["episode_return", "episode_count", "eval_return", "policy_loss", "value_loss",
                 "entropy", "approx_kl", "clip_fraction", "explained_variance", "lr", "kl",
                 "kl_beta", "env_steps"]:
        assert m[name].shape == (6,), name
    # num_envs * num_steps = 128 environment steps per update
    np.testing.assert_array_equal(m["env_steps"], 128 * np.arange(1, 7))


def test_kl_beta_follows_the_adaptive_rule_from_kl_beta_init(kl_penalty_metrics):
    """Schulman et al. 2017, section 4: beta is halved when the batch's KL d < d_targ / 1.5 and
    doubled when d > 1.5 d_targ, starting from kl_beta_init = 1 (d_targ = 0.005)."""
    m = kl_penalty_metrics
    beta = 1.0
    for kl, recorded in zip(m["kl"], m["kl_beta"]):
        beta = beta / 2 if kl < 0.005 / 1.5 else (beta * 2 if kl > 0.005 * 1.5 else beta)
        assert recorded == pytest.approx(beta)


def test_vmapped_learning_rate_sweep_equals_separate_runs(purerl_jit_level0):
    # every run it compares is compiled here, all at level 0
    key = jax.random.key(1)
    lrs = jnp.array([3e-4, 3e-3])
    train = ppo.make_train(SMALL_PPO)
    _, swept = purerl.jit(jax.vmap(train, in_axes=(None, 0)))(key, {"lr": lrs})
    for i, lr in enumerate([3e-4, 3e-3]):
        _, separate = purerl.jit(ppo.make_train({**SMALL_PPO, "lr": lr}))(key)
        assert_trees_close({k: v[i] for k, v in swept.items()}, separate)
    assert not np.allclose(swept["policy_loss"][0], swept["policy_loss"][1])


# ----------------------------------------------------------------------------- config errors


def test_unknown_key_suggests_the_closest():
    with pytest.raises(ValueError, match=r"'lrr'.*did you mean 'lr'"):
        ppo.Config.from_dict({"lrr": 1e-3})


def test_minibatches_must_divide_the_batch():
    with pytest.raises(ValueError, match="num_minibatches"):
        ppo.Config(num_envs=4, num_steps=30, num_minibatches=7)


def test_continuous_only_option_on_discrete_env():
    with pytest.raises(ValueError, match="log_std_init.*discrete"):
        ppo.make_train({"env": "CartPole-v1", "log_std_init": -0.5})


@pytest.mark.parametrize("fields, field", [
    (dict(variant="trust_region"), "variant"),
    (dict(lr=-1.0), "lr"),
    (dict(num_envs="4"), "num_envs"),
])
def test_bad_field_values_are_reported_naming_the_field(fields, field):
    with pytest.raises(ValueError, match=field):
        ppo.Config(**fields)


def test_misspelt_env_names_the_closest_id():
    with pytest.raises(ValueError, match="CartPole-v1"):
        ppo.make_train({"env": "Cartpole-v1"})


def test_static_field_cannot_be_a_train_time_hyperparameter():
    with pytest.raises(ValueError, match="num_envs.*static"):
        ppo.make_agent(SMALL_PPO).init(jax.random.key(0), {"num_envs": 8})


# ----------------------------------------------------------------------------- learning


@pytest.mark.slow
def test_ppo_clip_solves_cartpole_within_150k_steps():
    final = final_seed_evals(ppo, ppo.Config(total_timesteps=150_000))
    assert final.mean() >= 475, final


@pytest.mark.slow
def test_ppo_kl_penalty_learns_cartpole():
    """The median over 5 seeds, not the mean: with the adaptive penalty (Schulman et al. 2017,
    section 4) beta halves on every update whose KL stays under d_targ / 1.5, so once a seed has
    solved CartPole beta can decay towards zero and a later large step collapse the policy, and
    which seeds do depends on the machine's float rounding. At 150k steps 31 of 32 seeds
    measured ended at 500 and one at 183 (2026-12-07; by 250k about one seed in eight had
    collapsed), so the median of 5 fails only if 3 do: about 10 (1/32)^3 = 0.03% at that rate
    (8 seeds until 2026-12-08: the run is most of this check's time)."""
    final = final_seed_evals(ppo, ppo.Config(variant="kl_penalty", total_timesteps=150_000),
                             seeds=5)
    assert np.median(final) >= 475, final


@pytest.mark.slow
def test_ppo_continuous_learns_pendulum():
    config = ppo.Config.for_env("Pendulum-v1", eval_every=5)  # the preset, at its budget
    keys = jax.random.split(jax.random.key(0), 4)  # as final_seed_evals, keeping the curve
    _, metrics = purerl.jit(jax.vmap(ppo.make_train(config)))(keys)
    curve = np.asarray(metrics["eval_return"])
    assert curve[:, -1].mean() >= -300, curve[:, -1]
    assert np.nanmean(curve[:, 4]) < -700  # the first evaluation (10k steps) is far from it
