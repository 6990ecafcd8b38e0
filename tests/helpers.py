"""Shared test code: one small configuration per trainer, how the learning checks measure a run,
and comparisons of train states and metrics."""

from __future__ import annotations

import os

import jax
import numpy as np

import purerl
from purerl import loop

# A few updates of every trainer on its reference environment, small enough to compile and run
# in seconds; the off-policy ones cross their warm-up and several target / actor updates.
OFF_POLICY_SMALL = dict(total_timesteps=240, num_envs=2, learning_starts=60, batch_size=32,
                        hidden_sizes=(16, 16), num_gradient_steps=2, eval_every=40,
                        eval_episodes=2)
SMALL: dict[str, dict] = {
    "reinforce": dict(env="CartPole-v1", num_episodes=3, total_timesteps=3 * 500 * 4,
                      vf_iters=3, eval_every=2, eval_episodes=2),
    "actor_critic": dict(env="CartPole-v1", num_envs=3, total_timesteps=3 * 500 * 4, vf_iters=3,
                         eval_every=2, eval_episodes=2),
    "a2c": dict(env="CartPole-v1", num_envs=4, num_steps=5, total_timesteps=4 * 5 * 6,
                eval_every=3, eval_episodes=2),
    "a3c": dict(env="CartPole-v1", num_envs=4, num_steps=5, num_workers=3,
                total_timesteps=3 * 4 * 5 * 6, eval_every=3, eval_episodes=2),
    "ppo": dict(env="CartPole-v1", num_envs=4, num_steps=32, total_timesteps=4 * 32 * 6,
                update_epochs=2, num_minibatches=2, eval_every=3, eval_episodes=2),
    "trpo": dict(env="CartPole-v1", num_envs=4, num_steps=32, total_timesteps=4 * 32 * 6,
                 vf_minibatches=4, vf_epochs=2, eval_every=3, eval_episodes=2),
    "dqn": dict(env="CartPole-v1", num_envs=4, num_gradient_steps=2, batch_size=8,
                buffer_size=64, learning_starts=16, target_update_every=5, hidden_sizes=(16, 16),
                total_timesteps=4 * 30, eval_every=10, eval_episodes=2),
    "ddpg": dict(env="Pendulum-v1", **OFF_POLICY_SMALL),
    "td3": dict(env="Pendulum-v1", **OFF_POLICY_SMALL),
    "sac": dict(env="Pendulum-v1", **OFF_POLICY_SMALL),
}


def small_agent(algo: str, **overrides) -> loop.Agent:
    return purerl.get_algorithm(algo).make_agent({**SMALL[algo], **overrides})


def final_seed_evals(module, config, seeds=4, key=0):
    """The final deterministic evaluation of each of ``seeds`` vmapped runs (keys split from
    ``jax.random.key(key)``): what the learning checks assert on."""
    keys = jax.random.split(jax.random.key(key), seeds)
    _, metrics = purerl.jit(jax.vmap(module.make_train(config)))(keys)
    return np.asarray(metrics["eval_return"][:, -1])


def _data(x):
    """A leaf as a NumPy array; typed PRNG keys as their key data."""
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        x = jax.random.key_data(x)
    return np.asarray(x)


def assert_trees_close(a, b, rtol=1e-4, atol=1e-5):
    """Equal up to float32 rounding: XLA uses different matmul kernels for batched (vmapped)
    and unbatched programs, so the last bits of the parameters may differ."""
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(_data(x), _data(y), rtol=rtol, atol=atol)


def assert_trees_equal(a, b):
    """Bitwise equal (NaN equals NaN); typed PRNG keys are compared by their key data."""
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(_data(x), _data(y))


def learned_networks(state) -> dict:
    """The parameters a trainer learns and its target networks, where it has them."""
    return {f: getattr(state, f) for f in ("params", "target", "target_params")
            if hasattr(state, f)}


def assert_vmap_equals_single_runs(single, batched, keys, part=learned_networks):
    """The trainer contract: seed i of the vmapped run ``batched = (state, metrics)`` equals the
    single run ``single(keys[i])`` on ``part(state)`` (default: the parameters and target
    networks) and on every metric, to float32 rounding (see :func:`assert_trees_close`).
    Optimiser moments near zero and replay-buffer observations (which go through the
    environment's dynamics) amplify the rounding differences, so they are not compared."""
    state_b, metrics_b = batched
    for i in range(len(keys)):
        state_i, metrics_i = single(keys[i])
        assert_trees_close(part(jax.tree.map(lambda x, i=i: x[i], state_b)), part(state_i))
        assert_trees_close({k: v[i] for k, v in metrics_b.items()}, metrics_i)


def run_updates(agent: loop.Agent, state, n: int):
    """``n`` updates of one unbatched state in one compiled scan: ``(state, stacked metrics)``."""
    return purerl.jit(lambda s: jax.lax.scan(lambda s, _: agent.update(s), s, None, n))(state)


def numpy_twin_q(obs, action):
    """Two fixed, different 'critics' as plain functions of (s, a)."""
    q1 = obs.sum(-1) + 2.0 * action[..., 0]
    q2 = 0.5 * obs[..., 0] - action[..., 0] ** 2 + 1.0
    return np.stack([q1, q2])


def subprocess_env() -> dict[str, str]:
    """The environment of a new Python process that shares this session's compilation cache
    (tests/conftest.py), so it loads the programs compiled here instead of compiling again."""
    env = dict(os.environ)
    cache = os.environ.get("PURERL_TEST_XLA_CACHE")
    if cache:
        env["JAX_COMPILATION_CACHE_DIR"] = cache
    return env
