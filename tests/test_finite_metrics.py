"""Every metric of every trainer is finite on one environment of every gymnax family the trainer
supports beyond classic control (MinAtar, bsuite, misc), except where docs/contract.md
documents NaN (``helpers.documented_nan``):

* ``episode_return`` in an update where no episode ended (``episode_count == 0``), and there
  it must be NaN;
* ``eval_return`` in an update that is not evaluated, and there it must be NaN;
* the learning metrics of the replay trainers on warm-up updates (before ``learning_starts``
  env steps are stored), which take no gradient step, and there they must be NaN; and TD3's
  ``actor_loss`` on updates whose gradient steps include no delayed actor step.

Classic control is each trainer's reference environment: test_contract checks the same on
the contract's vmapped run there (CartPole-v1, or Pendulum-v1 for DDPG, TD3 and SAC), so no
program is compiled for it here.

One compiled run per (algorithm, environment) with tiny networks and batches, a few updates,
one evaluation at the end; one test per algorithm so the compilations are spread evenly. The
configurations provoke the sparse-reward corner cases: DeepSea, FrozenLake and a few MinAtar
episodes rarely see a reward, so whole batches of returns are 0.
"""

from __future__ import annotations

import functools
import os
from concurrent.futures import ThreadPoolExecutor

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import OFF_POLICY_ALGOS, non_finite_report

import purerl
from purerl import envs, losses, prng

# One environment of every gymnax family but classic control (test_contract, see above): (the
# discrete one, the continuous one). The misc family has both: a trainer that supports
# continuous actions gets PointRobot (its continuous path is then run beyond its reference
# environment), a discrete-only one FrozenLake, whose reward is rare enough that whole batches
# of returns are 0 (the discrete trainers see that on DeepSea too).
FAMILIES = {"minatar": ("Breakout-MinAtar", None), "bsuite": ("DeepSea-bsuite", None),
            "misc": ("FrozenLake-misc", "PointRobot-misc")}

UPDATES = 3  # on-policy updates per run
THREADS = min(2, os.cpu_count() or 1)  # (algorithm, environment) runs compiled concurrently
TINY = dict(hidden_sizes=(8,), eval_every=0, eval_episodes=1)
# the replay trainers: 2 envs, learning from the 4th update on (learning_starts = 8 env steps)
OFF_POLICY = dict(num_envs=2, total_timesteps=2 * 7, learning_starts=8, batch_size=8,
                  buffer_size=16, num_gradient_steps=1)
CONFIGS: dict[str, dict] = {
    "reinforce": dict(num_episodes=2, vf_iters=1),
    "actor_critic": dict(num_envs=2, vf_iters=1),
    "a2c": dict(num_envs=2, num_steps=4),
    "a3c": dict(num_envs=2, num_steps=4, num_workers=2),
    "ppo": dict(num_envs=2, num_steps=8, update_epochs=1, num_minibatches=1),
    "trpo": dict(num_envs=2, num_steps=8, vf_epochs=1, vf_minibatches=1, cg_iters=2,
                 max_backtracks=2),
    "dqn": dict(OFF_POLICY, target_update_every=2),
    "pqn": dict(num_envs=2, num_steps=8, update_epochs=1, num_minibatches=1),
    "ddpg": dict(OFF_POLICY),
    # one gradient step per update and policy_delay 2: every other update has no actor step
    "td3": dict(OFF_POLICY),
    "sac": dict(OFF_POLICY),
    "off_policy_ac": dict(OFF_POLICY),
}


def envs_for(algo: str) -> list[str]:
    """One environment per family that ``algo`` supports (see :data:`FAMILIES`)."""
    spaces = purerl.ALGORITHMS[algo][1]
    discrete, continuous = "discrete" in spaces, "continuous" in spaces
    chosen = []
    for d, c in FAMILIES.values():
        if c is not None and continuous:
            chosen.append(c)
        elif d is not None and discrete:
            chosen.append(d)
    return chosen


def config_for(algo: str, env: str) -> dict:
    """The tiny config of ``algo`` on ``env``: ``UPDATES`` updates for the on-policy trainers
    (the whole-episode ones get ``UPDATES`` times their upper bound of steps per update)."""
    cfg = {**TINY, **CONFIGS[algo], "env": env}
    if algo in OFF_POLICY_ALGOS:
        return cfg
    if algo in ("reinforce", "actor_critic"):
        per_update = cfg.get("num_episodes", cfg.get("num_envs")) * envs.make(
            env).spec.max_episode_steps
    else:  # a rollout config: num_envs * num_steps (times num_workers for A3C)
        config = purerl.get_algorithm(algo).Config.coerce({**cfg, "total_timesteps": 10**6})
        per_update = config.steps_per_update
    return {**cfg, "total_timesteps": UPDATES * per_update}


def run(algo: str, env: str, key: int = 0) -> list[str]:
    cfg = config_for(algo, env)
    module = purerl.get_algorithm(algo)
    agent = module.make_agent(cfg)
    # LLVM at -O0 compiles about 30% faster than purerl.jit's -O1 (finiteness does not depend on
    # it), but runs MinAtar's convolution 5x slower: the whole-episode trainers push the full
    # 1000-step buffer through it, and compile faster than they would run there.
    slow_run = algo in ("reinforce", "actor_critic") and len(envs.make(env).spec.obs_shape) == 3
    train = jax.jit(module.make_train(cfg),
                    compiler_options={"xla_backend_optimization_level": 1 if slow_run else 0})
    _, metrics = train(jax.random.key(key))
    return non_finite_report(algo, env, jax.device_get(metrics), agent.num_updates,
                             agent.eval_every, cfg)


@pytest.mark.parametrize("algo", list(purerl.ALGORITHMS))
def test_every_metric_is_finite_except_documented_nans(algo, monkeypatch):
    # JAX's own lowering of purerl's generator (the same random numbers, purerl.prng): these
    # unbatched programs compile 2-3x slower with the unrolled hash (benchmarks/RESULTS.md)
    monkeypatch.setenv(prng.UNROLL_ENV, "0")
    # XLA compiles without holding the GIL: two threads halve the wall time on an idle machine
    with ThreadPoolExecutor(THREADS) as pool:
        reports = list(pool.map(functools.partial(run, algo), envs_for(algo)))
    problems = [p for report in reports for p in report]
    assert not problems, "\n".join(problems)


def test_explained_variance_of_constant_targets_is_finite():
    """1 - Var[G - V] / Var[G] is undefined for constant G: 1 when G - V is constant as well,
    else 0 (scikit-learn's force_finite convention); masked samples do not count. This is what
    REINFORCE and batch actor-critic reported as NaN on FrozenLake, FourRooms and MinAtar."""
    zeros, values = jnp.zeros(6), jnp.arange(6.0)
    assert float(losses.explained_variance(values, zeros)) == 0.0
    assert float(losses.explained_variance(values - 2.0, values)) == 1.0
    assert float(losses.explained_variance(zeros + 3.0, zeros)) == 1.0
    mask = jnp.asarray([True, True, False, False, False, False])
    targets = jnp.asarray([1.0, 1.0, 5.0, -2.0, 0.0, 7.0])
    assert float(losses.explained_variance(values, targets, mask)) == 0.0
    assert float(losses.explained_variance(values, targets, jnp.zeros(6, bool))) == 1.0
    np.testing.assert_allclose(losses.explained_variance(values, 2.0 * values), 0.75)
    # a NaN critic is not hidden
    assert np.isnan(losses.explained_variance(values.at[1].set(jnp.nan), zeros))
