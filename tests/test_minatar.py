"""MinAtar (Young & Tian 2019): the tuned Breakout preset at a CI budget must beat a uniformly
random policy by a stated margin, and every MinAtar preset run far below its budget (as a user
trying it first would) must fit its schedules to the budget it was given. The short runs of
every trainer family on MinAtar with finite metrics are in test_finite_metrics.py; the conv
torso's math in test_presets.py."""

import jax
import numpy as np
import pytest

import purerl
from purerl import envs, ppo
from helpers import final_seed_evals

ENV = "Breakout-MinAtar"
# The Breakout PPO preset shortened to 32 updates (of its 122): measured 7.0 and 16.4 on the two
# seeds below (7.0 and 7.5 at 24 updates), random play 0.39; about 40 s on the 2-core CPU
CI_STEPS = 32 * 64 * 128
MARGIN = 5.0


def random_policy_return(num_envs: int = 64, steps: int = 600) -> float:
    """Mean return of the episodes that end within ``steps`` steps of ``num_envs`` environments
    under uniformly random actions."""
    env = envs.make(ENV)

    def step(state, key):
        action_key, step_key = jax.random.split(key)
        action = jax.random.randint(action_key, (num_envs,), 0, env.spec.num_actions)
        state, tr = env.step(step_key, state, action)
        return state, (tr.completed_return, tr.terminated | tr.truncated)

    state = env.reset(jax.random.key(0), num_envs)
    _, (returns, done) = jax.lax.scan(step, state, jax.random.split(jax.random.key(1), steps))
    done = np.asarray(done)
    assert done.sum() >= num_envs  # every env finished at least one episode on average
    return float(np.asarray(returns)[done].mean())


@pytest.mark.slow
def test_ppo_preset_beats_random_on_breakout_at_a_ci_budget():
    # The Breakout preset as registered, shortened to CI_STEPS (its learning rate anneals over
    # the shortened run); the old conv preset's check was +2 at 64k steps
    config = ppo.Config.for_env(ENV, total_timesteps=CI_STEPS, eval_every=0)
    assert config.torso == "mlp" and config.lr == ppo.Config.for_env(ENV).lr
    baseline = random_policy_return()
    final = final_seed_evals(ppo, config, seeds=2)
    assert np.isfinite(final).all()
    assert final.mean() >= baseline + MARGIN, (final, baseline)


def run_one_seed(algo: str, env: str, total_timesteps: int) -> tuple[object, dict]:
    module = purerl.get_algorithm(algo)
    config = module.Config.for_env(env, total_timesteps=total_timesteps, eval_every=0)
    _, metrics = purerl.jit(module.make_train(config))(jax.random.key(0))
    return config, jax.device_get(metrics)


@pytest.mark.parametrize("algo", ["ppo", "a2c", "pqn"])
def test_learning_rate_anneals_over_a_shortened_budget(algo, purerl_jit_level0):
    # three updates, a few percent of the preset's budget at most: the learning rate must decay
    # over the run it was given, not stay near its start as it would on the preset's horizon
    module = purerl.get_algorithm(algo)
    budget = module.Config.for_env(ENV).total_timesteps
    config, metrics = run_one_seed(algo, ENV, 3 * module.Config.for_env(ENV).steps_per_update)
    assert config.total_timesteps <= budget // 25 and config.anneal_lr
    n = config.num_updates
    expected = [config.lr * (1 - i / n) for i in range(n)]  # linear decay, update i of n
    np.testing.assert_allclose(metrics["lr"], expected, rtol=1e-6)


@pytest.mark.parametrize("algo", ["dqn", "pqn"])
def test_exploration_decays_over_a_shortened_budget(algo, purerl_jit_level0):
    module = purerl.get_algorithm(algo)
    budget = module.Config.for_env(ENV).total_timesteps
    config, metrics = run_one_seed(algo, ENV, budget // 50)
    # env steps before each update (DQN: one step per env; PQN: one rollout)
    per_update = getattr(config, "steps_per_update", config.num_envs)
    steps = np.arange(config.num_updates) * per_update
    horizon = config.exploration_fraction * config.total_timesteps
    expected = [config.epsilon_start + (config.epsilon_end - config.epsilon_start)
                * min(1.0, s / horizon) for s in steps]
    np.testing.assert_allclose(metrics["epsilon"], expected, rtol=1e-5, atol=1e-6)
    assert metrics["epsilon"][-1] == pytest.approx(config.epsilon_end)
