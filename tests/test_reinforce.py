"""REINFORCE beyond the trainer contract (tests/test_contract.py): its gradient against a
hand-written NumPy sum for a linear-softmax policy, the GAE weighting, its episode and step
counts, config errors, and learning."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import SMALL, final_seed_evals

import purerl
from purerl import reinforce, returns, rollout


def fixed_batch(seed=0, T=9, N=3, obs_dim=4, num_actions=3):
    """Random observations and actions with episode ends (terminations and one truncation) at
    known places; the mask keeps each column's first episode, as collect_episodes does."""
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(T, N, obs_dim)).astype(np.float32)
    action = rng.integers(0, num_actions, size=(T, N))
    reward = rng.normal(size=(T, N)).astype(np.float32)
    terminated = np.zeros((T, N), bool)
    truncated = np.zeros((T, N), bool)
    terminated[4, 0], truncated[8, 1], terminated[6, 2] = True, True, True
    terminated[7, 0] = True  # a second episode in column 0: padding, masked out
    mask = np.zeros((T, N), bool)
    mask[:5, 0], mask[:, 1], mask[:7, 2] = True, True, True
    values = rng.normal(size=(T, N)).astype(np.float32)
    traj = rollout.Trajectory(obs, action, reward, terminated, truncated, obs,
                              np.zeros((T, N), np.float32))
    return traj, mask, values


def numpy_weights(reward, mask, values, weighting, gamma):
    """Phi_t for each step of each column's first episode, by explicit sums."""
    T, N = reward.shape
    phi = np.zeros((T, N))
    for n in range(N):
        L = mask[:, n].sum()
        for t in range(L):
            if weighting == "total":
                phi[t, n] = sum(gamma ** k * reward[k, n] for k in range(L))
            else:
                phi[t, n] = sum(gamma ** (k - t) * reward[k, n] for k in range(t, L))
    if weighting == "reward_to_go_minus_value":
        phi = phi - values
    return phi


@pytest.mark.parametrize("weighting,baseline", [("total", "none"), ("total", "mean"),
                                                ("reward_to_go", "none"),
                                                ("reward_to_go", "value")])
@pytest.mark.parametrize("ent_coef", [0.0, 0.1])
def test_gradient_equals_numpy_sum_of_score_times_weight(weighting, baseline, ent_coef):
    traj, mask, values = fixed_batch()
    gamma, (T, N), A = 0.9, mask.shape, 3
    W = np.random.default_rng(1).normal(size=(4, A)).astype(np.float32) * 0.5

    weights = reinforce.policy_weights(
        jax.tree.map(jnp.asarray, traj), jnp.asarray(mask), jnp.asarray(values),
        jnp.asarray(values), weighting, baseline, gamma, 0.95)

    def loss(w):
        logits = jnp.asarray(traj.obs) @ w
        log_pi = jax.nn.log_softmax(logits)
        log_prob = jnp.take_along_axis(log_pi, jnp.asarray(traj.action)[..., None], -1)[..., 0]
        entropy = -jnp.sum(jnp.exp(log_pi) * log_pi, -1)
        return reinforce.reinforce_loss(log_prob, entropy, weights, jnp.asarray(mask),
                                        ent_coef)[0]

    grad = np.asarray(jax.grad(loss)(jnp.asarray(W)))

    # NumPy: grad L = -(1/N) sum_i sum_t [s (onehot(a) - pi) Phi_t + beta grad H_t]
    name = "reward_to_go_minus_value" if baseline == "value" else weighting
    phi = numpy_weights(traj.reward, mask, values, name, gamma)
    if baseline == "mean":
        phi = phi - phi[mask].mean()
    ref = np.zeros_like(W, dtype=np.float64)
    for n in range(N):
        for t in range(T):
            if not mask[t, n]:
                continue
            s = traj.obs[t, n].astype(np.float64)
            z = s @ W
            pi = np.exp(z - z.max())
            pi /= pi.sum()
            score = np.outer(s, np.eye(A)[traj.action[t, n]] - pi)
            H = -(pi * np.log(pi)).sum()
            grad_h = np.outer(s, -pi * (np.log(pi) + H))  # dH/dz_k = -pi_k (log pi_k + H)
            ref += score * phi[t, n] + ent_coef * grad_h
    ref = -ref / N
    np.testing.assert_allclose(grad, ref, rtol=1e-4, atol=1e-5)


