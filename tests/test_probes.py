"""Probe environments (:mod:`purerl.probes`): every trainer learns the exact value or action a
tiny MDP implies, in seconds.

* one-step reward and two-step discounting (``ProbeDiscount``: observation 0, then 1, reward +1
  at the end): V(s_1) = 1 -- the value of a one-step episode with reward 1 -- and
  V(s_0) = gamma (Q(s, a) at the deterministic action for the off-policy critics);
* action-dependent reward (``ProbeAction``): the deterministic policy picks the action the
  observation asks for.

A failure here points at the wiring (terminal handling, discounting, the sign of a loss, the
policy's use of its input) rather than at tuning.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import jit_level0

import purerl
from purerl import loop

GAMMA = 0.9
ON_POLICY = dict(hidden_sizes=(32, 32), gamma=GAMMA, eval_every=0, eval_episodes=2,
                 total_timesteps=2560)
OFF_POLICY = dict(ON_POLICY, num_envs=4, learning_starts=64, batch_size=64, tau=0.05)
DPG = dict(OFF_POLICY, actor_lr=3e-3, critic_lr=3e-3)
WHOLE_EPISODES = dict(ON_POLICY, total_timesteps=640, lr=1e-2, vf_lr=1e-2)

# algo -> (config on every probe, continuous actions)
PROBE_CONFIGS = {
    "reinforce": (dict(WHOLE_EPISODES, num_episodes=8), False),
    "actor_critic": (dict(WHOLE_EPISODES, num_envs=8), False),
    "a2c": (dict(ON_POLICY, num_envs=8, num_steps=8), False),
    "a3c": (dict(ON_POLICY, num_envs=4, num_steps=8, num_workers=2), False),
    "ppo": (dict(ON_POLICY, num_envs=8, num_steps=8, lr=3e-3), False),
    "trpo": (dict(ON_POLICY, num_envs=8, num_steps=8, vf_lr=3e-3, vf_minibatches=2,
                  max_kl=0.05), False),
    "dqn": (dict(OFF_POLICY, num_envs=8, lr=3e-3, target_update_every=20,
                 exploration_fraction=0.3), False),
    "pqn": (dict(ON_POLICY, num_envs=8, num_steps=8, lr=3e-3, num_minibatches=2,
                 exploration_fraction=0.3), False),
    "ddpg": (DPG, True),
    "td3": (DPG, True),
    "sac": (dict(DPG, autotune_alpha=False, alpha=0.01), False),
    "off_policy_ac": (DPG, False),
}
ALGOS = list(purerl.ALGORITHMS)


def train_on_probe(algo: str, kind: str):
    """(agent, final state) of one seed trained on the probe ``kind``."""
    config, continuous = PROBE_CONFIGS[algo]
    env = f"Probe{kind}{'Continuous' if continuous else ''}-v0"
    agent = purerl.get_algorithm(algo).make_agent({**config, "env": env})
    state, _ = jit_level0(loop.make_train_fn(agent))(jax.random.key(0))
    return agent, state


@pytest.mark.parametrize("algo", ALGOS)
def test_one_step_reward_and_two_step_discounting_give_the_exact_values(algo):
    agent, state = train_on_probe(algo, "Discount")
    # V(s_1) = 1 (one step to the end, reward 1), V(s_0) = gamma * V(s_1)
    np.testing.assert_allclose(agent.value(state, jnp.array([[1.0], [0.0]])), [1.0, GAMMA],
                               atol=0.03)


@pytest.mark.parametrize("algo", ALGOS)
def test_policy_takes_the_action_the_observation_asks_for(algo):
    agent, state = train_on_probe(algo, "Action")
    actions = np.asarray(agent.act(state, jnp.array([[1.0], [-1.0]])))
    if PROBE_CONFIGS[algo][1]:  # reward 1 - (a - o/2)^2
        np.testing.assert_allclose(actions[:, 0], [0.5, -0.5], atol=0.06)
    else:  # reward +1 for action 1 on o = +1 and action 0 on o = -1
        np.testing.assert_array_equal(actions, [1, 0])
