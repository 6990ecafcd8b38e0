"""DQN: TD targets against NumPy, the metrics, buffer fill and gradient-step count, the epsilon
schedule and epsilon-greedy acting, target-network updates, learning_starts, config errors, and
learning CartPole. vmap over seeds, determinism and chunked runs: ``test_contract.py``."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import SMALL, assert_trees_close, final_seed_evals

import purerl
from purerl import dqn, losses

SMALL = SMALL["dqn"]


# ----------------------------------------------------------------------------- targets


def _random_batch(seed=0, n=64, num_actions=3):
    rng = np.random.default_rng(seed)
    reward = rng.normal(size=n).astype(np.float32)
    terminated = rng.random(n) < 0.3
    truncated = ~terminated & (rng.random(n) < 0.3)  # time limits: stored as not terminated
    q_target = rng.normal(size=(n, num_actions)).astype(np.float32)
    q_online = rng.normal(size=(n, num_actions)).astype(np.float32)
    assert terminated.any() and truncated.any()
    return reward, terminated, truncated, q_target, q_online


def test_dqn_target_matches_numpy():
    reward, terminated, truncated, q_target, _ = _random_batch()
    y = np.asarray(losses.q_learning_target(jnp.asarray(reward), jnp.asarray(terminated),
                                            jnp.asarray(q_target), 0.9))
    expected = np.array([r + (0.0 if t else 0.9 * q.max())
                         for r, t, q in zip(reward, terminated, q_target)])
    np.testing.assert_allclose(y, expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(y[terminated], reward[terminated])
    # truncated transitions bootstrap from the real next state
    np.testing.assert_allclose(y[truncated], reward[truncated] + 0.9 * q_target[truncated].max(1),
                               rtol=1e-6)


def test_double_dqn_target_matches_numpy():
    reward, terminated, truncated, q_target, q_online = _random_batch(1)
    y = np.asarray(losses.q_learning_target(jnp.asarray(reward), jnp.asarray(terminated),
                                            jnp.asarray(q_target), 0.9, jnp.asarray(q_online)))
    expected = np.array([r + (0.0 if t else 0.9 * qt[np.argmax(qo)])
                         for r, t, qt, qo in zip(reward, terminated, q_target, q_online)])
    np.testing.assert_allclose(y, expected, rtol=1e-6, atol=1e-6)
    assert not np.allclose(y, np.asarray(losses.q_learning_target(
        jnp.asarray(reward), jnp.asarray(terminated), jnp.asarray(q_target), 0.9)))
    assert np.isfinite(y[truncated]).all() and not np.allclose(y[truncated], reward[truncated])


# ----------------------------------------------------------------------------- metrics


def test_metrics_buffer_fill_and_gradient_step_count(purerl_jit_level0):
    keys = jax.random.split(jax.random.key(0), 3)
    state_b, metrics_b = purerl.jit(jax.vmap(dqn.make_train(SMALL)))(keys)
    for name in ["q_mean", "td_error", "loss", "epsilon", "lr"]:
        assert metrics_b[name].shape == (3, 30), name
    np.testing.assert_array_equal(metrics_b["env_steps"][0], 4 * np.arange(1, 31))
    # 120 steps into a 64-slot buffer: full; gradient steps only from 16 env steps on
    assert int(state_b.buffer.size[0]) == 64
    np.testing.assert_array_equal(state_b.grad_step, [2 * 27] * 3)


def test_epsilon_schedule_values_are_exact(purerl_jit_level0):
    cfg = dict(SMALL, epsilon_start=0.9, epsilon_end=0.1, exploration_fraction=0.5)
    _, m = purerl.jit(dqn.make_train(cfg))(jax.random.key(3))
    steps_before = 4 * np.arange(30)
    expected = 0.9 + (0.1 - 0.9) * np.minimum(steps_before / (0.5 * 120), 1.0)
    np.testing.assert_allclose(m["epsilon"], expected, rtol=1e-6, atol=1e-7)
    assert m["epsilon"][0] == pytest.approx(0.9) and m["epsilon"][-1] == pytest.approx(0.1)
    np.testing.assert_allclose(dqn.epsilon_schedule(np.array([0, 30, 60, 90]), 120, 1.0, 0.0,
                                                    0.5), [1.0, 0.5, 0.0, 0.0])


def test_epsilon_greedy_explores_at_the_stated_rate():
    q = jnp.tile(jnp.array([0.0, 1.0, 0.5]), (20_000, 1))
    greedy = np.asarray(dqn.epsilon_greedy(jax.random.key(0), q, 0.0))
    assert (greedy == 1).all()
    a = np.asarray(dqn.epsilon_greedy(jax.random.key(1), q, 0.3))
    # non-greedy actions appear with probability 0.3 * 2/3
    assert abs((a != 1).mean() - 0.2) < 0.015
    assert set(np.unique(a)) == {0, 1, 2}


def test_act_explores_with_the_states_current_epsilon():
    """``act(deterministic=False)`` is epsilon-greedy at the schedule's value for the state's
    env steps and hyperparameters: uniform at the first step with epsilon_start = 1, greedy
    with epsilon 0, and half the way down the schedule epsilon 0.5 (non-greedy 0.25 of the
    time with two actions)."""
    agent = dqn.make_agent(dict(SMALL, epsilon_end=0.0, exploration_fraction=0.5))
    act = jax.jit(agent.act, static_argnames="deterministic")
    obs = jnp.tile(jnp.array([0.01, -0.02, 0.03, 0.04]), (20_000, 1))
    state = agent.init(jax.random.key(0))
    greedy = np.asarray(act(state, obs))
    assert (greedy == greedy[0]).all()
    explored = np.asarray(act(state, obs, jax.random.key(1), deterministic=False))
    assert set(np.unique(explored)) == {0, 1}
    assert abs(explored.mean() - 0.5) < 0.015
    # 30 of the 0.5 * 120 env steps of the decay from 1 to 0: epsilon 0.5
    steps = jnp.asarray(30, state.run.env_steps.dtype)
    halfway = state.replace(run=state.run.replace(env_steps=steps))
    explored = np.asarray(act(halfway, obs, jax.random.key(2), deterministic=False))
    assert abs((explored != greedy).mean() - 0.25) < 0.015
    no_exploration = agent.init(jax.random.key(0), {"epsilon_start": 0.0, "epsilon_end": 0.0})
    np.testing.assert_array_equal(
        act(no_exploration, obs, jax.random.key(1), deterministic=False), greedy)


def _tree_equal(a, b):
    return all(np.array_equal(np.asarray(x), np.asarray(y))
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_hard_target_copy_every_n_gradient_steps_after_learning_starts(purerl_jit_level0):
    agent = dqn.make_agent(dict(SMALL, num_gradient_steps=1, target_update_every=3,
                                learning_starts=8, total_timesteps=4 * 12))
    update = purerl.jit(agent.update)
    state = agent.init(jax.random.key(0))
    initial = state.params
    copies = 0
    for i in range(12):
        prev = state
        state, _ = update(state)
        learning = 4 * (i + 1) >= 8
        assert int(state.grad_step) == (i if learning else 0)
        if not learning:  # the gradient step ran but was discarded
            assert _tree_equal(state.params, initial) and _tree_equal(state.opt_state,
                                                                      prev.opt_state)
            assert _tree_equal(state.target_params, initial)
            continue
        assert not _tree_equal(state.params, prev.params)
        if int(state.grad_step) % 3 == 0:
            assert _tree_equal(state.target_params, state.params)
            copies += 1
        else:
            assert _tree_equal(state.target_params, prev.target_params)
            assert not _tree_equal(state.target_params, state.params)
    assert copies == 3  # after gradient steps 3, 6, 9


def test_polyak_target_moves_toward_online(purerl_jit_level0):
    agent = dqn.make_agent(dict(SMALL, num_gradient_steps=1, target_update_every=1, tau=0.1,
                                learning_starts=0, total_timesteps=4 * 6))
    update = purerl.jit(agent.update)
    state = agent.init(jax.random.key(1))
    for _ in range(6):
        prev = state
        state, _ = update(state)
        expected = jax.tree.map(lambda t, o: 0.9 * t + 0.1 * o, prev.target_params, state.params)
        assert_trees_close(state.target_params, expected, rtol=1e-6, atol=1e-7)
        dist = lambda a, b: sum(float(jnp.sum((x - y) ** 2))  # noqa: E731
                                for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
        assert dist(state.target_params, state.params) < dist(prev.target_params, state.params)


def test_options_compile_and_report_finite_losses(purerl_jit_level0):
    for opts in [dict(double_dqn=False, dueling=True, loss="huber", anneal_lr=False),
                 dict(normalize_obs=True, tau=0.05, target_update_every=1)]:
        _, m = purerl.jit(dqn.make_train(dict(SMALL, **opts)))(jax.random.key(2))
        # learning_starts = 16 env steps = 4 updates of 4 envs: the first 3 take no gradient
        # steps and report NaN, the rest finite values
        loss, td_error = np.asarray(m["loss"]), np.asarray(m["td_error"])
        assert np.isnan(loss[:3]).all() and np.isnan(td_error[:3]).all(), opts
        assert np.isfinite(loss[3:]).all() and np.isfinite(td_error[3:]).all(), opts
        assert (td_error[3:] >= 0).all()


# ----------------------------------------------------------------------------- config errors


def test_continuous_env_is_rejected_at_build_time():
    with pytest.raises(ValueError, match=r"dqn.*Pendulum-v1"):
        dqn.make_train({"env": "Pendulum-v1"})


def test_bad_values_are_reported():
    with pytest.raises(ValueError, match="loss"):
        dqn.Config(loss="l1")
    with pytest.raises(ValueError, match="tau"):
        dqn.Config(tau=0.0)
    with pytest.raises(ValueError, match="buffer_size"):
        dqn.Config(buffer_size=4, num_envs=8)
    with pytest.raises(ValueError, match="total_timesteps"):
        dqn.Config(total_timesteps=8, num_envs=16)
    with pytest.raises(ValueError, match="batch_size.*static"):
        dqn.make_agent(SMALL).init(jax.random.key(0), {"batch_size": 8})


def test_registered():
    assert purerl.get_algorithm("dqn") is dqn


# ----------------------------------------------------------------------------- learning


@pytest.mark.slow
def test_dqn_defaults_learn_cartpole_within_100k_steps():
    """The mean of 4 seeds at 300, not 400: of 16 seeds measured at 100k steps (2026-12-07, 8
    of key 0 and 8 of key 1) 13 ended at 475-500, two collapsed late (from 500 to 150-250
    after 92k steps; one climbed back to 439) and one sat at ~110 throughout. A 4-seed mean
    fails 300 only if 3 seeds are down (about 1-2% at the 2-3 in 16 seen); at 400 two were
    enough (about 8%), and which seeds are down depends on the machine's float rounding. A
    policy that has not learned scores about 20 (random) or 110."""
    final = final_seed_evals(dqn, dqn.Config(), seeds=4)
    assert final.mean() >= 300, final
