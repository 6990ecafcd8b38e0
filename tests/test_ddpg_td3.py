"""DDPG and TD3: targets against NumPy, Ornstein-Uhlenbeck noise statistics, vmap over seeds
with OU exploration, the learning metrics and their warm-up, policy delay, random warm-up,
acting (mu(s), and the exploration noise as a traced hyperparameter), config errors and learning
Pendulum-v1. vmap over seeds (Gaussian exploration) and chunked runs: ``test_contract.py``."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import (SMALL, assert_vmap_equals_single_runs, final_seed_evals, numpy_twin_q,
                     run_updates, vmapped_run)

import purerl
from purerl import ddpg, dpg, envs, noise, td3
from purerl.networks import DeterministicActor

SMALL = SMALL["ddpg"]  # the same small Pendulum-v1 config for DDPG and TD3
# vmapped_run(level=0, **CONFIGS[name]): 3 seeds of the small config at LLVM level 0, DDPG with
# OU exploration and TD3
CONFIGS = {"ddpg-ou": dict(algo="ddpg", exploration="ou"), "td3": dict(algo="td3")}


# ----------------------------------------------------------------------------- targets


def test_td3_min_target_with_clipped_smoothing_noise_matches_numpy():
    rng = np.random.default_rng(0)
    n = 64
    next_obs = rng.normal(size=(n, 3)).astype(np.float32)
    reward = rng.normal(size=n).astype(np.float32)
    terminated = np.zeros(n, bool)
    terminated[::3] = True  # the rest are ordinary or time-limit-truncated: both bootstrap
    w = rng.normal(size=(3, 1)).astype(np.float32)
    low, high = np.array([-2.0], np.float32), np.array([2.0], np.float32)
    key = jax.random.key(3)
    gamma, std, clip = 0.97, 0.8, 0.5  # std >> clip: the clipping is exercised

    a_next = dpg.target_action(lambda o: 2.0 * jnp.tanh(o @ w), jnp.asarray(next_obs), key,
                               low, high, std, clip)
    y = dpg.critic_target(jnp.asarray(reward), jnp.asarray(terminated),
                          jnp.asarray(numpy_twin_q(next_obs, np.asarray(a_next))), gamma)

    eps = np.clip(std * np.asarray(jax.random.normal(key, (n, 1))), -clip, clip)
    assert (np.abs(eps) == clip).mean() > 0.3
    a_ref = np.clip(2.0 * np.tanh(next_obs @ w) + eps, low, high)
    np.testing.assert_allclose(np.asarray(a_next), a_ref, rtol=1e-5, atol=1e-5)
    q_ref = numpy_twin_q(next_obs, a_ref).min(0)
    y_ref = reward + gamma * (1.0 - terminated) * q_ref
    np.testing.assert_allclose(np.asarray(y), y_ref, rtol=1e-5, atol=1e-5)
    # terminated transitions do not bootstrap; truncated (not terminated) ones do
    np.testing.assert_allclose(np.asarray(y)[terminated], reward[terminated], rtol=1e-6)
    assert not np.allclose(np.asarray(y)[~terminated], reward[~terminated])


def test_ddpg_target_matches_numpy():
    rng = np.random.default_rng(1)
    n = 32
    next_obs = rng.normal(size=(n, 3)).astype(np.float32)
    reward = rng.normal(size=n).astype(np.float32)
    terminated = rng.random(n) < 0.3
    a_next = dpg.target_action(lambda o: jnp.tanh(o[:, :1]), jnp.asarray(next_obs),
                               jax.random.key(0), -1.0, 1.0)  # no smoothing: a' = mu'(s')
    np.testing.assert_allclose(np.asarray(a_next), np.tanh(next_obs[:, :1]), rtol=1e-6)
    next_q = numpy_twin_q(next_obs, np.asarray(a_next))[0]
    y = dpg.critic_target(jnp.asarray(reward), jnp.asarray(terminated), jnp.asarray(next_q), 0.9)
    np.testing.assert_allclose(np.asarray(y), reward + 0.9 * (1.0 - terminated) * next_q,
                               rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- OU noise


def test_ou_noise_reverts_to_the_mean_with_the_stationary_std():
    theta, sigma, dt, mu = 0.5, 0.3, 0.1, 0.2
    chains = 20_000
    step = jax.jit(lambda x, k: noise.ou_step(x, k, theta, sigma, dt, mu))
    # conditional mean: E[x_{t+1} | x_t] = x_t + theta (mu - x_t) dt, per starting value
    x0 = jnp.repeat(jnp.array([-2.0, 0.0, 3.0]), chains)[:, None]
    x1 = np.asarray(step(x0, jax.random.key(0)))[:, 0].reshape(3, chains)
    expected = np.array([-2.0, 0.0, 3.0]) * (1 - theta * dt) + theta * mu * dt
    np.testing.assert_allclose(x1.mean(1), expected, atol=4 * sigma * np.sqrt(dt / chains))
    np.testing.assert_allclose(x1.std(1), sigma * np.sqrt(dt), rtol=0.03)
    # stationary law after many steps (1 - theta dt)^400 ~ 1e-9 of the start is left
    x = jax.lax.fori_loop(0, 400, lambda t, x: step(x, jax.random.fold_in(jax.random.key(1), t)),
                          jnp.full((chains, 1), 5.0))
    x = np.asarray(x)[:, 0]
    exact = sigma * np.sqrt(dt / (1 - (1 - theta * dt) ** 2))
    assert float(noise.ou_stationary_std(theta, sigma, dt)) == pytest.approx(exact, rel=1e-6)
    np.testing.assert_allclose(x.mean(), mu, atol=4 * exact / np.sqrt(chains))
    np.testing.assert_allclose(x.std(), exact, rtol=0.03)
    # the continuous process's sigma / sqrt(2 theta), which the chain approaches as dt -> 0
    assert x.std() == pytest.approx(sigma / np.sqrt(2 * theta), rel=0.06)
    # successive values are correlated: corr(x_t, x_{t+1}) = 1 - theta dt
    x_next = np.asarray(step(jnp.asarray(x)[:, None], jax.random.key(2)))[:, 0]
    assert np.corrcoef(x, x_next)[0, 1] == pytest.approx(1 - theta * dt, abs=0.01)


def test_ou_reset_and_trainer_resets_it_at_episode_end(purerl_jit_level0):
    x = jnp.arange(6.0).reshape(3, 2)
    np.testing.assert_array_equal(noise.ou_reset(x, jnp.array([False, True, False])),
                                  [[0, 1], [0, 0], [4, 5]])
    # Pendulum episodes end (truncate) after 200 steps in every env at once
    agent = ddpg.make_agent({**SMALL, "exploration": "ou", "exploration_noise": 0.5,
                             "total_timesteps": 800})
    update = purerl.jit(agent.update)
    state = agent.init(jax.random.key(0))
    for i in range(200):
        prev = state
        state, m = update(state)
    assert np.all(np.asarray(prev.ou_state) != 0)  # the process ran during the episode
    assert int(m["episode_count"]) == 2
    np.testing.assert_array_equal(np.asarray(state.ou_state), 0.0)  # and was reset at its end
    state, _ = update(state)
    assert np.all(np.asarray(state.ou_state) != 0)


def test_ddpg_with_ou_exploration_vmap_over_seeds_equals_single_runs(purerl_jit_level0):
    keys, train, state, metrics = vmapped_run(level=0, **CONFIGS["ddpg-ou"])
    assert_vmap_equals_single_runs(purerl.jit(train), (state, metrics), keys)


# ----------------------------------------------------------------------------- metrics


@pytest.mark.parametrize("name", list(CONFIGS))
def test_metrics_noise_scale_warmup_nans_and_gradient_step_count(name):
    _, _, state, m = vmapped_run(level=0, **CONFIGS[name])
    n = 120
    for metric in ["episode_return", "episode_count", "env_steps", "q_mean", "td_error",
                   "critic_loss", "actor_loss", "noise_scale", "eval_return"]:
        assert m[metric].shape == (3, n), metric
    np.testing.assert_array_equal(m["env_steps"][0], 2 * np.arange(1, n + 1))
    np.testing.assert_allclose(m["noise_scale"], 0.1 * 2.0)  # 0.1 of Pendulum's max torque 2
    # no learning metrics before learning_starts = 60 env steps (update 30), then finite
    assert np.isnan(m["critic_loss"][:, :29]).all()
    assert np.isfinite(m["critic_loss"][:, 29:]).all() and np.isfinite(m["q_mean"][:, 29:]).all()
    assert np.isfinite(m["eval_return"][:, 39::40]).all()
    np.testing.assert_array_equal(state.grad_step, (n - 29) * 2)
    # the actor learns on every gradient step of DDPG and on every second one of TD3, so
    # with 2 gradient steps per update both report an actor loss on every learning update
    assert np.isfinite(m["actor_loss"][:, 29:]).all()


# ----------------------------------------------------------------------------- warm-up, delay


def test_warmup_is_uniform_random_and_leaves_parameters_untouched(purerl_jit_level0):
    agent = td3.make_agent({**SMALL, "num_envs": 4, "learning_starts": 400,
                            "total_timesteps": 800})
    state0 = agent.init(jax.random.key(0))
    state, _ = run_updates(agent, state0, 99)
    for a, b in zip(jax.tree.leaves((state0.params, state0.target, state0.actor_opt)),
                    jax.tree.leaves((state.params, state.target, state.actor_opt))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    actions = np.asarray(state.buffer.data.action[: 4 * 99, 0])
    # mu(s) is ~0 at initialisation; the stored actions are uniform on [-2, 2]
    assert actions.min() > -2 and actions.max() < 2
    assert np.std(actions) == pytest.approx(4 / np.sqrt(12), rel=0.1)
    assert abs(np.mean(actions)) < 0.2


def test_policy_delay_updates_actor_and_targets_every_second_gradient_step(purerl_jit_level0):
    agent = td3.make_agent({**SMALL, "num_envs": 1, "learning_starts": 40,
                            "num_gradient_steps": 1, "total_timesteps": 100})
    update = purerl.jit(agent.update)
    state = agent.init(jax.random.key(0))
    for _ in range(39):
        state, _ = update(state)

    def changed(a, b):
        return any(not np.array_equal(np.asarray(x), np.asarray(y))
                   for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))

    pattern = []
    for _ in range(8):
        new, m = update(state)
        pattern.append((changed(state.params.critic, new.params.critic),
                        changed(state.params.actor, new.params.actor),
                        changed(state.target, new.target), np.isfinite(m["actor_loss"])))
        state = new
    assert [p[0] for p in pattern] == [True] * 8  # the critics learn on every step
    for column in (1, 2, 3):  # actor, targets and the actor loss on steps 0, 2, 4, 6 only
        assert [p[column] for p in pattern] == [True, False] * 4
    assert int(state.grad_step) == 8


# ----------------------------------------------------------------------------- acting


def test_act_is_mu_and_exploring_adds_gaussian_noise_of_the_configured_scale():
    agent = td3.make_agent(SMALL)
    state = agent.init(jax.random.key(0))
    obs = jax.random.normal(jax.random.key(1), (2000, 3))
    act = jax.jit(agent.act, static_argnames="deterministic")
    mu = DeterministicActor(envs.make("Pendulum-v1").spec, SMALL["hidden_sizes"]).apply(
        state.params.actor, obs)
    np.testing.assert_allclose(act(state, obs), mu, rtol=1e-6, atol=1e-7)
    noisy = np.asarray(act(state, obs, jax.random.key(2), deterministic=False))
    assert np.all(np.abs(noisy) <= 2.0)
    # mu(s) is ~0 at initialisation, so the clipping at +-2 (10 std) never acts
    assert np.std(noisy - np.asarray(mu)) == pytest.approx(0.1 * 2.0, rel=0.05)


def test_exploration_noise_swept_as_a_hyperparameter_reaches_acting_and_the_buffer():
    """A vmapped sweep over ``exploration_noise`` [0, 0.5] from one key: the 0 run acts (and
    stores in its buffer) exactly mu(s), the 0.5 run mu(s) plus noise."""
    num_envs, n = 4, 10
    agent = ddpg.make_agent({**SMALL, "num_envs": num_envs, "learning_starts": 400,
                             "random_warmup": False, "total_timesteps": 800})
    states = purerl.jit(jax.vmap(agent.init, in_axes=(None, 0)))(
        jax.random.key(0), {"exploration_noise": jnp.array([0.0, 0.5])})
    state_0, state_half = (jax.tree.map(lambda x, i=i: x[i], states) for i in range(2))
    act = jax.jit(agent.act, static_argnames="deterministic")
    obs = jax.random.normal(jax.random.key(1), (64, 3))
    mu = np.asarray(act(state_0, obs))
    np.testing.assert_array_equal(act(state_half, obs), mu)  # same key: same parameters
    np.testing.assert_array_equal(act(state_0, obs, jax.random.key(2), deterministic=False), mu)
    explored = np.asarray(act(state_half, obs, jax.random.key(2), deterministic=False))
    assert (explored != mu).all()

    final, metrics = jax.vmap(lambda s: run_updates(agent, s, n))(states)
    np.testing.assert_allclose(metrics["noise_scale"], [[0.0] * n, [1.0] * n])
    stored_obs = np.asarray(final.buffer.data.obs[:, : num_envs * n])
    stored = np.asarray(final.buffer.data.action[:, : num_envs * n])
    assert np.isnan(metrics["critic_loss"]).all()  # no learning: mu is the initial actor's
    # equal up to rounding: mu(s) = -2 + (tanh(.) + 1) * 2 is computed in batches of another
    # shape here, and one float32 step at 2 is 2.4e-7
    np.testing.assert_allclose(stored[0], act(state_0, stored_obs[0]), rtol=0, atol=1e-6)
    assert (np.abs(stored[1] - act(state_half, stored_obs[1])) > 1e-3).mean() > 0.95
    assert not np.allclose(stored[0], stored[1])


# ----------------------------------------------------------------------------- config errors


@pytest.mark.parametrize("module", [ddpg, td3], ids=["ddpg", "td3"])
def test_discrete_env_is_rejected(module):
    with pytest.raises(ValueError, match=rf"{module.Config.algo}.*CartPole-v1.*discrete"):
        module.make_train({"env": "CartPole-v1"})


def test_bad_config_values():
    with pytest.raises(ValueError, match="exploration"):
        ddpg.Config(exploration="epsilon")
    with pytest.raises(ValueError, match="policy_delay"):
        td3.Config(policy_delay=0)
    with pytest.raises(ValueError, match="policy_noise.*did you mean"):
        ddpg.Config.from_dict({"policy_noise": 0.2})  # DDPG has no target smoothing
    with pytest.raises(ValueError, match="tau"):
        td3.Config(tau=1.5)


# ----------------------------------------------------------------------------- learning

# The defaults, tuned over 16 seeds (8 from key 0, 8 from key 1): finals between -103 and
# -213 (DDPG) / -193 (TD3); measured again on 2026-12-07 (key 1, 8 seeds): -131 to -182 (DDPG),
# -130 to -183 (TD3). So two seeds (key 0: DDPG -199, -190; TD3 -192, -189), whose mean fails
# the bar only if a seed ends below -290.
PENDULUM = dict(env="Pendulum-v1", total_timesteps=20_000, eval_every=20_000)


@pytest.mark.slow
def test_ddpg_learns_pendulum_within_20k_steps():
    final = final_seed_evals(ddpg, PENDULUM, seeds=2)
    assert final.mean() >= -250, final


@pytest.mark.slow
def test_td3_learns_pendulum_within_20k_steps():
    final = final_seed_evals(td3, PENDULUM, seeds=2)
    assert final.mean() >= -250, final
