"""What a trainer knows of an environment's spaces, and the action maths on them.

Nothing here imports gymnax: the networks and distributions need the spec and the rescaling of
unit actions to the environment's bounds, not the environments themselves.
"""

from __future__ import annotations

from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np


class EnvSpec(NamedTuple):
    """An environment's observation and action spaces and time limit, as static Python values."""

    name: str
    obs_shape: tuple[int, ...]
    discrete: bool
    num_actions: int | None  # discrete: number of actions
    action_shape: tuple[int, ...]  # () for discrete, (d,) for continuous
    action_low: np.ndarray | None  # continuous: bounds, shape action_shape
    action_high: np.ndarray | None
    max_episode_steps: int

    @property
    def action_dim(self) -> int:
        return self.num_actions if self.discrete else int(np.prod(self.action_shape))

    @property
    def kind(self) -> str:
        return "discrete" if self.discrete else "continuous"


def scale_action(unit_action: jax.Array, low, high) -> jax.Array:
    """Map an action in [-1, 1]^d to the bounds [low, high]: low + (a + 1)(high - low) / 2."""
    low, high = jnp.asarray(low, jnp.float32), jnp.asarray(high, jnp.float32)
    return low + (unit_action + 1.0) * 0.5 * (high - low)


def random_action(spec: EnvSpec, key: chex.PRNGKey, num_envs: int) -> jax.Array:
    """One uniformly random action per environment: an int in [0, num_actions) for discrete
    spaces, uniform in [low, high] for continuous ones (off-policy warm-up)."""
    if spec.discrete:
        return jax.random.randint(key, (num_envs,), 0, spec.num_actions).astype(jnp.int32)
    return jax.random.uniform(key, (num_envs,) + tuple(spec.action_shape), jnp.float32,
                              minval=jnp.asarray(spec.action_low),
                              maxval=jnp.asarray(spec.action_high))
