"""DQN: TD targets against NumPy, the trainer contract (determinism, vmap), the epsilon schedule,
target-network updates, learning_starts, config errors, and learning CartPole."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_ppo import assert_trees_close, assert_vmap_equals_single_runs

import purerl
from purerl import dqn, losses

SMALL = dict(env="CartPole-v1", num_envs=4, num_gradient_steps=2, batch_size=8, buffer_size=64,
             learning_starts=16, target_update_every=5, hidden_sizes=(16, 16),
             total_timesteps=4 * 30, eval_every=10, eval_episodes=2)


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


# ----------------------------------------------------------------------------- contract


@pytest.fixture(scope="module")
def small_train():
    return dqn.make_train(SMALL)


def test_same_key_same_result_and_vmap_equals_single_runs(small_train):
    keys = jax.random.split(jax.random.key(0), 3)
    state_b, metrics_b = purerl.jit(jax.vmap(small_train))(keys)
    single = purerl.jit(small_train)
    assert_vmap_equals_single_runs(single, (state_b, metrics_b), keys,
                                   fields=("params", "target_params"))
    (s1, m1), (s2, m2) = single(keys[1]), single(keys[1])
    for x, y in zip(jax.tree.leaves((s1.params, s1.buffer, m1)),
                    jax.tree.leaves((s2.params, s2.buffer, m2))):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert metrics_b["eval_return"].shape == (3, 30)
    evaluated = np.isfinite(metrics_b["eval_return"])
    assert evaluated[:, [9, 19, 29]].all() and evaluated.sum() == 9
    for name in ["episode_return", "episode_count", "env_steps", "q_mean", "td_error", "loss",
                 "epsilon", "lr"]:
        assert metrics_b[name].shape == (3, 30), name
    np.testing.assert_array_equal(metrics_b["env_steps"][0], 4 * np.arange(1, 31))
    # 120 steps into a 64-slot buffer: full; gradient steps only from 16 env steps on
    assert int(state_b.buffer.size[0]) == 64
    np.testing.assert_array_equal(state_b.grad_step, [2 * 27] * 3)


def test_epsilon_schedule_values_are_exact():
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


def _tree_equal(a, b):
    return all(np.array_equal(np.asarray(x), np.asarray(y))
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_hard_target_copy_every_n_gradient_steps_after_learning_starts():
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


def test_polyak_target_moves_toward_online():
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


def test_options_compile_and_report_finite_losses():
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
def test_dqn_defaults_solve_cartpole_within_100k_steps():
    keys = jax.random.split(jax.random.key(0), 4)
    _, m = purerl.jit(jax.vmap(dqn.make_train(dqn.Config())))(keys)
    final = np.asarray(m["eval_return"][:, -1])
    assert final.mean() >= 400, final