def test_advantage_weighting_is_gae():
    traj, mask, values = fixed_batch()
    jt = jax.tree.map(jnp.asarray, traj)
    adv = reinforce.policy_weights(jt, jnp.asarray(mask), jnp.asarray(values),
                                   jnp.asarray(values) + 1.0, "advantage", "value", 0.9, 0.8)
    ref, _ = returns.gae(jt.reward, jnp.asarray(values), jnp.asarray(values) + 1.0,
                         jt.terminated, jt.truncated, 0.9, 0.8)
    np.testing.assert_allclose(adv, ref, rtol=1e-6)


def test_every_update_completes_num_episodes_and_counts_their_steps(purerl_jit_level0):
    keys = jax.random.split(jax.random.key(0), 2)
    _, metrics = purerl.jit(jax.vmap(reinforce.make_train(SMALL["reinforce"])))(keys)
    m = {k: np.asarray(v) for k, v in metrics.items()}
    for name in ["policy_loss", "entropy", "episode_length", "value_loss", "explained_variance"]:
        assert m[name].shape == (2, 4), name
    # every update completes exactly num_episodes episodes; env_steps counts their real steps
    np.testing.assert_array_equal(m["episode_count"], 3)
    np.testing.assert_allclose(m["env_steps"], np.cumsum(m["episode_length"] * 3, axis=1),
                               rtol=1e-6)
    # CartPole pays 1 per step, so the mean return is the mean episode length
    np.testing.assert_allclose(m["episode_return"], m["episode_length"], rtol=1e-6)


def test_config_errors():
    with pytest.raises(ValueError, match="baseline"):
        reinforce.make_train({"weighting": "advantage", "baseline": "none"})
    with pytest.raises(ValueError, match="weighting"):
        reinforce.make_train({"weighting": "rtg"})
    with pytest.raises(ValueError, match="total_timesteps"):
        reinforce.make_train({"total_timesteps": 100})
    with pytest.raises(ValueError, match="log_std_init"):
        reinforce.make_train({"log_std_init": -1.0})  # continuous-only on CartPole


@pytest.mark.slow
def test_reward_to_go_with_value_baseline_solves_cartpole():
    """32 updates of 16 episodes, not 40: of 8 seeds measured (2026-12-07, key 0) the mean
    was 412 after 24 updates (worst 301), 490 after 32 (worst 455) and 499 after 40, so a
    4-seed mean fails 400 at 32 only if two seeds sit far below the 8 measured."""
    final = final_seed_evals(reinforce, dict(total_timesteps=16 * 500 * 32, eval_every=32))
    assert final.mean() >= 400, final


@pytest.mark.slow
def test_continuous_actions_improve_on_pendulum():
    """Vanilla policy gradient is slow on Pendulum; this checks the tanh-Gaussian path learns
    (mean training return of the last 5 updates vs the first 5, measured +159 on these seeds)."""
    cfg = dict(env="Pendulum-v1", num_episodes=8, total_timesteps=8 * 200 * 100, eval_every=100,
               normalize_obs=True, gamma=0.95, weighting="advantage", normalize_advantages=True)
    _, m = purerl.jit(jax.vmap(reinforce.make_train(cfg)))(
        jax.random.split(jax.random.key(0), 4))
    ret = np.asarray(m["episode_return"])
    assert ret[:, -5:].mean() > ret[:, :5].mean() + 75, ret
