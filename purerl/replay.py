"""A uniform replay buffer that lives on the device, as a pytree.

The buffer is pre-allocated: every field of the transition pytree is an array with a leading
``capacity`` axis. ``add`` writes a batch of transitions (one per environment) at the ring
position, wrapping around; ``sample`` draws indices uniformly from the filled slots, which are
always ``0 .. size - 1`` (writes start at slot 0 and only wrap once the buffer is full), so a draw
costs O(batch_size), never O(capacity).

Transitions keep the real next observation and ``terminated`` (not ``done``): a target
r + gamma (1 - terminated) Q(s', .) then bootstraps through time-limit truncations and stops
only at true terminal states.

A data-parallel run shards a buffer over its environments, each device keeping its own
environments' transitions: :func:`to_local_layout` and :func:`from_local_layout` convert a
state's buffers between the layouts and :func:`sample_sharded` draws the single-device
minibatch from the shards.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

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


# --------------------------------------------------------------- sharded over environments
#
# A data-parallel run (purerl.distributed) keeps each device's environments' transitions on
# that device. Slot g of the single-device buffer holds environment ``g % num_envs`` of write
# ``g // num_envs`` (the capacity is a multiple of ``num_envs``, so writes never straddle the
# wrap); with ``E = num_envs / D`` environments per device, device ``(g % num_envs) // E``
# keeps it in its slot ``(g // num_envs) E + g % E``.


def is_buffer(x: Any) -> bool:
    """Whether ``x`` is a :class:`ReplayBuffer` (an ``is_leaf`` for tree maps over states)."""
    return isinstance(x, ReplayBuffer)


def to_local_layout(state: Any, num_envs: int, devices: int) -> Any:
    """``state`` (any pytree) with every replay buffer laid out for sharding over environments:
    its ``[capacity, ...]`` leaves viewed as ``[capacity / num_envs, num_envs, ...]`` (write,
    environment), and its position and size counted per device (of ``devices``)."""

    def local(b):
        if not is_buffer(b):
            return b
        data = jax.tree.map(lambda x: x.reshape((-1, num_envs) + x.shape[1:]), b.data)
        return b.replace(data=data, position=b.position // devices, size=b.size // devices)

    return jax.tree.map(local, state, is_leaf=is_buffer)


def from_local_layout(state: Any, devices: int) -> Any:
    """Inverse of :func:`to_local_layout`: every replay buffer back in the single-device
    layout."""

    def single(b):
        if not is_buffer(b):
            return b
        data = jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), b.data)
        return b.replace(data=data, position=b.position * devices, size=b.size * devices)

    return jax.tree.map(single, state, is_leaf=is_buffer)


def reshape_buffers(state: Any, shape: Callable[[tuple], tuple]) -> Any:
    """``state`` with every replay buffer's data leaf ``x`` reshaped to ``shape(x.shape)``
    (e.g. a device's ``[writes, local envs, ...]`` block as its flat ring of local slots)."""

    def reshape(b):
        if not is_buffer(b):
            return b
        return b.replace(data=jax.tree.map(lambda x: x.reshape(shape(x.shape)), b.data))

    return jax.tree.map(reshape, state, is_leaf=is_buffer)


def sample_sharded(buffer: ReplayBuffer, key: jax.Array, batch_size: int, num_envs: int,
                   devices: int, index: jax.Array, axis_name: str) -> Any:
    """This device's ``batch_size / devices`` rows of the single-device run's :func:`sample`,
    inside ``shard_map`` over ``axis_name`` where device ``index`` holds its environments'
    share of the buffer as a flat ring of local slots (see above).

    The indices are drawn over the whole buffer as on one device. Every device fills the rows
    it holds (zeros elsewhere) and ``lax.psum_scatter`` sums them, handing device d rows
    ``d B/D .. (d + 1) B/D - 1``."""
    local_envs = num_envs // devices
    size = buffer.size * devices  # every device wrote local_envs per update
    idx = jax.random.randint(key, (batch_size,), 0, jnp.maximum(size, 1))
    write, env = idx // num_envs, idx % num_envs
    mine = env // local_envs == index
    slot = write * local_envs + env % local_envs

    def rows(d):
        x = d[slot]
        x = jnp.where(mine.reshape((-1,) + (1,) * (x.ndim - 1)), x, jnp.zeros_like(x))
        # integers and booleans sum exactly: one device holds each row, the others add 0
        summed = jax.lax.psum_scatter(x.astype(jnp.int32) if x.dtype == bool else x,
                                      axis_name, scatter_dimension=0, tiled=True)
        return summed.astype(d.dtype)

    return jax.tree.map(rows, buffer.data)
