"""Batch and online actor-critic beyond the trainer contract (tests/test_contract.py, which runs
the batch mode): the TD advantage against NumPy, the online mode's vmap over seeds, each mode's
metrics and step counts, config errors, and learning on CartPole (batch TD and online)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import SMALL, assert_vmap_equals_single_runs, final_seed_evals

import purerl
from purerl import actor_critic

SMALL_ONLINE = dict(env="CartPole-v1", mode="online", num_envs=4, num_steps=8,
                    total_timesteps=4 * 8 * 4, eval_every=2, eval_episodes=2)


def test_td_advantage_matches_numpy_and_bootstraps_through_truncation():
    rng = np.random.default_rng(0)
    r, v, nv = (rng.normal(size=(7, 3)) for _ in range(3))
    term = rng.random((7, 3)) < 0.3
    got = actor_critic.td_advantages(jnp.asarray(r), jnp.asarray(v), jnp.asarray(nv),
                                     jnp.asarray(term), 0.9)
    ref = r + 0.9 * np.where(term, 0.0, nv) - v  # truncated steps keep the V(s') bootstrap
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)


def test_online_mode_vmap_equals_single_runs_and_counts_env_steps(purerl_jit_level0):
    # both runs compiled here, at level 0
    train = actor_critic.make_train(SMALL_ONLINE)
    keys = jax.random.split(jax.random.key(0), 2)
    state_b, metrics_b = purerl.jit(jax.vmap(train))(keys)
    assert_vmap_equals_single_runs(purerl.jit(train), (state_b, metrics_b), keys)
    m = {k: np.asarray(v) for k, v in metrics_b.items()}
    for name in ["policy_loss", "value_loss", "entropy", "td_error"]:
        assert m[name].shape == (2, 4), name
    np.testing.assert_array_equal(m["env_steps"][0], 32 * np.arange(1, 5))


def test_batch_mode_metrics_and_num_envs_episodes_per_update():
    keys = jax.random.split(jax.random.key(0), 2)
    _, metrics = purerl.jit(jax.vmap(actor_critic.make_train(SMALL["actor_critic"])))(keys)
    m = {k: np.asarray(v) for k, v in metrics.items()}
    for name in ["policy_loss", "value_loss", "entropy", "td_error", "explained_variance"]:
        assert m[name].shape == (2, 4), name
    np.testing.assert_array_equal(m["episode_count"], 3)


def test_config_errors():
    with pytest.raises(ValueError, match="advantage"):
        actor_critic.make_train({"mode": "online", "advantage": "mc"})
    with pytest.raises(ValueError, match="mode"):
        actor_critic.make_train({"mode": "async"})
    with pytest.raises(ValueError, match="total_timesteps"):
        actor_critic.make_train({"total_timesteps": 1000})


@pytest.mark.slow
def test_batch_actor_critic_learns_cartpole():
    """With the default TD advantage. The Monte Carlo one (``advantage="mc"``) is the same
    update with A = G_t - V(s_t) in place of the TD error, G_t the reward-to-go that both fit V
    to (``returns.reward_to_go``, tested against NumPy in test_returns); it has no learning
    check of its own: the suite must fit CI's 20 minutes."""
    final = final_seed_evals(actor_critic, dict(total_timesteps=16 * 500 * 24, eval_every=24))
    assert final.mean() >= 300, final


@pytest.mark.slow
def test_online_actor_critic_learns_cartpole():
    final = final_seed_evals(actor_critic, dict(actor_critic.ONLINE, total_timesteps=120_000,
                                                eval_every=100))
    assert final.mean() >= 300, final
