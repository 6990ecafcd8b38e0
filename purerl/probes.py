"""Probe environments: tiny MDPs whose exact values and optimal actions are known, for checking in
seconds that an agent's critic, discounting and policy are wired correctly (Jones 2021,
"Debugging RL, without the agonizing pain", probes 1, 3 and 5; rejax tests its agents the same
way).

Each is a gymnax environment with a one-dimensional observation, registered with
:mod:`purerl.envs` under the ids below (``purerl.envs.make("ProbeReward-v0")``), in a discrete
(two actions) and a continuous (one action in [-1, 1]) flavour:

* ``ProbeReward``: observation 0, one step, reward +1, terminal. V(s) = Q(s, a) = 1.
* ``ProbeDiscount``: observation 0, then 1, reward +1 on the second step, terminal.
  V(s=0) = Q(0, a) = gamma, V(s=1) = Q(1, a) = 1.
* ``ProbeAction``: observation o = +-1 at random, one step, terminal. Discrete: reward +1 for
  action 1 when o = +1 and action 0 when o = -1, else -1. Continuous: reward 1 - (a - o / 2)^2,
  so the optimal action is o / 2 with value 1. The agent must use both the observation and the
  action.

A truncation never happens: each episode terminates at its last step.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct
from gymnax.environments import environment, spaces

KINDS = ("Reward", "Discount", "Action")


@struct.dataclass
class ProbeState(environment.EnvState):
    obs: jax.Array  # the current observation, shape (1,)
    time: jax.Array


@struct.dataclass
class ProbeParams(environment.EnvParams):
    max_steps_in_episode: int = 1


class Probe(environment.Environment[ProbeState, ProbeParams]):
    """One of the probe MDPs of the module docstring."""

    def __init__(self, kind: str, continuous: bool = False):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"unknown probe kind {kind!r}; one of {', '.join(KINDS)}")
        self.kind = kind
        self.continuous = continuous
        self.length = 2 if kind == "Discount" else 1

    @property
    def default_params(self) -> ProbeParams:
        return ProbeParams(max_steps_in_episode=self.length)

    def reset_env(self, key: jax.Array, params: ProbeParams) -> tuple[jax.Array, ProbeState]:
        if self.kind == "Action":
            obs = jnp.where(jax.random.bernoulli(key), 1.0, -1.0)[None]
        else:
            obs = jnp.zeros((1,), jnp.float32)
        state = ProbeState(obs=obs.astype(jnp.float32), time=jnp.asarray(0, jnp.int32))
        return state.obs, state

    def step_env(self, key: jax.Array, state: ProbeState, action: Any, params: ProbeParams):
        time = state.time + 1
        terminated = time >= self.length
        reward = jnp.where(terminated, self._reward(state.obs[0], action), 0.0)
        obs = jnp.full((1,), time, jnp.float32) if self.kind == "Discount" else state.obs
        new_state = ProbeState(obs=obs, time=time)
        return obs, new_state, reward.astype(jnp.float32), terminated, {}

    def _reward(self, obs: jax.Array, action: Any) -> jax.Array:
        if self.kind != "Action":
            return jnp.asarray(1.0, jnp.float32)
        if self.continuous:
            a = jnp.reshape(action, (-1,))[0]
            return 1.0 - jnp.square(a - 0.5 * obs)
        return jnp.where(jnp.asarray(action) == (obs > 0).astype(jnp.int32), 1.0, -1.0)

    def get_obs(self, state: ProbeState, params=None, key=None) -> jax.Array:
        return state.obs

    def is_terminated(self, state: ProbeState, params: ProbeParams) -> jax.Array:
        return state.time >= self.length

    @property
    def name(self) -> str:
        return f"Probe{self.kind}{'Continuous' if self.continuous else ''}-v0"

    @property
    def num_actions(self) -> int:
        return 1 if self.continuous else 2

    def action_space(self, params: ProbeParams | None = None):
        if self.continuous:
            return spaces.Box(-1.0, 1.0, (1,), jnp.float32)
        return spaces.Discrete(2)

    def observation_space(self, params: ProbeParams) -> spaces.Box:
        return spaces.Box(-1.0, 2.0, (1,), jnp.float32)


def make(kind: str, continuous: bool = False) -> tuple[Probe, ProbeParams]:
    env = Probe(kind, continuous)
    return env, env.default_params


# id -> (kind, continuous), for purerl.envs' registry
IDS: dict[str, tuple[str, bool]] = {
    f"Probe{kind}{suffix}-v0": (kind, continuous)
    for kind in KINDS for continuous, suffix in ((False, ""), (True, "Continuous"))}
