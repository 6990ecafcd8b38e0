"""XLand-MiniGrid's MiniGrid tasks as gymnax environments (:mod:`purerl.xland`, the optional
``memory`` extra): the adapter against xminigrid's own reset and step, termination versus
truncation, a recurrent PPO run on MiniGrid-MemoryS8, and the error without the extra."""

from __future__ import annotations

import importlib.util

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import purerl
from purerl import envs, ppo, xland

needs_extra = pytest.mark.skipif(not xland.available(), reason='needs pip install -e ".[memory]"')

# Empty-6x6: the agent starts at (1, 1) facing right, the goal is at (4, 4): three steps forward,
# a right turn, three steps forward (actions: 0 forward, 1 turn right)
TO_THE_GOAL = (0, 0, 0, 1, 0, 0, 0)


def _expected_obs(timestep):
    view = np.asarray(timestep.observation, np.float32).ravel()
    return np.concatenate([view, np.eye(4, dtype=np.float32)[int(timestep.state.agent.direction)]])


@needs_extra
def test_registered_ids_are_xminigrid_ids():
    import xminigrid

    assert set(xland.TASKS) <= set(xminigrid.registered_environments())
    assert all(xland.PREFIX + t in envs.registered() for t in xland.TASKS)
    with pytest.raises(ValueError, match="xminigrid/MiniGrid-MemoryS8") as exc:
        envs.make("xminigrid/MiniGrid-MemoryS9")
    assert "\n" not in str(exc.value)


@needs_extra
def test_reset_and_step_equal_xminigrid_through_auto_resets():
    """Same keys, same actions: the adapter's observations, rewards and episode ends are
    xminigrid's, and after an end its next observation is xminigrid's reset with the step's
    second key (gymnax's auto-reset)."""
    import xminigrid

    env, params = xland.make("xminigrid/MiniGrid-MemoryS8", max_steps=12)
    raw, raw_params = xminigrid.make("MiniGrid-MemoryS8", max_steps=12)
    assert params.max_steps_in_episode == 12
    raw_reset = jax.jit(lambda key: raw.reset(raw_params, key))
    raw_step = jax.jit(lambda ts, a: raw.step(raw_params, ts, a))
    step = jax.jit(env.step)

    key = jax.random.key(3)
    obs, state = env.reset(key, params)
    ts = raw_reset(key)
    np.testing.assert_array_equal(obs, _expected_obs(ts))
    assert obs.dtype == jnp.float32 and obs.shape == env.observation_space(params).shape
    rng = np.random.default_rng(0)
    ends = {"terminated": 0, "truncated": 0}
    # the first episode walks to the corridor's end (the agent starts in it facing right) and
    # into one of the two objects' cells: a termination; random actions after that
    actions = [0] * 6 + [1, 0] + rng.choice(6, 32, p=[0.6, 0.15, 0.15, 0, 0, 0.1]).tolist()
    for t, action in enumerate(actions):
        key_t = jax.random.key(100 + t)
        obs, state, reward, terminated, truncated, info = step(key_t, state, action, params)
        ts = raw_step(ts, action)
        np.testing.assert_array_equal(info["final_observation"], _expected_obs(ts))
        np.testing.assert_allclose(reward, ts.reward, rtol=1e-6)
        last = bool(ts.last())
        assert bool(terminated) == (last and float(ts.discount) == 0.0)
        assert bool(truncated) == (last and float(ts.discount) == 1.0)
        ends["terminated"] += bool(terminated)
        ends["truncated"] += bool(truncated)
        if last:
            ts = raw_reset(jax.random.split(key_t)[1])
        np.testing.assert_array_equal(obs, _expected_obs(ts))
        assert int(state.time) == int(ts.state.step_num)
    assert ends["terminated"] >= 1 and ends["truncated"] >= 1, ends


