"""Partially observable tasks: environments whose observation hides part of the state, so that a
policy must remember (``memory="gru"`` / ``"lstm"``, :mod:`purerl.recurrent`).

* ``StatelessCartPole-v1``: gymnax's CartPole-v1 observing the cart position and the pole angle
  only (velocities removed), POPGym's "Stateless CartPole" (Morad et al. 2023) and the "-P"
  tasks of Meng et al. 2021 ("Memory-based deep reinforcement learning for POMDPs").
* ``StatelessPendulum-v1``: Pendulum-v1 observing (cos theta, sin theta) without the angular
  velocity.
* ``MemoryChain-bsuite`` (gymnax's, ``memory_length`` 5) and ``MemoryChain-<L>-bsuite`` for
  ``memory_length`` L in :data:`MEMORY_LENGTHS` (Osband et al. 2020, bsuite "memory_length"): a
  context bit is shown at the start, the agent must answer it L steps later; reward +1 for the
  right answer, -1 for the wrong one, at the last step only, so random play scores 0 and a policy
  that remembers 1. In gymnax's implementation each step returns the observation of the state
  *before* the step, so the context is visible in the first two observations and the query
  (always bit 0 with one bit) in the last one.

Each stateless task is the underlying gymnax environment with its observation indexed: same
dynamics, rewards, time limit and random stream; ``info["final_observation"]`` is indexed the
same way (gymnax's ``Environment.step`` builds it from :meth:`Stateless.step_env`).
"""

from __future__ import annotations

from typing import Any, Callable

import gymnax
import jax
import jax.numpy as jnp
from gymnax.environments import environment, spaces

# id -> (gymnax id, observation indices kept)
STATELESS = {
    "StatelessCartPole-v1": ("CartPole-v1", (0, 2)),
    "StatelessPendulum-v1": ("Pendulum-v1", (0, 1)),
}
MEMORY_LENGTHS = (3, 10, 30)


class Stateless(environment.Environment):
    """A gymnax environment observed through ``indices`` of its observation vector."""

    def __init__(self, inner: environment.Environment, indices: tuple[int, ...], name: str):
        super().__init__()
        self.inner, self.indices, self._name = inner, jnp.asarray(indices), name

    @property
    def default_params(self) -> Any:
        return self.inner.default_params

    def step_env(self, key, state, action, params):
        obs, state, reward, done, info = self.inner.step_env(key, state, action, params)
        return obs[self.indices], state, reward, done, info

    def reset_env(self, key, params):
        obs, state = self.inner.reset_env(key, params)
        return obs[self.indices], state

    def get_obs(self, state, params=None, key=None):
        return self.inner.get_obs(state, params)[self.indices]

    def is_terminal(self, state, params) -> jax.Array:
        return self.inner.is_terminal(state, params)

    def is_truncated(self, state, params) -> jax.Array:
        return self.inner.is_truncated(state, params)

    @property
    def name(self) -> str:
        return self._name

    @property
    def num_actions(self) -> int:
        return self.inner.num_actions

    def action_space(self, params=None):
        return self.inner.action_space(params)

    def observation_space(self, params) -> spaces.Box:
        box = self.inner.observation_space(params)
        low = jnp.broadcast_to(jnp.asarray(box.low), box.shape)[self.indices]
        high = jnp.broadcast_to(jnp.asarray(box.high), box.shape)[self.indices]
        return spaces.Box(low, high, (len(self.indices),), box.dtype)

    def state_space(self, params):
        return self.inner.state_space(params)


def _stateless(name: str) -> Callable[[], tuple[Any, Any]]:
    base, indices = STATELESS[name]

    def make() -> tuple[Any, Any]:
        env, params = gymnax.make(base)
        return Stateless(env, indices, name), params

    return make


def _memory_chain(length: int) -> Callable[..., tuple[Any, Any]]:
    def make(num_bits: int = 1) -> tuple[Any, Any]:
        env, params = gymnax.make("MemoryChain-bsuite", num_bits=num_bits)
        return env, params.replace(memory_length=length)

    return make


def factories() -> dict[str, Callable[..., tuple[Any, Any]]]:
    """purerl's partially observable ids -> factories of (gymnax environment, env params)."""
    made: dict[str, Callable[..., tuple[Any, Any]]] = {n: _stateless(n) for n in STATELESS}
    made.update({f"MemoryChain-{n}-bsuite": _memory_chain(n) for n in MEMORY_LENGTHS})
    return made


def rendered_as(env_id: str) -> str:
    """The id gymnax's visualiser draws for ``env_id`` (a stateless task: its full task)."""
    return STATELESS[env_id][0] if env_id in STATELESS else env_id
