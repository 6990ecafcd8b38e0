"""Every metric of every trainer is finite on one environment of every gymnax family the trainer
supports (classic control, MinAtar, bsuite, misc), except where docs/contract.md documents NaN:

* ``episode_return`` in an update where no episode ended (``episode_count == 0``), and there
  it must be NaN;
* ``eval_return`` in an update that is not evaluated, and there it must be NaN;
* the learning metrics of the replay trainers on warm-up updates (before ``learning_starts``
  env steps are stored), which take no gradient step, and there they must be NaN; and TD3's
  ``actor_loss`` on updates whose gradient steps include no delayed actor step.

One compiled run per (algorithm, environment) with tiny networks and batches, a few updates,
one evaluation at the end; one test per algorithm so the compilations are spread evenly. The
configurations provoke the sparse-reward corner cases: FrozenLake and a few MinAtar episodes
rarely see a reward, so whole batches of returns are 0.
"""

from __future__ import annotations

import functools
import os
from concurrent.futures import ThreadPoolExecutor

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import purerl
from purerl import envs, losses, prng

# One environment of every gymnax family (classic control, MinAtar, bsuite, misc). Where a
# family has both action spaces, the trainers that support both get the continuous classic-control
# task (CartPole-v1 is every trainer's reference environment, checked everywhere else) and the
# discrete misc one (FrozenLake, whose reward is rare enough that whole batches of returns are 0).
FAMILIES = {"classic": ("CartPole-v1", "Pendulum-v1"), "minatar": ("Breakout-MinAtar", None),
            "bsuite": ("DeepSea-bsuite", None), "misc": ("FrozenLake-misc", "PointRobot-misc")}

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
OFF_POLICY_ALGOS = ("dqn", "ddpg", "td3", "sac", "off_policy_ac")
# metrics that exist on every update, warm-up or not
ALWAYS = {"episode_return", "episode_count", "env_steps", "eval_return", "epsilon", "lr",
          "noise_scale"}


def envs_for(algo: str) -> list[str]:
    """One environment per family that ``algo`` supports (see :data:`FAMILIES`)."""
    spaces = purerl.ALGORITHMS[algo][1]
    discrete, continuous = "discrete" in spaces, "continuous" in spaces
    chosen = []
    for family, (d, c) in FAMILIES.items():
        prefer_continuous = family == "classic" and continuous
        if c is not None and (prefer_continuous or not discrete):
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


def documented_nan(algo: str, cfg: dict, metrics: dict, num_updates: int, eval_every: int
                   ) -> dict[str, np.ndarray]:
    """For each metric, the updates on which NaN is documented -- and required: the cases of
    docs/contract.md, and TD3's actor loss as documented in :mod:`purerl.dpg`."""
    updates = np.arange(1, num_updates + 1)
    evaluated = updates == num_updates
    if eval_every > 0:
        evaluated |= updates % eval_every == 0
    nan = {name: np.zeros(num_updates, bool) for name in metrics}
    nan["episode_return"] = np.asarray(metrics["episode_count"]) == 0
    nan["eval_return"] = ~evaluated
    if algo in OFF_POLICY_ALGOS:
        # learning iff the buffer holds learning_starts transitions after the update's add
        learning = updates * cfg["num_envs"] >= cfg["learning_starts"]
        for name in set(metrics) - ALWAYS:
            nan[name] = ~learning
        policy_delay = getattr(purerl.get_algorithm(algo).Config.coerce(cfg), "policy_delay", 1)
        if policy_delay > 1:  # TD3: the actor steps on every policy_delay-th gradient step
            # the j-th learning update takes gradient steps j * G .. j * G + G - 1
            steps = cfg["num_gradient_steps"]
            actor = np.array([any((j * steps + k) % policy_delay == 0 for k in range(steps))
                              for j in np.cumsum(learning) - 1])
            nan["actor_loss"] = ~learning | ~actor
    return nan


def non_finite_report(algo: str, env: str, metrics: dict, num_updates: int, eval_every: int,
                      cfg: dict) -> list[str]:
    """The metrics that are NaN or infinite where docs/contract.md does not allow it, or finite
    where it documents NaN: one line per metric."""
    expected = documented_nan(algo, cfg, metrics, num_updates, eval_every)
    problems = []
    for name, value in sorted(metrics.items()):
        value = np.asarray(value, np.float64)
        assert value.shape == (num_updates,), (name, value.shape)
        bad = ~np.isfinite(value) & ~expected[name]
        bad |= ~np.isnan(value) & expected[name]
        if bad.any():
            problems.append(f"{algo} {env} {name}: updates {np.flatnonzero(bad).tolist()} of "
                            f"{num_updates}: {value.tolist()}")
    return problems


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