@needs_extra
def test_goal_is_a_termination_and_the_time_limit_a_truncation():
    env = envs.make("xminigrid/MiniGrid-Empty-6x6")
    assert env.spec.max_episode_steps == 4 * 6 * 6 and env.spec.num_actions == 6
    # column 0: the scripted path to the goal (then turning on the spot); column 1: turning only
    path = np.ones((env.spec.max_episode_steps + 1, 2), np.int32)
    path[:len(TO_THE_GOAL), 0] = TO_THE_GOAL

    def body(state, inp):
        t, action = inp
        state, tr = env.step(jax.random.key(t), state, action)
        return state, tr

    ts = jnp.arange(len(path))
    _, tr = jax.jit(lambda s: jax.lax.scan(body, s, (ts, jnp.asarray(path))))(
        env.reset(jax.random.key(0), 2))
    terminated, truncated = np.asarray(tr.terminated), np.asarray(tr.truncated)
    reward = np.asarray(tr.reward)
    goal = len(TO_THE_GOAL) - 1
    assert terminated[goal, 0] and not truncated[goal, 0]
    np.testing.assert_allclose(reward[goal, 0], 1 - 0.9 * len(TO_THE_GOAL) / 144, rtol=1e-6)
    np.testing.assert_allclose(tr.completed_return[goal, 0], reward[goal, 0])
    assert terminated[:, 0].sum() == 1 and reward[:, 0].sum() == reward[goal, 0]
    # turning on the spot never reaches the goal: truncated at the 144th step only
    assert not terminated[:, 1].any() and (reward[:, 1] == 0).all()
    assert np.flatnonzero(truncated[:, 1]).tolist() == [143]
    # the goal reached on the last step allowed is a termination, not a truncation
    short = envs.make("xminigrid/MiniGrid-Empty-6x6", max_steps=len(TO_THE_GOAL))
    assert short.spec.max_episode_steps == len(TO_THE_GOAL)
    state = short.reset(jax.random.key(0), 1)
    for t, action in enumerate(TO_THE_GOAL):
        state, tr = short.step(jax.random.key(t), state, jnp.full((1,), action, jnp.int32))
    assert bool(tr.terminated[0]) and not bool(tr.truncated[0])


@needs_extra
def test_unknown_keyword_names_the_adapters_keywords():
    with pytest.raises(ValueError, match="max_steps") as exc:
        envs.make("xminigrid/MiniGrid-MemoryS8", max_step=10)
    assert "\n" not in str(exc.value)


@needs_extra
def test_recurrent_ppo_runs_on_memory_s8(purerl_jit_level0):
    config = dict(env="xminigrid/MiniGrid-MemoryS8", memory="gru", memory_size=8,
                  hidden_sizes=(8,), num_envs=4, num_steps=8, num_minibatches=2,
                  update_epochs=1, total_timesteps=4 * 8 * 3, eval_every=3, eval_episodes=2)
    keys = jax.random.split(jax.random.key(0), 2)
    _, metrics = purerl.jit(jax.vmap(ppo.make_train(config)))(keys)
    assert np.asarray(metrics["eval_return"]).shape[0] == 2
    for name, value in metrics.items():
        value = np.asarray(value)
        if not np.issubdtype(value.dtype, np.floating) or name == "episode_return":
            continue  # NaN until an episode ends
        # evaluations run every eval_every updates and at the end (NaN in between)
        checked = value[:, -1] if name.startswith("eval_") else value
        assert np.isfinite(checked).all(), name


def test_missing_extra_is_a_one_line_error_with_the_install_command(monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "xminigrid" else find_spec(name, *a))
    xland.available.cache_clear()
    try:
        assert not xland.available() and xland.factories() == {}
        monkeypatch.setattr(envs, "_EXTRA", {k: v for k, v in envs._EXTRA.items()
                                             if not k.startswith(xland.PREFIX)})
        assert not any(e.startswith(xland.PREFIX) for e in envs.registered())
        with pytest.raises(ValueError, match=r'pip install -e "\.\[memory\]"') as exc:
            envs.make("xminigrid/MiniGrid-MemoryS8")
        assert isinstance(exc.value, ImportError) and "\n" not in str(exc.value)
        assert isinstance(exc.value, xland.MissingExtraError)
    finally:
        monkeypatch.undo()
        xland.available.cache_clear()
