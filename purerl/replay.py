"""A uniform replay buffer that lives on the device, as a pytree.

The buffer is pre-allocated: every field of the transition pytree is an array with a leading
``capacity`` axis. ``add`` writes a batch of transitions (one per environment) at the ring
position, wrapping around; ``sample`` draws indices uniformly from the filled slots, which are
always ``0 .. size - 1`` (writes start at slot 0 and only wrap once the buffer is full), so a draw
costs O(batch_size), never O(capacity).

Transitions keep the real next observation and ``terminated`` (not ``done``): a target
r + gamma (1 - terminated) Q(s', .) then bootstraps through time-limit truncations and stops
only at true terminal states.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import struct


class Transition(NamedTuple):
    """One environment step, as stored; arrays have leading batch axes when batched."""

    obs: jax.Array
    action: jax.Array
    reward: jax.Array
    next_obs: jax.Array  # the real next observation (not the reset one at an episode's end)
    terminated: jax.Array


@struct.dataclass
class ReplayBuffer:
    data: Any  # the transition pytree, every leaf [capacity, ...]
    position: jax.Array  # next slot to write
    size: jax.Array  # number of filled slots (<= capacity)

    @property
    def capacity(self) -> int:
        """Slots per buffer, also of a stacked (e.g. every seed's) buffer, whose leading axes
        are those of ``position``."""
        return jax.tree.leaves(self.data)[0].shape[jnp.ndim(self.position)]


def example_transition(spec: Any) -> Transition:
    """One zero transition shaped for an :class:`purerl.spaces.EnvSpec`: float32 observations,
    an int32 (discrete) or float32 (continuous) action, float32 reward, boolean ``terminated``."""
    action = (jnp.zeros((), jnp.int32) if spec.discrete
              else jnp.zeros(spec.action_shape, jnp.float32))
    obs = jnp.zeros(spec.obs_shape, jnp.float32)
    return Transition(obs, action, jnp.zeros((), jnp.float32), obs, jnp.zeros((), bool))


def init(capacity: int, example_transition: Any) -> ReplayBuffer:
    """An empty buffer of ``capacity`` slots shaped like one (unbatched) ``example_transition``."""
    if not isinstance(capacity, int) or capacity < 1:
        raise ValueError(f"replay buffer capacity must be a positive int, got {capacity!r}")
    data = jax.tree.map(
        lambda x: jnp.zeros((capacity,) + jnp.shape(x), jnp.asarray(x).dtype), example_transition)
    return ReplayBuffer(data, jnp.asarray(0, jnp.int32), jnp.asarray(0, jnp.int32))


def add(buffer: ReplayBuffer, transitions: Any) -> ReplayBuffer:
    """Write a batch of transitions (leading axis n, e.g. one per environment) at the ring
    position: slots (position + i) mod capacity for i < n."""
    n = jax.tree.leaves(transitions)[0].shape[0]
    capacity = buffer.capacity
    if n > capacity:
        raise ValueError(f"cannot add {n} transitions at once to a replay buffer of capacity "
                         f"{capacity}; use a larger buffer")
    idx = (buffer.position + jnp.arange(n)) % capacity
    data = jax.tree.map(lambda d, x: d.at[idx].set(x.astype(d.dtype)), buffer.data, transitions)
    return ReplayBuffer(data, (buffer.position + n) % capacity,
                        jnp.minimum(buffer.size + n, capacity))


def sample(buffer: ReplayBuffer, key: jax.Array, batch_size: int) -> Any:
    """``batch_size`` transitions drawn uniformly with replacement from the filled slots. The
    buffer must not be empty (trainers start sampling after ``learning_starts`` steps)."""
    idx = jax.random.randint(key, (batch_size,), 0, jnp.maximum(buffer.size, 1))
    return jax.tree.map(lambda d: d[idx], buffer.data)
